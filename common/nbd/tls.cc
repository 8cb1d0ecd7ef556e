#include "common/nbd/tls.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace hexz::nbd {

using base::Result;
using base::Status;

namespace {

// TLS 1.2 and 1.3 only; the rest of GnuTLS's NORMAL set. Fixed here, so no
// configuration file decides it.
constexpr char kPriorityX509[] = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
constexpr char kPriorityPsk[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:+ECDHE-PSK:+DHE-PSK:+PSK";
constexpr size_t kMaxPskKey = 512;  // bytes
constexpr int kMaxHandshakeRounds = 1000;
constexpr size_t kMaxCorked = 16 * 1024;  // one TLS record

std::string GnutlsError(int rc) { return gnutls_strerror(rc); }

gnutls_datum_t Datum(const std::string& s) {
  return {reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
          static_cast<unsigned int>(s.size())};
}

std::string Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

// Calls fn(line_number, line) for each line of text.
template <typename Fn>
Status ForEachLine(const std::string& text, Fn fn) {
  size_t pos = 0;
  for (unsigned n = 1; pos < text.size(); ++n) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    HEXZ_RETURN_IF_ERROR(fn(n, std::string_view(text).substr(pos, end - pos)));
    pos = end + 1;
  }
  return Status::Ok();
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// psktool's "identity:hex-key" lines.
Result<std::map<std::string, std::string>> ParsePsk(const std::string& text,
                                                    const std::string& name) {
  std::map<std::string, std::string> keys;
  HEXZ_RETURN_IF_ERROR(ForEachLine(text, [&](unsigned n, std::string_view raw) -> Status {
    std::string line = Trim(raw);
    if (line.empty()) return Status::Ok();
    auto bad = [&](const std::string& why) {
      return Status::InvalidArgument(name + ":" + std::to_string(n) + ": " + why +
                                     " (expected psktool's IDENTITY:HEX-KEY)");
    };
    size_t colon = line.find(':');
    if (colon == std::string::npos || colon == 0) return bad("no identity");
    std::string hex = line.substr(colon + 1);
    if (hex.empty() || hex.size() % 2 != 0 || hex.size() / 2 > kMaxPskKey) {
      return bad("the key must be 1.." + std::to_string(kMaxPskKey) + " bytes of hex");
    }
    std::string key(hex.size() / 2, '\0');
    for (size_t i = 0; i < key.size(); ++i) {
      int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) return bad("the key is not hexadecimal");
      key[i] = static_cast<char>(hi * 16 + lo);
    }
    if (!keys.emplace(line.substr(0, colon), std::move(key)).second) {
      return bad("identity '" + line.substr(0, colon) + "' appears twice");
    }
    return Status::Ok();
  }));
  if (keys.empty()) return Status::InvalidArgument(name + ": no keys");
  return keys;
}

}  // namespace

std::string TlsPeer::Describe() const {
  switch (kind) {
    case Kind::kX509:
      return "certificate '" + name + "'";
    case Kind::kPsk:
      return "PSK identity '" + name + "'";
    case Kind::kNone:
      break;
  }
  return "a client without identity";
}

// ---------------------------------------------------------------------------
// TlsAccess

