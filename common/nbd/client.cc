#include "common/nbd/client.h"

#include <fcntl.h>

#include <cerrno>
#include <string>

#include "common/base/endian.h"
#include "common/nbd/protocol.h"
#include "common/nbd/wire.h"

namespace hexz::nbd {

using base::Result;
using base::Status;

bool ClientExport::read_only() const { return transmission_flags & kTransReadOnly; }

namespace {

constexpr uint32_t kMaxReplyLength = 64 * 1024;
constexpr unsigned kMaxReplies = 64;

Status Protocol(const std::string& what) {
  return Status::InvalidArgument("nbd handshake: " + what);
}

// Restores a descriptor's file status flags when it goes out of scope.
class FlagRestorer {
 public:
  explicit FlagRestorer(int fd) : fd_(fd), flags_(::fcntl(fd, F_GETFL)) {}
  ~FlagRestorer() {
    if (flags_ >= 0) ::fcntl(fd_, F_SETFL, flags_);
  }

 private:
  int fd_;
  int flags_;
};

Result<ClientExport> ExportName(int fd, std::string_view name, bool no_zeroes,
                                Clock::time_point deadline) {
  Builder b;
  b.U64(kIHaveOpt).U32(kOptExportName).U32(static_cast<uint32_t>(name.size())).Bytes(name);
  HEXZ_RETURN_IF_ERROR(WriteExact(fd, b.data(), deadline));
  uint8_t r[10];
  Status s = ReadExact(fd, r, sizeof r, deadline);
  if (!s.ok())
    return Protocol("server closed the connection: no export '" + std::string(name) + "'");
  ClientExport e;
  e.size = base::GetBe64(r);
  e.transmission_flags = base::GetBe16(r + 8);
  if (!no_zeroes) HEXZ_RETURN_IF_ERROR(Discard(fd, 124, deadline));
  return e;
}

}  // namespace

Result<ClientExport> NegotiateClient(int fd, std::string_view export_name, uint32_t timeout_ms) {
  if (export_name.size() > kMaxStringLength) return Protocol("export name too long");
  FlagRestorer restore(fd);
  HEXZ_RETURN_IF_ERROR(SetNonBlocking(fd));
  auto deadline = DeadlineIn(timeout_ms);

  uint8_t hello[18];
  HEXZ_RETURN_IF_ERROR(ReadExact(fd, hello, sizeof hello, deadline));
  if (base::GetBe64(hello) != kNbdMagic) return Protocol("not an NBD server (bad magic)");
  if (base::GetBe64(hello + 8) != kIHaveOpt) return Protocol("server does not speak newstyle");
  uint16_t hflags = base::GetBe16(hello + 16);
  if (!(hflags & kFlagFixedNewstyle)) return Protocol("server does not speak fixed newstyle");
  const bool no_zeroes = hflags & kFlagNoZeroes;
  uint32_t cflags = kClientFlagFixedNewstyle | (no_zeroes ? kClientFlagNoZeroes : 0);
  uint8_t cf[4];
  base::PutBe32(cf, cflags);
  HEXZ_RETURN_IF_ERROR(WriteExact(fd, cf, sizeof cf, deadline));

  Builder go;
  go.U32(static_cast<uint32_t>(export_name.size())).Bytes(export_name).U16(1).U16(kInfoBlockSize);
  Builder msg;
  msg.U64(kIHaveOpt).U32(kOptGo).U32(static_cast<uint32_t>(go.size())).Bytes(go.data());
  HEXZ_RETURN_IF_ERROR(WriteExact(fd, msg.data(), deadline));

  ClientExport e;
  bool have_export = false;
  for (unsigned n = 0; n < kMaxReplies; ++n) {
    uint8_t h[20];
    HEXZ_RETURN_IF_ERROR(ReadExact(fd, h, sizeof h, deadline));
    if (base::GetBe64(h) != kOptReplyMagic) return Protocol("bad option reply magic");
    if (base::GetBe32(h + 8) != kOptGo) return Protocol("reply to an option we did not send");
    uint32_t type = base::GetBe32(h + 12);
    uint32_t len = base::GetBe32(h + 16);
    if (len > kMaxReplyLength) return Protocol("option reply too long");
    std::string data(len, '\0');
    HEXZ_RETURN_IF_ERROR(ReadExact(fd, data.data(), len, deadline));
    const auto* p = reinterpret_cast<const uint8_t*>(data.data());
    if (type == kRepAck) {
      if (!have_export) return Protocol("server accepted GO without NBD_INFO_EXPORT");
      return e;
    }
    if (type == kRepInfo) {
      if (len < 2) return Protocol("short NBD_REP_INFO");
      uint16_t info = base::GetBe16(p);
      if (info == kInfoExport) {
        if (len != 12) return Protocol("bad NBD_INFO_EXPORT length");
        e.size = base::GetBe64(p + 2);
        e.transmission_flags = base::GetBe16(p + 10);
        have_export = true;
      } else if (info == kInfoBlockSize) {
        if (len != 14) return Protocol("bad NBD_INFO_BLOCK_SIZE length");
        uint32_t mn = base::GetBe32(p + 2), pref = base::GetBe32(p + 6), mx = base::GetBe32(p + 10);
        auto pow2 = [](uint32_t v) { return v != 0 && (v & (v - 1)) == 0; };
        if (!pow2(mn) || mn > 65536 || !pow2(pref) || pref < mn || mx < mn) {
          return Protocol("server sent invalid block sizes");
        }
        e.min_block = mn;
        e.preferred_block = pref;
        e.max_block = mx;
      }
      continue;  // other information is ignored, as proto.md requires
    }
    if (type & kRepFlagError) {
      if (type == kRepErrUnsup) return ExportName(fd, export_name, no_zeroes, deadline);
      std::string why = data.empty() ? "error " + std::to_string(type & ~kRepFlagError) : data;
      // Say goodbye politely; the caller closes the socket.
      Builder abort;
      abort.U64(kIHaveOpt).U32(kOptAbort).U32(0);
      (void)WriteExact(fd, abort.data(), DeadlineIn(1000));
      if (type == kRepErrUnknown) {
        return Status::NotFound("nbd: no export '" + std::string(export_name) + "': " + why);
      }
      return Protocol("server refused export '" + std::string(export_name) + "': " + why);
    }
    return Protocol("unexpected option reply type " + std::to_string(type));
  }
  return Protocol("too many option replies");
}

}  // namespace hexz::nbd
