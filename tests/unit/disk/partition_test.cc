// Partition tables built in memory: GPT (primary, backup fallback, damage),
// MBR with extended/logical partitions (and a looping chain), filesystems
// found by their superblocks, and a disk without a table.
#include "common/disk/partition.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/base/endian.h"

namespace hexz::disk {
namespace {

using base::PutLe16;
using base::PutLe32;
using base::PutLe64;

using Disk = std::vector<uint8_t>;
constexpr uint64_t kSectors = 4096;  // a 2 MiB disk

ReadFn Reader(const Disk& d) {
  return [&d](uint64_t off, void* buf, size_t len) {
    if (off > d.size() || len > d.size() - off) return Status::OutOfRange("read past the disk");
    std::memcpy(buf, d.data() + off, len);
    return Status::Ok();
  };
}

void PutGuid(uint8_t* p, uint32_t a, uint16_t b, uint16_t c, uint64_t d) {
  PutLe32(p, a);
  PutLe16(p + 4, b);
  PutLe16(p + 6, c);
  for (int i = 0; i < 8; ++i) p[8 + i] = static_cast<uint8_t>(d >> (56 - 8 * i));
}

void PutExt4(Disk* d, uint64_t at, const char* label) {
  uint8_t* sb = d->data() + at + 1024;
  PutLe16(sb + 0x38, 0xef53);
  PutLe32(sb + 0x60, 0x40 | 0x200);
  std::memcpy(sb + 0x78, label, std::strlen(label));
}

void PutFat32(Disk* d, uint64_t at, const char* label) {
  uint8_t* b = d->data() + at;
  PutLe16(b + 11, 512);
  b[13] = 8;
  std::memcpy(b + 71, label, std::strlen(label));
  std::memcpy(b + 82, "FAT32   ", 8);
  b[510] = 0x55;
  b[511] = 0xaa;
}

// Writes one GPT header (and its entry array) at `lba`, entries at `entries_lba`.
void PutGptHeader(Disk* d, uint64_t lba, uint64_t alternate, uint64_t entries_lba,
                  const std::vector<uint8_t>& entries, uint32_t count) {
  uint8_t* h = d->data() + lba * 512;
  std::memset(h, 0, 512);
  std::memcpy(h, "EFI PART", 8);
  PutLe32(h + 8, 0x10000);
  PutLe32(h + 12, 92);
  PutLe64(h + 24, lba);
  PutLe64(h + 32, alternate);
  PutLe64(h + 40, 34);
  PutLe64(h + 48, kSectors - 34);
  PutGuid(h + 56, 0x11223344, 0x5566, 0x7788, 0x99aabbccddeeff00ull);
  PutLe64(h + 72, entries_lba);
  PutLe32(h + 80, count);
  PutLe32(h + 84, 128);
  PutLe32(h + 88, Crc32(entries.data(), entries.size()));
  PutLe32(h + 16, Crc32(h, 92));
  std::memcpy(d->data() + entries_lba * 512, entries.data(), entries.size());
}

// A GPT disk: EFI System (FAT32 "ESP") at LBA 64, Linux filesystem (ext4
// "root") at LBA 1024, both headers and arrays intact.
Disk MakeGpt() {
  Disk d(kSectors * 512, 0);
  uint8_t* e = d.data() + 446;
  e[4] = 0xee;
  PutLe32(e + 8, 1);
  PutLe32(e + 12, kSectors - 1);
  d[510] = 0x55;
  d[511] = 0xaa;
  std::vector<uint8_t> entries(128 * 128, 0);
  PutGuid(&entries[0], 0xC12A7328, 0xF81F, 0x11D2, 0xBA4B00A0C93EC93Bull);
  PutLe64(&entries[32], 64);
  PutLe64(&entries[40], 1023);
  const char16_t name[] = u"EFI";
  for (int i = 0; i < 3; ++i) PutLe16(&entries[56 + 2 * i], static_cast<uint16_t>(name[i]));
  PutGuid(&entries[128], 0x0FC63DAF, 0x8483, 0x4772, 0x8E793D69D8477DE4ull);
  PutLe64(&entries[128 + 32], 1024);
  PutLe64(&entries[128 + 40], 4000);
  PutGptHeader(&d, 1, kSectors - 1, 2, entries, 128);
  PutGptHeader(&d, kSectors - 1, 1, kSectors - 33, entries, 128);
  PutFat32(&d, 64 * 512, "ESP        ");
  PutExt4(&d, 1024 * 512, "root");
  return d;
}

void ExpectTwoPartitions(const PartitionTable& t) {
  ASSERT_EQ(t.partitions.size(), 2u);
  EXPECT_EQ(t.disk_guid, "11223344-5566-7788-99AA-BBCCDDEEFF00");
  const Partition& p1 = t.partitions[0];
  EXPECT_EQ(p1.number, 1u);
  EXPECT_EQ(p1.start, 64u * 512);
  EXPECT_EQ(p1.size, 960u * 512);
  EXPECT_EQ(p1.type, "EFI System");
  EXPECT_EQ(p1.type_id, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
  EXPECT_EQ(p1.name, "EFI");
  EXPECT_EQ(p1.fs.type, "vfat");
  EXPECT_EQ(p1.fs.label, "ESP");
  const Partition& p2 = t.partitions[1];
  EXPECT_EQ(p2.number, 2u);
  EXPECT_EQ(p2.type, "Linux filesystem");
  EXPECT_EQ(p2.fs.type, "ext4");
  EXPECT_EQ(p2.fs.label, "root");
}

TEST(PartitionTest, Crc32KnownValue) { EXPECT_EQ(Crc32("123456789", 9), 0xCBF43926u); }

TEST(PartitionTest, Gpt) {
  Disk d = MakeGpt();
  auto t = ReadPartitionTable(Reader(d), d.size());
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->scheme, "gpt");
  EXPECT_EQ(t->gpt_header, "primary");
  EXPECT_TRUE(t->problems.empty());
  ExpectTwoPartitions(*t);
}

TEST(PartitionTest, DamagedPrimaryHeaderUsesTheBackup) {
  Disk d = MakeGpt();
  d[512 + 40] ^= 1;  // first_usable: the header CRC no longer matches
  auto t = ReadPartitionTable(Reader(d), d.size());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->gpt_header, "backup");
  ASSERT_EQ(t->problems.size(), 1u);
  EXPECT_NE(t->problems[0].find("bad CRC32"), std::string::npos) << t->problems[0];
  ExpectTwoPartitions(*t);
}

TEST(PartitionTest, DamagedPrimaryEntriesUseTheBackup) {
  Disk d = MakeGpt();
  d[2 * 512 + 33] ^= 0x80;  // partition 1's first LBA, in the primary array only
  auto t = ReadPartitionTable(Reader(d), d.size());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->gpt_header, "backup");
  ExpectTwoPartitions(*t);
}

