#include "common/overlay/commit.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/overlay/overlay_files.h"
#include "common/overlay/overlay_volume.h"
#include "tests/unit/format/format_test_util.h"

namespace hexz::overlay {
namespace {

using format::BlockKind;
using format::Snapshot;
using format::StreamId;
using format::testing::Bytes;
using format::testing::PackBuffers;
using format::testing::RandomBytes;
using format::testing::ReadAll;
using format::testing::ReadFile;
using format::testing::TempDir;
using format::testing::TextBytes;

constexpr size_t kDisk = 2 * 1024 * 1024 + 3000;  // not a multiple of 4 KiB or 64 KiB

struct CommitSetup {
  TempDir dir;
  std::string base_path = dir / "base.st";
  std::string ovl_path = dir / "disk.ovl";
  Bytes disk = TextBytes(kDisk, 1);
  Bytes memory = RandomBytes(300 * 1024 + 17, 2);
  Bytes model;
  std::shared_ptr<Snapshot> base;

  explicit CommitSetup(bool with_memory = true) {
    PackBuffers(base_path, disk, with_memory ? std::optional<Bytes>(memory) : std::nullopt);
    auto s = Snapshot::Open(base_path);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    base = *s;
    model = disk;
  }

  // Changes a few scattered places of the disk through an overlay.
  void Modify() {
    auto files = OpenOverlayFiles(ovl_path, LockMode::kExclusive, true);
    ASSERT_TRUE(files.ok());
    auto ov = Overlay::OpenOrCreate(std::move(files->data), std::move(files->meta), files->names,
                                    base->id(), kDisk);
    ASSERT_TRUE(ov.ok()) << ov.status().ToString();
    auto vol = OverlayVolume::Create(Snapshot::StreamVolume(base, StreamId::kDisk),
                                     std::shared_ptr<Overlay>(std::move(ov).value()));
    ASSERT_TRUE(vol.ok());
    auto put = [&](uint64_t off, const Bytes& d) {
      ASSERT_TRUE((*vol)->Write(off, d.data(), d.size(), false).ok());
      std::copy(d.begin(), d.end(), model.begin() + off);
    };
    put(100, RandomBytes(10, 3));             // partial 4 KiB block
    put(65536 - 2048, RandomBytes(4096, 4));  // across a 64 KiB boundary
    put(5 * 65536, RandomBytes(65536, 5));    // one whole snapshot block
    put(kDisk - 700, RandomBytes(700, 6));    // the short tail
    ASSERT_TRUE((*vol)->WriteZeroes(9 * 65536 + 4096, 8192, false).ok());
    std::fill(model.begin() + 9 * 65536 + 4096, model.begin() + 9 * 65536 + 3 * 4096, 0);
    ASSERT_TRUE((*vol)->Flush().ok());
  }

  std::shared_ptr<Overlay> OpenReadOnly() {
    auto files = OpenOverlayFiles(ovl_path, LockMode::kShared, false);
    EXPECT_TRUE(files.ok()) << files.status().ToString();
    files->names.base = base_path;
    OverlayOptions ro;
    ro.read_only = true;
    auto ov = Overlay::Open(std::move(files->data), std::move(files->meta), files->names,
                            base->id(), kDisk, ro);
    EXPECT_TRUE(ov.ok()) << ov.status().ToString();
    return ov.ok() ? std::shared_ptr<Overlay>(std::move(ov).value()) : nullptr;
  }

  Result<CommitStats> Commit(const std::string& out, bool thin, format::Codec codec,
                             bool copy_file_range = true) {
    format::WriterOptions o;
    o.codec = codec;
    o.copy_file_range = copy_file_range;
    o.block_size = base->block_size();
    auto w = format::SnapshotWriter::Create(out, o);
    if (!w.ok()) return w.status();
    auto ov = OpenReadOnly();
    auto stats =
        WriteCommit(base, ov, w->get(), thin ? RelativeParentPath(base_path, out) : std::string());
    if (!stats.ok()) {
      (*w)->Abort();
      return stats;
    }
    auto id = (*w)->Finish();
    if (!id.ok()) return id.status();
    return stats;
  }
};

TEST(CommitTest, StandaloneCopiesUnchangedBlocksVerbatim) {
  CommitSetup s;
  s.Modify();
  Bytes base_file = ReadFile(s.base_path);
  std::string out = s.dir / "new.st";
  // zstd for rewritten blocks: unchanged blocks must stay in the base's lz4 form.
  auto stats = s.Commit(out, false, format::Codec::kZstd);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->rewritten_blocks, 5u);  // blocks 0, 1, 5, 9 and the last
  EXPECT_EQ(stats->copied_blocks, stats->disk_blocks - 5);
  EXPECT_EQ(ReadFile(s.base_path), base_file) << "the base must not change";

