#include "common/remote/curl_api.h"

#include <mutex>

#include "common/base/shared_library.h"

namespace hexz::remote {
namespace {

base::Status Load(CurlApi* c) {
  HEXZ_ASSIGN_OR_RETURN(base::SharedLibrary lib, base::SharedLibrary::Open("libcurl.so.4"));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_global_init", &c->global_init));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_easy_init", &c->easy_init));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_easy_cleanup", &c->easy_cleanup));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_easy_reset", &c->easy_reset));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_easy_setopt", &c->easy_setopt));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_easy_perform", &c->easy_perform));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_easy_strerror", &c->easy_strerror));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_slist_append", &c->slist_append));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_slist_free_all", &c->slist_free_all));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_url", &c->url));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_url_cleanup", &c->url_cleanup));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_url_set", &c->url_set));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_url_get", &c->url_get));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_free", &c->free));
  if (c->global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return base::Status::Internal("curl_global_init failed");
  return base::Status::Ok();
}

}  // namespace

base::Result<const CurlApi*> LoadCurl() {
  static CurlApi api;
  static base::Status status;
  static std::once_flag once;
  std::call_once(once, [] {
    status = Load(&api);
    if (!status.ok())
      status = base::Status::Unavailable("remote snapshots need libcurl: " + status.message());
  });
  if (!status.ok()) return status;
  return &api;
}

}  // namespace hexz::remote
