// TLS for the NBD server (NBD_OPT_STARTTLS, doc/proto.md "TLS support"),
// through GnuTLS: X.509 certificates or pre-shared keys, optional client
// certificates, and a per-client export access list.
//
// Everything arrives as bytes: the caller (the front-end, as the user) reads
// the certificate directory, the PSK file and the access file, and a
// TlsServer is built from their contents alone (gnutls_*_mem); it opens no
// path and reads no system trust store or configuration file after Create.
// The priority string is fixed here.
//
// Stream is the byte stream of one NBD connection: the plain socket, or the
// TLS session on it after STARTTLS. Both honour the deadlines of wire.h.
//
// Ownership: a TlsServer owns its GnuTLS credentials and must outlive every
// TlsStream it accepted. A TlsStream owns its session, not the socket.
// Thread safety: a TlsServer is immutable after Create and may accept on
// many threads at once. A Stream allows one reader and one writer at a time
// (GnuTLS permits gnutls_record_recv and gnutls_record_send in parallel).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "common/nbd/wire.h"

namespace hexz::nbd {

enum class TlsMode : uint32_t {
  kOff = 0,      // STARTTLS is refused (NBD_REP_ERR_UNSUP)
  kOn = 1,       // STARTTLS is offered; plaintext clients are served too
  kRequire = 2,  // nothing but STARTTLS and ABORT before TLS (NBD_REP_ERR_TLS_REQD)
};

// Largest accepted size of each input below (the worker's config message is
// limited to 64 KiB in all).
inline constexpr size_t kMaxTlsInput = 16 * 1024;

struct TlsConfig {
  TlsMode mode = TlsMode::kOff;
  // X.509: the server's certificate chain and key (PEM), and the CA(s) that
  // client certificates must chain to (needed by verify_peer).
  std::string cert_pem;
  std::string key_pem;
  std::string ca_pem;
  // Pre-shared keys, psktool's format: one "identity:hex-key" per line.
  std::string psk_text;
  // Ask for, and require, a client certificate signed by ca_pem (X.509 only).
  bool verify_peer = false;
  // The access file (TlsAccess); empty: every client may use every export.
  std::string access_text;
  // Where each input came from, for messages ("/etc/hexz/tls/server-cert.pem").
  std::string cert_name = "server certificate";
  std::string key_name = "server key";
  std::string ca_name = "CA certificate";
  std::string psk_name = "PSK file";
  std::string access_name = "access file";
};

// Who a client is: its certificate's subject DN (RFC 4514, as `certtool -i`
// prints "Subject:"), its PSK identity, or nobody (plaintext, or TLS without
// a client certificate).
struct TlsPeer {
  enum class Kind { kNone, kX509, kPsk };
  Kind kind = Kind::kNone;
  std::string name;
  std::string Describe() const;
};

// The access file: one rule per line, blank lines and '#' comments ignored:
//   dn   EXPORTS SUBJECT-DN    (a verified client certificate's subject)
//   psk  EXPORTS IDENTITY      (a PSK identity)
//   none EXPORTS               (clients without an identity)
// EXPORTS is a comma-separated list of export names, or '*' for all. The
// identity is the rest of the line (it may contain spaces and commas), matched
// exactly. A client may use the exports of every rule that names it, and
// nothing else.
class TlsAccess {
 public:
  static base::Result<TlsAccess> Parse(const std::string& text, const std::string& name);
  bool Allows(const TlsPeer& peer, const std::string& export_name) const;
  bool HasDnRules() const { return has_dn_; }

 private:
  // (kind, identity) -> export names; "*" means all.
  std::map<std::pair<TlsPeer::Kind, std::string>, std::set<std::string>> rules_;
  bool has_dn_ = false;
};

// One connection's bytes in both directions.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual base::Status Read(void* buf, size_t len, Clock::time_point deadline) = 0;
  virtual base::Status Write(const void* buf, size_t len, Clock::time_point deadline) = 0;
  base::Status Write(std::string_view s, Clock::time_point deadline) {
    return Write(s.data(), s.size(), deadline);
  }
  // Writes a message: `head`, then data[0..len).
  virtual base::Status WriteMessage(std::string_view head, const void* data, size_t len,
                                    Clock::time_point deadline);
  // Reads and throws away len bytes.
  base::Status Discard(uint64_t len, Clock::time_point deadline);
};

// The socket itself (non-blocking; wire.h's ReadExact/WriteExact).
class PlainStream : public Stream {
 public:
  explicit PlainStream(int fd) : fd_(fd) {}
  base::Status Read(void* buf, size_t len, Clock::time_point deadline) override;
  base::Status Write(const void* buf, size_t len, Clock::time_point deadline) override;

 private:
  int fd_;
};

class TlsStream;

class TlsServer {
 public:
  // Builds the credentials; an error names the input that is wrong.
  // Exactly one of (cert_pem, key_pem) and psk_text must be given.
  static base::Result<std::unique_ptr<TlsServer>> Create(const TlsConfig& config);
  ~TlsServer();
  TlsServer(const TlsServer&) = delete;
  TlsServer& operator=(const TlsServer&) = delete;

  TlsMode mode() const { return mode_; }
  const TlsAccess* access() const { return has_access_ ? &access_ : nullptr; }

  // The server side of a TLS handshake on the non-blocking socket `fd`,
  // finished by `deadline`, with the client checks (certificate chain and
  // validity with verify_peer). The error says why the client was refused.
  base::Result<std::unique_ptr<TlsStream>> Accept(int fd, Clock::time_point deadline) const;

 private:
  struct Impl;
  TlsServer() = default;
  std::unique_ptr<Impl> impl_;
  TlsMode mode_ = TlsMode::kOff;
  TlsAccess access_;
  bool has_access_ = false;
};

class TlsStream : public Stream {
 public:
  ~TlsStream() override;
  base::Status Read(void* buf, size_t len, Clock::time_point deadline) override;
  base::Status Write(const void* buf, size_t len, Clock::time_point deadline) override;
  // A small message goes out as one TLS record (head and data corked).
  base::Status WriteMessage(std::string_view head, const void* data, size_t len,
                            Clock::time_point deadline) override;
  // Sends the TLS close_notify (best effort, bounded by `deadline`).
  void Close(Clock::time_point deadline);
  const TlsPeer& peer() const { return peer_; }

 private:
  friend class TlsServer;
  struct Session;
  TlsStream();
  std::unique_ptr<Session> session_;
  TlsPeer peer_;
};

}  // namespace hexz::nbd