  auto n = Snapshot::Open(out);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ((*n)->parent(), nullptr);
  EXPECT_EQ(ReadAll(**n, StreamId::kDisk), s.model);
  EXPECT_EQ(ReadAll(**n, StreamId::kMemory), s.memory);
  EXPECT_TRUE((*n)->Verify().ok());
  for (uint64_t b : {2u, 3u, 10u}) {  // unchanged blocks
    auto a = s.base->ReadStoredBlock(StreamId::kDisk, b);
    auto c = (*n)->ReadStoredBlock(StreamId::kDisk, b);
    ASSERT_TRUE(a.ok() && c.ok());
    EXPECT_EQ(a->codec, format::Codec::kLz4);
    EXPECT_EQ(c->codec, a->codec) << "block " << b << " was recompressed";
    EXPECT_EQ(c->bytes, a->bytes);
  }
  auto changed = (*n)->ReadStoredBlock(StreamId::kDisk, 5);
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(changed->codec, format::Codec::kRaw) << "random data is stored raw";
  auto text = (*n)->ReadStoredBlock(StreamId::kDisk, 1);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->codec, format::Codec::kZstd);
}

TEST(CommitTest, ThinReferencesTheBase) {
  CommitSetup s;
  s.Modify();
  std::string out = s.dir / "thin.st";
  auto stats = s.Commit(out, true, format::Codec::kLz4);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->parent_blocks, stats->disk_blocks - 5);
  auto n = Snapshot::Open(out);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  ASSERT_NE((*n)->parent(), nullptr);
  EXPECT_EQ((*n)->parent()->id(), s.base->id());
  EXPECT_EQ((*n)->parent_path(), "base.st");
  EXPECT_EQ(ReadAll(**n, StreamId::kDisk), s.model);
  EXPECT_EQ(ReadAll(**n, StreamId::kMemory), s.memory);
  auto e = (*n)->GetBlockEntry(StreamId::kDisk, 3);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->kind, BlockKind::kParent);
  EXPECT_LT(std::filesystem::file_size(out), std::filesystem::file_size(s.base_path) / 4);
}

TEST(CommitTest, StandaloneFromAThinBaseResolvesTheChain) {
  CommitSetup s(false);
  s.Modify();
  std::string mid = s.dir / "mid.st";
  ASSERT_TRUE(s.Commit(mid, true, format::Codec::kLz4).ok());
  // Now a second overlay on the thin snapshot, committed standalone.
  auto m = Snapshot::Open(mid);
  ASSERT_TRUE(m.ok());
  CommitSetup t(false);  // reuse its helpers with mid as base
  t.base = *m;
  t.base_path = mid;
  t.ovl_path = s.dir / "second.ovl";
  t.model = s.model;
  t.Modify();
  std::string out = s.dir / "flat.st";
  auto stats = t.Commit(out, false, format::Codec::kLz4);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  auto n = Snapshot::Open(out);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ((*n)->parent(), nullptr);
  EXPECT_FALSE((*n)->HasStream(StreamId::kMemory));
  EXPECT_EQ(ReadAll(**n, StreamId::kDisk), t.model);
}

// Flips one byte of the file at `offset`, in place (the open base keeps
// reading the same file).
void FlipByte(const std::string& path, uint64_t offset) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  uint8_t byte = 0;
  ASSERT_EQ(pread(fd, &byte, 1, static_cast<off_t>(offset)), 1);
  byte ^= 0x10;
  ASSERT_EQ(pwrite(fd, &byte, 1, static_cast<off_t>(offset)), 1);
  close(fd);
}

// Unchanged blocks are copied in extents, by copy_file_range or by read and
// write: either way each copied block's checksum is checked, so a flipped
// byte in the middle of an extent fails the commit and leaves no output.
TEST(CommitTest, StandaloneRefusesADamagedBlockInACopiedExtent) {
  for (bool copy_file_range : {true, false}) {
    SCOPED_TRACE(copy_file_range ? "copy_file_range" : "read and write");
    CommitSetup s;
    s.Modify();
    std::string good = s.dir / "good.st";
    auto ok = s.Commit(good, false, format::Codec::kLz4, copy_file_range);
    ASSERT_TRUE(ok.ok()) << ok.status().ToString();
    auto n = Snapshot::Open(good);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    EXPECT_EQ(ReadAll(**n, StreamId::kDisk), s.model);
    EXPECT_EQ(ReadAll(**n, StreamId::kMemory), s.memory);
    EXPECT_TRUE((*n)->Verify().ok());

    // Block 20 lies inside the run of unchanged blocks 10..31.
    auto e = s.base->GetBlockEntry(StreamId::kDisk, 20);
    ASSERT_TRUE(e.ok());
    ASSERT_EQ(e->kind, BlockKind::kStored);
    FlipByte(s.base_path, e->offset + e->stored_length / 2);
    std::string out = s.dir / "bad.st";
    auto bad = s.Commit(out, false, format::Codec::kLz4, copy_file_range);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.status().code(), base::Code::kCorruption) << bad.status().ToString();
    EXPECT_NE(
        bad.status().message().find("checksum mismatch at offset " + std::to_string(e->offset)),
        std::string::npos)
        << bad.status().ToString();
    EXPECT_NE(bad.status().message().find(s.base_path), std::string::npos)
        << bad.status().ToString();
    EXPECT_FALSE(std::filesystem::exists(out));
    // A thin commit copies nothing of the base: it still works.
    EXPECT_TRUE(s.Commit(s.dir / "thin.st", true, format::Codec::kLz4).ok());
  }
}

