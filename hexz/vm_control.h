// The control socket of `hexz vm resume`, through which `hexz vm snapshot
// --continue` switches the resumed guest's disk to a fresh overlay at the
// pause, so that the disk is written into the snapshot after the guest runs
// again:
//
//   snapshot -> resume : kVmSwitch   (the output's path and id): the overlay
//                        O is renamed to O.frozen-XXXXXX beside it, a fresh O
//                        whose base is the output is created and the disk
//                        server switched to it; the answer names the frozen
//                        overlay (kWorkerReady's detail), or the error
//                      | kVmCaptured (the output is written): disk.json names
//                        the output and O; the frozen files are removed
//                      | kVmFailed   (the capture failed): the server folds O
//                        back into the frozen overlay, which becomes O again
//   resume -> snapshot : kWorkerReady | kWorkerError, for each request
//
// A connection that ends after a switch without kVmCaptured counts as
// kVmFailed: nothing the guest wrote is lost either way. The socket,
// PrivateRuntimeDir()/resume-XXXXXX/control (0600 in a 0700 directory),
// takes connections only from peers of our own uid (SO_PEERCRED); others
// get an error naming both uids. The messages use ipc/channel.h's framing.
//
// Ownership: the server owns its listening socket and its thread; the
// handlers run on that thread, one request at a time. Thread safety: Start
// and the destructor from one thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/format/snapshot.h"

namespace hexz::cli {

inline constexpr uint32_t kVmSwitch = 101;
inline constexpr uint32_t kVmCaptured = 102;
inline constexpr uint32_t kVmFailed = 103;

// "DIR/control" for the NBD socket DIR/nbd.sock of a vm resume.
std::string ControlSocketFor(const std::string& nbd_socket);

class VmControlClient {
 public:
  static base::Result<std::unique_ptr<VmControlClient>> Connect(const std::string& path);
  // Returns the frozen overlay's path.
  base::Result<std::string> Switch(const std::string& output, const format::SnapshotId& id);
  base::Status Captured();
  base::Status Failed();

 private:
  base::Status Request(uint32_t type, const std::vector<uint8_t>& payload, std::string* detail);
  std::string path_;
  base::UniqueFd fd_;
};

struct VmControlHandlers {
  // Returns the frozen overlay's path.
  std::function<base::Result<std::string>(const std::string& output, const format::SnapshotId&)>
      on_switch;
  std::function<base::Status()> on_captured;
  std::function<base::Status()> on_failed;
};

class VmControlServer {
 public:
  static base::Result<std::unique_ptr<VmControlServer>> Start(const std::string& path,
                                                              VmControlHandlers handlers);
  ~VmControlServer();

 private:
  VmControlServer() = default;
  void Run();
  void Serve(int conn);

  std::string path_;
  base::UniqueFd listen_, quit_read_, quit_write_;
  VmControlHandlers handlers_;
  std::thread thread_;
};

}  // namespace hexz::cli
