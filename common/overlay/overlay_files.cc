#include "common/overlay/overlay_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/base/log.h"
#include "common/io/file.h"
#include "common/overlay/overlay_layout.h"

namespace hexz::overlay {

namespace {

constexpr char kEphemeralPrefix[] = "hexz-overlay.";
constexpr char kEphemeralData[] = "overlay";
constexpr char kEphemeralMeta[] = "overlay.meta";
// A meta file up to this size holds superblocks only (an interrupted
// creation).
constexpr uint64_t kMetaWithoutLog = layout::kLogBase;

// The command line of a process, spaces between the arguments ("" when it
// cannot be read).
std::string CommandLine(long pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/cmdline";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return "";
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && s.back() == '\0') s.pop_back();
  for (char& c : s) {
    if (c == '\0') c = ' ';
  }
  return s;
}

}  // namespace

std::string DescribeLockHolders(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return "";
  FILE* f = std::fopen("/proc/locks", "re");
  if (f == nullptr) return "";
  char line[256];
  std::string out;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    // "1: FLOCK  ADVISORY  READ  1234 08:01:5678 0 EOF"
    char kind[16], type[16];
    long pid = 0;
    unsigned maj = 0, min = 0;
    unsigned long long ino = 0;
    const char* p = std::strchr(line, ':');
    if (p == nullptr || std::strstr(line, "->") != nullptr) continue;  // waiters
    if (std::sscanf(p + 1, "%15s %*s %15s %ld %x:%x:%llu", kind, type, &pid, &maj, &min, &ino) !=
        6) {
      continue;
    }
    if (std::strcmp(kind, "FLOCK") != 0 || ino != st.st_ino || maj != major(st.st_dev) ||
        min != minor(st.st_dev)) {
      continue;
    }
    const bool shared = std::strcmp(type, "READ") == 0;
    std::string cmd = CommandLine(pid);
    std::string who = shared ? "a reader (hexz commit, overlay info or overlay verify)"
                             : "a read-write mount or serve";
    out += (out.empty() ? "" : "; ") + who;
    if (pid > 0) out += ", pid " + std::to_string(pid);
    if (!cmd.empty()) out += " (" + cmd + ")";
  }
  std::fclose(f);
  return out;
}

namespace {

Status LockFd(int fd, LockMode mode, const std::string& path) {
  if (mode == LockMode::kNone) return Status::Ok();
  int op = (mode == LockMode::kExclusive ? LOCK_EX : LOCK_SH) | LOCK_NB;
  while (::flock(fd, op) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) {
      std::string holders = DescribeLockHolders(fd);
      if (holders.empty()) holders = "another hexz process (locked)";
      if (mode == LockMode::kExclusive) {
        return Status::Busy("overlay " + path + " is in use by " + holders +
                            "; wait for it to finish, or unmount it");
      }
      return Status::Busy("overlay " + path + " is in use by " + holders + "; unmount it first");
    }
    return Status::FromErrno(errno, "lock " + path);
  }
  return Status::Ok();
}

bool UsableDir(const char* dir) {
  if (dir == nullptr || dir[0] != '/') return false;
  struct stat st;
  return ::stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && ::access(dir, W_OK | X_OK) == 0;
}

Status RemoveEphemeralDir(const std::string& dir) {
  for (const char* f : {kEphemeralData, kEphemeralMeta}) {
    std::string p = dir + "/" + f;
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, p);
  }
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, dir);
  return Status::Ok();
}

}  // namespace

std::string MetaPathFor(const std::string& data_path) { return data_path + ".meta"; }

Result<OverlayFiles> OpenOverlayFiles(const std::string& path, LockMode mode, bool create) {
  if (path.empty()) return Status::InvalidArgument("the overlay path is empty");
  OverlayFiles f;
  f.names.data = path;
  f.names.meta = MetaPathFor(path);
  const bool rw = mode == LockMode::kExclusive;
  int flags = rw ? O_RDWR : O_RDONLY;
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
  if (fd < 0 && errno == ENOENT && create && rw) {
    // A meta file with a log but no data file: the data was removed. Never
    // start a new overlay over that evidence.
    struct stat mst;
    if (::stat(f.names.meta.c_str(), &mst) == 0 && S_ISREG(mst.st_mode) &&
        static_cast<uint64_t>(mst.st_size) > kMetaWithoutLog) {
      return Status::Corruption("overlay " + path + " does not exist, but " + f.names.meta +
                                " holds a log (" + std::to_string(mst.st_size) +
                                " bytes): the overlay's data is lost; refusing to start a new "
                                "overlay over it (move " +
                                f.names.meta + " away to do so)");
    }
    fd = ::open(path.c_str(), flags | O_CLOEXEC | O_CREAT, 0600);
  }
  if (fd < 0) {
    if (errno == ENOENT) {
      return Status::NotFound("overlay " + path + " does not exist");
    }
    return Status::FromErrno(errno, "cannot open overlay " + path);
  }
  f.data = UniqueFd(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, path);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument("overlay " + path + " is not a file");
  HEXZ_RETURN_IF_ERROR(LockFd(fd, mode, path));
  // Size checked under the lock: an empty data file is a new overlay (or one
  // whose creation never completed), which Overlay::OpenOrCreate initializes.
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, path);
  const bool fresh = st.st_size == 0;
  int mflags = flags | O_CLOEXEC | (fresh && rw ? O_CREAT : 0);
  int mfd = ::open(f.names.meta.c_str(), mflags, 0600);
  if (mfd < 0) {
    if (errno == ENOENT) {
      return Status::NotFound("overlay " + path + " has no " + f.names.meta +
                              "; the overlay cannot be used without its meta file");
    }
    return Status::FromErrno(errno, "cannot open " + f.names.meta);
  }
  f.meta = UniqueFd(mfd);
  if (::fstat(mfd, &st) != 0) return Status::FromErrno(errno, f.names.meta);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(f.names.meta + " is not a file");
  if (fresh && rw) {
    // Make the new directory entries durable before anything depends on them.
    HEXZ_RETURN_IF_ERROR(io::FsyncParentDir(path));
  }
  return f;
}

