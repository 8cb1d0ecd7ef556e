// The writer takes the memory stream before the disk stream (hexz vm snapshot
// --continue migrates memory while the guest is paused and writes the disk
// after it runs again): the file is laid out as FORMAT.md says whatever the
// order, dedup works across both streams, and thin references hold.
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

Status AddStream(SnapshotWriter* w, StreamId s, const Bytes& data, bool unknown_size = false) {
  HEXZ_RETURN_IF_ERROR(
      w->BeginStream(s, unknown_size ? SnapshotWriter::kUnknownSize : data.size()));
  HEXZ_RETURN_IF_ERROR(AddBytes(w, data));
  return w->EndStream();
}

// Writes disk and memory in the given order with a fixed id.
void Write(const std::string& path, const Bytes& disk, const Bytes& memory, bool memory_first,
           WriterOptions o, bool unknown_size = false) {
  o.id = SnapshotId{};
  o.id->bytes.fill(7);
  auto w = SnapshotWriter::Create(path, o);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  if (memory_first) {
    ASSERT_TRUE(AddStream(w->get(), StreamId::kMemory, memory, unknown_size).ok());
    ASSERT_TRUE(AddStream(w->get(), StreamId::kDisk, disk, unknown_size).ok());
  } else {
    ASSERT_TRUE(AddStream(w->get(), StreamId::kDisk, disk, unknown_size).ok());
    ASSERT_TRUE(AddStream(w->get(), StreamId::kMemory, memory, unknown_size).ok());
  }
  auto id = (*w)->Finish();
  ASSERT_TRUE(id.ok()) << id.status().ToString();
}

void ExpectReadsBack(const std::string& path, const Bytes& disk, const Bytes& memory) {
  auto s = Snapshot::Open(path);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(ReadAll(**s, StreamId::kDisk), disk);
  EXPECT_EQ(ReadAll(**s, StreamId::kMemory), memory);
  Status st = (*s)->Verify();
  EXPECT_TRUE(st.ok()) << st.ToString();
}

TEST(WriterOrderTest, MemoryFirstIsTheSameFile) {
  TempDir dir;
  WriterOptions o;
  o.block_size = 4096;
  Bytes disk = TextBytes(9 * 4096 + 100, 1);
  disk.insert(disk.end(), 4096, 0);  // a zero block
  Bytes memory = RandomBytes(5 * 4096 + 3, 2);
  for (bool copy_range : {true, false}) {
    o.copy_file_range = copy_range;
    for (bool unknown : {false, true}) {
      Write(dir / "a.st", disk, memory, false, o, unknown);
      Write(dir / "b.st", disk, memory, true, o, unknown);
      // No block is in both streams: the same bytes, whatever the order.
      EXPECT_EQ(ReadFile(dir / "a.st"), ReadFile(dir / "b.st"));
      ExpectReadsBack(dir / "b.st", disk, memory);
    }
  }
}

TEST(WriterOrderTest, DedupAcrossStreamsMemoryFirst) {
  TempDir dir;
  WriterOptions o;
  o.block_size = 4096;
  // Three distinct blocks, repeated in both streams.
  Bytes disk = RepeatedBytes(12 * 4096, 4096, 5);
  Bytes memory = RepeatedBytes(9 * 4096, 4096, 5);
  Write(dir / "a.st", disk, memory, false, o);
  Write(dir / "b.st", disk, memory, true, o);
  ExpectReadsBack(dir / "a.st", disk, memory);
  ExpectReadsBack(dir / "b.st", disk, memory);
  // Each distinct block is stored once either way.
  EXPECT_EQ(ReadFile(dir / "a.st").size(), ReadFile(dir / "b.st").size());
  auto s = Snapshot::Open(dir / "b.st");
  ASSERT_TRUE(s.ok());
  uint64_t stored = 0;
  for (StreamId id : {StreamId::kDisk, StreamId::kMemory}) {
    for (uint64_t b = 0; b < (*s)->BlockCount(id); ++b) {
      auto e = (*s)->GetBlockEntry(id, b);
      ASSERT_TRUE(e.ok());
      if (e->kind == BlockKind::kStored) ++stored;
    }
  }
  EXPECT_EQ(stored, 2u);
}

