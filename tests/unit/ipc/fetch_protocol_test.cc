// The worker <-> fetcher protocol: request and reply checks, and FetchClient
// against a fake fetcher on a real socketpair (answers, an error reply, a
// malformed answer, a fetcher that goes away).
#include "common/ipc/fetch_protocol.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/base/endian.h"

namespace hexz::ipc {
namespace {

using base::UniqueFd;

TEST(FetchProtocolTest, RequestRoundTripAndBounds) {
  uint8_t raw[kFetchRequestSize];
  EncodeFetchRequest({1, 100, 50}, raw);
  auto r = DecodeFetchRequest(raw, {10, 150});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->file, 1u);
  EXPECT_EQ(r->offset, 100u);
  EXPECT_EQ(r->length, 50u);
  EXPECT_FALSE(DecodeFetchRequest(raw, {10, 149}).ok());  // ends past the file
  EXPECT_FALSE(DecodeFetchRequest(raw, {10}).ok());       // no such file
  EncodeFetchRequest({0, UINT64_MAX - 5, 10}, raw);
  EXPECT_FALSE(DecodeFetchRequest(raw, {UINT64_MAX}).ok());  // overflow
  EncodeFetchRequest({0, 0, 0}, raw);
  EXPECT_FALSE(DecodeFetchRequest(raw, {10}).ok());  // empty
  EncodeFetchRequest({0, 0, kMaxFetchLength + 1}, raw);
  EXPECT_FALSE(DecodeFetchRequest(raw, {UINT64_MAX}).ok());  // too long
  EncodeFetchRequest({0, 0, 1}, raw);
  EXPECT_EQ(DecodeFetchRequest(raw, {10})->flags, 0u);
  EncodeFetchRequest({0, 0, 1, kFetchFresh}, raw);
  r = DecodeFetchRequest(raw, {10});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->flags, kFetchFresh);
  for (uint32_t bad : {2u, 3u, 0x80000000u}) {
    base::PutLe32(raw + 20, bad);
    EXPECT_FALSE(DecodeFetchRequest(raw, {10}).ok()) << bad;  // unknown flags
  }
  raw[20] = 0;
  raw[0] ^= 1;
  EXPECT_FALSE(DecodeFetchRequest(raw, {10}).ok());  // magic
}

TEST(FetchProtocolTest, ReplyMustAnswerExactly) {
  uint8_t raw[kFetchReplyHeaderSize];
  FetchRequest req{0, 0, 64};
  EncodeFetchReplyHeader({0, 0, 64}, raw);
  EXPECT_TRUE(DecodeFetchReplyHeader(raw, req).ok());
  EncodeFetchReplyHeader({0, 0, 63}, raw);
  EXPECT_FALSE(DecodeFetchReplyHeader(raw, req).ok());
  EncodeFetchReplyHeader({5, EIO, 20}, raw);
  EXPECT_TRUE(DecodeFetchReplyHeader(raw, req).ok());
  EncodeFetchReplyHeader({5, EIO, kMaxFetchMessage + 1}, raw);
  EXPECT_FALSE(DecodeFetchReplyHeader(raw, req).ok());
  EncodeFetchReplyHeader({200, EIO, 4}, raw);
  EXPECT_FALSE(DecodeFetchReplyHeader(raw, req).ok());
  auto st = FetchReplyStatus({5, ESTALE, 0}, "u: changed\nforged line");
  EXPECT_EQ(st.sys_errno(), ESTALE);
  EXPECT_EQ(st.message(), "u: changed?forged line");
}

// A fake fetcher on the other end of one channel: answers each request with
// respond(request) (raw bytes to send back); an empty answer closes it.
class FakeFetcher {
 public:
  explicit FakeFetcher(std::function<std::string(const FetchRequest&)> respond) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    worker_end_ = UniqueFd(sv[0]);
    int fd = sv[1];
    thread_ = std::thread([fd, respond] {
      for (;;) {
        uint8_t raw[kFetchRequestSize];
        if (recv(fd, raw, sizeof raw, MSG_WAITALL) != sizeof raw) break;
        auto r = DecodeFetchRequest(raw, {1 << 20});
        if (!r.ok()) break;
        std::string answer = respond(*r);
        if (answer.empty()) break;
        if (send(fd, answer.data(), answer.size(), MSG_NOSIGNAL) < 0) break;
      }
      close(fd);
    });
  }
  ~FakeFetcher() { thread_.join(); }
  UniqueFd TakeWorkerEnd() { return std::move(worker_end_); }

 private:
  UniqueFd worker_end_;
  std::thread thread_;
};

