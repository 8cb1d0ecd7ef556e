#include "hexz/fuse_mount_args.h"

#include <algorithm>
#include <sstream>

namespace hexz::cli {

namespace {

// Generic mount(8) options that mean nothing to a FUSE snapshot mount (FUSE
// mounts are always nosuid and nodev).
bool IsIgnoredOption(const std::string& o) {
  static const char* const kIgnored[] = {
      "defaults",    "auto",       "noauto",   "user",     "users",   "nouser",
      "nofail",      "_netdev",    "nosuid",   "suid",     "nodev",   "dev",
      "noexec",      "exec",       "async",    "atime",    "noatime", "relatime",
      "strictatime", "nodiratime", "diratime", "lazytime",
  };
  if (o.rfind("x-", 0) == 0 || o.rfind("comment=", 0) == 0) return true;
  return std::find(std::begin(kIgnored), std::end(kIgnored), o) != std::end(kIgnored);
}

}  // namespace

std::optional<base::Result<std::vector<std::string>>> TranslateMountFuseArgs(
    const std::vector<std::string>& args, const std::vector<std::string>& subcommands) {
  // args[0] is the program. The form is: SNAP MNT [-o OPTS]... with SNAP not
  // a subcommand and not an option.
  if (args.size() < 3) return std::nullopt;
  const std::string& first = args[1];
  if (first.empty() || first[0] == '-') return std::nullopt;
  if (std::find(subcommands.begin(), subcommands.end(), first) != subcommands.end()) {
    return std::nullopt;
  }
  std::vector<std::string> out = {args[0], "mount", args[1], args[2], "--daemon"};
  bool rw = false;
  std::string overlay;
  for (size_t i = 3; i < args.size(); ++i) {
    if (args[i] != "-o" || i + 1 >= args.size()) {
      return base::Result<std::vector<std::string>>(
          base::Status::InvalidArgument("unexpected argument '" + args[i] +
                                        "' (mount.fuse form is: hexz SNAPSHOT "
                                        "MOUNTPOINT -o OPTIONS)"));
    }
    std::stringstream opts(args[++i]);
    std::string o;
    while (std::getline(opts, o, ',')) {
      if (o.empty() || IsIgnoredOption(o) || o == "ro") continue;
      auto eq = o.find('=');
      std::string key = o.substr(0, eq);
      std::string value = eq == std::string::npos ? "" : o.substr(eq + 1);
      if (o == "rw") {
        rw = true;
      } else if (key == "overlay" && !value.empty()) {
        overlay = value;
      } else if ((key == "cache_size" || key == "cache-size") && !value.empty()) {
        out.insert(out.end(), {"--cache-size", value});
      } else if (key == "uid" && !value.empty()) {
        out.insert(out.end(), {"--uid", value});
      } else if (key == "gid" && !value.empty()) {
        out.insert(out.end(), {"--gid", value});
      } else if (o == "partitions") {
        out.push_back("--partitions");
      } else if (o == "allow_root" || o == "allow_other") {
        out.insert(out.end(), {"-o", o});
      } else if ((key == "log_file" || key == "log-file") && !value.empty()) {
        out.insert(out.end(), {"--log-file", value});
      } else {
        return base::Result<std::vector<std::string>>(base::Status::InvalidArgument(
            "unknown mount option '" + o +
            "' for fuse.hexz (known: ro, rw, overlay=PATH, cache_size=SIZE, uid=N, gid=N, "
            "log_file=PATH, partitions, allow_root, allow_other)"));
      }
    }
  }
  // mount(8) passes "rw" unless told "ro"; a read-write hexz mount needs an
  // overlay to write to, so "rw" alone stays a read-only mount.
  if (!overlay.empty()) {
    if (!rw) {
      return base::Result<std::vector<std::string>>(
          base::Status::InvalidArgument("mount option overlay=" + overlay + " needs rw"));
    }
    out.insert(out.end(), {"--rw", "--overlay", overlay});
  }
  return base::Result<std::vector<std::string>>(std::move(out));
}

}  // namespace hexz::cli
