#include "common/base/shared_library.h"

#include <dlfcn.h>

namespace hexz::base {

Result<SharedLibrary> SharedLibrary::Open(const std::string& soname) {
  void* handle = ::dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    return Status::Unavailable("cannot load " + soname + ": " +
                               (why != nullptr ? why : "unknown error"));
  }
  return SharedLibrary(soname, handle);
}

Result<void*> SharedLibrary::Symbol(const char* name) const {
  ::dlerror();
  void* p = ::dlsym(handle_, name);
  if (p == nullptr) {
    const char* why = ::dlerror();
    return Status::Unavailable(soname_ + " lacks " + name +
                               (why != nullptr ? std::string(" (") + why + ")" : std::string()));
  }
  return p;
}

}  // namespace hexz::base