Result<TlsAccess> TlsAccess::Parse(const std::string& text, const std::string& name) {
  TlsAccess access;
  HEXZ_RETURN_IF_ERROR(ForEachLine(text, [&](unsigned n, std::string_view raw) -> Status {
    std::string line = Trim(raw);
    if (line.empty() || line[0] == '#') return Status::Ok();
    auto bad = [&](const std::string& why) {
      return Status::InvalidArgument(name + ":" + std::to_string(n) + ": " + why);
    };
    size_t k_end = line.find_first_of(" \t");
    std::string kind_word = line.substr(0, k_end);
    std::string rest = k_end == std::string::npos ? "" : Trim(line.substr(k_end));
    size_t e_end = rest.find_first_of(" \t");
    std::string exports = rest.substr(0, e_end);
    std::string identity = e_end == std::string::npos ? "" : Trim(rest.substr(e_end));
    TlsPeer::Kind kind;
    if (kind_word == "dn") {
      kind = TlsPeer::Kind::kX509;
      access.has_dn_ = true;
    } else if (kind_word == "psk") {
      kind = TlsPeer::Kind::kPsk;
    } else if (kind_word == "none") {
      kind = TlsPeer::Kind::kNone;
    } else {
      return bad("unknown kind '" + kind_word + "' (expected dn, psk or none)");
    }
    if (exports.empty()) return bad("no exports (a comma-separated list, or *)");
    if (kind == TlsPeer::Kind::kNone ? !identity.empty() : identity.empty()) {
      return bad(kind == TlsPeer::Kind::kNone ? "'none' takes no identity"
                                              : "'" + kind_word + "' needs an identity");
    }
    std::set<std::string>& allowed = access.rules_[{kind, identity}];
    for (size_t pos = 0; pos <= exports.size();) {
      size_t comma = std::min(exports.find(',', pos), exports.size());
      std::string e = exports.substr(pos, comma - pos);
      if (e.empty()) return bad("empty export name in '" + exports + "'");
      allowed.insert(e);
      pos = comma + 1;
    }
    return Status::Ok();
  }));
  return access;
}

bool TlsAccess::Allows(const TlsPeer& peer, const std::string& export_name) const {
  auto it = rules_.find({peer.kind, peer.kind == TlsPeer::Kind::kNone ? "" : peer.name});
  if (it == rules_.end()) return false;
  return it->second.count("*") != 0 || it->second.count(export_name) != 0;
}

// ---------------------------------------------------------------------------
// Streams

Status Stream::Discard(uint64_t len, Clock::time_point deadline) {
  char buf[16384];
  while (len > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(len, sizeof buf));
    HEXZ_RETURN_IF_ERROR(Read(buf, n, deadline));
    len -= n;
  }
  return Status::Ok();
}

Status Stream::WriteMessage(std::string_view head, const void* data, size_t len,
                            Clock::time_point deadline) {
  HEXZ_RETURN_IF_ERROR(Write(head, deadline));
  return len > 0 ? Write(data, len, deadline) : Status::Ok();
}

Status PlainStream::Read(void* buf, size_t len, Clock::time_point deadline) {
  return ReadExact(fd_, buf, len, deadline);
}

Status PlainStream::Write(const void* buf, size_t len, Clock::time_point deadline) {
  return WriteExact(fd_, buf, len, deadline);
}

// The GnuTLS session and its transport. The reader owns read_deadline and
// read_timed_out, the writer (or the handshake) the write_* fields: GnuTLS
// pulls only from gnutls_record_recv and pushes only from the sending
// calls, so the two threads never share a field.
struct TlsStream::Session {
  gnutls_session_t s = nullptr;
  int fd = -1;
  Clock::time_point read_deadline = kNoDeadline;
  Clock::time_point write_deadline = kNoDeadline;
  bool read_timed_out = false;
  bool write_timed_out = false;

  ~Session() {
    if (s != nullptr) gnutls_deinit(s);
  }

  static ssize_t Pull(gnutls_transport_ptr_t p, void* buf, size_t len) {
    auto* self = static_cast<Session*>(p);
    for (;;) {
      ssize_t n = ::recv(self->fd, buf, len, 0);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
      if (!WaitFor(self->fd, POLLIN, self->read_deadline).ok()) {
        self->read_timed_out = true;
        errno = ETIMEDOUT;
        return -1;
      }
    }
  }

  static ssize_t Push(gnutls_transport_ptr_t p, const void* buf, size_t len) {
    auto* self = static_cast<Session*>(p);
    for (;;) {
      ssize_t n = ::send(self->fd, buf, len, MSG_NOSIGNAL);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
      if (!WaitFor(self->fd, POLLOUT, self->write_deadline).ok()) {
        self->write_timed_out = true;
        errno = ETIMEDOUT;
        return -1;
      }
    }
  }

