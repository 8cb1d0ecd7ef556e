#include "common/ipc/channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "common/ipc/worker_protocol.h"

namespace hexz::ipc {
namespace {

struct Pair {
  UniqueFd a, b;
};

Pair MakePair() {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

void RawHeader(int fd, uint32_t magic, uint32_t type, uint32_t len, uint32_t nfds) {
  uint32_t h[4] = {magic, type, len, nfds};  // the tests run on little-endian x86
  ASSERT_EQ(write(fd, h, sizeof h), static_cast<ssize_t>(sizeof h));
}

TEST(ChannelTest, RoundTripPayload) {
  Pair p = MakePair();
  Encoder e;
  e.U8(7);
  e.Bool(true);
  e.U32(0xdeadbeef);
  e.U64(0x0123456789abcdefULL);
  e.Str("snap.st");
  ASSERT_TRUE(Send(p.a.get(), 5, e.bytes()).ok());
  auto m = Receive(p.b.get(), {4, 5});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->type, 5u);
  Decoder d(m->payload);
  EXPECT_EQ(*d.U8(), 7);
  EXPECT_TRUE(*d.Bool());
  EXPECT_EQ(*d.U32(), 0xdeadbeefu);
  EXPECT_EQ(*d.U64(), 0x0123456789abcdefULL);
  EXPECT_EQ(*d.Str(), "snap.st");
  EXPECT_TRUE(d.Finish().ok());
}

TEST(ChannelTest, PassesDescriptors) {
  Pair p = MakePair();
  int pipefd[2];
  ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
  UniqueFd r(pipefd[0]), w(pipefd[1]);
  ASSERT_TRUE(Send(p.a.get(), 1, {}, {w.get(), r.get()}).ok());
  auto m = Receive(p.b.get(), {1});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->fds.size(), 2u);
  // The received write end is a new descriptor for the same pipe.
  EXPECT_NE(m->fds[0].get(), w.get());
  ASSERT_EQ(write(m->fds[0].get(), "hi", 2), 2);
  char buf[2];
  ASSERT_EQ(read(r.get(), buf, 2), 2);
  EXPECT_EQ(std::memcmp(buf, "hi", 2), 0);
  EXPECT_TRUE(fcntl(m->fds[1].get(), F_GETFD) & FD_CLOEXEC);
}

TEST(ChannelTest, BackToBackMessagesKeepTheirDescriptors) {
  Pair p = MakePair();
  int pipefd[2];
  ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
  UniqueFd r(pipefd[0]), w(pipefd[1]);
  ASSERT_TRUE(Send(p.a.get(), 1, {1, 2, 3}, {r.get()}).ok());
  ASSERT_TRUE(Send(p.a.get(), 2, {4}, {}).ok());
  ASSERT_TRUE(Send(p.a.get(), 1, {}, {w.get()}).ok());
  auto m1 = Receive(p.b.get(), {1, 2});
  auto m2 = Receive(p.b.get(), {1, 2});
  auto m3 = Receive(p.b.get(), {1, 2});
  ASSERT_TRUE(m1.ok() && m2.ok() && m3.ok());
  EXPECT_EQ(m1->fds.size(), 1u);
  EXPECT_EQ(m1->payload.size(), 3u);
  EXPECT_EQ(m2->fds.size(), 0u);
  EXPECT_EQ(m3->fds.size(), 1u);
}

TEST(ChannelTest, RefusesToSendOversizedPayload) {
  Pair p = MakePair();
  std::vector<uint8_t> big(kMaxPayload + 1);
  Status st = Send(p.a.get(), 1, big);
  EXPECT_EQ(st.code(), base::Code::kInvalidArgument);
  EXPECT_NE(st.message().find("over the limit"), std::string::npos) << st.message();
  EXPECT_TRUE(Send(p.a.get(), 1, std::vector<uint8_t>(kMaxPayload)).ok());
}

TEST(ChannelTest, RejectsAnnouncedOversizedPayload) {
  Pair p = MakePair();
  RawHeader(p.a.get(), kMagic, 1, kMaxPayload + 1, 0);
  auto m = Receive(p.b.get(), {1});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), base::Code::kCorruption);
  EXPECT_NE(m.status().message().find("exceeds the limit"), std::string::npos);
}

TEST(ChannelTest, UnknownTypeIsFatal) {
  Pair p = MakePair();
  ASSERT_TRUE(Send(p.a.get(), 99, {1, 2}).ok());
  auto m = Receive(p.b.get(), {kWorkerReady, kWorkerError});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), base::Code::kCorruption);
  EXPECT_NE(m.status().message().find("unexpected message type 99"), std::string::npos);
}

