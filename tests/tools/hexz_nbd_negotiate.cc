// hexz_nbd_negotiate: runs the client-side handshake of common/nbd/client.h
// against a server on a unix socket, prints what it learned, then reads the
// first bytes of the export with one simple-reply NBD_CMD_READ (as the kernel
// would) and writes them to a file. Test tool only.
//
//   hexz_nbd_negotiate SOCKET EXPORT OUT_FILE [LENGTH]
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/base/endian.h"
#include "common/io/file.h"
#include "common/nbd/client.h"
#include "common/nbd/protocol.h"
#include "common/nbd/wire.h"

int main(int argc, char** argv) {
  using namespace hexz::nbd;
  if (argc < 4 || argc > 5) {
    std::fprintf(stderr, "usage: hexz_nbd_negotiate SOCKET EXPORT OUT_FILE [LENGTH]\n");
    return 2;
  }
  uint32_t length = argc == 5 ? static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 0)) : 4096;
  hexz::base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  struct sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  if (std::strlen(argv[1]) >= sizeof sa.sun_path) return 2;
  std::strcpy(sa.sun_path, argv[1]);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    std::perror("hexz_nbd_negotiate: connect");
    return 1;
  }
  auto e = NegotiateClient(fd.get(), argv[2]);
  if (!e.ok()) {
    std::fprintf(stderr, "hexz_nbd_negotiate: %s\n", e.status().ToString().c_str());
    return 1;
  }
  std::printf("size=%llu flags=0x%x read_only=%d min=%u preferred=%u max=%u\n",
              static_cast<unsigned long long>(e->size), e->transmission_flags, e->read_only(),
              e->min_block, e->preferred_block, e->max_block);
  Builder req;
  req.U32(kRequestMagic).U16(0).U16(kCmdRead).U64(0x1234).U64(0).U32(length);
  auto deadline = DeadlineIn(10000);
  (void)SetNonBlocking(fd.get());
  hexz::base::Status s = WriteExact(fd.get(), req.data(), deadline);
  uint8_t h[16];
  if (s.ok()) s = ReadExact(fd.get(), h, sizeof h, deadline);
  if (s.ok() && (hexz::base::GetBe32(h) != kSimpleReplyMagic || hexz::base::GetBe32(h + 4) != 0 ||
                 hexz::base::GetBe64(h + 8) != 0x1234)) {
    s = hexz::base::Status::InvalidArgument("unexpected reply to READ");
  }
  std::string data(length, '\0');
  if (s.ok()) s = ReadExact(fd.get(), data.data(), length, deadline);
  Builder disc;
  disc.U32(kRequestMagic).U16(0).U16(kCmdDisc).U64(1).U64(0).U32(0);
  if (s.ok()) s = WriteExact(fd.get(), disc.data(), deadline);
  if (s.ok()) {
    auto out = hexz::io::OpenFile(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    s = out.ok() ? hexz::io::WriteFull(out->get(), data.data(), data.size(), argv[3])
                 : out.status();
  }
  if (!s.ok()) {
    std::fprintf(stderr, "hexz_nbd_negotiate: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
