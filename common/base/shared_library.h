// A shared library loaded at run time (dlopen), for the dependencies that
// only some commands need: libcurl for remote snapshots, libnbd for VM disk
// containers and NBD sources. Linking them would make every hexz command
// load them and the 30 libraries they pull in, a third of its start.
//
//   HEXZ_ASSIGN_OR_RETURN(auto lib, SharedLibrary::Open("libcurl.so.4"));
//   HEXZ_RETURN_IF_ERROR(lib.Resolve("curl_easy_init", &api.easy_init));
//
// The library stays loaded for the life of the process (the handle is never
// closed): the resolved pointers stay valid.
#pragma once

#include <string>

#include "common/base/status.h"

namespace hexz::base {

class SharedLibrary {
 public:
  // dlopen(soname, RTLD_NOW | RTLD_LOCAL). The error names the library and
  // what the loader said.
  static Result<SharedLibrary> Open(const std::string& soname);

  // Resolves `name` into `*fn`; the error names the symbol and the library.
  template <typename F>
  Status Resolve(const char* name, F* fn) const {
    HEXZ_ASSIGN_OR_RETURN(void* p, Symbol(name));
    *fn = reinterpret_cast<F>(p);
    return Status::Ok();
  }

  const std::string& soname() const { return soname_; }

 private:
  SharedLibrary(std::string soname, void* handle) : soname_(std::move(soname)), handle_(handle) {}
  Result<void*> Symbol(const char* name) const;

  std::string soname_;
  void* handle_ = nullptr;
};

}  // namespace hexz::base
