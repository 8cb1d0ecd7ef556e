// Logging to stderr or to a file, one line per message.
//
// Each line is formatted in full and written with one write(2), so lines from
// several threads or processes sharing the file never interleave. The sink is
// process-global: set it once at start-up (SetLogFile/SetLogFd) before threads
// start; logging itself is thread-safe and async-signal-unsafe.
//
// Format: "<program>[<pid>]: <level>: <message>"; with a file sink each line
// also starts with an ISO-8601 UTC timestamp.
#pragma once

#include <string>
#include <string_view>

#include "common/base/fd.h"
#include "common/base/status.h"

namespace hexz::base {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Name printed in each line (default "hexz").
void SetLogProgram(std::string_view name);
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();

// Opens a log file for appending, safely also in a directory other users can
// write to (/tmp): creates it 0600 (O_EXCL) or opens an existing one without
// following a symlink and without blocking (O_NONBLOCK, so another user's FIFO
// cannot stall the caller), then refuses anything but a regular file owned by
// the effective uid. The descriptor is blocking again and close-on-exec.
Result<UniqueFd> OpenLogForAppend(const std::string& path);
// Appends to `path` (OpenLogForAppend). On failure the sink is unchanged.
Status SetLogFile(const std::string& path);
// Logs to an already-open descriptor (not owned; stderr by default).
void SetLogFd(int fd, bool with_timestamps);
int LogFd();

void LogMessage(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace hexz::base

#define HEXZ_LOG_DEBUG(...)                                                  \
  do {                                                                       \
    if (::hexz::base::GetLogLevel() <= ::hexz::base::LogLevel::kDebug)       \
      ::hexz::base::LogMessage(::hexz::base::LogLevel::kDebug, __VA_ARGS__); \
  } while (0)
#define HEXZ_LOG_INFO(...) ::hexz::base::LogMessage(::hexz::base::LogLevel::kInfo, __VA_ARGS__)
#define HEXZ_LOG_WARN(...) ::hexz::base::LogMessage(::hexz::base::LogLevel::kWarning, __VA_ARGS__)
#define HEXZ_LOG_ERROR(...) ::hexz::base::LogMessage(::hexz::base::LogLevel::kError, __VA_ARGS__)