TEST(ChannelTest, BadMagicIsFatal) {
  Pair p = MakePair();
  RawHeader(p.a.get(), 0x12345678, 1, 0, 0);
  auto m = Receive(p.b.get(), {1});
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("magic"), std::string::npos);
}

TEST(ChannelTest, TruncatedPayloadIsFatal) {
  Pair p = MakePair();
  RawHeader(p.a.get(), kMagic, 1, 100, 0);
  ASSERT_EQ(write(p.a.get(), "0123456789", 10), 10);
  p.a.reset();
  auto m = Receive(p.b.get(), {1});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), base::Code::kCorruption);
  EXPECT_NE(m.status().message().find("truncated message"), std::string::npos)
      << m.status().message();
}

TEST(ChannelTest, TruncatedHeaderIsFatal) {
  Pair p = MakePair();
  ASSERT_EQ(write(p.a.get(), "HXZ", 3), 3);
  p.a.reset();
  auto m = Receive(p.b.get(), {1});
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("truncated message"), std::string::npos);
}

TEST(ChannelTest, CleanCloseIsNotFound) {
  Pair p = MakePair();
  p.a.reset();
  auto m = Receive(p.b.get(), {1});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), base::Code::kNotFound);
}

TEST(ChannelTest, DescriptorCountMustMatchHeader) {
  Pair p = MakePair();
  // Header claims 2 descriptors; none are attached.
  RawHeader(p.a.get(), kMagic, 1, 0, 2);
  auto m = Receive(p.b.get(), {1});
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("announces 2 descriptors"), std::string::npos);
}

TEST(DecoderTest, OverrunsAndLimits) {
  std::vector<uint8_t> bytes = {5, 0, 0, 0, 'a', 'b'};  // string claims 5, has 2
  Decoder d(bytes);
  auto s = d.Str();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), base::Code::kCorruption);

  Encoder e;
  e.Str("toolong");
  Decoder d2(e.bytes());
  EXPECT_FALSE(d2.Str(3).ok());

  std::vector<uint8_t> flag = {2};
  Decoder d3(flag);
  EXPECT_FALSE(d3.Bool().ok());

  std::vector<uint8_t> extra = {1, 0, 0, 0, 9};
  Decoder d4(extra);
  EXPECT_TRUE(d4.U32().ok());
  EXPECT_FALSE(d4.Finish().ok());
}

TEST(WorkerProtocolTest, ConfigRoundTrip) {
  Pair p = MakePair();
  WorkerConfig c;
  c.mountpoint = "/mnt/x";
  c.uid = 1234;
  c.gid = 5678;
  c.daemon = true;
  c.allow_root = true;
  c.auto_unmount = true;
  c.read_threads = 3;
  c.chain_names = {"child.st", "parent.st"};
  c.chain_fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  c.chain_fds.emplace_back(::open("/dev/zero", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(SendWorkerConfig(p.a.get(), c).ok());
  auto m = Receive(p.b.get(), {kWorkerConfig});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto got = DecodeWorkerConfig(std::move(*m));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->mountpoint, "/mnt/x");
  EXPECT_EQ(got->uid, 1234u);
  EXPECT_EQ(got->gid, 5678u);
  EXPECT_TRUE(got->daemon);
  EXPECT_FALSE(got->read_write);
  EXPECT_EQ(got->read_threads, 3u);
  EXPECT_EQ(got->chain_names, c.chain_names);
  ASSERT_EQ(got->chain_fds.size(), 2u);
  char byte = 1;
  ASSERT_EQ(read(got->chain_fds[1].get(), &byte, 1), 1);  // /dev/zero
  EXPECT_EQ(byte, 0);
}

TEST(WorkerProtocolTest, ReadWriteConfigCarriesTheOverlay) {
  Pair p = MakePair();
  WorkerConfig c;
  c.mountpoint = "/mnt/x";
  c.read_write = true;
  c.overlay_name = "work.ovl";
  c.overlay_ephemeral = true;
  c.chain_names = {"a.st"};
  c.chain_fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  c.overlay_data_fd = UniqueFd(::open("/dev/zero", O_RDONLY | O_CLOEXEC));
  c.overlay_meta_fd = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(SendWorkerConfig(p.a.get(), c).ok());
  auto m = Receive(p.b.get(), {kWorkerConfig});
  ASSERT_TRUE(m.ok());
  auto got = DecodeWorkerConfig(std::move(*m));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->read_write);
  EXPECT_EQ(got->overlay_name, "work.ovl");
  EXPECT_TRUE(got->overlay_ephemeral);
  ASSERT_TRUE(got->overlay_data_fd.valid());
  ASSERT_TRUE(got->overlay_meta_fd.valid());
  char byte = 1;
  ASSERT_EQ(read(got->overlay_data_fd.get(), &byte, 1), 1);  // /dev/zero
  EXPECT_EQ(byte, 0);
}

