// The NBD server over socketpairs: handshake, every option, every command,
// and hostile input (bad flags, out-of-range, oversized, truncated, vanishing
// clients). A raw client speaks the wire format byte by byte.
#include "common/nbd/server.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/base/endian.h"
#include "common/nbd/client.h"
#include "common/nbd/protocol.h"
#include "common/nbd/wire.h"
#include "tests/unit/testing/mem_volume.h"

namespace hexz::nbd {
namespace {

using base::Status;

using hexz::testing::MemVolume;

// A volume in memory whose first half is data (0x5a) and whose second half
// reads as zero and is reported as a hole.
std::shared_ptr<MemVolume> HalfDataVolume(uint64_t size, bool writable) {
  std::vector<uint8_t> bytes(size, 0);
  std::memset(bytes.data(), 0x5a, size / 2);
  auto v = std::make_shared<MemVolume>(std::move(bytes), 65536, writable);
  v->set_hole_from(size / 2);
  return v;
}

constexpr uint64_t kSize = 48u << 20;  // room for a 32 MiB write
const auto kForever = kNoDeadline;

struct OptReply {
  uint32_t opt = 0, type = 0;
  std::string data;
};

struct Reply {
  bool structured = false;
  uint16_t flags = 0, type = 0;
  uint32_t error = 0;
  uint64_t handle = 0;
  std::string payload;  // structured payload (simple replies: none)
};

// The client end of a socketpair, speaking raw NBD.
class RawClient {
 public:
  explicit RawClient(int fd) : fd_(fd) {}
  int fd() const { return fd_.get(); }
  void Close() { fd_.reset(); }

  bool Send(std::string_view s) { return WriteExact(fd_.get(), s, kForever).ok(); }
  bool Recv(void* buf, size_t n) { return ReadExact(fd_.get(), buf, n, DeadlineIn(10000)).ok(); }
  std::string RecvString(size_t n) {
    std::string s(n, '\0');
    EXPECT_TRUE(Recv(s.data(), n));
    return s;
  }
  // True when the server closed the connection (EOF within 10 s).
  bool Closed() {
    char c;
    Status s = ReadExact(fd_.get(), &c, 1, DeadlineIn(10000));
    return !s.ok() && s.code() == base::Code::kIoError;
  }

  // Greeting; sends client flags.
  void Hello(uint32_t client_flags) {
    uint8_t h[18];
    ASSERT_TRUE(Recv(h, sizeof h));
    EXPECT_EQ(base::GetBe64(h), kNbdMagic);
    EXPECT_EQ(base::GetBe64(h + 8), kIHaveOpt);
    EXPECT_EQ(base::GetBe16(h + 16), kFlagFixedNewstyle | kFlagNoZeroes);
    Builder b;
    b.U32(client_flags);
    ASSERT_TRUE(Send(b.data()));
  }
  void Option(uint32_t opt, std::string_view data) {
    Builder b;
    b.U64(kIHaveOpt).U32(opt).U32(static_cast<uint32_t>(data.size())).Bytes(data);
    ASSERT_TRUE(Send(b.data()));
  }
  OptReply ReadOptReply() {
    OptReply r;
    uint8_t h[20];
    if (!Recv(h, sizeof h)) {
      ADD_FAILURE() << "no option reply";
      return r;
    }
    EXPECT_EQ(base::GetBe64(h), kOptReplyMagic);
    r.opt = base::GetBe32(h + 8);
    r.type = base::GetBe32(h + 12);
    r.data = RecvString(base::GetBe32(h + 16));
    return r;
  }
  // INFO/GO body.
  static std::string InfoBody(std::string_view name, std::vector<uint16_t> reqs) {
    Builder b;
    b.U32(static_cast<uint32_t>(name.size())).Bytes(name).U16(static_cast<uint16_t>(reqs.size()));
    for (uint16_t r : reqs) b.U16(r);
    return b.data();
  }
  static std::string MetaBody(std::string_view name, std::vector<std::string> queries) {
    Builder b;
    b.U32(static_cast<uint32_t>(name.size()))
        .Bytes(name)
        .U32(static_cast<uint32_t>(queries.size()));
    for (auto& q : queries) b.U32(static_cast<uint32_t>(q.size())).Bytes(q);
    return b.data();
  }
  // GO and collect replies up to the final one; returns transmission flags.
  uint16_t Go(std::string_view name, std::vector<uint16_t> reqs = {kInfoBlockSize}) {
    Option(kOptGo, InfoBody(name, reqs));
    uint16_t flags = 0;
    for (;;) {
      OptReply r = ReadOptReply();
      if (r.type == kRepInfo && r.data.size() == 12) {
        flags = base::GetBe16(reinterpret_cast<const uint8_t*>(r.data.data()) + 10);
      }
      if (r.type != kRepInfo) {
        EXPECT_EQ(r.type, kRepAck);
        return flags;
      }
    }
  }
  void Request(uint16_t type, uint16_t flags, uint64_t handle, uint64_t off, uint32_t len,
               std::string_view payload = {}) {
    Builder b;
    b.U32(kRequestMagic).U16(flags).U16(type).U64(handle).U64(off).U32(len).Bytes(payload);
    ASSERT_TRUE(Send(b.data()));
  }
  // Reads one reply (simple: without read data; structured: one chunk).
  Reply ReadReply() {
    Reply r;
    uint8_t m[4];
    if (!Recv(m, 4)) {
      ADD_FAILURE() << "no reply";
      return r;
    }
    uint32_t magic = base::GetBe32(m);
    if (magic == kSimpleReplyMagic) {
      uint8_t h[12];
      EXPECT_TRUE(Recv(h, 12));
      r.error = base::GetBe32(h);
      r.handle = base::GetBe64(h + 4);
      return r;
    }
    EXPECT_EQ(magic, kStructuredReplyMagic);
    uint8_t h[16];
    EXPECT_TRUE(Recv(h, 16));
    r.structured = true;
    r.flags = base::GetBe16(h);
    r.type = base::GetBe16(h + 2);
    r.handle = base::GetBe64(h + 4);
    r.payload = RecvString(base::GetBe32(h + 12));
    if (r.type & 0x8000)
      r.error = base::GetBe32(reinterpret_cast<const uint8_t*>(r.payload.data()));
    return r;
  }