  // Data is waiting (1), none within ms (0), or an error (-1).
  static int PullTimeout(gnutls_transport_ptr_t p, unsigned int ms) {
    auto* self = static_cast<Session*>(p);
    struct pollfd pfd = {self->fd, POLLIN, 0};
    int n = ::poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : static_cast<int>(ms));
    return n < 0 ? -1 : (n > 0 ? 1 : 0);
  }

  Status Error(const char* what, int rc, bool timed_out) const {
    if (timed_out) return Status::Cancelled(std::string("nbd: TLS ") + what + ": timed out");
    if (rc == GNUTLS_E_PREMATURE_TERMINATION || rc == GNUTLS_E_PULL_ERROR ||
        rc == GNUTLS_E_PUSH_ERROR) {
      return Status::IoError(std::string("nbd: TLS ") + what + ": " + GnutlsError(rc), EPIPE);
    }
    return Status::IoError(std::string("nbd: TLS ") + what + ": " + GnutlsError(rc));
  }
};

TlsStream::TlsStream() : session_(std::make_unique<Session>()) {}
TlsStream::~TlsStream() = default;

Status TlsStream::Read(void* buf, size_t len, Clock::time_point deadline) {
  Session& ss = *session_;
  ss.read_deadline = deadline;
  ss.read_timed_out = false;
  auto* p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = gnutls_record_recv(ss.s, p, len);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return Status::IoError("nbd: peer closed the TLS connection", EPIPE);
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) continue;
    return ss.Error("read", static_cast<int>(n), ss.read_timed_out);
  }
  return Status::Ok();
}

Status TlsStream::Write(const void* buf, size_t len, Clock::time_point deadline) {
  Session& ss = *session_;
  ss.write_deadline = deadline;
  ss.write_timed_out = false;
  const auto* p = static_cast<const uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = gnutls_record_send(ss.s, p, len);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) continue;
    return ss.Error("write", static_cast<int>(n), ss.write_timed_out);
  }
  return Status::Ok();
}

Status TlsStream::WriteMessage(std::string_view head, const void* data, size_t len,
                               Clock::time_point deadline) {
  if (head.size() + len > kMaxCorked) return Stream::WriteMessage(head, data, len, deadline);
  Session& ss = *session_;
  ss.write_deadline = deadline;
  ss.write_timed_out = false;
  gnutls_record_cork(ss.s);
  Status s = Write(head.data(), head.size(), deadline);  // buffered while corked
  if (s.ok() && len > 0) s = Write(data, len, deadline);
  int rc;
  do {
    rc = gnutls_record_uncork(ss.s, GNUTLS_RECORD_WAIT);
  } while (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED);
  HEXZ_RETURN_IF_ERROR(s);
  return rc < 0 ? ss.Error("write", rc, ss.write_timed_out) : Status::Ok();
}

void TlsStream::Close(Clock::time_point deadline) {
  session_->write_deadline = deadline;
  (void)gnutls_bye(session_->s, GNUTLS_SHUT_WR);
}

// ---------------------------------------------------------------------------
// TlsServer

struct TlsServer::Impl {
  gnutls_certificate_credentials_t x509 = nullptr;
  gnutls_psk_server_credentials_t psk = nullptr;
  gnutls_priority_t priority = nullptr;
  std::map<std::string, std::string> psk_keys;  // identity -> key
  bool verify_peer = false;

  ~Impl() {
    if (priority != nullptr) gnutls_priority_deinit(priority);
    if (x509 != nullptr) gnutls_certificate_free_credentials(x509);
    if (psk != nullptr) gnutls_psk_free_server_credentials(psk);
    for (auto& [id, key] : psk_keys) gnutls_memset(key.data(), 0, key.size());
  }

  // GnuTLS asks for the key of `identity`; an unknown identity fails the
  // handshake just as a wrong key does.
  static int PskKey(gnutls_session_t session, const char* identity, gnutls_datum_t* key) {
    const auto* self = static_cast<const Impl*>(gnutls_session_get_ptr(session));
    auto it = self->psk_keys.find(identity);
    if (it == self->psk_keys.end()) return -1;
    key->data = static_cast<unsigned char*>(gnutls_malloc(it->second.size()));
    if (key->data == nullptr) return -1;
    std::memcpy(key->data, it->second.data(), it->second.size());
    key->size = static_cast<unsigned int>(it->second.size());
    return 0;
  }

