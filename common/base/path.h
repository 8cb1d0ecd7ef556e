// Path string helpers, the one copy in hexz. They work on the text only:
// nothing is resolved on the filesystem.
//
// Stateless, thread-safe.
#pragma once

#include <string>

namespace hexz::base {

// The directory part of path: "a/b" -> "a", "b" -> ".", "/b" -> "/".
std::string DirName(const std::string& path);

// The part after the last '/': "a/b" -> "b", "b" -> "b", "a/" -> "".
std::string BaseName(const std::string& path);

// `path` as seen from the directory of the file `from`: an absolute path as
// it is, a relative one joined to DirName(from). ("dir/child.st", "base.st")
// -> "dir/base.st".
std::string ResolveBeside(const std::string& from, const std::string& path);

}  // namespace hexz::base