TEST(WorkerProtocolTest, ServeConfigCarriesTheTlsInputs) {
  Pair p = MakePair();
  WorkerConfig c;
  c.mode = WorkerMode::kNbdServe;
  c.chain_names = {"a.st"};
  c.chain_fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  c.nbd_listen_fd = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  c.tls_mode = 2;
  c.tls_verify_peer = true;
  c.tls_cert = "CERT";
  c.tls_key = "KEY";
  c.tls_ca = "CA";
  c.tls_access = "dn disk CN=x\n";
  ASSERT_TRUE(SendWorkerConfig(p.a.get(), c).ok());
  auto m = Receive(p.b.get(), {kWorkerConfig});
  ASSERT_TRUE(m.ok());
  auto got = DecodeWorkerConfig(std::move(*m));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->tls_mode, 2u);
  EXPECT_TRUE(got->tls_verify_peer);
  EXPECT_EQ(got->tls_cert, "CERT");
  EXPECT_EQ(got->tls_key, "KEY");
  EXPECT_EQ(got->tls_ca, "CA");
  EXPECT_EQ(got->tls_psk, "");
  EXPECT_EQ(got->tls_access, "dn disk CN=x\n");
}

TEST(WorkerProtocolTest, TlsInputsWithTlsOffOrOutsideServeAreRejected) {
  for (int fuse = 0; fuse < 2; ++fuse) {
    Pair p = MakePair();
    WorkerConfig c;
    c.chain_names = {"a.st"};
    c.chain_fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (fuse) {
      c.mountpoint = "/mnt/x";
      c.tls_mode = 1;
    } else {
      c.mode = WorkerMode::kNbdServe;
      c.nbd_listen_fd = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    }
    c.tls_psk = "alice:00";
    ASSERT_TRUE(SendWorkerConfig(p.a.get(), c).ok());
    auto m = Receive(p.b.get(), {kWorkerConfig});
    ASSERT_TRUE(m.ok());
    auto got = DecodeWorkerConfig(std::move(*m));
    ASSERT_FALSE(got.ok());
    EXPECT_NE(
        got.status().message().find(fuse ? "TLS outside serve mode" : "TLS settings with TLS off"),
        std::string::npos)
        << got.status().ToString();
  }
}

TEST(WorkerProtocolTest, OverlaySettingsWithoutRwAreRejected) {
  Pair p = MakePair();
  WorkerConfig c;
  c.mountpoint = "/mnt/x";
  c.overlay_name = "work.ovl";
  c.chain_names = {"a.st"};
  c.chain_fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(SendWorkerConfig(p.a.get(), c).ok());
  auto m = Receive(p.b.get(), {kWorkerConfig});
  ASSERT_TRUE(m.ok());
  auto got = DecodeWorkerConfig(std::move(*m));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("without the rw flag"), std::string::npos);
}

TEST(WorkerProtocolTest, PartitionFilesAreForFuseMountsOnly) {
  for (WorkerMode mode : {WorkerMode::kFuse, WorkerMode::kNbdServe}) {
    Pair p = MakePair();
    WorkerConfig c;
    c.mode = mode;
    c.mountpoint = "/mnt/x";
    c.partitions = true;
    c.chain_names = {"a.st"};
    c.chain_fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (mode == WorkerMode::kNbdServe) {
      c.nbd_listen_fd = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    }
    ASSERT_TRUE(SendWorkerConfig(p.a.get(), c).ok());
    auto m = Receive(p.b.get(), {kWorkerConfig});
    ASSERT_TRUE(m.ok());
    auto got = DecodeWorkerConfig(std::move(*m));
    if (mode == WorkerMode::kFuse) {
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_TRUE(got->partitions);
    } else {
      ASSERT_FALSE(got.ok());
      EXPECT_NE(got.status().message().find("partition files outside FUSE mode"),
                std::string::npos);
    }
  }
}