TEST(PartitionTest, DamagedBackupIsReported) {
  Disk d = MakeGpt();
  d[(kSectors - 1) * 512 + 40] ^= 1;
  auto t = ReadPartitionTable(Reader(d), d.size());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->gpt_header, "primary");
  ASSERT_EQ(t->problems.size(), 1u);
  EXPECT_NE(t->problems[0].find("backup GPT damaged"), std::string::npos);
  ExpectTwoPartitions(*t);
}

TEST(PartitionTest, BothHeadersDamaged) {
  Disk d = MakeGpt();
  d[512 + 40] ^= 1;
  d[(kSectors - 1) * 512 + 40] ^= 1;
  auto t = ReadPartitionTable(Reader(d), d.size());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->scheme, "gpt");
  EXPECT_EQ(t->gpt_header, "none");
  EXPECT_TRUE(t->partitions.empty());
  EXPECT_EQ(t->problems.size(), 2u);
}

TEST(PartitionTest, HostileEntryCountsAndRanges) {
  Disk d = MakeGpt();
  std::vector<uint8_t> entries(128 * 128, 0);
  PutGuid(&entries[0], 0x0FC63DAF, 0x8483, 0x4772, 0x8E793D69D8477DE4ull);
  PutLe64(&entries[32], ~0ull - 5);  // first LBA * 512 overflows
  PutLe64(&entries[40], ~0ull);
  PutGuid(&entries[128], 0x0FC63DAF, 0x8483, 0x4772, 0x8E793D69D8477DE4ull);
  PutLe64(&entries[128 + 32], 100);
  PutLe64(&entries[128 + 40], 50);  // ends before it starts
  PutGuid(&entries[256], 0x0FC63DAF, 0x8483, 0x4772, 0x8E793D69D8477DE4ull);
  PutLe64(&entries[256 + 32], 4000);
  PutLe64(&entries[256 + 40], 90000);  // past the end of the disk
  PutGptHeader(&d, 1, kSectors - 1, 2, entries, 128);
  auto t = ReadPartitionTable(Reader(d), d.size());
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->partitions.size(), 1u);
  EXPECT_EQ(t->partitions[0].number, 3u);
  EXPECT_GE(t->problems.size(), 3u);  // two invalid, one past the end (+ backup differs)

  // An entry array larger than hexz reads (4 GiB) is refused by the header check.
  Disk e = MakeGpt();
  uint8_t* h = e.data() + 512;
  PutLe32(h + 80, 0xffffffffu);
  PutLe32(h + 16, 0);
  PutLe32(h + 16, Crc32(h, 92));
  auto u = ReadPartitionTable(Reader(e), e.size());
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->gpt_header, "backup");
}

