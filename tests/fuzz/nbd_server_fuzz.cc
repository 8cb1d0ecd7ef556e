// libFuzzer harness for the NBD server: the input is everything a client
// sends (handshake, options, requests, payloads), fed through a socketpair to
// Server::ServeConnection; the server's output is drained and discarded. Any
// crash, sanitizer report, leak or hang is a bug.
//
// The first input byte picks the server's TLS setting (low two bits: none,
// TLS on, TLS required, TLS required with an access file), so the option
// phase is fuzzed with NBD_REP_ERR_TLS_REQD and STARTTLS in play: after a
// STARTTLS the rest of the input is the "ClientHello" the server's GnuTLS
// handshake reads, and a handshake the input never completes must end
// cleanly at end of input or at the handshake deadline.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/nbd/server.h"
#include "common/nbd/wire.h"

namespace {

using hexz::base::Status;

class FuzzVolume : public hexz::io::Volume {
 public:
  FuzzVolume() : data_(1u << 20, 0) { std::memset(data_.data(), 0x33, data_.size() / 2); }
  uint64_t Size() const override { return data_.size(); }
  uint32_t BlockSize() const override { return 4096; }
  bool Writable() const override { return true; }
  Status Read(uint64_t off, void* buf, size_t len) override {
    std::lock_guard l(mu_);
    std::memcpy(buf, data_.data() + off, len);
    return Status::Ok();
  }
  Status Write(uint64_t off, const void* buf, size_t len, bool) override {
    std::lock_guard l(mu_);
    std::memcpy(data_.data() + off, buf, len);
    return Status::Ok();
  }
  Status WriteZeroes(uint64_t off, uint64_t len, bool) override {
    std::lock_guard l(mu_);
    std::memset(data_.data() + off, 0, len);
    return Status::Ok();
  }
  Status Trim(uint64_t off, uint64_t len) override { return WriteZeroes(off, len, false); }
  Status Extents(uint64_t off, uint64_t len, std::vector<hexz::io::Extent>* out) override {
    // Deliberately awkward: overlapping, empty and out-of-order extents.
    out->push_back({off, 0, false, false});
    out->push_back({off, len / 3 + 1, false, false});
    out->push_back({off + len / 4, len, true, true});
    out->push_back({off / 2, 10, true, false});
    return Status::Ok();
  }

 private:
  std::mutex mu_;
  std::vector<uint8_t> data_;
};

// A pre-shared key server (no certificates to generate), per mode.
std::shared_ptr<const hexz::nbd::TlsServer> FuzzTls(unsigned which) {
  static std::shared_ptr<const hexz::nbd::TlsServer> servers[4];
  if (which == 0) return nullptr;
  if (!servers[which]) {
    hexz::nbd::TlsConfig c;
    c.mode = which == 1 ? hexz::nbd::TlsMode::kOn : hexz::nbd::TlsMode::kRequire;
    c.psk_text = "fuzz:00112233445566778899aabbccddeeff\n";
    if (which == 3) c.access_text = "psk memory fuzz\nnone disk\n";
    auto created = hexz::nbd::TlsServer::Create(c);
    if (!created.ok()) __builtin_trap();
    servers[which] = std::move(*created);
  }
  return servers[which];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto volume = std::make_shared<FuzzVolume>();
  hexz::nbd::ServerOptions o;
  o.threads_per_connection = 2;
  o.max_request = 1u << 20;
  o.connection_inflight_bytes = 2u << 20;
  o.server_inflight_bytes = 4u << 20;
  o.handshake_timeout_ms = 2000;
  o.io_timeout_ms = 2000;
  if (size > 0) {
    o.tls = FuzzTls(data[0] & 3);
    ++data;
    --size;
  }
  hexz::nbd::Server server({{"disk", volume, "fuzz disk", true}}, o);

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  hexz::base::UniqueFd client(sv[1]);
  std::thread feeder([&] {
    (void)hexz::nbd::WriteExact(client.get(), data, size, hexz::nbd::DeadlineIn(5000));
    ::shutdown(client.get(), SHUT_WR);
  });
  std::thread drain([&] {
    char buf[65536];
    while (::read(client.get(), buf, sizeof buf) > 0) {
    }
  });
  (void)server.ServeConnection(hexz::base::UniqueFd(sv[0]));
  feeder.join();
  drain.join();
  return 0;
}
