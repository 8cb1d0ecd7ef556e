// QmpClient: a small, careful client of QEMU's QMP (the QEMU Machine
// Protocol: JSON objects, one per line, over a unix socket), for
// `hexz vm snapshot` and `hexz vm resume`.
//
// Connect() reads QEMU's greeting and negotiates capabilities; Execute()
// sends one command and returns its "return" value, or the QMP error
// ("CLASS: description") naming the socket and the command. Asynchronous
// events that arrive in between are kept in events(). SendFd() hands a
// descriptor to QEMU with `getfd` (SCM_RIGHTS), for `migrate fd:NAME`.
// Every wait has a deadline; a line longer than 16 MiB, invalid JSON or a
// reply of the wrong shape is an error, never a hang or a crash.
//
// Ownership: owns its socket. Thread safety: one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/base/fd.h"
#include "common/base/json.h"
#include "common/base/status.h"

namespace hexz::cli {

class QmpClient {
 public:
  // Connects to the QMP socket `path` and negotiates (qmp_capabilities).
  // `timeout_ms` bounds each wait for QEMU.
  static base::Result<std::unique_ptr<QmpClient>> Connect(const std::string& path,
                                                          int timeout_ms = 30000);

  // QEMU's version from the greeting, "MAJOR.MINOR.MICRO" (e.g. "7.2.0").
  const std::string& qemu_version() const { return version_; }
  const std::string& path() const { return path_; }

  // Runs `command` with `args` (an object, or null for none) and returns its
  // "return" value.
  base::Result<base::JsonValue> Execute(const std::string& command,
                                        const base::JsonValue& args = base::JsonValue());

  // `getfd` with `fd` attached: QEMU keeps a copy of it under `name`.
  base::Status SendFd(const std::string& name, int fd);

  // Waits up to timeout_ms for an event named `name` (one already received
  // counts) and returns it.
  base::Result<base::JsonValue> WaitEvent(const std::string& name, int timeout_ms);

  // The pid of the QEMU at the other end (SO_PEERCRED).
  base::Result<int> PeerPid() const;

  // Events received so far, oldest first.
  const std::vector<base::JsonValue>& events() const { return events_; }

 private:
  QmpClient(base::UniqueFd fd, std::string path, int timeout_ms)
      : fd_(std::move(fd)), path_(std::move(path)), timeout_ms_(timeout_ms) {}
  base::Status Send(const std::string& line, int fd_to_pass);
  // The next JSON object from QEMU (waiting at most timeout_ms).
  base::Result<base::JsonValue> ReadMessage(int timeout_ms);
  // Reads messages until the reply to the last command; events are kept.
  base::Result<base::JsonValue> ReadReply(const std::string& command);

  base::UniqueFd fd_;
  std::string path_;
  int timeout_ms_;
  std::string version_;
  std::string buffer_;  // bytes received and not yet parsed
  std::vector<base::JsonValue> events_;
};

// Waits until the migration of the QEMU behind `qmp` leaves its active
// states (query-migrate); an error naming QEMU's error-desc unless it
// completed, or once it has made no progress for 60 s (a large guest may
// take minutes). Progress is a change of state, of the bytes QEMU reports
// as sent, or of `progress()` (e.g. the bytes fed to an incoming QEMU).
// With `incoming` (a QEMU started with -incoming), a migration that has not
// begun yet is waited for.
base::Status WaitForMigration(QmpClient& qmp, bool incoming,
                              const std::function<uint64_t()>& progress = nullptr);

}  // namespace hexz::cli
