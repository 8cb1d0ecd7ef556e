#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/base/log.h"
#include "common/io/switchable_volume.h"
#include "common/nbd/server.h"
#include "common/overlay/overlay.h"
#include "common/overlay/overlay_stack.h"
#include "common/sandbox/sandbox.h"
#include "hexz-fused/lifeline.h"
#include "hexz-fused/modes.h"
#include "hexz-fused/volumes.h"

namespace hexz::fused {
namespace {

using base::Result;
using base::Status;
using base::UniqueFd;

bool IsListening(int fd) {
  int value = 0;
  socklen_t len = sizeof value;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &len) == 0 && value != 0;
}

// The exports of `volumes` that the config asks for (all when it names none).
Result<std::vector<nbd::Export>> BuildExports(const ipc::WorkerConfig& config,
                                              WorkerVolumes& volumes) {
  auto wanted = [&config](const std::string& name) {
    if (config.nbd_exports.empty()) return true;
    for (const auto& n : config.nbd_exports) {
      if (n == name) return true;
    }
    return false;
  };
  if (!volumes.disk) {
    return Status::InvalidArgument(config.chain_names[0] + ": the snapshot has no disk stream");
  }
  std::vector<nbd::Export> exports;
  if (wanted("disk")) {
    nbd::Export disk{"disk", std::move(volumes.disk), volumes.disk_description,
                     /*fast_zero=*/volumes.writable != nullptr};
    // An overlay disk reads in 4 KiB blocks; one piece per snapshot block.
    if (volumes.writable != nullptr) {
      disk.io_size = std::max<uint32_t>(volumes.snapshot->block_size(), overlay::kBlockSize);
    }
    exports.push_back(std::move(disk));
  }
  if (volumes.memory && wanted("memory")) {
    exports.push_back(
        {"memory", std::move(volumes.memory), "memory of " + config.chain_names[0], false});
  }
  if (exports.empty()) return Status::InvalidArgument("no export to serve");
  return exports;
}

// The TLS credentials, from the bytes the front-end read (null: TLS off).
// Built before the lockdown; the handshakes need no new syscall then (the
// base allowlist has getrandom) and GnuTLS opens nothing.
Result<std::shared_ptr<const nbd::TlsServer>> BuildTls(ipc::WorkerConfig& config) {
  if (config.tls_mode == 0) return std::shared_ptr<const nbd::TlsServer>();
  nbd::TlsConfig tls;
  tls.mode = static_cast<nbd::TlsMode>(config.tls_mode);
  tls.verify_peer = config.tls_verify_peer;
  tls.cert_pem = std::move(config.tls_cert);
  tls.key_pem = std::move(config.tls_key);
  tls.ca_pem = std::move(config.tls_ca);
  tls.psk_text = std::move(config.tls_psk);
  tls.access_text = std::move(config.tls_access);
  auto server = nbd::TlsServer::Create(tls);
  // The secrets stay only in GnuTLS's credentials.
  std::fill(tls.key_pem.begin(), tls.key_pem.end(), '\0');
  std::fill(tls.psk_text.begin(), tls.psk_text.end(), '\0');
  if (!server.ok()) return server.status().WithContext("TLS");
  return std::shared_ptr<const nbd::TlsServer>(std::move(*server));
}

// A control request of the front-end (worker_protocol.h), read from `sock`
// and answered there. `stack` is null when the disk is not read-write.
// Returns an error only when the channel is out of step.
Status HandleControl(int sock, overlay::OverlayStack* stack, uint64_t disk_size, bool ephemeral) {
  HEXZ_ASSIGN_OR_RETURN(ipc::Message m,
                        ipc::Receive(sock, {ipc::kSwitchOverlay, ipc::kFoldOverlay}));
  auto apply = [&]() -> Status {
    HEXZ_ASSIGN_OR_RETURN(ipc::WorkerControl c, ipc::DecodeWorkerControl(std::move(m)));
    if (stack == nullptr) {
      return Status::InvalidArgument("the disk is served read-only: there is no overlay to switch");
    }
    if (c.type == ipc::kFoldOverlay) return stack->FoldTop();
    // The front-end initialized the fresh overlay (as the user): opening it
    // read-write needs no syscall beyond the sandbox's.
    overlay::OverlayOptions options;
    options.durable = !ephemeral;
    format::SnapshotId id;
    id.bytes = c.base_id;
    overlay::OverlayNames names{c.overlay_name, c.overlay_name + ".meta",
                                "the snapshot being captured"};
    HEXZ_ASSIGN_OR_RETURN(
        std::unique_ptr<overlay::Overlay> fresh,
        overlay::Overlay::Open(std::move(c.overlay_data_fd), std::move(c.overlay_meta_fd),
                               std::move(names), id, disk_size, options));
    return stack->Push(std::shared_ptr<overlay::Overlay>(std::move(fresh)));
  };
  Status st = apply();
  if (st.ok()) {
    HEXZ_LOG_INFO("overlay %s (%zu layers)",
                  m.type == ipc::kFoldOverlay ? "folded back" : "switched", stack->depth());
    return ipc::SendWorkerReady(sock, "ok");
  }
  HEXZ_LOG_WARN("control request refused: %s", st.ToString().c_str());
  return ipc::SendWorkerError(sock, st);
}

}  // namespace

