#include "hexz/mount_table.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/base/fd.h"
#include "common/base/log.h"

namespace hexz::cli {

using base::Result;
using base::Status;

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3') {
      int v = (s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0');
      out.push_back(static_cast<char>(v));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

const char* FusermountPath() {
  for (const char* p : {"/usr/bin/fusermount3", "/bin/fusermount3"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return nullptr;
}

// Runs argv with stdout/stderr captured; returns the exit code and output.
Result<std::pair<int, std::string>> RunCaptured(const std::vector<std::string>& argv) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  base::UniqueFd rd(pipefd[0]), wr(pipefd[1]);
  pid_t pid = fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    dup2(wr.get(), STDOUT_FILENO);
    dup2(wr.get(), STDERR_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    char* env[] = {const_cast<char*>("PATH=/usr/bin:/bin"), nullptr};
    execve(args[0], args.data(), env);
    _exit(127);
  }
  wr.reset();
  std::string out;
  char buf[512];
  for (;;) {
    ssize_t n = read(rd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : 128, out);
}

Status BusyError(const std::string& mountpoint) {
  return Status::Busy("cannot unmount " + mountpoint +
                      ": it is busy (a process has a file open there or its working directory "
                      "inside; find it with 'fuser -vm " +
                      mountpoint + "', or retry later)");
}

}  // namespace

Result<std::string> CanonicalMountPath(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("empty mountpoint path");
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  char buf[PATH_MAX];
  if (realpath(p.c_str(), buf) != nullptr) return std::string(buf);
  int err = errno;
  if (err != ENOTCONN && err != ECONNABORTED) return Status::FromErrno(err, p);
  // A dead FUSE mount: resolve the parent and keep the last component.
  size_t slash = p.rfind('/');
  std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
  if (realpath(parent.c_str(), buf) == nullptr) return Status::FromErrno(errno, parent);
  std::string out = buf;
  if (out != "/") out += "/";
  return out + base;
}

Result<std::optional<MountEntry>> FindMount(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return Status::FromErrno(errno, "/proc/self/mountinfo");
  std::optional<MountEntry> found;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::vector<std::string> fields;
    std::string f;
    while (ss >> f) fields.push_back(f);
    // id parent dev root mountpoint options [optional...] - fstype source superopts
    if (fields.size() < 7) continue;
    size_t dash = 6;
    while (dash < fields.size() && fields[dash] != "-") ++dash;
    if (dash + 2 >= fields.size()) continue;
    if (Unescape(fields[4]) != mountpoint) continue;
    found = MountEntry{mountpoint, fields[dash + 1], Unescape(fields[dash + 2])};
  }
  return found;
}

bool IsDeadFuseMount(const std::string& mountpoint) {
  auto dead = [] { return errno == ENOTCONN || errno == ECONNABORTED; };
  // statfs always asks the (dead) server; stat may be answered from the
  // kernel's attribute cache for a while after the worker died.
  struct statfs sfs;
  if (statfs(mountpoint.c_str(), &sfs) != 0 && dead()) return true;
  struct stat st;
  return stat(mountpoint.c_str(), &st) != 0 && dead();
}

std::vector<pid_t> WorkersOf(const std::string& mountpoint) {
  std::vector<pid_t> pids;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return pids;
  while (struct dirent* e = readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    std::string dir = std::string("/proc/") + e->d_name;
    std::ifstream comm(dir + "/comm");
    std::string name;
    if (!std::getline(comm, name) || name != kWorkerProgram) continue;
    DIR* fds = opendir((dir + "/fd").c_str());  // fails for other users' workers
    if (fds == nullptr) continue;
    while (struct dirent* f = readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      char target[PATH_MAX];
      ssize_t n = readlink((dir + "/fd/" + f->d_name).c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      if (mountpoint == target) {
        pids.push_back(static_cast<pid_t>(pid));
        break;
      }
    }
    closedir(fds);
  }
  closedir(proc);
  return pids;
}

namespace {

// Gone, or a zombie (its files are closed; its parent reaps it).
bool Exited(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  size_t paren = line.rfind(')');
  if (paren == std::string::npos || paren + 2 >= line.size()) return true;
  if (line[paren + 2] != 'Z' && line[paren + 2] != 'X') return false;
  // A zombie thread-group leader can still have threads that are exiting,
  // and those hold the process's files (the overlay and its lock) until the
  // last one is gone: exited means no thread but the leader is left.
  DIR* tasks = opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
  if (tasks == nullptr) return true;
  int threads = 0;
  while (struct dirent* e = readdir(tasks)) {
    if (e->d_name[0] != '.') ++threads;
  }
  closedir(tasks);
  return threads <= 1;
}

Status UnmountOnly(const std::string& mountpoint, bool lazy) {
  if (geteuid() == 0) {
    if (umount2(mountpoint.c_str(), lazy ? MNT_DETACH : 0) == 0) return Status::Ok();
    if (errno == EBUSY) return BusyError(mountpoint);
    return Status::FromErrno(errno, "unmounting " + mountpoint);
  }
  const char* fusermount = FusermountPath();
  if (fusermount == nullptr) {
    return Status::Unavailable("cannot unmount " + mountpoint +
                               ": fusermount3 is not installed (/usr/bin/fusermount3; Debian "
                               "package fuse3)");
  }
  std::vector<std::string> argv = {fusermount, "-u"};
  if (lazy) argv.push_back("-z");
  argv.push_back("--");
  argv.push_back(mountpoint);
  HEXZ_ASSIGN_OR_RETURN(auto result, RunCaptured(argv));
  if (result.first == 0) return Status::Ok();
  if (result.second.find("busy") != std::string::npos) return BusyError(mountpoint);
  return Status::Internal("unmounting " + mountpoint + " failed: " + result.second);
}

}  // namespace

Status UnmountFuse(const std::string& mountpoint, bool lazy) {
  const std::vector<pid_t> workers = lazy ? std::vector<pid_t>() : WorkersOf(mountpoint);
  HEXZ_RETURN_IF_ERROR(UnmountOnly(mountpoint, lazy));
  // The worker flushes and closes its overlay after the kernel lets go of
  // the mount; wait for that, so that the overlay is complete and unlocked
  // when this returns.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (pid_t pid : workers) {
    while (!Exited(pid)) {
      if (std::chrono::steady_clock::now() > deadline) {
        HEXZ_LOG_WARN("the worker of %s (pid %d) is still running after the unmount",
                      mountpoint.c_str(), static_cast<int>(pid));
        return Status::Ok();
      }
      usleep(10000);
    }
  }
  return Status::Ok();
}

}  // namespace hexz::cli
