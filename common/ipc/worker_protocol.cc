#include "common/ipc/worker_protocol.h"

#include "common/ipc/fetch_protocol.h"

namespace hexz::ipc {

namespace {

Status Check(bool ok, const std::string& what) {
  return ok ? Status::Ok() : Status::Corruption("ipc: worker config: " + what);
}

}  // namespace

Status SendWorkerConfig(int sock, const WorkerConfig& c) {
  Encoder e;
  e.U32(kWorkerProtocolVersion);
  e.U32(static_cast<uint32_t>(c.mode));
  e.Str(c.mountpoint);
  e.U32(c.uid);
  e.U32(c.gid);
  e.Bool(c.read_write);
  e.Bool(c.daemon);
  e.Bool(c.allow_root);
  e.Bool(c.allow_other);
  e.Bool(c.auto_unmount);
  e.U32(c.log_level);
  e.U64(c.cache_size);
  e.U32(c.read_threads);
  e.U32(static_cast<uint32_t>(c.chain_names.size()));
  for (const auto& n : c.chain_names) e.Str(n);
  e.U32(static_cast<uint32_t>(c.nbd_exports.size()));
  for (const auto& n : c.nbd_exports) e.Str(n);
  e.Str(c.overlay_name);
  e.Bool(c.overlay_ephemeral);
  e.Bool(c.partitions);
  e.U32(c.tls_mode);
  e.Bool(c.tls_verify_peer);
  for (const std::string* t : {&c.tls_cert, &c.tls_key, &c.tls_ca, &c.tls_psk, &c.tls_access}) {
    e.Str(*t);
  }
  e.U32(static_cast<uint32_t>(c.chain_sizes.size()));
  for (uint64_t size : c.chain_sizes) e.U64(size);
  e.U32(c.fetch_timeout);

  std::vector<int> fds;
  std::vector<FdRole> roles;
  for (const auto& fd : c.chain_fds) {
    fds.push_back(fd.get());
    roles.push_back(FdRole::kChain);
  }
  for (const auto& fd : c.fetcher_fds) {
    fds.push_back(fd.get());
    roles.push_back(FdRole::kFetcher);
  }
  if (c.overlay_data_fd) {
    fds.push_back(c.overlay_data_fd.get());
    roles.push_back(FdRole::kOverlayData);
  }
  if (c.overlay_meta_fd) {
    fds.push_back(c.overlay_meta_fd.get());
    roles.push_back(FdRole::kOverlayMeta);
  }
  if (c.nbd_listen_fd) {
    fds.push_back(c.nbd_listen_fd.get());
    roles.push_back(FdRole::kNbdListen);
  }
  e.U32(static_cast<uint32_t>(roles.size()));
  for (FdRole r : roles) e.U32(static_cast<uint32_t>(r));
  return Send(sock, kWorkerConfig, e.bytes(), fds);
}

Result<WorkerConfig> DecodeWorkerConfig(Message m) {
  HEXZ_RETURN_IF_ERROR(Check(m.type == kWorkerConfig, "not a config message"));
  Decoder d(m.payload);
  WorkerConfig c;
  HEXZ_ASSIGN_OR_RETURN(uint32_t version, d.U32());
  if (version != kWorkerProtocolVersion) {
    return Status::Unsupported("ipc: worker protocol version " + std::to_string(version) +
                               " (this hexz-fused speaks " +
                               std::to_string(kWorkerProtocolVersion) +
                               "; hexz and hexz-fused come from different builds)");
  }
  HEXZ_ASSIGN_OR_RETURN(uint32_t mode, d.U32());
  HEXZ_RETURN_IF_ERROR(Check(mode <= 1, "unknown mode " + std::to_string(mode)));
  c.mode = static_cast<WorkerMode>(mode);
  HEXZ_ASSIGN_OR_RETURN(c.mountpoint, d.Str(kMaxPathLength));
  HEXZ_ASSIGN_OR_RETURN(c.uid, d.U32());
  HEXZ_ASSIGN_OR_RETURN(c.gid, d.U32());
  HEXZ_ASSIGN_OR_RETURN(c.read_write, d.Bool());
  HEXZ_ASSIGN_OR_RETURN(c.daemon, d.Bool());
  HEXZ_ASSIGN_OR_RETURN(c.allow_root, d.Bool());
  HEXZ_ASSIGN_OR_RETURN(c.allow_other, d.Bool());
  HEXZ_ASSIGN_OR_RETURN(c.auto_unmount, d.Bool());
  HEXZ_ASSIGN_OR_RETURN(c.log_level, d.U32());
  HEXZ_RETURN_IF_ERROR(Check(c.log_level <= 3, "bad log level"));
  HEXZ_ASSIGN_OR_RETURN(c.cache_size, d.U64());
  HEXZ_ASSIGN_OR_RETURN(c.read_threads, d.U32());
  HEXZ_RETURN_IF_ERROR(
      Check(c.read_threads >= 1 && c.read_threads <= 64, "read_threads must be 1..64"));
  HEXZ_ASSIGN_OR_RETURN(uint32_t names, d.U32());
  HEXZ_RETURN_IF_ERROR(Check(names >= 1 && names <= kMaxChainLength, "bad chain length"));
  for (uint32_t i = 0; i < names; ++i) {
    HEXZ_ASSIGN_OR_RETURN(std::string n, d.Str(kMaxPathLength));
    c.chain_names.push_back(std::move(n));
  }
  HEXZ_ASSIGN_OR_RETURN(uint32_t exports, d.U32());
  HEXZ_RETURN_IF_ERROR(Check(exports <= 16, "too many exports"));
  for (uint32_t i = 0; i < exports; ++i) {
    HEXZ_ASSIGN_OR_RETURN(std::string n, d.Str(256));
    c.nbd_exports.push_back(std::move(n));
  }
  HEXZ_ASSIGN_OR_RETURN(c.overlay_name, d.Str(kMaxPathLength));
  HEXZ_ASSIGN_OR_RETURN(c.overlay_ephemeral, d.Bool());
  HEXZ_ASSIGN_OR_RETURN(c.partitions, d.Bool());
  HEXZ_ASSIGN_OR_RETURN(c.tls_mode, d.U32());
  HEXZ_RETURN_IF_ERROR(Check(c.tls_mode <= 2, "unknown TLS mode " + std::to_string(c.tls_mode)));
  HEXZ_ASSIGN_OR_RETURN(c.tls_verify_peer, d.Bool());
  for (std::string* t : {&c.tls_cert, &c.tls_key, &c.tls_ca, &c.tls_psk, &c.tls_access}) {
    HEXZ_ASSIGN_OR_RETURN(*t, d.Str(kMaxTlsBlob));
  }
  HEXZ_ASSIGN_OR_RETURN(uint32_t sizes, d.U32());
  HEXZ_RETURN_IF_ERROR(Check(sizes <= kMaxChainLength, "bad chain size count"));
  for (uint32_t i = 0; i < sizes; ++i) {
    HEXZ_ASSIGN_OR_RETURN(uint64_t size, d.U64());
    c.chain_sizes.push_back(size);
  }
  HEXZ_ASSIGN_OR_RETURN(c.fetch_timeout, d.U32());
  HEXZ_ASSIGN_OR_RETURN(uint32_t role_count, d.U32());
  HEXZ_RETURN_IF_ERROR(Check(role_count == m.fds.size(), "announces " + std::to_string(role_count) +
                                                             " descriptors, got " +
                                                             std::to_string(m.fds.size())));
  for (uint32_t i = 0; i < role_count; ++i) {
    HEXZ_ASSIGN_OR_RETURN(uint32_t role, d.U32());
    UniqueFd fd = std::move(m.fds[i]);
    switch (static_cast<FdRole>(role)) {
      case FdRole::kChain:
        c.chain_fds.push_back(std::move(fd));
        break;
      case FdRole::kFetcher:
        c.fetcher_fds.push_back(std::move(fd));
        break;
      case FdRole::kOverlayData:
        HEXZ_RETURN_IF_ERROR(Check(!c.overlay_data_fd, "two overlay data descriptors"));
        c.overlay_data_fd = std::move(fd);
        break;
      case FdRole::kOverlayMeta:
        HEXZ_RETURN_IF_ERROR(Check(!c.overlay_meta_fd, "two overlay meta descriptors"));
        c.overlay_meta_fd = std::move(fd);
        break;
      case FdRole::kNbdListen:
        HEXZ_RETURN_IF_ERROR(Check(!c.nbd_listen_fd, "two listening sockets"));
        c.nbd_listen_fd = std::move(fd);
        break;
      default:
        return Status::Corruption("ipc: worker config: unknown descriptor role " +
                                  std::to_string(role));
    }
  }
  HEXZ_RETURN_IF_ERROR(d.Finish());
  if (c.fetcher_fds.empty()) {
    HEXZ_RETURN_IF_ERROR(Check(c.chain_fds.size() == c.chain_names.size(),
                               "chain names and descriptors differ in number"));
    HEXZ_RETURN_IF_ERROR(Check(c.chain_sizes.empty(), "chain sizes without a fetcher"));
  } else {
    HEXZ_RETURN_IF_ERROR(Check(c.chain_fds.empty(), "both chain descriptors and a fetcher"));
    HEXZ_RETURN_IF_ERROR(
        Check(c.fetcher_fds.size() <= kMaxFetchChannels, "too many fetcher channels"));
    HEXZ_RETURN_IF_ERROR(Check(c.chain_sizes.size() == c.chain_names.size(),
                               "chain names and sizes differ in number"));
    HEXZ_RETURN_IF_ERROR(
        Check(c.fetch_timeout >= 1 && c.fetch_timeout <= 86400, "bad fetch timeout"));
  }
  HEXZ_RETURN_IF_ERROR(Check(c.read_write == static_cast<bool>(c.overlay_data_fd) &&
                                 c.read_write == static_cast<bool>(c.overlay_meta_fd),
                             "overlay descriptors do not match the rw flag"));
  HEXZ_RETURN_IF_ERROR(Check(c.read_write || (c.overlay_name.empty() && !c.overlay_ephemeral),
                             "overlay settings without the rw flag"));
  HEXZ_RETURN_IF_ERROR(
      Check((c.mode == WorkerMode::kNbdServe) == static_cast<bool>(c.nbd_listen_fd),
            "listening socket does not match the mode"));
  HEXZ_RETURN_IF_ERROR(
      Check(c.mode == WorkerMode::kFuse || !c.partitions, "partition files outside FUSE mode"));
  const bool tls_input = !c.tls_cert.empty() || !c.tls_key.empty() || !c.tls_ca.empty() ||
                         !c.tls_psk.empty() || !c.tls_access.empty() || c.tls_verify_peer;
  HEXZ_RETURN_IF_ERROR(Check(c.tls_mode != 0 || !tls_input, "TLS settings with TLS off"));
  HEXZ_RETURN_IF_ERROR(
      Check(c.tls_mode == 0 || c.mode == WorkerMode::kNbdServe, "TLS outside serve mode"));
  if (c.mode == WorkerMode::kFuse) {
    HEXZ_RETURN_IF_ERROR(Check(!c.mountpoint.empty() && c.mountpoint[0] == '/',
                               "mountpoint must be an absolute path"));
  }
  return c;
}

Status SendWorkerControl(int sock, const WorkerControl& c) {
  Encoder e;
  if (c.type == kFoldOverlay) return Send(sock, kFoldOverlay, e.bytes());
  if (c.type != kSwitchOverlay) return Status::Internal("ipc: not a control request");
  e.Str(c.overlay_name);
  for (uint8_t b : c.base_id) e.U8(b);
  return Send(sock, kSwitchOverlay, e.bytes(), {c.overlay_data_fd.get(), c.overlay_meta_fd.get()});
}

Result<WorkerControl> DecodeWorkerControl(Message m) {
  WorkerControl c;
  Decoder d(m.payload);
  if (m.type == kFoldOverlay) {
    c.type = kFoldOverlay;
    HEXZ_RETURN_IF_ERROR(Check(m.fds.empty(), "a fold request carries no descriptor"));
    HEXZ_RETURN_IF_ERROR(d.Finish());
    return c;
  }
  HEXZ_RETURN_IF_ERROR(Check(m.type == kSwitchOverlay, "not a control request"));
  c.type = kSwitchOverlay;
  HEXZ_ASSIGN_OR_RETURN(c.overlay_name, d.Str(kMaxPathLength));
  HEXZ_RETURN_IF_ERROR(
      Check(!c.overlay_name.empty(), "a switch request without the overlay's name"));
  for (uint8_t& b : c.base_id) {
    HEXZ_ASSIGN_OR_RETURN(b, d.U8());
  }
  HEXZ_RETURN_IF_ERROR(d.Finish());
  HEXZ_RETURN_IF_ERROR(Check(m.fds.size() == 2, "a switch request carries " +
                                                    std::to_string(m.fds.size()) +
                                                    " descriptors, not the overlay's two"));
  c.overlay_data_fd = std::move(m.fds[0]);
  c.overlay_meta_fd = std::move(m.fds[1]);
  return c;
}

Status SendWorkerReady(int sock, const std::string& detail) {
  Encoder e;
  e.Str(detail.substr(0, 1024));
  return Send(sock, kWorkerReady, e.bytes());
}

Status SendWorkerError(int sock, const Status& status) {
  Encoder e;
  e.U32(static_cast<uint32_t>(status.code()));
  e.U32(static_cast<uint32_t>(status.sys_errno()));
  e.Str(status.message().substr(0, 4096));
  return Send(sock, kWorkerError, e.bytes());
}

Result<std::string> ReceiveWorkerReply(int sock) {
  auto m = Receive(sock, {kWorkerReady, kWorkerError});
  if (!m.ok()) {
    if (m.status().code() == base::Code::kNotFound) {
      return Status::Internal("hexz-fused exited without reporting (see its log or stderr)");
    }
    return m.status();
  }
  Decoder d(m->payload);
  if (m->type == kWorkerReady) {
    HEXZ_ASSIGN_OR_RETURN(std::string detail, d.Str(1024));
    HEXZ_RETURN_IF_ERROR(d.Finish());
    return detail;
  }
  HEXZ_ASSIGN_OR_RETURN(uint32_t code, d.U32());
  HEXZ_ASSIGN_OR_RETURN(uint32_t err, d.U32());
  HEXZ_ASSIGN_OR_RETURN(std::string message, d.Str(4096));
  HEXZ_RETURN_IF_ERROR(d.Finish());
  if (code == 0 || code > static_cast<uint32_t>(base::Code::kInternal)) {
    code = static_cast<uint32_t>(base::Code::kInternal);
  }
  return Status(static_cast<base::Code>(code), message, static_cast<int>(err));
}

}  // namespace hexz::ipc
