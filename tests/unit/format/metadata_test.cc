// The metadata section (FORMAT.md, "Metadata section"): written by the
// writer, read back by the reader, absent from files that do not set it, and
// every damage to it reported as damage of the section, by name.
#include <gtest/gtest.h>

#include "common/base/endian.h"
#include "common/format/layout.h"
#include "tests/unit/format/format_test_util.h"

namespace hexz::format {
namespace {

using namespace testing;  // NOLINT
namespace L = layout;

Metadata VmMetadata() {
  return {{kMetaMemoryKind, kMemoryKindQemu},
          {kMetaQemuVersion, "7.2.0"},
          {kMetaQemuMachine, "pc-i440fx-7.2"},
          {kMetaQemuArgs, NulTerminated({"-m", "256", "-smp", "1"})}};
}

// Packs a small disk + memory with `m` as metadata.
std::string PackWithMetadata(const TempDir& dir, const std::string& name, const Metadata& m) {
  WriterOptions o;
  o.block_size = 4096;
  o.threads = 1;
  std::string path = dir / name;
  auto w = SnapshotWriter::Create(path, o);
  EXPECT_TRUE(w.ok());
  Bytes disk = TextBytes(3 * 4096 + 100, 1), mem = TextBytes(5000, 2);
  EXPECT_TRUE((*w)->BeginStream(StreamId::kDisk, disk.size()).ok());
  for (size_t off = 0; off < disk.size(); off += 4096)
    EXPECT_TRUE((*w)->AddData(disk.data() + off, std::min<size_t>(4096, disk.size() - off)).ok());
  EXPECT_TRUE((*w)->EndStream().ok());
  EXPECT_TRUE((*w)->BeginStream(StreamId::kMemory, mem.size()).ok());
  EXPECT_TRUE((*w)->AddData(mem.data(), 4096).ok());
  EXPECT_TRUE((*w)->AddData(mem.data() + 4096, mem.size() - 4096).ok());
  EXPECT_TRUE((*w)->EndStream().ok());
  EXPECT_TRUE((*w)->SetMetadata(m).ok());
  EXPECT_TRUE((*w)->Finish().ok());
  return path;
}

uint64_t IndexOffset(const Bytes& file) {
  return base::GetLe64(file.data() + file.size() - L::kFooterSize + L::kFooterIndexOffsetAt);
}

TEST(MetadataTest, RoundTripsAndSetsTheFlag) {
  TempDir dir;
  std::string path = PackWithMetadata(dir, "vm.st", VmMetadata());
  auto s = Snapshot::Open(path);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->metadata(), VmMetadata());
  EXPECT_EQ(ReadAll(**s, StreamId::kDisk), TextBytes(3 * 4096 + 100, 1));
  EXPECT_EQ(ReadAll(**s, StreamId::kMemory), TextBytes(5000, 2));
  EXPECT_TRUE((*s)->Verify().ok());
  Bytes file = ReadFile(path);
  EXPECT_NE(base::GetLe32(file.data() + L::kHeaderFlagsAt) & L::kFlagHasMetadata, 0u);
  // The section sits right before the index and starts with its magic.
  uint64_t index = IndexOffset(file);
  uint32_t len = base::GetLe32(file.data() + index + L::kIndexMetadataLengthAt);
  ASSERT_GE(len, L::kMinMetadataSize);
  EXPECT_EQ(std::memcmp(file.data() + index - len, "HEXZMETA", 8), 0);
}

TEST(MetadataTest, WithoutMetadataTheFileIsAsBefore) {
  TempDir dir;
  std::string path = PackWithMetadata(dir, "plain.st", {});
  Bytes file = ReadFile(path);
  EXPECT_EQ(base::GetLe32(file.data() + L::kHeaderFlagsAt) & L::kFlagHasMetadata, 0u);
  EXPECT_EQ(base::GetLe32(file.data() + IndexOffset(file) + L::kIndexMetadataLengthAt), 0u);
  auto s = Snapshot::Open(path);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_TRUE((*s)->metadata().empty());
}

TEST(MetadataTest, EveryFlipInTheSectionNamesTheSection) {
  TempDir dir;
  std::string path = PackWithMetadata(dir, "vm.st", VmMetadata());
  Bytes file = ReadFile(path);
  uint64_t index = IndexOffset(file);
  uint32_t len = base::GetLe32(file.data() + index + L::kIndexMetadataLengthAt);
  std::string bad = dir / "bad.st";
  for (uint64_t pos = index - len; pos < index; ++pos) {
    Bytes b = file;
    b[pos] ^= 0x10;
    WriteFile(bad, b);
    auto s = Snapshot::Open(bad);
    ASSERT_FALSE(s.ok()) << "byte " << pos;
    EXPECT_EQ(s.status().code(), base::Code::kCorruption);
    EXPECT_NE(s.status().message().find("bad.st: metadata section checksum mismatch at offset " +
                                        std::to_string(index - len)),
              std::string::npos)
        << s.status().ToString();
  }
}

TEST(MetadataTest, FlagAndLengthMustAgree) {
  TempDir dir;
  Bytes file = ReadFile(PackWithMetadata(dir, "vm.st", VmMetadata()));
  std::string bad = dir / "bad.st";
  // The flag without a section...
  Bytes b = file;
  base::PutLe32(b.data() + IndexOffset(b) + L::kIndexMetadataLengthAt, 0);
  ResealIndex(&b);
  WriteFile(bad, b);
  auto s = Snapshot::Open(bad);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("metadata length disagrees with the metadata flag"),
            std::string::npos)
      << s.status().ToString();
  // ...and a length that is not a multiple of 8, or reaches into the header.
  for (uint32_t len : {uint32_t{100}, uint32_t{1u << 21}}) {
    b = file;
    base::PutLe32(b.data() + IndexOffset(b) + L::kIndexMetadataLengthAt, len);
    ResealIndex(&b);
    WriteFile(bad, b);
    s = Snapshot::Open(bad);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.status().message().find("metadata length " + std::to_string(len) + " is invalid"),
              std::string::npos)
        << s.status().ToString();
  }
}

