// The corruption sweep: flip every byte of the header, footer and index, and
// a sample of data bytes. The reader (open + read everything) and Verify()
// must report each flip as corruption; nothing may crash (this also runs
// under ASan+UBSan).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "common/base/endian.h"
#include "common/format/layout.h"
#include "tests/unit/format/format_test_util.h"

namespace hexz::format {
namespace {

using namespace testing;  // NOLINT

// Opens and reads every stream fully; returns the first error.
Status ReadEverything(const std::string& path) {
  auto s = Snapshot::Open(path);
  if (!s.ok()) return s.status();
  for (StreamId id : {StreamId::kDisk, StreamId::kMemory}) {
    if (!(*s)->HasStream(id)) continue;
    Bytes buf((*s)->StreamSize(id));
    HEXZ_RETURN_IF_ERROR((*s)->Read(id, 0, buf.data(), buf.size()));
  }
  return Status::Ok();
}

// XORs one byte of the file in place (rewriting whole files would make the
// sweep slow on some disks); calling it twice restores the byte.
void FlipInPlace(const std::string& path, size_t pos, uint8_t mask) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  uint8_t b;
  ASSERT_EQ(pread(fd, &b, 1, static_cast<off_t>(pos)), 1);
  b ^= mask;
  ASSERT_EQ(pwrite(fd, &b, 1, static_cast<off_t>(pos)), 1);
  close(fd);
}

Status OpenAndVerify(const std::string& path) {
  auto s = Snapshot::Open(path);
  if (!s.ok()) return s.status();
  return (*s)->Verify();
}

TEST(CorruptionTest, EveryFlipIsDetected) {
  TempDir dir;
  // Small but with every kind: stored (lz4 and raw), zero, dedup, memory.
  Bytes disk = TextBytes(4096 * 2, 1);
  Bytes rnd = RandomBytes(4096, 2);
  disk.insert(disk.end(), rnd.begin(), rnd.end());
  disk.insert(disk.end(), 4096, 0);
  disk.insert(disk.end(), disk.begin(), disk.begin() + 4096);  // dedup of block 0
  disk.insert(disk.end(), 1000, 'x');                          // short tail
  WriterOptions o;
  o.block_size = 4096;
  o.threads = 1;
  std::string good = dir / "good.st";
  PackBuffers(good, disk, TextBytes(3000, 3), o);
  Bytes file = ReadFile(good);
  ASSERT_TRUE(ReadEverything(good).ok());
  ASSERT_TRUE(OpenAndVerify(good).ok());
  uint64_t index_offset =
      base::GetLe64(file.data() + file.size() - layout::kFooterSize + layout::kFooterIndexOffsetAt);
  ASSERT_GT(index_offset, 64u);
  ASSERT_LT(index_offset, file.size());

  std::vector<size_t> positions;
  for (size_t i = 0; i < 64; ++i) positions.push_back(i);                      // header
  for (size_t i = index_offset; i < file.size(); ++i) positions.push_back(i);  // index+footer
  for (size_t i = 64; i < index_offset; i += 37) positions.push_back(i);       // data sample
  positions.push_back(index_offset - 1);

  std::string bad = dir / "bad.st";
  WriteFile(bad, file);
  int checked = 0;
  for (size_t pos : positions) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}}) {
      FlipInPlace(bad, pos, mask);
      Status r = ReadEverything(bad);
      Status v = OpenAndVerify(bad);
      ASSERT_EQ(r.code(), base::Code::kCorruption)
          << "byte " << pos << " ^ " << int{mask} << ": reader said " << r.ToString();
      ASSERT_EQ(v.code(), base::Code::kCorruption)
          << "byte " << pos << " ^ " << int{mask} << ": verify said " << v.ToString();
      EXPECT_NE(v.message().find("bad.st"), std::string::npos) << v.ToString();
      FlipInPlace(bad, pos, mask);
      ++checked;
    }
  }
  EXPECT_GT(checked, 500);
  // Truncation at every length is reported too.
  for (size_t len = 0; len < file.size(); len += 97) {
    WriteFile(bad, Bytes(file.begin(), file.begin() + len));
    EXPECT_FALSE(ReadEverything(bad).ok()) << "truncated to " << len;
  }
}

TEST(CorruptionTest, EveryFlipOfAThinChildIsDetected) {
  TempDir dir;
  std::string data = HEXZ_TEST_DATA_DIR;
  Bytes child = ReadFile(data + "/v1_thin_child.st");
  WriteFile(dir / "v1_thin_base.st", ReadFile(data + "/v1_thin_base.st"));
  ASSERT_FALSE(child.empty());
  std::string bad = dir / "child.st";
  WriteFile(bad, child);
  ASSERT_TRUE(ReadEverything(bad).ok());
  for (size_t pos = 0; pos < child.size(); ++pos) {
    FlipInPlace(bad, pos, 0x10);
    Status r = ReadEverything(bad);
    Status v = OpenAndVerify(bad);
    ASSERT_EQ(r.code(), base::Code::kCorruption) << "byte " << pos << ": " << r.ToString();
    ASSERT_EQ(v.code(), base::Code::kCorruption) << "byte " << pos << ": " << v.ToString();
    FlipInPlace(bad, pos, 0x10);
  }
  EXPECT_TRUE(ReadEverything(bad).ok());
}

}  // namespace
}  // namespace hexz::format
