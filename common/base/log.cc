#include "common/base/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
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

Status SetLogFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Status::FromErrno(errno, "cannot open log file " + path);
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
