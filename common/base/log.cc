#include "common/base/log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace hexz::base {

namespace {

std::atomic<int> g_fd{STDERR_FILENO};
std::atomic<bool> g_timestamps{false};
std::atomic<LogLevel> g_level{LogLevel::kInfo};
char g_program[32] = "hexz";

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

}  // namespace

void SetLogProgram(std::string_view name) {
  size_t n = std::min(name.size(), sizeof g_program - 1);
  name.copy(g_program, n);
  g_program[n] = '\0';
}

void SetLogLevel(LogLevel level) { g_level = level; }
LogLevel GetLogLevel() { return g_level; }

Result<UniqueFd> OpenLogForAppend(const std::string& path) {
  const std::string what = "log file " + path;
  constexpr int kFlags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
  UniqueFd fd(::open(path.c_str(), kFlags | O_CREAT | O_EXCL, 0600));
  if (!fd && errno == EEXIST) fd = UniqueFd(::open(path.c_str(), kFlags));
  if (!fd) {
    if (errno == ENXIO) {  // a FIFO or socket nobody reads
      return Status::InvalidArgument(what + " is not a regular file; refusing to log to it");
    }
    if (errno == ELOOP) {
      return Status::InvalidArgument(what + " is a symbolic link; refusing to log to it");
    }
    return Status::FromErrno(errno, what);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, what);
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument(what + " is not a regular file; refusing to log to it");
  }
  if (st.st_uid != ::geteuid()) {
    return Status(Code::kPermissionDenied,
                  what + " is owned by uid " + std::to_string(st.st_uid) +
                      ", not by you; refusing to log to it (choose another path)",
                  EPERM);
  }
  if (::fcntl(fd.get(), F_SETFL, O_APPEND) != 0) return Status::FromErrno(errno, what);
  return fd;
}

Status SetLogFile(const std::string& path) {
  Result<UniqueFd> opened = OpenLogForAppend(path);
  if (!opened.ok()) return opened.status().WithContext("cannot open the log");
  int fd = opened->release();
  int old = g_fd.exchange(fd);
  if (old > STDERR_FILENO) ::close(old);
  g_timestamps = true;
  return Status::Ok();
}

void SetLogFd(int fd, bool with_timestamps) {
  g_fd = fd;
  g_timestamps = with_timestamps;
}

int LogFd() { return g_fd; }

void LogMessage(LogLevel level, const char* fmt, ...) {
  if (level < g_level.load(std::memory_order_relaxed)) return;
  char line[2048];
  size_t len = 0;
  if (g_timestamps.load(std::memory_order_relaxed)) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    len += strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ ", &tm);
  }
  int n = std::snprintf(line + len, sizeof line - len, "%s[%d]: %s: ", g_program,
                        static_cast<int>(getpid()), LevelName(level));
  if (n > 0) len = std::min(sizeof line - 1, len + static_cast<size_t>(n));
  va_list ap;
  va_start(ap, fmt);
  n = std::vsnprintf(line + len, sizeof line - len, fmt, ap);
  va_end(ap);
  if (n > 0) len = std::min(sizeof line - 2, len + static_cast<size_t>(n));
  line[len++] = '\n';
  const char* p = line;
  while (len > 0) {
    ssize_t w = ::write(g_fd.load(std::memory_order_relaxed), p, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // nowhere left to report it
    p += w;
    len -= static_cast<size_t>(w);
  }
}

}  // namespace hexz::base