// Re-encodes a section after an edit (fixing its checksum), so the entry
// checks behind the checksum are reached.
Result<Metadata> DecodeEdited(std::vector<uint8_t> sec) {
  base::PutLe64(sec.data() + sec.size() - 8, L::Checksum(sec.data(), sec.size() - 8));
  return L::DecodeMetadata(sec.data(), sec.size(), 1000);
}

TEST(MetadataTest, DecoderChecksEveryEntry) {
  auto enc = L::EncodeMetadata({{"a.key", "v1"}, {"b.key", "value"}});
  ASSERT_TRUE(enc.ok());
  ASSERT_TRUE(DecodeEdited(*enc).ok());
  EXPECT_EQ(*DecodeEdited(*enc), (Metadata{{"a.key", "v1"}, {"b.key", "value"}}));

  auto expect = [](std::vector<uint8_t> sec, const std::string& what) {
    auto r = DecodeEdited(std::move(sec));
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), base::Code::kCorruption);
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status().ToString();
  };
  const size_t e0 = L::kMetadataEntriesAt;
  std::vector<uint8_t> s = *enc;
  s[0] = 'X';
  expect(s, "metadata section has no magic at offset 1000");
  s = *enc;
  base::PutLe32(s.data() + L::kMetadataCountAt, 3);
  expect(s, "metadata entry 2 at offset 1056 runs past the end of the section");
  s = *enc;
  base::PutLe32(s.data() + L::kMetadataCountAt, 1);
  expect(s, "metadata section has bytes after its last entry");
  s = *enc;
  base::PutLe32(s.data() + L::kMetadataCountAt, 1000);
  expect(s, "more than 256 entries");
  s = *enc;
  s[e0 + L::kMetadataEntryHeaderSize] = 'A';  // "A.key": upper case
  expect(s, "metadata entry 0 at offset 1016 has an invalid key");
  s = *enc;
  s[e0 + L::kMetadataEntryHeaderSize] = 'c';  // "c.key" > "b.key"
  expect(s, "metadata entry 1 at offset 1032 is out of key order");
  s = *enc;
  s[e0 + L::kMetadataEntryHeaderSize + 7] = 1;  // padding after "a.keyv1"
  expect(s, "metadata entry 0 at offset 1016 has padding that is not zero");
  s = *enc;
  base::PutLe32(s.data() + e0 + L::kMetadataValueLengthAt, 0xffffffff);
  expect(s, "metadata entry 0 at offset 1016 runs past the end of the section");
  s = *enc;
  base::PutLe16(s.data() + e0 + L::kMetadataEntryReservedAt, 1);
  expect(s, "has reserved bits set");
  s = *enc;
  base::PutLe32(s.data() + L::kMetadataReservedAt, 1);
  expect(s, "reserved metadata bytes are not zero");
}

TEST(MetadataTest, WriterRefusesWhatTheFormatDoesNotAllow) {
  TempDir dir;
  auto w = SnapshotWriter::Create(dir / "x.st", {});
  ASSERT_TRUE(w.ok());
  Status st = (*w)->SetMetadata({{"Bad Key", "v"}});
  EXPECT_EQ(st.code(), base::Code::kInvalidArgument);
  EXPECT_NE(st.message().find("metadata key 'Bad Key'"), std::string::npos) << st.ToString();
  st = (*w)->SetMetadata({{"big", std::string(2u << 20, 'x')}});
  EXPECT_NE(st.message().find("larger than the 1 MiB"), std::string::npos) << st.ToString();
  (*w)->Abort();
}

}  // namespace
}  // namespace hexz::format
