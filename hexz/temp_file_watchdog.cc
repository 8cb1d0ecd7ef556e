#include "hexz/temp_file_watchdog.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "hexz/cli_checks.h"

namespace hexz::cli {
namespace {

// The file in `dir` whose name starts with `prefix` that this process holds
// open (same device and inode as one of our descriptors).
bool FindOpenTemp(const std::string& dir, const std::string& prefix, std::string* path,
                  struct stat* target) {
  std::vector<std::pair<std::string, struct stat>> candidates;
  if (DIR* d = opendir(dir.c_str())) {
    while (struct dirent* e = readdir(d)) {
      if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) != 0) continue;
      std::string p = dir + "/" + e->d_name;
      struct stat st;
      if (lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) candidates.emplace_back(p, st);
    }
    closedir(d);
  }
  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) return false;
  bool found = false;
  while (struct dirent* e = readdir(fds)) {
    struct stat st;
    if (e->d_name[0] == '.' || fstat(std::atoi(e->d_name), &st) != 0) continue;
    for (const auto& [p, c] : candidates) {
      if (!found && SameFile(st, c)) {
        *path = p;
        *target = c;
        found = true;
      }
    }
  }
  closedir(fds);
  return found;
}

// The child: async-signal-safe calls only (the parent has threads).
[[noreturn]] void Watch(int rfd, const char* path, struct stat target) {
  struct sigaction ign = {};
  ign.sa_handler = SIG_IGN;
  sigaction(SIGINT, &ign, nullptr);  // Ctrl+C is the parent's to handle
  sigaction(SIGTERM, &ign, nullptr);
  sigaction(SIGHUP, &ign, nullptr);
  if (rfd > 0) close_range(0, static_cast<unsigned>(rfd) - 1, 0);
  close_range(static_cast<unsigned>(rfd) + 1, ~0U, 0);
  char c;
  ssize_t n;
  do {
    n = read(rfd, &c, 1);
  } while (n < 0 && errno == EINTR);
  struct stat st;
  if (n == 0 && lstat(path, &st) == 0 && SameFile(st, target)) unlink(path);
  _exit(0);
}

}  // namespace

void TempFileWatchdog::Start(const std::string& output) {
  std::string dir = ".", base = output;
  if (size_t slash = output.rfind('/'); slash != std::string::npos) {
    dir = slash == 0 ? "/" : output.substr(0, slash);
    base = output.substr(slash + 1);
  }
  const std::string prefix = "." + base + ".tmp-";
  std::string path;
  struct stat target = {};
  if (!FindOpenTemp(dir, prefix, &path, &target)) return;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return;
  pid_t pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return;
  }
  if (pid == 0) Watch(p[0], path.c_str(), target);  // never returns
  close(p[0]);
  pipe_ = p[1];
  pid_ = pid;
}

void TempFileWatchdog::Stop() {
  if (pid_ < 0) return;
  (void)!write(pipe_, "d", 1);
  close(pipe_);
  while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

}  // namespace hexz::cli