Disk MakeMbr() {
  Disk d(kSectors * 512, 0);
  auto entry = [&d](uint64_t sector, int i, uint8_t flag, uint8_t type, uint32_t start,
                    uint32_t count) {
    uint8_t* e = d.data() + sector * 512 + 446 + 16 * i;
    e[0] = flag;
    e[4] = type;
    PutLe32(e + 8, start);
    PutLe32(e + 12, count);
    d[sector * 512 + 510] = 0x55;
    d[sector * 512 + 511] = 0xaa;
  };
  entry(0, 0, 0x80, 0x83, 64, 960);
  entry(0, 1, 0, 0x05, 1024, 3000);   // extended
  entry(1024, 0, 0, 0x82, 32, 500);   // logical 5 at 1056
  entry(1024, 1, 0, 0x05, 600, 800);  // next EBR at 1624
  entry(1624, 0, 0, 0x8e, 32, 700);   // logical 6 at 1656
  PutExt4(&d, 64 * 512, "boot");
  std::memcpy(d.data() + 1056 * 512 + 4086, "SWAPSPACE2", 10);
  std::memcpy(d.data() + 1056 * 512 + 1052, "swap0", 5);
  std::memcpy(d.data() + 1656 * 512 + 512, "LABELONE", 8);
  std::memcpy(d.data() + 1656 * 512 + 512 + 24, "LVM2 001", 8);
  return d;
}

TEST(PartitionTest, MbrWithLogicalPartitions) {
  Disk d = MakeMbr();
  auto t = ReadPartitionTable(Reader(d), d.size());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->scheme, "mbr");
  EXPECT_TRUE(t->problems.empty());
  ASSERT_EQ(t->partitions.size(), 4u);
  EXPECT_EQ(t->partitions[0].number, 1u);
  EXPECT_TRUE(t->partitions[0].bootable);
  EXPECT_EQ(t->partitions[0].type, "Linux");
  EXPECT_EQ(t->partitions[0].type_id, "0x83");
  EXPECT_EQ(t->partitions[0].fs.type, "ext4");
  EXPECT_EQ(t->partitions[0].fs.label, "boot");
  EXPECT_EQ(t->partitions[1].type, "Extended");
  EXPECT_EQ(t->partitions[2].number, 5u);
  EXPECT_EQ(t->partitions[2].start, 1056u * 512);
  EXPECT_EQ(t->partitions[2].fs.type, "swap");
  EXPECT_EQ(t->partitions[2].fs.label, "swap0");
  EXPECT_EQ(t->partitions[3].number, 6u);
  EXPECT_EQ(t->partitions[3].start, 1656u * 512);
  EXPECT_EQ(t->partitions[3].type, "Linux LVM");
  EXPECT_EQ(t->partitions[3].fs.type, "LVM2_member");
}

