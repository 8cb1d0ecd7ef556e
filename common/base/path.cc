#include "common/base/path.h"

namespace hexz::base {

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string ResolveBeside(const std::string& from, const std::string& path) {
  if (!path.empty() && path.front() == '/') return path;
  return DirName(from) + "/" + path;
}

}  // namespace hexz::base
