// Golden snapshot files pin format version 1: today's reader must read the
// files in tests/data byte-exactly. The files were made once by the
// generator below (run it with HEXZ_GOLDEN_OUT=tests/data and
// `build/tests/hexz_unit_tests --gtest_also_run_disabled_tests
// --gtest_filter='*GenerateGoldenFiles*'`); the test regenerates the expected contents from the
// same deterministic recipes and compares. Never regenerate the files for an existing version.
#include <gtest/gtest.h>

#include <cstdlib>

#include "common/base/endian.h"
#include "common/format/layout.h"
#include "tests/unit/format/format_test_util.h"

namespace hexz::format {
namespace {

using namespace testing;  // NOLINT

SnapshotId FixedId(uint8_t n) {
  SnapshotId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(n * 16 + i);
  return id;
}

struct Golden {
  std::string name;
  Codec codec;
  uint32_t block_size;
  uint8_t id;
  Bytes disk;
  std::optional<Bytes> memory;
  Metadata metadata;
};

// What `hexz vm snapshot` records.
Metadata VmMetadata() {
  return {{kMetaMemoryKind, kMemoryKindQemu},
          {kMetaQemuArgs, NulTerminated({"-m", "256", "-device", "virtio-blk,drive=d0"})},
          {kMetaQemuMachine, "pc-i440fx-7.2"},
          {kMetaQemuVersion, "7.2.0"}};
}

std::vector<Golden> Recipes() {
  Bytes mixed = TextBytes(3 * 4096, 1);
  mixed.insert(mixed.end(), 4096, 0);
  mixed.insert(mixed.end(), mixed.begin(), mixed.begin() + 4096);  // dedup
  Bytes rnd = RandomBytes(4096, 2);
  mixed.insert(mixed.end(), rnd.begin(), rnd.end());
  mixed.insert(mixed.end(), 500, 'z');
  return {
      {"v1_lz4.st", Codec::kLz4, 4096, 1, mixed, TextBytes(5000, 3), {}},
      {"v1_zstd.st", Codec::kZstd, 8192, 2, TextBytes(20000, 4), std::nullopt, {}},
      {"v1_raw.st", Codec::kRaw, 4096, 3, RandomBytes(6000, 5), Bytes{}, {}},
      {"v1_thin_base.st", Codec::kLz4, 4096, 4, TextBytes(4 * 4096 + 10, 6), std::nullopt, {}},
      {"v1_metadata.st", Codec::kRaw, 4096, 6, RandomBytes(5000, 8), RandomBytes(4096 + 7, 9),
       VmMetadata()},
  };
}

// The thin child: block 0 new, block 1 zero, blocks 2.. from the parent.
Bytes ThinChildDisk(const Bytes& base) {
  Bytes d = base;
  Bytes fresh = TextBytes(4096, 7);
  std::copy(fresh.begin(), fresh.end(), d.begin());
  std::fill_n(d.begin() + 4096, 4096, 0);
  return d;
}

TEST(GoldenTest, DISABLED_GenerateGoldenFiles) {
  const char* out = std::getenv("HEXZ_GOLDEN_OUT");
  ASSERT_NE(out, nullptr) << "set HEXZ_GOLDEN_OUT to the output directory";
  std::vector<Golden> recipes = Recipes();
  for (const Golden& g : recipes) {
    WriterOptions o;
    o.codec = g.codec;
    o.block_size = g.block_size;
    o.id = FixedId(g.id);
    o.threads = 1;
    PackBuffers(std::string(out) + "/" + g.name, g.disk, g.memory, o, g.metadata);
  }
  // A file that claims a future version 2 (valid checksum): readers must
  // refuse it as "newer", not as damage.
  Bytes future = ReadFile(std::string(out) + "/v1_raw.st");
  base::PutLe32(future.data() + layout::kHeaderVersionAt, 2);
  ResealHeader(&future);
  WriteFile(std::string(out) + "/future_version.st", future);

  WriterOptions o;
  o.block_size = 4096;
  o.id = FixedId(5);
  auto w = SnapshotWriter::Create(std::string(out) + "/v1_thin_child.st", o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->SetParent("v1_thin_base.st", FixedId(4)).ok());
  Bytes child = ThinChildDisk(recipes[3].disk);
  ASSERT_TRUE((*w)->BeginStream(StreamId::kDisk, child.size()).ok());
  ASSERT_TRUE((*w)->AddData(child.data(), 4096).ok());
  ASSERT_TRUE((*w)->AddZero().ok());
  for (int b = 2; b < 5; ++b) ASSERT_TRUE((*w)->AddParent().ok());
  ASSERT_TRUE((*w)->EndStream().ok());
  ASSERT_TRUE((*w)->Finish().ok());
}

TEST(GoldenTest, TodaysReaderReadsVersion1Files) {
  std::string data = HEXZ_TEST_DATA_DIR;
  std::vector<Golden> recipes = Recipes();
  for (const Golden& g : recipes) {
    SCOPED_TRACE(g.name);
    auto s = Snapshot::Open(data + "/" + g.name);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ((*s)->format_version(), 1u);
    EXPECT_EQ((*s)->id(), FixedId(g.id));
    EXPECT_EQ((*s)->block_size(), g.block_size);
    EXPECT_EQ(ReadAll(**s, StreamId::kDisk), g.disk);
    EXPECT_EQ((*s)->HasStream(StreamId::kMemory), g.memory.has_value());
    if (g.memory) {
      EXPECT_EQ(ReadAll(**s, StreamId::kMemory), *g.memory);
    }
    EXPECT_EQ((*s)->metadata(), g.metadata);
    EXPECT_TRUE((*s)->Verify().ok());
  }
  auto lz4 = Snapshot::Open(data + "/v1_lz4.st");
  ASSERT_TRUE(lz4.ok());
  StreamStats st = (*lz4)->Stats(StreamId::kDisk);
  EXPECT_EQ(st.zero_blocks, 1u);
  EXPECT_EQ(st.dedup_blocks, 1u);
  EXPECT_EQ(st.codecs_used, (1u << 0) | (1u << 1));  // raw (the random block) and lz4

  auto child = Snapshot::Open(data + "/v1_thin_child.st");
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  EXPECT_EQ((*child)->id(), FixedId(5));
  EXPECT_EQ((*child)->parent_path(), "v1_thin_base.st");
  EXPECT_EQ((*child)->parent()->id(), FixedId(4));
  EXPECT_EQ(ReadAll(**child, StreamId::kDisk), ThinChildDisk(recipes[3].disk));
  EXPECT_EQ((*child)->Stats(StreamId::kDisk).parent_blocks, 3u);

  auto future = Snapshot::Open(data + "/future_version.st");
  ASSERT_FALSE(future.ok());
  EXPECT_EQ(future.status().code(), base::Code::kUnsupported);
}

// v1_raw.st needs no compression library, so today's writer must write it
// byte for byte: header, data, index (written in pieces) and footer.
// (v1_metadata.st too: raw, with a metadata section.)
TEST(GoldenTest, TodaysWriterWritesTheRawGoldenFilesByteForByte) {
  TempDir dir;
  for (const Golden& g : Recipes()) {
    if (g.codec != Codec::kRaw) continue;
    SCOPED_TRACE(g.name);
    WriterOptions o;
    o.codec = g.codec;
    o.block_size = g.block_size;
    o.id = FixedId(g.id);
    o.threads = 1;
    PackBuffers(dir / g.name, g.disk, g.memory, o, g.metadata);
    Bytes golden = ReadFile(std::string(HEXZ_TEST_DATA_DIR) + "/" + g.name);
    ASSERT_FALSE(golden.empty());
    EXPECT_EQ(ReadFile(dir / g.name), golden);
  }
}

}  // namespace
}  // namespace hexz::format
