// libFuzzer harness for the worker <-> fetcher protocol
// (common/ipc/fetch_protocol.h): the fetcher's request parser, with the
// input's first bytes as a request, and the worker's reply parsing, with the
// whole input as the byte stream a (compromised) fetcher sends back to
// FetchClient::Read over a real socketpair (with kFetchFresh, the flag of a
// read past the disk cache, when the input's first byte is odd).
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/base/fd.h"
#include "common/ipc/fetch_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hexz::ipc;
  if (size >= kFetchRequestSize) {
    (void)DecodeFetchRequest(data, {0, 1, 4096, UINT64_MAX});
  }
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
  std::vector<hexz::base::UniqueFd> channels;
  channels.emplace_back(sv[1]);
  FetchClient client(std::move(channels), 1);
  std::vector<uint8_t> out(8192);
  const uint32_t flags = size > 0 && (data[0] & 1) != 0 ? kFetchFresh : 0;
  // Reads of a few lengths; the requests go into sv[0]'s receive buffer.
  for (size_t len : {16u, 4096u, 1u, 8192u}) {
    if (!client.Read(0, "fuzz", out.data(), len, 0, flags).ok()) break;
  }
  close(sv[0]);
  return 0;
}
