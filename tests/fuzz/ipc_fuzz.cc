// libFuzzer harness for what hexz-fused parses from its channel: the message
// framing (Receive over a real socketpair) and the worker config payload
// (DecodeWorkerConfig), the control requests (DecodeWorkerControl), plus the worker's reply parsing
// on the front-end side.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/ipc/channel.h"
#include "common/ipc/worker_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hexz::ipc;
  // The payload alone, as a config.
  {
    Message m;
    m.type = kWorkerConfig;
    m.payload.assign(data, data + size);
    (void)DecodeWorkerConfig(std::move(m));
  }
  // The payload as each control request.
  for (uint32_t type : {kSwitchOverlay, kFoldOverlay}) {
    Message m;
    m.type = type;
    m.payload.assign(data, data + size);
    (void)DecodeWorkerControl(std::move(m));
  }
  // The whole byte stream through the framing layer.
  if (size > 200000) return 0;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  int buf = static_cast<int>(size) + 4096;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  size_t off = 0;
  while (off < size) {
    ssize_t n = send(sv[0], data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  shutdown(sv[0], SHUT_WR);
  for (int i = 0; i < 4; ++i) {
    auto m =
        Receive(sv[1], {kWorkerConfig, kWorkerReady, kWorkerError, kSwitchOverlay, kFoldOverlay});
    if (!m.ok()) break;
    if (m->type == kWorkerConfig) {
      (void)DecodeWorkerConfig(std::move(*m));
    } else if (m->type == kSwitchOverlay || m->type == kFoldOverlay) {
      (void)DecodeWorkerControl(std::move(*m));
    }
  }
  close(sv[0]);
  close(sv[1]);
  return 0;
}
