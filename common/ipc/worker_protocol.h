// The conversation between `hexz` (front-end) and `hexz-fused` (worker).
//
//   front-end -> worker : kWorkerConfig   (settings + every descriptor it needs)
//   worker -> front-end : kWorkerReady    (the mount/export is usable)
//                       | kWorkerError    (code, errno and the exact message)
//
// Then, for a read-write NBD server only (hexz vm resume's, for
// `hexz vm snapshot --continue`), any number of control requests, each
// answered with kWorkerReady or kWorkerError:
//   front-end -> worker : kSwitchOverlay  (a fresh overlay's two descriptors
//                                          and the id of the snapshot it will
//                                          be a child of: freeze the current
//                                          overlay and write to the fresh one)
//                       | kFoldOverlay    (undo the last switch: fold the
//                                          fresh overlay back into the frozen)
//
// The worker opens nothing by path after start-up: the snapshot chain (or,
// for a remote chain, the channels to its fetcher, common/ipc/fetch_protocol.h),
// the overlay files, the NBD listening socket and the log all arrive as
// descriptors, each tagged with its role in WorkerConfig::fd_roles (in the
// order of the SCM_RIGHTS array). Decode checks every field, every limit and
// that the roles match what the flags announce.
//
// Thread safety: plain values.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/ipc/channel.h"

namespace hexz::ipc {

enum MessageType : uint32_t {
  kWorkerConfig = 1,
  kWorkerReady = 2,
  kWorkerError = 3,
  kSwitchOverlay = 4,
  kFoldOverlay = 5,
};

enum class WorkerMode : uint32_t { kFuse = 0, kNbdServe = 1 };

enum class FdRole : uint32_t {
  kChain = 0,        // one per snapshot in the chain, child first
  kOverlayData = 1,  // --rw overlay data file
  kOverlayMeta = 2,  // --rw overlay .meta file
  kNbdListen = 3,    // serve mode: the listening socket
  kFetcher = 4,      // a remote chain: one per channel to the fetcher
};

inline constexpr uint32_t kWorkerProtocolVersion = 4;
inline constexpr uint32_t kMaxChainLength = 32;
inline constexpr uint32_t kMaxPathLength = 4096;
inline constexpr uint32_t kMaxTlsBlob = 16 * 1024;  // each TLS input (nbd::kMaxTlsInput)

struct WorkerConfig {
  WorkerMode mode = WorkerMode::kFuse;
  std::string mountpoint;  // absolute path (FUSE mode)
  uint32_t uid = 0;        // owner shown for the files
  uint32_t gid = 0;
  bool read_write = false;               // needs overlay fds
  bool daemon = false;                   // detach; stderr is already the log file
  bool allow_root = false;               // mount option allow_root
  bool allow_other = false;              // mount option allow_other
  bool auto_unmount = false;             // mount option auto_unmount
  uint32_t log_level = 1;                // base::LogLevel
  uint64_t cache_size = 0;               // bytes; 0 = no shared cache
  uint32_t read_threads = 4;             // parallel block reads per large request
  std::vector<std::string> chain_names;  // names of the chain fds, for messages
  std::vector<std::string> nbd_exports;  // serve mode export names
  // With read_write: the overlay's name for messages (its path, or
  // "(ephemeral overlay)"), and whether it is ephemeral (no fdatasync).
  std::string overlay_name;
  bool overlay_ephemeral = false;
  // FUSE mode: also show each partition of the disk as a file (disk-pN),
  // from the partition table the worker reads, sandboxed, once mounted.
  bool partitions = false;
  // Serve mode TLS: nbd::TlsMode as a number (0 off, 1 on, 2 require) and
  // the contents of the files the front-end read as the user (PEM
  // certificate chain, key and CA; psktool keys; the access file), so that
  // the worker opens no path. Certificates or keys, never both.
  uint32_t tls_mode = 0;
  bool tls_verify_peer = false;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_ca;
  std::string tls_psk;
  std::string tls_access;
  // A remote chain (hexz/fetcher.h): instead of chain_fds, the size of each
  // file as the fetcher found it, the bound of one answer, and the channels.
  std::vector<uint64_t> chain_sizes;
  uint32_t fetch_timeout = 0;       // seconds
  std::vector<UniqueFd> chain_fds;  // filled from the message's descriptors
  std::vector<UniqueFd> fetcher_fds;
  UniqueFd overlay_data_fd;
  UniqueFd overlay_meta_fd;
  UniqueFd nbd_listen_fd;
};

// Sends `config` with its descriptors (which stay owned by the caller).
Status SendWorkerConfig(int sock, const WorkerConfig& config);
// Parses a kWorkerConfig message, taking its descriptors.
Result<WorkerConfig> DecodeWorkerConfig(Message message);

Status SendWorkerReady(int sock, const std::string& detail);
Status SendWorkerError(int sock, const Status& status);

// Waits for kWorkerReady (returns its detail) or kWorkerError (returns the
// worker's Status as is).
Result<std::string> ReceiveWorkerReply(int sock);

// A control request after kWorkerReady (see the top).
struct WorkerControl {
  MessageType type = kFoldOverlay;
  // kSwitchOverlay only: the fresh overlay (initialized by the front-end, as
  // the user, for `base_id` and the disk's size), its name for messages.
  std::string overlay_name;
  std::array<uint8_t, 16> base_id{};
  UniqueFd overlay_data_fd;
  UniqueFd overlay_meta_fd;
};

// Sends a control request with its descriptors (which stay the caller's).
Status SendWorkerControl(int sock, const WorkerControl& control);
// Parses kSwitchOverlay or kFoldOverlay, taking the descriptors; checks that
// a switch carries exactly its two descriptors and a name, and a fold nothing.
Result<WorkerControl> DecodeWorkerControl(Message message);

}  // namespace hexz::ipc
