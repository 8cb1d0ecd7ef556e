// IndexSpill keeps a bounded buffer and spills the rest of the index to an
// unlinked temp file: the entries come back in order across the spill, the
// directory is left empty, and bytes changed in the spill file are caught.
#include "common/format/index_spill.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "tests/unit/format/format_test_util.h"

namespace hexz::format {
namespace {

using namespace testing;  // NOLINT
namespace L = layout;

L::Entry EntryNumber(uint64_t i) {
  L::Entry e;
  e.kind = L::Kind::kStored;
  e.codec = Codec::kLz4;
  e.offset = 4096 + i * 100;
  e.stored_length = static_cast<uint32_t>(i % 60000 + 1);
  e.checksum = i * 0x9E3779B97F4A7C15ull;
  return e;
}

Bytes Collect(IndexSpill* spill, Status* st) {
  Bytes all;
  *st = spill->ForEachPiece([&](const uint8_t* p, size_t n) {
    all.insert(all.end(), p, p + n);
    return Status::Ok();
  });
  return all;
}

size_t FilesIn(const std::string& dir) {
  size_t n = 0;
  DIR* d = opendir(dir.c_str());
  while (dirent* de = readdir(d)) {
    const std::string name = de->d_name;
    if (name != "." && name != "..") ++n;
  }
  closedir(d);
  return n;
}

TEST(IndexSpillTest, EntriesComeBackInOrderAcrossTheSpill) {
  TempDir dir;
  // A buffer of 10 entries: 1000 entries spill 99 times.
  IndexSpill spill(dir.path(), dir / "out.st", 10 * L::kEntrySize + 5);
  for (uint64_t i = 0; i < 1000; ++i) ASSERT_TRUE(spill.Append(EntryNumber(i)).ok());
  EXPECT_EQ(spill.count(), 1000u);
  EXPECT_EQ(spill.spilled_bytes(), 990u * L::kEntrySize);
  EXPECT_EQ(FilesIn(dir.path()), 0u) << "the spill file has no name";
  Status st;
  Bytes all = Collect(&spill, &st);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_EQ(all.size(), 1000u * L::kEntrySize);
  for (uint64_t i = 0; i < 1000; ++i) {
    uint8_t want[L::kEntrySize];
    L::EncodeEntry(EntryNumber(i), want);
    ASSERT_EQ(0, memcmp(all.data() + i * L::kEntrySize, want, L::kEntrySize)) << "entry " << i;
  }
}

TEST(IndexSpillTest, SmallIndexStaysInMemory) {
  TempDir dir;
  IndexSpill spill(dir.path(), dir / "out.st");
  for (uint64_t i = 0; i < 100; ++i) ASSERT_TRUE(spill.Append(EntryNumber(i)).ok());
  EXPECT_EQ(spill.spilled_bytes(), 0u);
  Status st;
  EXPECT_EQ(Collect(&spill, &st).size(), 100u * L::kEntrySize);
  EXPECT_TRUE(st.ok());
}

TEST(IndexSpillTest, ChangedSpillBytesAreCorruption) {
  TempDir dir;
  IndexSpill spill(dir.path(), dir / "out.st", 4 * L::kEntrySize);
  for (uint64_t i = 0; i < 20; ++i) ASSERT_TRUE(spill.Append(EntryNumber(i)).ok());
  // The spill file is the only descriptor this test did not open: find it.
  int fd = -1;
  for (int i = 3; i < 1024 && fd < 0; ++i) {
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", i);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n > 0 && std::string(target, static_cast<size_t>(n)).find(dir.path()) == 0) fd = i;
  }
  ASSERT_GE(fd, 0);
  uint8_t b = 0;
  ASSERT_EQ(pread(fd, &b, 1, 30), 1);
  b ^= 0x40;
  ASSERT_EQ(pwrite(fd, &b, 1, 30), 1);
  Status st;
  Collect(&spill, &st);
  EXPECT_EQ(st.code(), base::Code::kCorruption) << st.ToString();
  EXPECT_NE(st.message().find("temp file of the index"), std::string::npos) << st.message();
}

TEST(IndexSpillTest, UnwritableDirectoryNamesIt) {
  IndexSpill spill("/nonexistent-hexz-dir", "/nonexistent-hexz-dir/out.st", L::kEntrySize);
  ASSERT_TRUE(spill.Append(EntryNumber(0)).ok());
  Status st = spill.Append(EntryNumber(1));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("/nonexistent-hexz-dir"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace hexz::format