TEST(WriterOrderTest, ThinMemoryFirst) {
  TempDir dir;
  WriterOptions o;
  o.block_size = 4096;
  Bytes base_disk = TextBytes(6 * 4096, 3);
  Bytes base_memory = RandomBytes(2 * 4096, 4);
  PackBuffers(dir / "base.st", base_disk, base_memory, o);
  auto parent = Snapshot::Open(dir / "base.st");
  ASSERT_TRUE(parent.ok());
  auto w = SnapshotWriter::Create(dir / "thin.st", o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->SetParent("base.st", (*parent)->id()).ok());
  Bytes memory = RandomBytes(3 * 4096, 8);
  ASSERT_TRUE(AddStream(w->get(), StreamId::kMemory, memory).ok());
  ASSERT_TRUE((*w)->SetParent("base.st", (*parent)->id()).ok());  // the same again: fine
  EXPECT_FALSE((*w)->SetParent("other.st", (*parent)->id()).ok());
  ASSERT_TRUE((*w)->BeginStream(StreamId::kDisk, base_disk.size()).ok());
  ASSERT_TRUE((*w)->AddRun(BlockKind::kParent, 2).ok());
  Bytes mid = RandomBytes(4096, 9);
  ASSERT_TRUE((*w)->AddData(mid.data(), mid.size()).ok());
  ASSERT_TRUE((*w)->AddData(memory.data() + 4096, 4096).ok());  // a memory block again
  ASSERT_TRUE((*w)->AddRun(BlockKind::kParent, 2).ok());
  ASSERT_TRUE((*w)->EndStream().ok());
  ASSERT_TRUE((*w)->Finish().ok());
  Bytes want = base_disk;
  std::copy(mid.begin(), mid.end(), want.begin() + 2 * 4096);
  std::copy(memory.begin() + 4096, memory.begin() + 2 * 4096, want.begin() + 3 * 4096);
  ExpectReadsBack(dir / "thin.st", want, memory);
  auto s = Snapshot::Open(dir / "thin.st");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->parent()->id(), (*parent)->id());
  auto e = (*s)->GetBlockEntry(StreamId::kDisk, 3);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->kind, BlockKind::kDedup);
}

TEST(WriterOrderTest, CopiedStreamsMemoryFirst) {
  // Stored extents (hexz commit's path) of one source file, memory first:
  // the pieces copied from it stay searchable for dedup entries.
  TempDir dir;
  WriterOptions o;
  o.block_size = 4096;
  Bytes disk = RepeatedBytes(10 * 4096, 4096, 11);
  disk.insert(disk.end(), 4096, 0);
  Bytes more = TextBytes(4 * 4096, 12);
  disk.insert(disk.end(), more.begin(), more.end());
  Bytes memory = RepeatedBytes(7 * 4096, 4096, 13);
  PackBuffers(dir / "src.st", disk, memory, o);
  auto src = Snapshot::Open(dir / "src.st");
  ASSERT_TRUE(src.ok());
  for (bool copy_range : {true, false}) {
    o.copy_file_range = copy_range;
    auto w = SnapshotWriter::Create(dir / "copy.st", o);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(CopyStream(w->get(), **src, StreamId::kMemory).ok());
    ASSERT_TRUE(CopyStream(w->get(), **src, StreamId::kDisk).ok());
    ASSERT_TRUE((*w)->Finish().ok());
    ExpectReadsBack(dir / "copy.st", disk, memory);
  }
}

TEST(WriterOrderTest, EachStreamOnceAndDiskNeeded) {
  TempDir dir;
  WriterOptions o;
  o.block_size = 4096;
  Bytes memory = RandomBytes(4096, 1);
  auto w = SnapshotWriter::Create(dir / "x.st", o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(AddStream(w->get(), StreamId::kMemory, memory).ok());
  EXPECT_FALSE((*w)->BeginStream(StreamId::kMemory, 4096).ok());
  EXPECT_FALSE((*w)->SetParent("p.st", SnapshotId{}).ok());
  EXPECT_FALSE((*w)->Finish().ok());  // no disk stream
  EXPECT_NE(access((dir / "x.st").c_str(), F_OK), 0);
}

}  // namespace
}  // namespace hexz::format
