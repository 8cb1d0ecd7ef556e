// The writer's streams of unknown size (a pipe into `hexz pack --disk -`):
// the size is fixed by the blocks added, the last may be short, nothing may
// follow it, and thin references work as in a sized stream.
#include <gtest/gtest.h>

#include "tests/unit/format/format_test_util.h"

namespace hexz::format {
namespace {

using namespace testing;  // NOLINT

Status AddBytes(SnapshotWriter* w, const Bytes& data) {
  const uint32_t bs = w->block_size();
  for (size_t pos = 0; pos < data.size(); pos += bs) {
    size_t len = std::min<size_t>(bs, data.size() - pos);
    HEXZ_RETURN_IF_ERROR(w->AddData(data.data() + pos, len));
  }
  return Status::Ok();
}

TEST(WriterStreamTest, UnknownSizeRoundTrip) {
  TempDir dir;
  WriterOptions o;
  o.block_size = 4096;
  for (size_t size : {size_t{0}, size_t{1}, size_t{4096}, size_t{3 * 4096 + 777}}) {
    Bytes disk = TextBytes(size, size);
    Bytes memory = RandomBytes(2 * 4096 + 5, 7);
    std::string name = "s";
    name += std::to_string(size);
    name += ".st";
    std::string path = dir / name;
    auto w = SnapshotWriter::Create(path, o);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->BeginStream(StreamId::kDisk, SnapshotWriter::kUnknownSize).ok());
    ASSERT_TRUE(AddBytes(w->get(), disk).ok());
    ASSERT_TRUE((*w)->EndStream().ok());
    ASSERT_TRUE((*w)->BeginStream(StreamId::kMemory, SnapshotWriter::kUnknownSize).ok());
    ASSERT_TRUE((*w)->AddZero().ok());  // a whole zero block
    ASSERT_TRUE(AddBytes(w->get(), memory).ok());
    ASSERT_TRUE((*w)->EndStream().ok());
    ASSERT_TRUE((*w)->Finish().ok());
    auto s = Snapshot::Open(path);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ((*s)->StreamSize(StreamId::kDisk), size);
    EXPECT_EQ(ReadAll(**s, StreamId::kDisk), disk);
    Bytes want(4096, 0);
    want.insert(want.end(), memory.begin(), memory.end());
    EXPECT_EQ(ReadAll(**s, StreamId::kMemory), want);
    EXPECT_TRUE((*s)->Verify().ok());
  }
}

TEST(WriterStreamTest, NothingAfterTheShortLastBlock) {
  TempDir dir;
  WriterOptions o;
  o.block_size = 4096;
  auto w = SnapshotWriter::Create(dir / "x.st", o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->BeginStream(StreamId::kDisk, SnapshotWriter::kUnknownSize).ok());
  Bytes b = TextBytes(100, 1);
  ASSERT_TRUE((*w)->AddData(b.data(), b.size()).ok());
  EXPECT_FALSE((*w)->AddData(b.data(), b.size()).ok());
  EXPECT_FALSE((*w)->AddZero().ok());
  Bytes big(4097, 1);
  auto w2 = SnapshotWriter::Create(dir / "y.st", o);
  ASSERT_TRUE(w2.ok());
  ASSERT_TRUE((*w2)->BeginStream(StreamId::kDisk, SnapshotWriter::kUnknownSize).ok());
  EXPECT_FALSE((*w2)->AddData(big.data(), big.size()).ok());
  EXPECT_FALSE((*w2)->AddData(big.data(), 0).ok());
}

TEST(WriterStreamTest, ThinUnknownSize) {
  TempDir dir;
  WriterOptions o;
  o.block_size = 4096;
  Bytes base = TextBytes(5 * 4096, 3);
  PackBuffers(dir / "base.st", base, {}, o);
  auto parent = Snapshot::Open(dir / "base.st");
  ASSERT_TRUE(parent.ok());
  auto w = SnapshotWriter::Create(dir / "thin.st", o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->SetParent("base.st", (*parent)->id()).ok());
  ASSERT_TRUE((*w)->BeginStream(StreamId::kDisk, SnapshotWriter::kUnknownSize).ok());
  ASSERT_TRUE((*w)->AddParent().ok());
  Bytes mid = RandomBytes(4096, 9);
  ASSERT_TRUE((*w)->AddData(mid.data(), mid.size()).ok());
  ASSERT_TRUE((*w)->AddParent().ok());
  ASSERT_TRUE((*w)->EndStream().ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto s = Snapshot::Open(dir / "thin.st");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  Bytes want(base.begin(), base.begin() + 3 * 4096);
  std::copy(mid.begin(), mid.end(), want.begin() + 4096);
  EXPECT_EQ(ReadAll(**s, StreamId::kDisk), want);
}

}  // namespace
}  // namespace hexz::format
