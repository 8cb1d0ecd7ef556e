// NBD over TLS: the access file and PSK parsers, the credential checks, and
// the server's STARTTLS state machine over a socketpair, with a real GnuTLS
// client (pre-shared keys, so the test needs no certificates): TLS_REQD
// before TLS, a clean slate inside it, the access file, a wrong key, and a
// handshake that never finishes.
#include "common/nbd/tls.h"

#include <gnutls/gnutls.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "common/base/endian.h"
#include "common/nbd/protocol.h"
#include "common/nbd/server.h"
#include "common/nbd/wire.h"
#include "tests/unit/testing/mem_volume.h"

namespace hexz::nbd {
namespace {

using base::Status;

constexpr char kPsk[] = "alice:00112233445566778899aabbccddeeff\n";

TlsPeer Peer(TlsPeer::Kind kind, std::string name) { return {kind, std::move(name)}; }

TEST(TlsAccessTest, ParsesRulesAndMatchesExactly) {
  auto a = TlsAccess::Parse(
      "# who may use what\n\n"
      "dn   disk        CN=client1,O=Example Org\n"
      "psk  disk,memory alice\r\n"
      "psk  *           admin\n"
      "none memory\n",
      "access");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  using K = TlsPeer::Kind;
  EXPECT_TRUE(a->Allows(Peer(K::kX509, "CN=client1,O=Example Org"), "disk"));
  EXPECT_FALSE(a->Allows(Peer(K::kX509, "CN=client1,O=Example Org"), "memory"));
  EXPECT_FALSE(a->Allows(Peer(K::kX509, "CN=client1"), "disk"));
  EXPECT_FALSE(a->Allows(Peer(K::kPsk, "CN=client1,O=Example Org"), "disk"));
  EXPECT_TRUE(a->Allows(Peer(K::kPsk, "alice"), "memory"));
  EXPECT_TRUE(a->Allows(Peer(K::kPsk, "admin"), "anything"));
  EXPECT_FALSE(a->Allows(Peer(K::kPsk, "bob"), "disk"));
  EXPECT_TRUE(a->Allows(Peer(K::kNone, ""), "memory"));
  EXPECT_FALSE(a->Allows(Peer(K::kNone, ""), "disk"));
  EXPECT_TRUE(a->HasDnRules());
}

TEST(TlsAccessTest, RefusesMalformedLinesByNumber) {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {"ok\n", "acl:1: unknown kind 'ok'"},
      {"\n\npsk\n", "acl:3: no exports"},
      {"psk disk\n", "acl:1: 'psk' needs an identity"},
      {"dn disk\n", "acl:1: 'dn' needs an identity"},
      {"none disk alice\n", "acl:1: 'none' takes no identity"},
      {"psk disk,,memory alice\n", "acl:1: empty export name"},
  };
  for (const Case& c : cases) {
    auto a = TlsAccess::Parse(c.text, "acl");
    ASSERT_FALSE(a.ok()) << c.text;
    EXPECT_NE(a.status().message().find(c.message), std::string::npos) << a.status().ToString();
  }
}

TEST(TlsServerTest, CreateChecksItsInputs) {
  auto error = [](TlsConfig c) {
    c.mode = c.mode == TlsMode::kOff ? TlsMode::kRequire : c.mode;
    auto s = TlsServer::Create(c);
    return s.ok() ? std::string("ok") : s.status().message();
  };
  TlsConfig c;
  EXPECT_NE(error(c).find("either certificates or pre-shared keys"), std::string::npos);
  c.psk_text = kPsk;
  EXPECT_EQ(error(c), "ok");
  c.cert_pem = "x";
  EXPECT_NE(error(c).find("either certificates or pre-shared keys"), std::string::npos);
  c.cert_pem.clear();
  c.verify_peer = true;
  EXPECT_NE(error(c).find("needs X.509"), std::string::npos);
  c.verify_peer = false;
  c.psk_name = "keys.psk";
  c.psk_text = "alice:0g\n";
  EXPECT_NE(error(c).find("keys.psk:1: the key is not hexadecimal"), std::string::npos);
  c.psk_text = "alice:00\nbob:abc\n";
  EXPECT_NE(error(c).find("keys.psk:2: the key must be"), std::string::npos);
  c.psk_text = "alice:00\nalice:01\n";
  EXPECT_NE(error(c).find("appears twice"), std::string::npos);
  c.psk_text = ":00\n";
  EXPECT_NE(error(c).find("no identity"), std::string::npos);
  c.psk_text = kPsk;
  c.access_text = "dn disk CN=x\n";
  EXPECT_NE(error(c).find("'dn' rules need verified client certificates"), std::string::npos);
  c.access_text = std::string(kMaxTlsInput + 1, '#');
  EXPECT_NE(error(c).find("larger than 16 KiB"), std::string::npos);
}

// A raw NBD client whose bytes go over the socket or, after StartTls, a
// GnuTLS client session.
class TlsClient {
 public:
  explicit TlsClient(int fd) : fd_(fd) {}
  ~TlsClient() {
    if (session_ != nullptr) gnutls_deinit(session_);
    if (cred_ != nullptr) gnutls_psk_free_client_credentials(cred_);
  }