// A block the base stores once for two places (dedup) stays stored once:
// the copy of the second place points into the copied extent.
TEST(CommitTest, StandaloneKeepsTheBasesDuplicatesShared) {
  for (bool copy_file_range : {true, false}) {
    SCOPED_TRACE(copy_file_range ? "copy_file_range" : "read and write");
    TempDir dir;
    Bytes disk = TextBytes(16 * 65536, 7);
    std::copy(disk.begin() + 3 * 65536, disk.begin() + 4 * 65536, disk.begin() + 11 * 65536);
    PackBuffers(dir / "base.st", disk, std::nullopt);
    auto base = Snapshot::Open(dir / "base.st");
    ASSERT_TRUE(base.ok());
    auto dup = (*base)->GetBlockEntry(StreamId::kDisk, 11);
    ASSERT_TRUE(dup.ok());
    ASSERT_EQ(dup->kind, BlockKind::kDedup);
    format::WriterOptions o;
    o.copy_file_range = copy_file_range;
    auto w = format::SnapshotWriter::Create(dir / "new.st", o);
    ASSERT_TRUE(w.ok());
    auto stats = WriteCommit(*base, nullptr, w->get(), "");
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    ASSERT_TRUE((*w)->Finish().ok());
    auto n = Snapshot::Open(dir / "new.st");
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    EXPECT_EQ(ReadAll(**n, StreamId::kDisk), disk);
    EXPECT_TRUE((*n)->Verify().ok());
    auto e = (*n)->GetBlockEntry(StreamId::kDisk, 11);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e->kind, BlockKind::kDedup);
    EXPECT_EQ(std::filesystem::file_size(dir / "new.st"),
              std::filesystem::file_size(dir / "base.st"));
  }
}

TEST(CommitTest, RefusesAnOverlayOfAnotherBase) {
  CommitSetup s;
  s.Modify();
  CommitSetup other;
  auto ov = s.OpenReadOnly();
  ASSERT_TRUE(ov);
  format::WriterOptions o;
  auto w = format::SnapshotWriter::Create(s.dir / "x.st", o);
  ASSERT_TRUE(w.ok());
  auto r = WriteCommit(other.base, ov, w->get(), "");
  (*w)->Abort();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(other.base->id().ToHex()), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(s.dir / "x.st"));
}

TEST(CommitTest, FrontEndValidationAndWorkerOpen) {
  CommitSetup s;
  {  // A new overlay passes validation; the worker call creates it.
    auto files = OpenOverlayFiles(s.ovl_path, LockMode::kExclusive, true);
    ASSERT_TRUE(files.ok());
    EXPECT_TRUE(ValidateOverlayFiles(*files, s.base->id(), kDisk).ok());
    auto vol = OpenOverlayVolume(s.base, std::move(files->data), std::move(files->meta),
                                 files->names, false);
    ASSERT_TRUE(vol.ok()) << vol.status().ToString();
    Bytes d = RandomBytes(5000, 9);
    ASSERT_TRUE((*vol)->Write(70000, d.data(), d.size(), true).ok());
    std::copy(d.begin(), d.end(), s.model.begin() + 70000);
  }
  auto files = OpenOverlayFiles(s.ovl_path, LockMode::kExclusive, true);
  ASSERT_TRUE(files.ok());
  files->names.base = s.base_path;
  EXPECT_TRUE(ValidateOverlayFiles(*files, s.base->id(), kDisk).ok());
  CommitSetup other(false);
  Status bad = ValidateOverlayFiles(*files, other.base->id(), kDisk);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find(other.base->id().ToHex()), std::string::npos) << bad.message();
  EXPECT_NE(bad.message().find(s.base->id().ToHex()), std::string::npos) << bad.message();
  EXPECT_NE(bad.message().find(s.ovl_path), std::string::npos) << bad.message();
  // The descriptors are still good for the worker.
  auto vol = OpenOverlayVolume(s.base, std::move(files->data), std::move(files->meta), files->names,
                               false);
  ASSERT_TRUE(vol.ok()) << vol.status().ToString();
  Bytes all(kDisk);
  ASSERT_TRUE((*vol)->Read(0, all.data(), all.size()).ok());
  EXPECT_EQ(all, s.model);

  auto eph = CreateEphemeralOverlayFiles(s.dir.path());
  ASSERT_TRUE(eph.ok());
  auto evol =
      OpenOverlayVolume(s.base, std::move(eph->data), std::move(eph->meta), eph->names, true);
  ASSERT_TRUE(evol.ok()) << evol.status().ToString();
  ASSERT_TRUE((*evol)->Write(0, all.data(), 4096, false).ok());
  ASSERT_TRUE((*evol)->Flush().ok());
}

TEST(CommitTest, RelativeParentPath) {
  EXPECT_EQ(RelativeParentPath("/a/b/base.st", "/a/b/new.st"), "base.st");
  EXPECT_EQ(RelativeParentPath("/a/b/base.st", "/a/c/new.st"), "../b/base.st");
}

}  // namespace
}  // namespace hexz::overlay