  Status LoadX509(const TlsConfig& c) {
    int rc = gnutls_certificate_allocate_credentials(&x509);
    if (rc < 0) return Status::Internal("TLS: " + GnutlsError(rc));
    gnutls_datum_t cert = Datum(c.cert_pem), key = Datum(c.key_pem);
    rc = gnutls_certificate_set_x509_key_mem(x509, &cert, &key, GNUTLS_X509_FMT_PEM);
    if (rc < 0) {
      return Status::InvalidArgument(c.cert_name + " / " + c.key_name + ": " + GnutlsError(rc));
    }
    if (!c.ca_pem.empty()) {
      gnutls_datum_t ca = Datum(c.ca_pem);
      rc = gnutls_certificate_set_x509_trust_mem(x509, &ca, GNUTLS_X509_FMT_PEM);
      if (rc <= 0) {
        return Status::InvalidArgument(c.ca_name + ": " +
                                       (rc == 0 ? "no certificate in it" : GnutlsError(rc)));
      }
    }
    if (c.verify_peer && c.ca_pem.empty()) {
      return Status::InvalidArgument("verifying client certificates needs " + c.ca_name);
    }
    gnutls_certificate_set_known_dh_params(x509, GNUTLS_SEC_PARAM_MEDIUM);
    return Status::Ok();
  }

  Status LoadPsk(const TlsConfig& c) {
    HEXZ_ASSIGN_OR_RETURN(psk_keys, ParsePsk(c.psk_text, c.psk_name));
    int rc = gnutls_psk_allocate_server_credentials(&psk);
    if (rc < 0) return Status::Internal("TLS: " + GnutlsError(rc));
    gnutls_psk_set_server_credentials_function(psk, &Impl::PskKey);
    gnutls_psk_set_server_known_dh_params(psk, GNUTLS_SEC_PARAM_MEDIUM);
    return Status::Ok();
  }
};

TlsServer::~TlsServer() = default;

Result<std::unique_ptr<TlsServer>> TlsServer::Create(const TlsConfig& c) {
  if (c.mode == TlsMode::kOff) return Status::InvalidArgument("TLS is off");
  const bool x509 = !c.cert_pem.empty() || !c.key_pem.empty();
  if (x509 == !c.psk_text.empty()) {
    return Status::InvalidArgument("TLS needs either certificates or pre-shared keys");
  }
  for (const std::string* s : {&c.cert_pem, &c.key_pem, &c.ca_pem, &c.psk_text, &c.access_text}) {
    if (s->size() > kMaxTlsInput) {
      return Status::InvalidArgument("a TLS input is larger than " +
                                     std::to_string(kMaxTlsInput / 1024) + " KiB");
    }
  }
  if (c.verify_peer && !x509) {
    return Status::InvalidArgument("verifying client certificates needs X.509 certificates");
  }
  std::unique_ptr<TlsServer> server(new TlsServer());
  server->mode_ = c.mode;
  server->impl_ = std::make_unique<Impl>();
  Impl& impl = *server->impl_;
  impl.verify_peer = c.verify_peer;
  HEXZ_RETURN_IF_ERROR(x509 ? impl.LoadX509(c) : impl.LoadPsk(c));
  const char* err_pos = nullptr;
  int rc = gnutls_priority_init(&impl.priority, x509 ? kPriorityX509 : kPriorityPsk, &err_pos);
  if (rc < 0) return Status::Internal("TLS priority string: " + GnutlsError(rc));
  if (!c.access_text.empty()) {
    HEXZ_ASSIGN_OR_RETURN(server->access_, TlsAccess::Parse(c.access_text, c.access_name));
    server->has_access_ = true;
    if (server->access_.HasDnRules() && !c.verify_peer) {
      return Status::InvalidArgument(c.access_name +
                                     ": 'dn' rules need verified client certificates "
                                     "(--tls-verify-peer)");
    }
  }
  return server;
}