std::string Ok(const FetchRequest& r) {
  uint8_t head[kFetchReplyHeaderSize];
  EncodeFetchReplyHeader({0, 0, r.length}, head);
  std::string out(reinterpret_cast<char*>(head), sizeof head);
  for (uint32_t i = 0; i < r.length; ++i) out.push_back(static_cast<char>((r.offset + i) & 0xff));
  return out;
}

TEST(FetchClientTest, ReadsAnswersAndErrors) {
  int calls = 0;
  FakeFetcher fetcher([&calls](const FetchRequest& r) {
    if (++calls == 2) {
      std::string msg = "http://h/x.st: the object changed since it was opened";
      uint8_t head[kFetchReplyHeaderSize];
      EncodeFetchReplyHeader(
          {static_cast<uint32_t>(base::Code::kIoError), ESTALE, static_cast<uint32_t>(msg.size())},
          head);
      return std::string(reinterpret_cast<char*>(head), sizeof head) + msg;
    }
    return Ok(r);
  });
  std::vector<UniqueFd> channels;
  channels.push_back(fetcher.TakeWorkerEnd());
  auto client = std::make_shared<FetchClient>(std::move(channels), 5);
  auto source = FetchSource(client, 0, 1 << 20, "http://h/x.st");
  std::vector<uint8_t> buf(300);
  ASSERT_TRUE(source->ReadAt(buf.data(), buf.size(), 1000).ok());
  EXPECT_EQ(buf[0], 1000 & 0xff);
  EXPECT_EQ(buf[299], (1000 + 299) & 0xff);
  auto st = source->ReadAt(buf.data(), 10, 0);
  EXPECT_EQ(st.sys_errno(), ESTALE);
  EXPECT_NE(st.message().find("changed"), std::string::npos);
  EXPECT_TRUE(source->ReadAt(buf.data(), 10, 0).ok());  // the channel survives an error reply
}

// FetchSource's ReadFreshAt (a read past the disk cache) sends kFetchFresh;
// ReadAt sends no flag.
TEST(FetchClientTest, ReadFreshAtSendsTheFreshFlag) {
  std::vector<uint32_t> flags;
  FakeFetcher fetcher([&flags](const FetchRequest& r) {
    flags.push_back(r.flags);
    return Ok(r);
  });
  std::vector<UniqueFd> channels;
  channels.push_back(fetcher.TakeWorkerEnd());
  auto source = FetchSource(std::make_shared<FetchClient>(std::move(channels), 5), 0, 1 << 20,
                            "http://h/x.st");
  EXPECT_TRUE(source->has_fresh_read());
  std::vector<uint8_t> buf(16);
  ASSERT_TRUE(source->ReadAt(buf.data(), buf.size(), 0).ok());
  ASSERT_TRUE(source->ReadFreshAt(buf.data(), buf.size(), 32).ok());
  EXPECT_EQ(buf[0], 32);
  source.reset();  // closes the channel, so the fake fetcher ends
  EXPECT_EQ(flags, (std::vector<uint32_t>{0, kFetchFresh}));
}

TEST(FetchClientTest, MalformedAnswerOrGoneFetcherIsEio) {
  int calls = 0;
  FakeFetcher fetcher([&calls](const FetchRequest& r) {
    if (++calls == 1) return Ok(r);
    FetchRequest shorter = r;
    shorter.length = r.length - 1;  // an answer of the wrong length
    return Ok(shorter);
  });
  std::vector<UniqueFd> channels;
  channels.push_back(fetcher.TakeWorkerEnd());
  FetchClient client(std::move(channels), 5);
  std::vector<uint8_t> buf(16);
  ASSERT_TRUE(client.Read(0, "u", buf.data(), buf.size(), 0).ok());
  auto st = client.Read(0, "u", buf.data(), buf.size(), 0);
  EXPECT_EQ(st.sys_errno(), EIO) << st.ToString();
  st = client.Read(0, "u", buf.data(), buf.size(), 0);  // no channel left
  EXPECT_EQ(st.sys_errno(), EIO);
  EXPECT_NE(st.message().find("the fetcher process is gone"), std::string::npos) << st.ToString();
}

}  // namespace
}  // namespace hexz::ipc