TEST(PartitionTest, UsablePartitionsSkipContainersAndOverhangs) {
  Disk d = MakeMbr();
  auto t = ReadPartitionTable(Reader(d), d.size());
  ASSERT_TRUE(t.ok());
  std::vector<uint32_t> numbers;
  for (const Partition& p : UsablePartitions(*t, d.size())) numbers.push_back(p.number);
  EXPECT_EQ(numbers, (std::vector<uint32_t>{1, 5, 6}));  // not the extended container 2
  // A disk cut short: the partitions that no longer fit go.
  numbers.clear();
  for (const Partition& p : UsablePartitions(*t, 1656u * 512)) numbers.push_back(p.number);
  EXPECT_EQ(numbers, (std::vector<uint32_t>{1, 5}));
}

TEST(PartitionTest, FormatPartitionListHasOneLinePerPartition) {
  Disk d = MakeMbr();
  auto t = ReadPartitionTable(Reader(d), d.size());
  ASSERT_TRUE(t.ok());
  std::string list = FormatPartitionList(*t, "  ");
  EXPECT_EQ(list.substr(0, 3), "  #");
  EXPECT_NE(list.find("START"), std::string::npos);
  EXPECT_NE(list.find("\n  1 "), std::string::npos) << list;
  EXPECT_NE(list.find(" ext4     boot\n"), std::string::npos) << list;
  EXPECT_NE(list.find(" LVM2_member -\n"), std::string::npos) << list;
  EXPECT_EQ(std::count(list.begin(), list.end(), '\n'), 5);
}

TEST(PartitionTest, LoopingLogicalChainStops) {
  Disk d = MakeMbr();
  PutLe32(d.data() + 1624 * 512 + 446 + 16 + 8, 0);  // not a link: ends
  d[1624 * 512 + 446 + 16 + 4] = 0x05;
  PutLe32(d.data() + 1624 * 512 + 446 + 16 + 8, 600);  // points at itself
  auto t = ReadPartitionTable(Reader(d), d.size());
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->problems.size(), 1u);
  EXPECT_NE(t->problems[0].find("loops"), std::string::npos);
  EXPECT_EQ(t->partitions.size(), 4u);
}

TEST(PartitionTest, NoTable) {
  Disk d(kSectors * 512, 0);
  PutExt4(&d, 0, "bare");
  auto t = ReadPartitionTable(Reader(d), d.size());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->scheme, "none");
  EXPECT_EQ(t->whole_disk.type, "ext4");
  EXPECT_EQ(t->whole_disk.label, "bare");
  // A FAT filesystem's boot sector ends in 55 AA too; it is not an MBR.
  Disk f(kSectors * 512, 0);
  PutFat32(&f, 0, "NO NAME    ");
  auto u = ReadPartitionTable(Reader(f), f.size());
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->scheme, "none");
  EXPECT_EQ(u->whole_disk.type, "vfat");
  EXPECT_EQ(u->whole_disk.label, "");
  // Tiny disks.
  for (size_t n : {0, 1, 511, 512, 1000}) {
    Disk s(n, 0);
    EXPECT_TRUE(ReadPartitionTable(Reader(s), s.size()).ok());
  }
}

TEST(PartitionTest, ReadErrorsAreReturned) {
  Disk d = MakeGpt();
  ReadFn failing = [](uint64_t, void*, size_t) { return Status::IoError("block 7 is corrupt"); };
  auto t = ReadPartitionTable(failing, d.size());
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), "block 7 is corrupt");
}

}  // namespace
}  // namespace hexz::disk