Result<std::unique_ptr<TlsStream>> TlsServer::Accept(int fd, Clock::time_point deadline) const {
  std::unique_ptr<TlsStream> stream(new TlsStream());
  TlsStream::Session& ss = *stream->session_;
  ss.fd = fd;
  ss.read_deadline = ss.write_deadline = deadline;
  int rc = gnutls_init(&ss.s, GNUTLS_SERVER);
  if (rc < 0) return Status::Internal("TLS: " + GnutlsError(rc));
  gnutls_session_set_ptr(ss.s, impl_.get());
  rc = gnutls_priority_set(ss.s, impl_->priority);
  if (rc >= 0 && impl_->x509 != nullptr) {
    rc = gnutls_credentials_set(ss.s, GNUTLS_CRD_CERTIFICATE, impl_->x509);
    if (impl_->verify_peer) gnutls_certificate_server_set_request(ss.s, GNUTLS_CERT_REQUIRE);
  } else if (rc >= 0) {
    rc = gnutls_credentials_set(ss.s, GNUTLS_CRD_PSK, impl_->psk);
  }
  if (rc < 0) return Status::Internal("TLS: " + GnutlsError(rc));
  gnutls_transport_set_ptr(ss.s, &ss);
  gnutls_transport_set_push_function(ss.s, &TlsStream::Session::Push);
  gnutls_transport_set_pull_function(ss.s, &TlsStream::Session::Pull);
  gnutls_transport_set_pull_timeout_function(ss.s, &TlsStream::Session::PullTimeout);
  gnutls_handshake_set_timeout(ss.s, GNUTLS_INDEFINITE_TIMEOUT);  // the deadline rules

  rc = GNUTLS_E_AGAIN;
  for (int round = 0; rc < 0 && round < kMaxHandshakeRounds; ++round) {
    rc = gnutls_handshake(ss.s);
    if (rc < 0 && gnutls_error_is_fatal(rc)) break;
  }
  if (rc < 0) {
    Status s = ss.Error("handshake", rc, ss.read_timed_out || ss.write_timed_out);
    if (s.code() != base::Code::kCancelled && rc != GNUTLS_E_PREMATURE_TERMINATION) {
      // GnuTLS names the alert, not the likely cause.
      s = Status(s.code(),
                 s.message() +
                     (impl_->psk != nullptr
                          ? " (a wrong pre-shared key, or an identity not in the PSK file?)"
                      : impl_->verify_peer ? " (no client certificate, or a client that does not "
                                             "trust this server's certificate?)"
                                           : " (a client that does not trust this server's "
                                             "certificate?)"),
                 s.sys_errno());
    }
    return s.WithContext("refusing a client");
  }
  if (impl_->x509 != nullptr && impl_->verify_peer) {
    unsigned status = 0;
    rc = gnutls_certificate_verify_peers3(ss.s, nullptr, &status);
    if (rc < 0 || status != 0) {
      std::string why = rc < 0 ? GnutlsError(rc) : "not trusted";
      gnutls_datum_t out = {nullptr, 0};
      if (rc >= 0 &&
          gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) >= 0) {
        why.assign(reinterpret_cast<const char*>(out.data), out.size);
        gnutls_free(out.data);
      }
      (void)gnutls_alert_send(ss.s, GNUTLS_AL_FATAL, GNUTLS_A_BAD_CERTIFICATE);
      return Status::PermissionDenied("nbd: refusing a client certificate: " + why);
    }
    unsigned n = 0;
    const gnutls_datum_t* certs = gnutls_certificate_get_peers(ss.s, &n);
    gnutls_x509_crt_t crt = nullptr;
    gnutls_datum_t dn = {nullptr, 0};
    if (n > 0 && gnutls_x509_crt_init(&crt) >= 0) {
      if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0 &&
          gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0) {
        stream->peer_ = {TlsPeer::Kind::kX509,
                         std::string(reinterpret_cast<const char*>(dn.data), dn.size)};
        gnutls_free(dn.data);
      }
      gnutls_x509_crt_deinit(crt);
    }
  } else if (impl_->psk != nullptr) {
    const char* id = gnutls_psk_server_get_username(ss.s);
    if (id != nullptr) stream->peer_ = {TlsPeer::Kind::kPsk, id};
  }
  return stream;
}

}  // namespace hexz::nbd