Status ServeNbd(ipc::WorkerConfig config, int sock) {
  UniqueFd endpoint = std::move(config.nbd_listen_fd);
  struct stat st;
  if (::fstat(endpoint.get(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return Status::InvalidArgument("the NBD descriptor is not a socket");
  }
  const bool listening = IsListening(endpoint.get());

  HEXZ_ASSIGN_OR_RETURN(WorkerVolumes volumes, OpenWorkerVolumes(config));
  // The exports share the overlay volume; the flush below reaches it
  // through `writable` once the server is gone.
  std::shared_ptr<io::Volume> writable;
  HEXZ_ASSIGN_OR_RETURN(std::vector<nbd::Export> exports, BuildExports(config, volumes));
  // A read-write disk is served through a switchable volume, so that
  // `hexz vm snapshot --continue` can move its writes to a fresh overlay.
  std::unique_ptr<overlay::OverlayStack> stack;
  for (nbd::Export& e : exports) {
    if (e.volume.get() != volumes.writable || volumes.writable == nullptr) continue;
    auto top = std::static_pointer_cast<overlay::OverlayVolume>(e.volume);
    auto served = std::make_shared<io::SwitchableVolume>(top);
    stack = std::make_unique<overlay::OverlayStack>(served, top);
    e.volume = served;
    writable = served;
  }
  const uint64_t disk_size = writable ? writable->Size() : 0;
  const bool ephemeral = config.overlay_ephemeral;
  nbd::ServerOptions options;
  HEXZ_ASSIGN_OR_RETURN(options.tls, BuildTls(config));
  auto server = std::make_unique<nbd::Server>(std::move(exports), options);

  // Stops the server on a signal or, in the foreground, when the front-end
  // goes away (its end of the channel closes, even after SIGKILL).
  HEXZ_ASSIGN_OR_RETURN(
      std::unique_ptr<Lifeline> lifeline,
      Lifeline::Start(
          sock, /*watch_frontend=*/!config.daemon,
          /*catch_signals=*/true,
          [&server](Lifeline::Cause cause) {
            if (cause == Lifeline::Cause::kSignal) {
              HEXZ_LOG_INFO("signal received; shutting down");
            } else {
              HEXZ_LOG_WARN("the front-end went away; shutting down");
            }
            server->Shutdown();
          },
          [&](int channel) { return HandleControl(channel, stack.get(), disk_size, ephemeral); }));

  sandbox::Policy policy;
  // On top of the base allowlist (which has poll, send/recv, shutdown):
  // accepting clients. Everything else the server needs was set up above.
  policy.extra_syscalls = {"accept4"};
  // A writable overlay compacts its log: it punches out the dead space
  // (fallocate) and cuts the old tail (ftruncate), on the files it holds.
  if (config.read_write) {
    for (const char* call : {"ftruncate", "fallocate"}) policy.extra_syscalls.push_back(call);
  }
  policy.max_open_files = 256;
  HEXZ_RETURN_IF_ERROR(sandbox::LockDown(policy));
  HEXZ_LOG_DEBUG("sandbox active (seccomp %s)", sandbox::DebugBuild() ? "trap" : "kill");

  HEXZ_LOG_INFO("serving %s over NBD (%s%s)", config.chain_names[0].c_str(),
                listening ? "listening socket" : "connected socket",
                options.tls == nullptr                          ? ""
                : options.tls->mode() == nbd::TlsMode::kRequire ? ", TLS required"
                                                                : ", TLS offered");
  if (Status s = ipc::SendWorkerReady(sock, "pid " + std::to_string(getpid())); !s.ok()) {
    HEXZ_LOG_WARN("could not report ready: %s", s.ToString().c_str());
  }

  Status served;
  if (listening) {
    // ServeListener also watches the signal pipe; Shutdown() wakes it otherwise.
    served = server->ServeListener(endpoint.get(), lifeline->signal_fd());
  } else {
    served = server->ServeConnection(std::move(endpoint));
    if (!served.ok()) HEXZ_LOG_WARN("NBD connection ended: %s", served.ToString().c_str());
    served = Status::Ok();  // the client's end is the end of this server
  }
  lifeline->Stop();
  server.reset();
  Status flushed = Status::Ok();
  if (writable) {
    flushed = writable->Flush();
    if (!flushed.ok()) HEXZ_LOG_ERROR("flushing the overlay: %s", flushed.ToString().c_str());
    writable.reset();
  }
  if (!served.ok()) HEXZ_LOG_ERROR("%s", served.ToString().c_str());
  HEXZ_LOG_INFO("NBD server stopped");
  std::fflush(nullptr);
  _exit(served.ok() && flushed.ok() ? 0 : 1);
}

}  // namespace hexz::fused
