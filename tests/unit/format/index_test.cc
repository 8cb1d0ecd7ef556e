// The index is read in pieces of about 1 MiB and checksummed as it streams
// in (FORMAT.md's memory promise: 24 bytes per block, not a second copy of
// the raw index). These tests put entries of every kind on both sides of the
// piece boundaries and check that structure errors deep in the index still
// name their block and offset, after the checksum has been checked.
#include <gtest/gtest.h>

#include "common/base/endian.h"
#include "common/format/layout.h"
#include "tests/unit/format/format_test_util.h"

namespace hexz::format {
namespace {

using namespace testing;  // NOLINT

constexpr uint32_t kBs = 4096;
constexpr uint64_t kBlocks = 150000;                             // 3.6 MB of index
constexpr uint64_t kPerPiece = (1u << 20) / layout::kEntrySize;  // entries per piece
// Stored blocks around each piece boundary; the ones marked dedup repeat
// block 0's content.
const std::vector<uint64_t> kData = {
    0, 1, kPerPiece - 1, kPerPiece, kPerPiece + 1, 2 * kPerPiece, 3 * kPerPiece - 1, kBlocks - 1};
const std::vector<uint64_t> kDedups = {kPerPiece, 3 * kPerPiece - 1};

Bytes BlockContent(uint64_t b) {
  for (uint64_t d : kDedups)
    if (d == b) return TextBytes(kBs, 0);
  return TextBytes(kBs, b);
}

class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriterOptions o;
    o.block_size = kBs;
    auto w = SnapshotWriter::Create(path_, o);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->BeginStream(StreamId::kDisk, kBlocks * kBs).ok());
    size_t next = 0;
    for (uint64_t b = 0; b < kBlocks; ++b) {
      if (next < kData.size() && kData[next] == b) {
        Bytes d = BlockContent(b);
        ASSERT_TRUE((*w)->AddData(d.data(), d.size()).ok());
        ++next;
      } else {
        ASSERT_TRUE((*w)->AddZero().ok());
      }
    }
    ASSERT_TRUE((*w)->EndStream().ok());
    ASSERT_TRUE((*w)->Finish().ok());
    file_ = ReadFile(path_);
  }

  Status OpenEdited(const Bytes& file) {
    WriteFile(dir_ / "edited.st", file);
    return Snapshot::Open(dir_ / "edited.st").status();
  }

  TempDir dir_;
  std::string path_ = dir_ / "many.st";
  Bytes file_;
};

TEST_F(IndexTest, EntriesOnBothSidesOfPieceBoundariesReadBack) {
  auto s = Snapshot::Open(path_);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  StreamStats st = (*s)->Stats(StreamId::kDisk);
  EXPECT_EQ(st.block_count, kBlocks);
  EXPECT_EQ(st.zero_blocks, kBlocks - kData.size());
  EXPECT_EQ(st.dedup_blocks, kDedups.size());
  for (uint64_t b : kData) {
    Bytes got(kBs);
    ASSERT_TRUE((*s)->Read(StreamId::kDisk, b * kBs, got.data(), kBs).ok()) << b;
    EXPECT_EQ(got, BlockContent(b)) << "block " << b;
  }
  Bytes zero(kBs, 1);
  ASSERT_TRUE((*s)->Read(StreamId::kDisk, 5 * kBs, zero.data(), kBs).ok());
  EXPECT_EQ(zero, Bytes(kBs, 0));
  EXPECT_TRUE((*s)->Verify().ok());
}

TEST_F(IndexTest, AStructureErrorInALaterPieceNamesItsBlock) {
  const uint64_t b = 2 * kPerPiece + 5;  // a zero block in the third piece
  Bytes bad = file_;
  uint64_t at = DiskEntryOffset(bad, b);
  base::PutLe16(bad.data() + at + layout::kEntryReservedAt, 1);
  ResealIndex(&bad);
  Status st = OpenEdited(bad);
  EXPECT_EQ(st.code(), base::Code::kCorruption);
  EXPECT_EQ(st.message(), dir_ / "edited.st" + ": index entry of disk block " + std::to_string(b) +
                              " has reserved bits set at offset " + std::to_string(at));

  // The same byte without a resealed index is damage: the checksum says so.
  bad = file_;
  bad[at + layout::kEntryReservedAt] ^= 1;
  st = OpenEdited(bad);
  EXPECT_EQ(st.code(), base::Code::kCorruption);
  EXPECT_NE(st.message().find("index checksum mismatch"), std::string::npos) << st.ToString();
}

TEST_F(IndexTest, ADedupThatMatchesNoStoredBlockIsRefused) {
  const uint64_t b = kDedups.back();
  Bytes bad = file_;
  uint64_t at = DiskEntryOffset(bad, b);
  ASSERT_EQ(bad[at + layout::kEntryKindAt], static_cast<uint8_t>(layout::Kind::kDedup));
  base::PutLe64(bad.data() + at + layout::kEntryChecksumAt, 12345);
  ResealIndex(&bad);
  Status st = OpenEdited(bad);
  EXPECT_EQ(st.code(), base::Code::kCorruption);
  EXPECT_NE(st.message().find("dedup index entry does not match a stored block at offset " +
                              std::to_string(at)),
            std::string::npos)
      << st.ToString();
}

}  // namespace
}  // namespace hexz::format