  bool Send(std::string_view s) {
    if (session_ == nullptr) return WriteExact(fd_.get(), s, DeadlineIn(10000)).ok();
    while (!s.empty()) {
      ssize_t n = gnutls_record_send(session_, s.data(), s.size());
      if (n <= 0) return false;
      s.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  bool Recv(void* buf, size_t len) {
    if (session_ == nullptr) return ReadExact(fd_.get(), buf, len, DeadlineIn(10000)).ok();
    auto* p = static_cast<char*>(buf);
    while (len > 0) {
      ssize_t n = gnutls_record_recv(session_, p, len);
      if (n <= 0) return false;
      p += n;
      len -= static_cast<size_t>(n);
    }
    return true;
  }
  void Hello() {
    char h[18];
    ASSERT_TRUE(Recv(h, sizeof h));
    Builder b;
    b.U32(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
    ASSERT_TRUE(Send(b.data()));
  }
  // Sends an option and returns the type of its first reply (its payload
  // in *data), or 0 when the connection ended.
  uint32_t Option(uint32_t opt, std::string_view body = {}, std::string* data = nullptr) {
    Builder b;
    b.U64(kIHaveOpt).U32(opt).U32(static_cast<uint32_t>(body.size())).Bytes(body);
    if (!Send(b.data())) return 0;
    return ReadReply(data);
  }
  uint32_t ReadReply(std::string* data = nullptr) {
    uint8_t h[20];
    if (!Recv(h, sizeof h)) return 0;
    std::string payload(base::GetBe32(h + 16), '\0');
    if (!Recv(payload.data(), payload.size())) return 0;
    if (data != nullptr) *data = payload;
    return base::GetBe32(h + 12);
  }
  // GO `name`; the final reply's type (ACK, or the error).
  uint32_t Go(std::string_view name) {
    Builder b;
    b.U32(static_cast<uint32_t>(name.size())).Bytes(name).U16(0);
    uint32_t type = Option(kOptGo, b.data());
    while (type == kRepInfo) type = ReadReply();
    return type;
  }
  // STARTTLS, then the client side of the handshake with this key.
  bool StartTls(const std::string& identity, const std::string& key) {
    if (Option(kOptStartTls) != kRepAck) return false;
    gnutls_psk_allocate_client_credentials(&cred_);
    gnutls_datum_t k = {reinterpret_cast<unsigned char*>(const_cast<char*>(key.data())),
                        static_cast<unsigned>(key.size())};
    gnutls_psk_set_client_credentials(cred_, identity.c_str(), &k, GNUTLS_PSK_KEY_RAW);
    gnutls_init(&session_, GNUTLS_CLIENT);
    gnutls_priority_set_direct(session_, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", nullptr);
    gnutls_credentials_set(session_, GNUTLS_CRD_PSK, cred_);
    gnutls_transport_set_int(session_, fd_.get());
    int rc;
    do {
      rc = gnutls_handshake(session_);
    } while (rc < 0 && !gnutls_error_is_fatal(rc));
    return rc >= 0;
  }
  int fd() const { return fd_.get(); }

 private:
  base::UniqueFd fd_;
  gnutls_session_t session_ = nullptr;
  gnutls_psk_client_credentials_t cred_ = nullptr;
};

const std::string kKey("\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff", 16);

class NbdTlsTest : public ::testing::Test {
 protected:
  void Make(TlsMode mode, std::string access = "", uint32_t handshake_ms = 10000) {
    TlsConfig c;
    c.mode = mode;
    c.psk_text = kPsk;
    c.access_text = std::move(access);
    auto tls = TlsServer::Create(c);
    ASSERT_TRUE(tls.ok()) << tls.status().ToString();
    ServerOptions o;
    o.tls = std::move(*tls);
    o.handshake_timeout_ms = handshake_ms;
    std::vector<uint8_t> bytes(1u << 20, 0x5a);
    auto disk = std::make_shared<testing::MemVolume>(std::move(bytes), 65536, false);
    auto mem = std::make_shared<testing::MemVolume>(std::vector<uint8_t>(4096), 4096, false);
    server_ = std::make_unique<Server>(
        std::vector<Export>{{"disk", disk, "the disk"}, {"memory", mem, "memory"}}, o);
  }
  std::unique_ptr<TlsClient> Connect() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    served_ = std::async(std::launch::async, [this, fd = sv[0]] {
      return server_->ServeConnection(base::UniqueFd(fd));
    });
    return std::make_unique<TlsClient>(sv[1]);
  }
  Status Last() { return served_.get(); }

  std::unique_ptr<Server> server_;
  std::future<Status> served_;
};

TEST_F(NbdTlsTest, RequireRefusesEveryOptionButStartTlsAndAbort) {
  Make(TlsMode::kRequire);
  auto c = Connect();
  c->Hello();
  EXPECT_EQ(c->Option(kOptList), kRepErrTlsReqd);
  EXPECT_EQ(c->Option(kOptStructuredReply), kRepErrTlsReqd);
  EXPECT_EQ(c->Go("disk"), kRepErrTlsReqd);
  EXPECT_EQ(c->Option(kOptInfo, std::string("\0\0\0\0\0\0", 6)), kRepErrTlsReqd);
  EXPECT_EQ(c->Option(kOptStartTls, "x"), kRepErrInvalid);
  EXPECT_EQ(c->Option(kOptAbort), kRepAck);
  EXPECT_TRUE(Last().ok());
}

TEST_F(NbdTlsTest, RequireDisconnectsExportName) {
  Make(TlsMode::kRequire);
  auto c = Connect();
  c->Hello();
  EXPECT_EQ(c->Option(kOptExportName, "disk"), 0u);  // no reply: disconnected
  Status s = Last();
  EXPECT_EQ(s.code(), base::Code::kPermissionDenied) << s.ToString();
}

TEST_F(NbdTlsTest, WithoutTlsStartTlsIsUnsupported) {
  server_ = std::make_unique<Server>(std::vector<Export>{});
  auto c = Connect();
  c->Hello();
  EXPECT_EQ(c->Option(kOptStartTls), kRepErrUnsup);
  EXPECT_EQ(c->Option(kOptAbort), kRepAck);
  EXPECT_TRUE(Last().ok());
}

TEST_F(NbdTlsTest, ServesInsideTlsFromACleanSlate) {
  Make(TlsMode::kOn);
  auto c = Connect();
  c->Hello();
  // Negotiated in plaintext, forgotten by STARTTLS: replies stay simple.
  EXPECT_EQ(c->Option(kOptStructuredReply), kRepAck);
  ASSERT_TRUE(c->StartTls("alice", kKey));
  EXPECT_EQ(c->Option(kOptStartTls), kRepErrInvalid);  // already on
  std::string list;
  EXPECT_EQ(c->Option(kOptList, {}, &list), kRepServer);
  EXPECT_EQ(c->ReadReply(), kRepServer);
  EXPECT_EQ(c->ReadReply(), kRepAck);
  ASSERT_EQ(c->Go("disk"), kRepAck);
  Builder req;
  req.U32(kRequestMagic).U16(0).U16(kCmdRead).U64(7).U64(4096).U32(8192);
  ASSERT_TRUE(c->Send(req.data()));
  uint8_t h[16];
  ASSERT_TRUE(c->Recv(h, sizeof h));
  EXPECT_EQ(base::GetBe32(h), kSimpleReplyMagic);
  EXPECT_EQ(base::GetBe32(h + 4), 0u);
  EXPECT_EQ(base::GetBe64(h + 8), 7u);
  std::string data(8192, '\0');
  ASSERT_TRUE(c->Recv(data.data(), data.size()));
  EXPECT_EQ(data, std::string(8192, '\x5a'));
  Builder disc;
  disc.U32(kRequestMagic).U16(0).U16(kCmdDisc).U64(8).U64(0).U32(0);
  ASSERT_TRUE(c->Send(disc.data()));
  EXPECT_TRUE(Last().ok());
}

TEST_F(NbdTlsTest, OnStillServesPlaintextClients) {
  Make(TlsMode::kOn, "none memory\n");
  auto c = Connect();
  c->Hello();
  EXPECT_EQ(c->Go("disk"), kRepErrPolicy);  // the access file: no identity, memory only
  EXPECT_EQ(c->Go("memory"), kRepAck);
  Builder disc;
  disc.U32(kRequestMagic).U16(0).U16(kCmdDisc).U64(1).U64(0).U32(0);
  ASSERT_TRUE(c->Send(disc.data()));
  EXPECT_TRUE(Last().ok());
}

TEST_F(NbdTlsTest, AccessFileLimitsExportsPerIdentity) {
  Make(TlsMode::kRequire, "psk memory alice\n");
  auto c = Connect();
  c->Hello();
  ASSERT_TRUE(c->StartTls("alice", kKey));
  std::string entry;
  ASSERT_EQ(c->Option(kOptList, {}, &entry), kRepServer);
  EXPECT_EQ(entry.substr(4, 6), "memory");
  EXPECT_EQ(c->ReadReply(), kRepAck);  // and nothing else listed
  EXPECT_EQ(c->Go("disk"), kRepErrPolicy);
  EXPECT_EQ(c->Go(""), kRepErrPolicy);  // the default export is the disk
  EXPECT_EQ(c->Go("memory"), kRepAck);
}

TEST_F(NbdTlsTest, WrongKeyFailsTheHandshake) {
  Make(TlsMode::kRequire);
  auto c = Connect();
  c->Hello();
  EXPECT_FALSE(c->StartTls("alice", std::string(16, 'x')));
  Status s = Last();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("handshake"), std::string::npos) << s.ToString();
}

TEST_F(NbdTlsTest, UnfinishedHandshakeEndsAtTheDeadline) {
  Make(TlsMode::kRequire, "", 300);
  auto c = Connect();
  c->Hello();
  EXPECT_EQ(c->Option(kOptStartTls), kRepAck);  // and then no ClientHello
  Status s = Last();
  EXPECT_EQ(s.code(), base::Code::kCancelled) << s.ToString();
  EXPECT_NE(s.message().find("timed out"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace hexz::nbd