Status ValidateOverlayFiles(const OverlayFiles& files, const format::SnapshotId& base_id,
                            uint64_t disk_size) {
  struct stat st;
  if (::fstat(files.data.get(), &st) != 0) return Status::FromErrno(errno, files.names.data);
  if (st.st_size == 0) return Status::Ok();  // new: the worker creates it
  UniqueFd data(::fcntl(files.data.get(), F_DUPFD_CLOEXEC, 0));
  UniqueFd meta(::fcntl(files.meta.get(), F_DUPFD_CLOEXEC, 0));
  if (!data.valid() || !meta.valid()) return Status::FromErrno(errno, "dup " + files.names.data);
  OverlayOptions ro;
  ro.read_only = true;
  auto ov = Overlay::Open(std::move(data), std::move(meta), files.names, base_id, disk_size, ro);
  return ov.ok() ? Status::Ok() : ov.status();
}

std::string EphemeralParentDir() {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (UsableDir(xdg)) return xdg;
  const char* tmp = std::getenv("TMPDIR");
  if (UsableDir(tmp)) return tmp;
  return "/tmp";
}

Result<OverlayFiles> CreateEphemeralOverlayFiles(const std::string& dir_in) {
  std::string parent = dir_in.empty() ? EphemeralParentDir() : dir_in;
  for (int attempt = 0; attempt < 8; ++attempt) {
    std::string templ = parent + "/" + kEphemeralPrefix + "XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) {
      return Status::FromErrno(
          errno, "cannot create a private directory in " + parent + " for the ephemeral overlay");
    }
    std::string dir(buf.data());  // mkdtemp creates it 0700
    OverlayFiles f;
    f.ephemeral = true;
    f.names.data = dir + "/" + kEphemeralData;
    f.names.meta = dir + "/" + kEphemeralMeta;
    int fd = ::open(f.names.data.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (errno == ENOENT) continue;  // a reclaimer removed the empty directory
      Status st = Status::FromErrno(errno, "create " + f.names.data);
      (void)RemoveEphemeralDir(dir);
      return st;
    }
    f.data = UniqueFd(fd);
    // Blocking: only a reclaimer that is about to delete the directory can
    // hold it, and then we notice below and start over.
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno != EINTR) return Status::FromErrno(errno, "lock " + f.names.data);
    }
    struct stat a, b;
    if (::fstat(fd, &a) != 0 || ::stat(f.names.data.c_str(), &b) != 0 || a.st_ino != b.st_ino ||
        a.st_dev != b.st_dev) {
      continue;  // reclaimed under our feet; try a new directory
    }
    int mfd = ::open(f.names.meta.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (mfd < 0) {
      Status st = Status::FromErrno(errno, "create " + f.names.meta);
      (void)RemoveEphemeralDir(dir);
      return st;
    }
    f.meta = UniqueFd(mfd);
    // Nothing to leave behind: from here on only the descriptors exist.
    HEXZ_RETURN_IF_ERROR(RemoveEphemeralDir(dir));
    f.names.data = "(ephemeral overlay)";
    f.names.meta = "(ephemeral overlay meta)";
    return f;
  }
  return Status::Internal("could not create an ephemeral overlay in " + parent);
}

Result<int> ReclaimEphemeralDirs(const std::string& dir_in) {
  std::string parent = dir_in.empty() ? EphemeralParentDir() : dir_in;
  DIR* d = ::opendir(parent.c_str());
  if (d == nullptr) return Status::FromErrno(errno, "cannot list " + parent);
  std::vector<std::string> candidates;
  while (struct dirent* e = ::readdir(d)) {
    if (std::strncmp(e->d_name, kEphemeralPrefix, sizeof kEphemeralPrefix - 1) == 0) {
      candidates.push_back(parent + "/" + e->d_name);
    }
  }
  ::closedir(d);
  int removed = 0;
  for (const std::string& dir : candidates) {
    struct stat st;
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
      continue;
    }
    std::string data = dir + "/" + kEphemeralData;
    int fd = ::open(data.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    UniqueFd holder(fd);
    if (fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) != 0) continue;  // alive
    Status s = RemoveEphemeralDir(dir);
    if (!s.ok()) {
      HEXZ_LOG_WARN("cannot reclaim stale ephemeral overlay %s: %s", dir.c_str(),
                    s.ToString().c_str());
      continue;
    }
    ++removed;
  }
  return removed;
}

}  // namespace hexz::overlay