 private:
  base::UniqueFd fd_;
};

class NbdServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    disk_ = HalfDataVolume(kSize, true);
    ro_ = HalfDataVolume(kSize / 2, false);
    Make({});
  }
  void TearDown() override {
    for (auto& f : served_) {
      if (f.valid()) f.wait();
    }
  }
  void Make(ServerOptions o) {
    std::vector<Export> ex = {{"disk", disk_, "the disk", true}, {"memory", ro_, "memory", false}};
    server_ = std::make_unique<Server>(std::move(ex), std::move(o));
  }
  // A new connection served on a thread; the result lands in last_status().
  RawClient Connect() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    served_.push_back(std::async(std::launch::async, [this, fd = sv[0]] {
      return server_->ServeConnection(base::UniqueFd(fd));
    }));
    return RawClient(sv[1]);
  }
  Status Last() { return served_.back().get(); }
  // Handshake to transmission on `name`, optionally with structured replies
  // and base:allocation.
  RawClient Open(std::string_view name = "", bool structured = false) {
    RawClient c = Connect();
    c.Hello(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
    if (structured) {
      c.Option(kOptStructuredReply, "");
      EXPECT_EQ(c.ReadOptReply().type, kRepAck);
      c.Option(kOptSetMetaContext, RawClient::MetaBody(name, {"base:allocation"}));
      OptReply r = c.ReadOptReply();
      EXPECT_EQ(r.type, kRepMetaContext);
      EXPECT_EQ(c.ReadOptReply().type, kRepAck);
    }
    c.Go(name);
    return c;
  }

  std::shared_ptr<MemVolume> disk_, ro_;
  std::unique_ptr<Server> server_;
  std::vector<std::future<Status>> served_;
};