TEST(WorkerProtocolTest, ConfigWithoutItsDescriptorsIsRejected) {
  Pair p = MakePair();
  WorkerConfig c;
  c.mountpoint = "/mnt/x";
  c.chain_names = {"a.st"};  // but no descriptor
  ASSERT_TRUE(SendWorkerConfig(p.a.get(), c).ok());
  auto m = Receive(p.b.get(), {kWorkerConfig});
  ASSERT_TRUE(m.ok());
  auto got = DecodeWorkerConfig(std::move(*m));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("differ in number"), std::string::npos);
}

TEST(WorkerProtocolTest, ErrorAndReadyReplies) {
  Pair p = MakePair();
  ASSERT_TRUE(SendWorkerError(p.a.get(), Status::Unavailable("/dev/fuse: No such file")).ok());
  auto r = ReceiveWorkerReply(p.b.get());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kUnavailable);
  EXPECT_EQ(r.status().message(), "/dev/fuse: No such file");
  ASSERT_TRUE(SendWorkerReady(p.a.get(), "pid 42").ok());
  auto ok = ReceiveWorkerReply(p.b.get());
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "pid 42");
  p.a.reset();
  auto gone = ReceiveWorkerReply(p.b.get());
  ASSERT_FALSE(gone.ok());
  EXPECT_NE(gone.status().message().find("exited without reporting"), std::string::npos);
}

TEST(WorkerProtocolTest, ControlRequestsRoundTrip) {
  Pair p = MakePair();
  WorkerControl sw;
  sw.type = kSwitchOverlay;
  sw.overlay_name = "/run/hexz/resume-x/overlay";
  sw.base_id.fill(0x5a);
  sw.overlay_data_fd = UniqueFd(::open("/dev/zero", O_RDONLY | O_CLOEXEC));
  sw.overlay_meta_fd = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(SendWorkerControl(p.a.get(), sw).ok());
  WorkerControl fold;
  ASSERT_TRUE(SendWorkerControl(p.a.get(), fold).ok());
  auto m = Receive(p.b.get(), {kSwitchOverlay, kFoldOverlay});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto got = DecodeWorkerControl(std::move(*m));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->type, kSwitchOverlay);
  EXPECT_EQ(got->overlay_name, sw.overlay_name);
  EXPECT_EQ(got->base_id, sw.base_id);
  char byte = 1;
  ASSERT_EQ(read(got->overlay_data_fd.get(), &byte, 1), 1);  // /dev/zero
  EXPECT_EQ(byte, 0);
  EXPECT_TRUE(got->overlay_meta_fd.valid());
  m = Receive(p.b.get(), {kSwitchOverlay, kFoldOverlay});
  ASSERT_TRUE(m.ok());
  got = DecodeWorkerControl(std::move(*m));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->type, kFoldOverlay);
}

TEST(WorkerProtocolTest, ControlRequestsAreCheckedStrictly) {
  auto decode = [](uint32_t type, std::vector<uint8_t> payload, int fds) {
    Message m;
    m.type = type;
    m.payload = std::move(payload);
    for (int i = 0; i < fds; ++i) m.fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    return DecodeWorkerControl(std::move(m)).status();
  };
  Encoder good;
  good.Str("ovl");
  for (int i = 0; i < 16; ++i) good.U8(1);
  EXPECT_TRUE(decode(kSwitchOverlay, good.bytes(), 2).ok());
  EXPECT_FALSE(decode(kSwitchOverlay, good.bytes(), 1).ok());  // a descriptor missing
  EXPECT_FALSE(decode(kSwitchOverlay, good.bytes(), 3).ok());  // one too many
  std::vector<uint8_t> longer = good.bytes();
  longer.push_back(0);
  EXPECT_FALSE(decode(kSwitchOverlay, longer, 2).ok());  // trailing bytes
  std::vector<uint8_t> shorter(good.bytes().begin(), good.bytes().end() - 1);
  EXPECT_FALSE(decode(kSwitchOverlay, shorter, 2).ok());  // the id cut short
  Encoder unnamed;
  unnamed.Str("");
  for (int i = 0; i < 16; ++i) unnamed.U8(1);
  EXPECT_FALSE(decode(kSwitchOverlay, unnamed.bytes(), 2).ok());
  EXPECT_TRUE(decode(kFoldOverlay, {}, 0).ok());
  EXPECT_FALSE(decode(kFoldOverlay, {0}, 0).ok());
  EXPECT_FALSE(decode(kFoldOverlay, {}, 1).ok());
  EXPECT_FALSE(decode(kWorkerConfig, good.bytes(), 2).ok());
}

}  // namespace
}  // namespace hexz::ipc
