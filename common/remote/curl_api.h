// The libcurl functions hexz calls, resolved from libcurl.so.4 the first
// time a URL is used (base::SharedLibrary): commands that never touch a URL
// do not load libcurl and the libraries it pulls in.
#pragma once

#include <curl/curl.h>

#include "common/base/status.h"

namespace hexz::remote {

struct CurlApi {
  decltype(&::curl_global_init) global_init = nullptr;
  decltype(&::curl_easy_init) easy_init = nullptr;
  decltype(&::curl_easy_cleanup) easy_cleanup = nullptr;
  decltype(&::curl_easy_reset) easy_reset = nullptr;
  decltype(&::curl_easy_setopt) easy_setopt = nullptr;
  decltype(&::curl_easy_perform) easy_perform = nullptr;
  decltype(&::curl_easy_strerror) easy_strerror = nullptr;
  decltype(&::curl_slist_append) slist_append = nullptr;
  decltype(&::curl_slist_free_all) slist_free_all = nullptr;
  decltype(&::curl_url) url = nullptr;
  decltype(&::curl_url_cleanup) url_cleanup = nullptr;
  decltype(&::curl_url_set) url_set = nullptr;
  decltype(&::curl_url_get) url_get = nullptr;
  decltype(&::curl_free) free = nullptr;
};

// Loads libcurl and calls curl_global_init, once per process; later calls
// return the same table, or the same error.
base::Result<const CurlApi*> LoadCurl();

}  // namespace hexz::remote