TEST_F(NbdServerTest, ExportNameWithNoZeroes) {
  RawClient c = Connect();
  c.Hello(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  c.Option(kOptExportName, "disk");
  uint8_t r[10];
  ASSERT_TRUE(c.Recv(r, sizeof r));
  EXPECT_EQ(base::GetBe64(r), kSize);
  uint16_t f = base::GetBe16(r + 8);
  EXPECT_TRUE(f & kTransHasFlags);
  EXPECT_FALSE(f & kTransReadOnly);
  EXPECT_TRUE(f & kTransCanMultiConn);
  EXPECT_FALSE(f & kTransSendDf);  // no structured replies
  // No zero padding: the next bytes are the reply to our first request.
  c.Request(kCmdFlush, 0, 7, 0, 0);
  Reply rep = c.ReadReply();
  EXPECT_EQ(rep.handle, 7u);
  EXPECT_EQ(rep.error, 0u);
  c.Request(kCmdDisc, 0, 8, 0, 0);
  EXPECT_TRUE(c.Closed());
  EXPECT_TRUE(Last().ok());
}

TEST_F(NbdServerTest, ExportNameWithoutNoZeroesSendsPadding) {
  RawClient c = Connect();
  c.Hello(kClientFlagFixedNewstyle);
  c.Option(kOptExportName, "");
  std::string r = c.RecvString(10 + 124);
  EXPECT_EQ(r.substr(10), std::string(124, '\0'));
  c.Request(kCmdDisc, 0, 1, 0, 0);
  EXPECT_TRUE(c.Closed());
}

TEST_F(NbdServerTest, NonFixedNewstyleExportName) {
  RawClient c = Connect();
  c.Hello(0);
  c.Option(kOptExportName, "memory");
  std::string r = c.RecvString(10 + 124);
  EXPECT_EQ(base::GetBe64(reinterpret_cast<const uint8_t*>(r.data())), kSize / 2);
  c.Close();
}

TEST_F(NbdServerTest, UnknownClientFlagsDisconnect) {
  RawClient c = Connect();
  c.Hello(kClientFlagFixedNewstyle | 0x80);
  EXPECT_TRUE(c.Closed());
  EXPECT_FALSE(Last().ok());
}

TEST_F(NbdServerTest, UnknownExportNameDisconnects) {
  RawClient c = Connect();
  c.Hello(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  c.Option(kOptExportName, "nosuch");
  EXPECT_TRUE(c.Closed());
  EXPECT_EQ(Last().code(), base::Code::kNotFound);
}

TEST_F(NbdServerTest, OptionsNegotiation) {
  RawClient c = Connect();
  c.Hello(kClientFlagFixedNewstyle | kClientFlagNoZeroes);

  // Unknown options, STARTTLS and EXTENDED_HEADERS: UNSUP, and haggling goes on.
  for (uint32_t opt : {99u, kOptStartTls, kOptExtendedHeaders, 0xffffffffu}) {
    c.Option(opt, "some data");
    OptReply r = c.ReadOptReply();
    EXPECT_EQ(r.opt, opt);
    EXPECT_EQ(r.type, kRepErrUnsup);
  }
  // LIST.
  c.Option(kOptList, "x");
  EXPECT_EQ(c.ReadOptReply().type, kRepErrInvalid);
  c.Option(kOptList, "");
  OptReply r = c.ReadOptReply();
  ASSERT_EQ(r.type, kRepServer);
  EXPECT_EQ(r.data.substr(4, 4), "disk");
  EXPECT_EQ(r.data.substr(8), "the disk");
  r = c.ReadOptReply();
  ASSERT_EQ(r.type, kRepServer);
  EXPECT_EQ(r.data.substr(4, 6), "memory");
  EXPECT_EQ(c.ReadOptReply().type, kRepAck);

  // INFO: unknown export, malformed, and a full one.
  c.Option(kOptInfo, RawClient::InfoBody("nosuch", {}));
  EXPECT_EQ(c.ReadOptReply().type, kRepErrUnknown);
  c.Option(kOptInfo, RawClient::InfoBody("disk", {}) + "z");
  EXPECT_EQ(c.ReadOptReply().type, kRepErrInvalid);
  c.Option(kOptInfo, "ab");
  EXPECT_EQ(c.ReadOptReply().type, kRepErrInvalid);
  c.Option(kOptInfo, RawClient::InfoBody("", {kInfoName, kInfoDescription, kInfoBlockSize, 4242}));
  std::map<uint16_t, std::string> infos;
  for (;;) {
    r = c.ReadOptReply();
    if (r.type != kRepInfo) break;
    infos[base::GetBe16(reinterpret_cast<const uint8_t*>(r.data.data()))] = r.data.substr(2);
  }
  EXPECT_EQ(r.type, kRepAck);
  ASSERT_TRUE(infos.count(kInfoExport));
  EXPECT_EQ(infos[kInfoExport].size(), 10u);
  EXPECT_EQ(base::GetBe64(reinterpret_cast<const uint8_t*>(infos[kInfoExport].data())), kSize);
  EXPECT_EQ(infos[kInfoName], "disk");  // the canonical name of ""
  EXPECT_EQ(infos[kInfoDescription], "the disk");
  ASSERT_EQ(infos[kInfoBlockSize].size(), 12u);
  const auto* bs = reinterpret_cast<const uint8_t*>(infos[kInfoBlockSize].data());
  EXPECT_EQ(base::GetBe32(bs), 1u);
  EXPECT_EQ(base::GetBe32(bs + 4), 65536u);
  EXPECT_EQ(base::GetBe32(bs + 8), 32u << 20);

  // Meta contexts: SET needs structured replies first.
  c.Option(kOptSetMetaContext, RawClient::MetaBody("disk", {"base:allocation"}));
  EXPECT_EQ(c.ReadOptReply().type, kRepErrInvalid);
  c.Option(kOptStructuredReply, "x");
  EXPECT_EQ(c.ReadOptReply().type, kRepErrInvalid);
  c.Option(kOptStructuredReply, "");
  EXPECT_EQ(c.ReadOptReply().type, kRepAck);
  for (auto queries : std::vector<std::vector<std::string>>{{}, {"base:"}, {"base:allocation"}}) {
    c.Option(kOptListMetaContext, RawClient::MetaBody("disk", queries));
    r = c.ReadOptReply();
    ASSERT_EQ(r.type, kRepMetaContext);
    EXPECT_EQ(r.data.substr(4), "base:allocation");
    EXPECT_EQ(c.ReadOptReply().type, kRepAck);
  }
  c.Option(kOptListMetaContext, RawClient::MetaBody("disk", {"qemu:dirty-bitmap:x", "nope"}));
  EXPECT_EQ(c.ReadOptReply().type, kRepAck);  // unknown namespaces are ignored
  c.Option(kOptListMetaContext, RawClient::MetaBody("nosuch", {}));
  EXPECT_EQ(c.ReadOptReply().type, kRepErrUnknown);
  std::string bad = RawClient::MetaBody("disk", {"base:allocation"});
  bad.resize(bad.size() - 1);
  c.Option(kOptSetMetaContext, bad);
  EXPECT_EQ(c.ReadOptReply().type, kRepErrInvalid);
  c.Option(kOptSetMetaContext, RawClient::MetaBody("disk", {"base:", "x-foo:bar"}));
  EXPECT_EQ(c.ReadOptReply().type, kRepAck);  // selects nothing
  c.Option(kOptSetMetaContext, RawClient::MetaBody("disk", {"base:allocation"}));
  r = c.ReadOptReply();
  ASSERT_EQ(r.type, kRepMetaContext);
  EXPECT_NE(base::GetBe32(reinterpret_cast<const uint8_t*>(r.data.data())), 0u);
  EXPECT_EQ(c.ReadOptReply().type, kRepAck);

  // Option data over the limit: drained and refused, haggling goes on.
  c.Option(99, std::string(kMaxOptionLength + 1, 'x'));
  EXPECT_EQ(c.ReadOptReply().type, kRepErrTooBig);

  // GO with structured replies: DF is advertised; block status works.
  uint16_t flags = c.Go("disk", {});
  EXPECT_TRUE(flags & kTransSendDf);
  EXPECT_TRUE(flags & kTransSendFastZero);
  c.Request(kCmdBlockStatus, 0, 1, 0, 4096);
  Reply rep = c.ReadReply();
  EXPECT_EQ(rep.type, kReplyTypeBlockStatus);
  c.Request(kCmdDisc, 0, 2, 0, 0);
  EXPECT_TRUE(c.Closed());
  EXPECT_TRUE(Last().ok());
}

TEST_F(NbdServerTest, MetaContextForAnotherExportLapses) {
  RawClient c = Connect();
  c.Hello(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  c.Option(kOptStructuredReply, "");
  EXPECT_EQ(c.ReadOptReply().type, kRepAck);
  c.Option(kOptSetMetaContext, RawClient::MetaBody("memory", {"base:allocation"}));
  EXPECT_EQ(c.ReadOptReply().type, kRepMetaContext);
  EXPECT_EQ(c.ReadOptReply().type, kRepAck);
  c.Go("disk");
  c.Request(kCmdBlockStatus, 0, 1, 0, 4096);
  EXPECT_EQ(c.ReadReply().error, kEinval);
}

TEST_F(NbdServerTest, HugeOptionDisconnects) {
  RawClient c = Connect();
  c.Hello(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  Builder b;
  b.U64(kIHaveOpt).U32(kOptGo).U32(0xfffffff0u);
  ASSERT_TRUE(c.Send(b.data()));
  EXPECT_TRUE(c.Closed());
  EXPECT_FALSE(Last().ok());
}

TEST_F(NbdServerTest, BadOptionMagicDisconnects) {
  RawClient c = Connect();
  c.Hello(kClientFlagFixedNewstyle);
  ASSERT_TRUE(c.Send(std::string(16, 'A')));
  EXPECT_TRUE(c.Closed());
}

TEST_F(NbdServerTest, AbortIsAcknowledged) {
  RawClient c = Connect();
  c.Hello(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  c.Option(kOptAbort, "ignored");
  EXPECT_EQ(c.ReadOptReply().type, kRepAck);
  EXPECT_TRUE(c.Closed());
  EXPECT_TRUE(Last().ok());
}

TEST_F(NbdServerTest, GoUnknownExportThenRetry) {
  RawClient c = Connect();
  c.Hello(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  c.Option(kOptGo, RawClient::InfoBody("nosuch", {}));
  EXPECT_EQ(c.ReadOptReply().type, kRepErrUnknown);
  uint16_t flags = c.Go("memory");
  EXPECT_TRUE(flags & kTransReadOnly);
  EXPECT_FALSE(flags & kTransSendTrim);
}

TEST_F(NbdServerTest, TruncatedHandshakes) {
  for (int cut : {0, 2, 10, 17}) {
    RawClient c = Connect();
    c.Hello(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
    Builder b;
    b.U64(kIHaveOpt).U32(kOptGo).U32(20);
    std::string msg = b.data() + std::string(20, 'n');
    ASSERT_TRUE(c.Send(msg.substr(0, static_cast<size_t>(cut))));
    c.Close();
    EXPECT_FALSE(Last().ok()) << cut;
  }
  // Closing before sending the client flags.
  RawClient c = Connect();
  c.RecvString(18);
  ASSERT_TRUE(c.Send("\0\0"));
  c.Close();
  EXPECT_FALSE(Last().ok());
}

TEST_F(NbdServerTest, HandshakeTimesOut) {
  ServerOptions o;
  o.handshake_timeout_ms = 100;
  Make(o);
  RawClient c = Connect();
  c.RecvString(18);  // and then say nothing
  Status s = Last();
  EXPECT_EQ(s.code(), base::Code::kCancelled) << s.ToString();
}

TEST_F(NbdServerTest, ReadWriteSimpleReplies) {
  RawClient c = Open("disk");
  std::string data(100000, 'q');
  c.Request(kCmdWrite, kCmdFlagFua, 1, 12345, static_cast<uint32_t>(data.size()), data);
  Reply r = c.ReadReply();
  EXPECT_EQ(r.handle, 1u);
  EXPECT_EQ(r.error, 0u);
  EXPECT_EQ(disk_->fua_writes, 1);
  c.Request(kCmdRead, 0, 2, 12340, 100010);
  r = c.ReadReply();
  ASSERT_EQ(r.error, 0u);
  std::string got = c.RecvString(100010);
  EXPECT_EQ(got.substr(0, 5), std::string(5, '\x5a'));
  EXPECT_EQ(got.substr(5, data.size()), data);
  c.Request(kCmdFlush, 0, 3, 0, 0);
  EXPECT_EQ(c.ReadReply().error, 0u);
  EXPECT_GE(disk_->flushes, 1);
  c.Request(kCmdTrim, kCmdFlagFua, 4, 0, 4096);
  EXPECT_EQ(c.ReadReply().error, 0u);
  c.Request(kCmdWriteZeroes, kCmdFlagNoHole, 5, 4096, 4096);
  EXPECT_EQ(c.ReadReply().error, 0u);
  c.Request(kCmdWriteZeroes, kCmdFlagFastZero, 6, 8192, 64u << 20 >> 4);
  EXPECT_EQ(c.ReadReply().error, 0u);
  c.Request(kCmdCache, 0, 7, 0, 1 << 20);
  EXPECT_EQ(c.ReadReply().error, 0u);
  c.Request(kCmdRead, 0, 8, 0, 12288 + 10);
  ASSERT_EQ(c.ReadReply().error, 0u);
  got = c.RecvString(12298);
  EXPECT_EQ(got.substr(0, 12288), std::string(12288, '\0'));
  // DF needs structured replies; BLOCK_STATUS needs a meta context.
  c.Request(kCmdRead, kCmdFlagDf, 9, 0, 512);
  EXPECT_EQ(c.ReadReply().error, kEinval);
  c.Request(kCmdBlockStatus, 0, 10, 0, 512);
  EXPECT_EQ(c.ReadReply().error, kEinval);
  c.Request(kCmdDisc, 0, 11, 0, 0);
  EXPECT_TRUE(c.Closed());
  EXPECT_TRUE(Last().ok());
  EXPECT_GE(disk_->flushes, 2);  // flushed at disconnect
}

// A READ spanning several blocks reads them in parallel (the fan-out), for
// simple and structured replies alike, and the bytes come back in order.
TEST_F(NbdServerTest, LargeReadReadsItsBlocksInParallel) {
  std::vector<uint8_t> bytes(1 << 20);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + i / 65536);
  auto v = std::make_shared<MemVolume>(bytes, 65536);
  std::mutex mu;
  std::condition_variable cv;
  int running = 0, max_running = 0;
  v->on_read = [&](uint64_t, size_t) {
    std::unique_lock lock(mu);
    max_running = std::max(max_running, ++running);
    cv.notify_all();
    // Wait (bounded) until a second piece is read at the same time.
    cv.wait_for(lock, std::chrono::seconds(5), [&] { return max_running >= 2; });
    --running;
  };
  server_ = std::make_unique<Server>(std::vector<Export>{{"disk", v, "", false}});
  for (bool structured : {false, true}) {
    SCOPED_TRACE(structured ? "structured" : "simple");
    max_running = 0;
    v->reads = 0;
    RawClient c = Open("disk", structured);
    c.Request(kCmdRead, structured ? kCmdFlagDf : 0, 1, 1000, 4 * 65536);
    Reply r = c.ReadReply();
    ASSERT_EQ(r.error, 0u);
    std::string got = structured ? r.payload.substr(8) : c.RecvString(4 * 65536);
    EXPECT_EQ(got, std::string(bytes.begin() + 1000, bytes.begin() + 1000 + 4 * 65536));
    EXPECT_EQ(v->reads.load(), 5);  // [1000, 65536), three whole blocks, the tail
    EXPECT_GE(max_running, 2);
    c.Request(kCmdDisc, 0, 2, 0, 0);
    EXPECT_TRUE(c.Closed());
  }
}

TEST_F(NbdServerTest, StructuredReadsAndBlockStatus) {
  RawClient c = Open("", true);
  c.Request(kCmdRead, kCmdFlagDf, 1, 1000, 5000);
  Reply r = c.ReadReply();
  EXPECT_EQ(r.type, kReplyTypeOffsetData);
  EXPECT_TRUE(r.flags & kReplyFlagDone);
  ASSERT_EQ(r.payload.size(), 5008u);
  EXPECT_EQ(base::GetBe64(reinterpret_cast<const uint8_t*>(r.payload.data())), 1000u);
  EXPECT_EQ(r.payload.substr(8), std::string(5000, '\x5a'));

  // Without DF: data chunks, a hole chunk, then NONE; reassembled it matches.
  const uint64_t half = kSize / 2;
  for (uint32_t len : {8192u + 3u, 32u << 20}) {
    const uint64_t start = half - (len / 2);
    c.Request(kCmdRead, 0, 10, start, len);
    std::string image(len, '?');
    uint64_t covered = 0;
    int holes = 0;
    for (;;) {
      Reply k = c.ReadReply();
      ASSERT_EQ(k.handle, 10u);
      const auto* q = reinterpret_cast<const uint8_t*>(k.payload.data());
      if (k.type == kReplyTypeOffsetData) {
        uint64_t o = base::GetBe64(q);
        ASSERT_GE(o, start);
        ASSERT_LE(o - start + k.payload.size() - 8, len);
        EXPECT_LE(k.payload.size() - 8, 4u << 20);
        image.replace(o - start, k.payload.size() - 8, k.payload.substr(8));
        covered += k.payload.size() - 8;
      } else if (k.type == kReplyTypeOffsetHole) {
        ASSERT_EQ(k.payload.size(), 12u);
        uint64_t o = base::GetBe64(q);
        uint32_t n = base::GetBe32(q + 8);
        ASSERT_LE(o - start + n, len);
        image.replace(o - start, n, std::string(n, '\0'));
        covered += n;
        ++holes;
      } else {
        EXPECT_EQ(k.type, kReplyTypeNone);
      }
      if (k.flags & kReplyFlagDone) break;
    }
    EXPECT_EQ(covered, len);
    EXPECT_EQ(holes, 1);
    EXPECT_EQ(image.substr(0, half - start), std::string(half - start, '\x5a'));
    EXPECT_EQ(image.substr(half - start), std::string(len - (half - start), '\0'));
  }

  // Across the data/hole boundary: two descriptors; REQ_ONE: one.
  c.Request(kCmdBlockStatus, 0, 2, half - 4096, 8192);
  r = c.ReadReply();
  ASSERT_EQ(r.type, kReplyTypeBlockStatus);
  ASSERT_EQ(r.payload.size(), 4u + 16u);
  const auto* p = reinterpret_cast<const uint8_t*>(r.payload.data());
  EXPECT_EQ(base::GetBe32(p + 4), 4096u);
  EXPECT_EQ(base::GetBe32(p + 8), 0u);
  EXPECT_EQ(base::GetBe32(p + 12), 4096u);
  EXPECT_EQ(base::GetBe32(p + 16), kStateHole | kStateZero);
  c.Request(kCmdBlockStatus, kCmdFlagReqOne, 3, half - 4096, 8192);
  r = c.ReadReply();
  ASSERT_EQ(r.payload.size(), 12u);
  EXPECT_EQ(base::GetBe32(reinterpret_cast<const uint8_t*>(r.payload.data()) + 4), 4096u);

  // Errors come as error chunks with a message.
  c.Request(kCmdRead, 0, 4, kSize - 10, 20);
  r = c.ReadReply();
  EXPECT_EQ(r.type, kReplyTypeError);
  EXPECT_EQ(r.error, kEinval);
  EXPECT_TRUE(r.flags & kReplyFlagDone);
  EXPECT_GT(r.payload.size(), 6u);
  c.Request(kCmdBlockStatus, 0, 5, kSize, 1);
  EXPECT_EQ(c.ReadReply().error, kEinval);
}

TEST_F(NbdServerTest, InvalidRequestsGetPrescribedErrors) {
  RawClient c = Open("disk");
  struct Case {
    uint16_t type, flags;
    uint64_t off;
    uint32_t len;
    uint32_t want;
  } cases[] = {
      {kCmdRead, 0, kSize - 1, 2, kEinval},            // past the end
      {kCmdRead, 0, UINT64_MAX - 10, 100, kEinval},    // offset+length overflows
      {kCmdRead, 0, 0, (32u << 20) + 1, kEinval},      // over the maximum
      {kCmdRead, 0, 0, 0, kEinval},                    // zero length
      {kCmdRead, kCmdFlagReqOne, 0, 512, kEinval},     // flag of another command
      {kCmdRead, 0x8000, 0, 512, kEinval},             // unknown flag
      {kCmdTrim, 0, kSize, 1, kEinval},                // trim past the end
      {kCmdWriteZeroes, 0, kSize - 1, 2, kEnospc},     // write past the end
      {kCmdWriteZeroes, kCmdFlagDf, 0, 512, kEinval},  // bad flag
      {kCmdCache, 0, kSize, 1, kEinval},               // cache past the end
      {kCmdBlockStatus, 0, 0, 512, kEinval},           // no meta context
      {9, 0, 0, 512, kEinval},                         // unknown command
      {0xffff, 0, 0, 0, kEinval},                      // unknown command
  };
  uint64_t h = 100;
  for (const Case& k : cases) {
    c.Request(k.type, k.flags, h, k.off, k.len);
    Reply r = c.ReadReply();
    EXPECT_EQ(r.handle, h);
    EXPECT_EQ(r.error, k.want) << "type " << k.type << " flags " << k.flags << " off " << k.off
                               << " len " << k.len;
    ++h;
  }
  // A bad WRITE still has its payload consumed: the next request parses.
  std::string junk(4096, 'j');
  c.Request(kCmdWrite, 0, 200, kSize - 1, 4096, junk);
  EXPECT_EQ(c.ReadReply().error, kEnospc);
  c.Request(kCmdWrite, kCmdFlagReqOne, 201, 0, 4096, junk);
  EXPECT_EQ(c.ReadReply().error, kEinval);
  std::string big((32u << 20) + 4096, 'b');
  c.Request(kCmdWrite, 0, 202, 0, static_cast<uint32_t>(big.size()), big);
  EXPECT_EQ(c.ReadReply().error, kEinval);
  // Unaligned I/O is fine (minimum block size 1).
  c.Request(kCmdWrite, 0, 203, 3, 5, "hello");
  EXPECT_EQ(c.ReadReply().error, 0u);
  c.Request(kCmdRead, 0, 204, 1, 9);
  ASSERT_EQ(c.ReadReply().error, 0u);
  EXPECT_EQ(c.RecvString(9), "\x5a\x5ahello\x5a\x5a");
  // A 32 MiB write is accepted.
  std::string max(32u << 20, 'm');
  c.Request(kCmdWrite, 0, 205, 0, static_cast<uint32_t>(max.size()), max);
  EXPECT_EQ(c.ReadReply().error, 0u);
  // Bad magic: hard disconnect.
  ASSERT_TRUE(c.Send(std::string(28, 'X')));
  EXPECT_TRUE(c.Closed());
  EXPECT_FALSE(Last().ok());
}

TEST_F(NbdServerTest, ReadOnlyExportRefusesWrites) {
  RawClient c = Open("memory");
  std::string d(512, 'w');
  c.Request(kCmdWrite, 0, 1, 0, 512, d);
  EXPECT_EQ(c.ReadReply().error, kEperm);
  c.Request(kCmdTrim, 0, 2, 0, 512);
  EXPECT_EQ(c.ReadReply().error, kEperm);
  c.Request(kCmdWriteZeroes, 0, 3, 0, 512);
  EXPECT_EQ(c.ReadReply().error, kEperm);
  c.Request(kCmdRead, 0, 4, 0, 512);
  ASSERT_EQ(c.ReadReply().error, 0u);
  EXPECT_EQ(c.RecvString(512), std::string(512, '\x5a'));
}

TEST_F(NbdServerTest, FastZeroRefusedWhenNotFast) {
  auto v = HalfDataVolume(1 << 20, true);
  server_ = std::make_unique<Server>(std::vector<Export>{{"disk", v, "", false}});
  RawClient c = Open();
  c.Request(kCmdWriteZeroes, kCmdFlagFastZero, 1, 0, 4096);
  EXPECT_EQ(c.ReadReply().error, kEnotsup);
  c.Request(kCmdWriteZeroes, 0, 2, 0, 4096);
  EXPECT_EQ(c.ReadReply().error, 0u);
}

TEST_F(NbdServerTest, PipelinedRequestsAllAnswered) {
  RawClient c = Open("disk");
  constexpr int kN = 200;
  std::thread writer([&] {
    for (int i = 0; i < kN; ++i) {
      if (i % 2) {
        c.Request(kCmdRead, 0, static_cast<uint64_t>(i), static_cast<uint64_t>(i) * 4096, 4096);
      } else {
        c.Request(kCmdWrite, 0, static_cast<uint64_t>(i), static_cast<uint64_t>(i) * 4096, 4096,
                  std::string(4096, static_cast<char>(i)));
      }
    }
  });
  std::set<uint64_t> seen;
  for (int i = 0; i < kN; ++i) {
    Reply r = c.ReadReply();
    EXPECT_EQ(r.error, 0u);
    if (r.handle % 2) c.RecvString(4096);
    seen.insert(r.handle);
  }
  writer.join();
  EXPECT_EQ(seen.size(), static_cast<size_t>(kN));
}

TEST_F(NbdServerTest, VanishingClientsDoNotDisturbOthers) {
  RawClient good = Open("disk");
  {
    RawClient bad = Open("disk");
    // A WRITE whose payload never fully arrives.
    bad.Request(kCmdWrite, 0, 1, 0, 65536, std::string(1000, 'x'));
    // A READ whose reply nobody reads.
    bad.Request(kCmdRead, 0, 2, 0, 1 << 20);
    bad.Close();
  }
  EXPECT_FALSE(Last().ok());
  RawClient mid = Open("disk");
  mid.Request(kCmdRead, 0, 1, 0, 4096);
  mid.Close();
  good.Request(kCmdRead, 0, 9, 0, 4096);
  Reply r = good.ReadReply();
  EXPECT_EQ(r.handle, 9u);
  EXPECT_EQ(good.RecvString(4096), std::string(4096, '\x5a'));
}

// Clients that pipeline big reads and never read the replies hold their
// whole per-connection budget, which together covers the server-wide one.
// Another client must still be answered at once, not after the stuck clients
// time out.
TEST_F(NbdServerTest, StuckClientsDoNotDelayOthers) {
  ServerOptions o;
  o.max_request = 1u << 20;
  o.connection_inflight_bytes = 2u << 20;
  o.server_inflight_bytes = 4u << 20;
  o.io_timeout_ms = 6000;
  Make(o);
  std::vector<RawClient> stuck;
  for (int i = 0; i < 3; ++i) {
    stuck.push_back(Open("disk"));
    for (uint64_t h = 0; h < 8; ++h) stuck.back().Request(kCmdRead, 0, h, h << 20, 1u << 20);
  }
  // Let the stuck connections fill their budgets and block in sending.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  RawClient good = Open("disk");
  auto start = std::chrono::steady_clock::now();
  good.Request(kCmdRead, 0, 9, 0, 65536);
  Reply r = good.ReadReply();
  EXPECT_EQ(r.handle, 9u);
  EXPECT_EQ(good.RecvString(65536), std::string(65536, '\x5a'));
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_LT(waited, std::chrono::milliseconds(3000))
      << "the good client waited "
      << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() << " ms";
  // A second request of the good client too, while the others stay stuck.
  good.Request(kCmdRead, 0, 10, 1u << 20, 1u << 20);
  r = good.ReadReply();
  EXPECT_EQ(r.handle, 10u);
  EXPECT_EQ(good.RecvString(1u << 20).size(), size_t{1} << 20);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(5000));
  // The send timeout drops the stuck clients: after it, draining what was
  // sent ends in end-of-stream.
  std::this_thread::sleep_for(std::chrono::milliseconds(o.io_timeout_ms + 500));
  for (RawClient& c : stuck) {
    std::string buf(1u << 20, '\0');
    Status s;
    while ((s = ReadExact(c.fd(), buf.data(), buf.size(), DeadlineIn(5000))).ok()) {
    }
    EXPECT_EQ(s.code(), base::Code::kIoError) << s.ToString();
  }
}

TEST_F(NbdServerTest, ShutdownEndsConnections) {
  RawClient c = Open("disk");
  server_->Shutdown();
  EXPECT_TRUE(c.Closed());
  EXPECT_TRUE(Last().ok());
  RawClient late = Connect();
  EXPECT_EQ(Last().code(), base::Code::kCancelled);
}

TEST_F(NbdServerTest, ListenerServesUntilStopped) {
  int stop[2];
  // A socketpair cannot listen; use an abstract unix socket.
  int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  std::string name = "hexz-nbd-test-" + std::to_string(::getpid());
  std::memcpy(sa.sun_path + 1, name.data(), name.size());
  socklen_t sl = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sl), 0);
  ASSERT_EQ(::listen(lfd, 8), 0);
  ASSERT_EQ(::pipe(stop), 0);
  auto done = std::async(std::launch::async, [&] { return server_->ServeListener(lfd, stop[0]); });
  for (int i = 0; i < 3; ++i) {
    int cfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(::connect(cfd, reinterpret_cast<sockaddr*>(&sa), sl), 0);
    auto e = NegotiateClient(cfd, "memory");
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    EXPECT_EQ(e->size, kSize / 2);
    EXPECT_TRUE(e->read_only());
    ::close(cfd);
  }
  ASSERT_EQ(::write(stop[1], "x", 1), 1);
  EXPECT_TRUE(done.get().ok());
  ::close(lfd);
  ::close(stop[0]);
  ::close(stop[1]);
}

TEST_F(NbdServerTest, ListenerRefusesConnectionsOverTheLimit) {
  ServerOptions o;
  o.max_connections = 1;
  Make(o);
  int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  std::string name = "hexz-nbd-limit-" + std::to_string(::getpid());
  std::memcpy(sa.sun_path + 1, name.data(), name.size());
  socklen_t sl = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sl), 0);
  ASSERT_EQ(::listen(lfd, 8), 0);
  int stop[2];
  ASSERT_EQ(::pipe(stop), 0);
  auto done = std::async(std::launch::async, [&] { return server_->ServeListener(lfd, stop[0]); });
  base::UniqueFd first(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(first.get(), reinterpret_cast<sockaddr*>(&sa), sl), 0);
  ASSERT_TRUE(NegotiateClient(first.get(), "disk").ok());
  base::UniqueFd second(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(second.get(), reinterpret_cast<sockaddr*>(&sa), sl), 0);
  EXPECT_FALSE(NegotiateClient(second.get(), "disk").ok());
  // The first client is still served.
  RawClient c(first.release());
  c.Request(kCmdRead, 0, 1, 0, 8);
  EXPECT_EQ(c.ReadReply().error, 0u);
  EXPECT_EQ(c.RecvString(8), std::string(8, '\x5a'));
  ASSERT_EQ(::write(stop[1], "x", 1), 1);
  EXPECT_TRUE(done.get().ok());
  EXPECT_TRUE(c.Closed());  // stopping the listener ends its connections
  ::close(lfd);
  ::close(stop[0]);
  ::close(stop[1]);
}

TEST_F(NbdServerTest, ClientNegotiation) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  served_.push_back(std::async(std::launch::async, [this, fd = sv[0]] {
    return server_->ServeConnection(base::UniqueFd(fd));
  }));
  base::UniqueFd cfd(sv[1]);
  auto e = NegotiateClient(cfd.get(), "");
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->size, kSize);
  EXPECT_FALSE(e->read_only());
  EXPECT_EQ(e->min_block, 1u);
  EXPECT_EQ(e->preferred_block, 65536u);
  EXPECT_EQ(e->max_block, 32u << 20);
  EXPECT_TRUE(e->transmission_flags & kTransSendFlush);
  EXPECT_FALSE(e->transmission_flags & kTransSendDf);  // simple replies only
  // The socket is in transmission, blocking again: a simple-reply READ works.
  RawClient c(cfd.release());
  c.Request(kCmdRead, 0, 5, 0, 16);
  Reply r = c.ReadReply();
  EXPECT_EQ(r.structured, false);
  EXPECT_EQ(c.RecvString(16), std::string(16, '\x5a'));

  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  served_.push_back(std::async(std::launch::async, [this, fd = sv[0]] {
    return server_->ServeConnection(base::UniqueFd(fd));
  }));
  base::UniqueFd c2(sv[1]);
  auto bad = NegotiateClient(c2.get(), "nosuch");
  EXPECT_EQ(bad.status().code(), base::Code::kNotFound);
  c2.reset();
}

TEST(NbdClientTest, RejectsNonNbdPeers) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  base::UniqueFd a(sv[0]), b(sv[1]);
  ASSERT_EQ(::write(a.get(), "HTTP/1.1 200 OK\r\n\r\n", 19), 19);
  auto e = NegotiateClient(b.get(), "disk", 2000);
  EXPECT_FALSE(e.ok());
  a.reset();
  int sv2[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv2), 0);
  base::UniqueFd c(sv2[0]), d(sv2[1]);
  e = NegotiateClient(d.get(), "disk", 100);  // silent peer: times out
  EXPECT_EQ(e.status().code(), base::Code::kCancelled);
}

}  // namespace
}  // namespace hexz::nbd
