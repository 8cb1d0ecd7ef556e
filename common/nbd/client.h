// Client side of the NBD handshake, for `hexz mount --nbd`: negotiates an
// export over an already-connected socket (fixed newstyle, NBD_OPT_GO with an
// NBD_INFO_BLOCK_SIZE request; NBD_OPT_EXPORT_NAME when the server lacks GO)
// and leaves the socket at the start of the transmission phase, ready to be
// handed to the kernel (NBD_SET_SOCK). No structured replies are negotiated,
// since the kernel client speaks simple replies only.
//
// Runs unprivileged. Every length from the server is bounded; the whole
// handshake must finish within `timeout_ms`. Thread safety: a free function;
// the caller owns the socket and must not use it concurrently.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/base/status.h"

namespace hexz::nbd {

struct ClientExport {
  uint64_t size = 0;
  uint16_t transmission_flags = 0;  // kTrans* bits
  // Block size constraints (proto.md defaults when the server sent none).
  uint32_t min_block = 1;
  uint32_t preferred_block = 4096;
  uint32_t max_block = 32u << 20;
  bool read_only() const;
};

// `fd` may be blocking or not; its O_NONBLOCK flag is restored on return.
base::Result<ClientExport> NegotiateClient(int fd, std::string_view export_name,
                                           uint32_t timeout_ms = 30 * 1000);

}  // namespace hexz::nbd
