#include "common/disk/partition.h"

#include <array>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>

#include "common/base/bytes.h"
#include "common/base/checked_math.h"
#include "common/base/endian.h"
#include "common/base/size.h"

namespace hexz::disk {
namespace {

using base::CheckedAdd;
using base::CheckedMul;
using base::GetLe16;
using base::GetLe32;
using base::GetLe64;

constexpr uint32_t kMaxGptEntries = 4096;    // sfdisk/gdisk write 128
constexpr uint32_t kMaxGptEntrySize = 4096;  // the spec's 128 * 2^n, bounded
constexpr uint64_t kMaxGptArray = 1u << 20;  // bytes of entries read at most
constexpr uint32_t kMaxLogical = 128;        // logical partitions followed at most
constexpr size_t kProbeLength = 8192;        // bytes read at a partition's start
constexpr uint64_t kBtrfsSuperblock = 64 * 1024;

// Reads [offset, offset + len) if it lies inside the disk; false otherwise.
Result<bool> ReadIn(const ReadFn& read, uint64_t disk_size, uint64_t offset, void* buf,
                    size_t len) {
  auto end = CheckedAdd<uint64_t>(offset, len);
  if (!end || *end > disk_size) return false;
  HEXZ_RETURN_IF_ERROR(read(offset, buf, len));
  return true;
}

std::string FormatGuid(const uint8_t* g) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X", GetLe32(g),
                GetLe16(g + 4), GetLe16(g + 6), g[8], g[9], g[10], g[11], g[12], g[13], g[14],
                g[15]);
  return buf;
}

// A label field: up to the first NUL, trailing spaces dropped, control
// characters replaced (the bytes are the guest's).
std::string FixedString(const uint8_t* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n && p[i] != 0; ++i) s.push_back(p[i] < 0x20 || p[i] == 0x7f ? '?' : p[i]);
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// A label's code point, with control characters shown as '?'.
void AppendLabelChar(uint32_t cp, std::string* out) {
  if (cp < 0x20 || cp == 0x7f) {
    out->push_back('?');
  } else {
    base::AppendUtf8(cp, out);
  }
}

// GPT names are UTF-16LE, NUL-terminated or filling the field.
std::string Utf16Name(const uint8_t* p, size_t units) {
  std::string out;
  for (size_t i = 0; i < units; ++i) {
    uint32_t u = GetLe16(p + 2 * i);
    if (u == 0) break;
    if (u >= 0xd800 && u < 0xdc00 && i + 1 < units) {
      uint32_t lo = GetLe16(p + 2 * (i + 1));
      if (lo >= 0xdc00 && lo < 0xe000) {
        AppendLabelChar(0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00), &out);
        ++i;
        continue;
      }
    }
    AppendLabelChar(u >= 0xd800 && u < 0xe000 ? 0xfffd : u, &out);
  }
  return out;
}

// ---- filesystems ----

std::optional<Filesystem> ProbeExt(const uint8_t* b, size_t n) {
  const uint8_t* sb = b + 1024;
  if (n < 2048 || GetLe16(sb + 0x38) != 0xef53) return std::nullopt;
  uint32_t compat = GetLe32(sb + 0x5c), incompat = GetLe32(sb + 0x60);
  uint32_t ro_compat = GetLe32(sb + 0x64);
  Filesystem fs;
  if (incompat & 0x8) {
    fs.type = "jbd";
  } else if ((incompat & (0x40 | 0x80 | 0x200)) || (ro_compat & (0x8 | 0x40 | 0x400))) {
    fs.type = "ext4";
  } else if (compat & 0x4) {
    fs.type = "ext3";
  } else {
    fs.type = "ext2";
  }
  fs.label = FixedString(sb + 0x78, 16);
  return fs;
}

std::optional<Filesystem> ProbeFat(const uint8_t* b, size_t n) {
  if (n < 512 || b[510] != 0x55 || b[511] != 0xaa) return std::nullopt;
  uint16_t bytes_per_sector = GetLe16(b + 11);
  if (bytes_per_sector < 512 || bytes_per_sector > 4096 ||
      (bytes_per_sector & (bytes_per_sector - 1)) != 0 || b[13] == 0)
    return std::nullopt;
  size_t label_at;
  if (std::memcmp(b + 82, "FAT32   ", 8) == 0) {
    label_at = 71;
  } else if (std::memcmp(b + 54, "FAT1", 4) == 0) {
    label_at = 43;
  } else {
    return std::nullopt;
  }
  Filesystem fs{"vfat", FixedString(b + label_at, 11)};
  if (fs.label == "NO NAME") fs.label.clear();
  return fs;
}

std::optional<Filesystem> ProbeOther(const uint8_t* b, size_t n) {
  if (n >= 120 && std::memcmp(b, "XFSB", 4) == 0)
    return Filesystem{"xfs", FixedString(b + 108, 12)};
  if (n >= 512 && std::memcmp(b + 3, "NTFS    ", 8) == 0) return Filesystem{"ntfs", ""};
  for (size_t s = 0; s < 4 && (s + 1) * 512 <= n; ++s) {
    const uint8_t* p = b + s * 512;
    if (std::memcmp(p, "LABELONE", 8) == 0 && std::memcmp(p + 24, "LVM2 001", 8) == 0)
      return Filesystem{"LVM2_member", ""};
  }
  if (n >= 4096 && (std::memcmp(b + 4086, "SWAPSPACE2", 10) == 0 ||
                    std::memcmp(b + 4086, "SWAP-SPACE", 10) == 0))
    return Filesystem{"swap", FixedString(b + 1052, 16)};
  return std::nullopt;
}

// ---- GPT ----

struct GptHeader {
  uint64_t my_lba = 0, alternate_lba = 0, entries_lba = 0;
  uint32_t num_entries = 0, entry_size = 0, entries_crc = 0;
  std::string disk_guid;
};

// Reads and checks the GPT header at `lba`; on damage returns a message.
Result<std::optional<GptHeader>> ReadGptHeader(const ReadFn& read, uint64_t disk_size,
                                               uint32_t sector, uint64_t lba,
                                               std::string* problem) {
  std::vector<uint8_t> h(sector);
  auto off = CheckedMul<uint64_t>(lba, sector);
  if (!off) {
    *problem = "header LBA out of range";
    return std::optional<GptHeader>();
  }
  HEXZ_ASSIGN_OR_RETURN(bool in, ReadIn(read, disk_size, *off, h.data(), h.size()));
  if (!in) {
    *problem = "header at LBA " + std::to_string(lba) + " lies past the end of the disk";
    return std::optional<GptHeader>();
  }
  if (std::memcmp(h.data(), "EFI PART", 8) != 0) {
    *problem = "no GPT signature at LBA " + std::to_string(lba);
    return std::optional<GptHeader>();
  }
  uint32_t header_size = GetLe32(&h[12]);
  if (header_size < 92 || header_size > sector) {
    *problem = "GPT header at LBA " + std::to_string(lba) + " has a bad size";
    return std::optional<GptHeader>();
  }
  uint32_t stored_crc = GetLe32(&h[16]);
  std::memset(&h[16], 0, 4);
  if (Crc32(h.data(), header_size) != stored_crc) {
    *problem = "GPT header at LBA " + std::to_string(lba) + " has a bad CRC32";
    return std::optional<GptHeader>();
  }
  GptHeader g;
  g.my_lba = GetLe64(&h[24]);
  g.alternate_lba = GetLe64(&h[32]);
  g.entries_lba = GetLe64(&h[72]);
  g.num_entries = GetLe32(&h[80]);
  g.entry_size = GetLe32(&h[84]);
  g.entries_crc = GetLe32(&h[88]);
  g.disk_guid = FormatGuid(&h[56]);
  if (g.my_lba != lba) {
    *problem = "GPT header at LBA " + std::to_string(lba) + " says it is at LBA " +
               std::to_string(g.my_lba);
    return std::optional<GptHeader>();
  }
  if (g.entry_size < 128 || g.entry_size > kMaxGptEntrySize || g.entry_size % 8 != 0 ||
      g.num_entries > kMaxGptEntries ||
      static_cast<uint64_t>(g.num_entries) * g.entry_size > kMaxGptArray) {
    *problem = "GPT header at LBA " + std::to_string(lba) + " has an unsupported entry array";
    return std::optional<GptHeader>();
  }
  return std::optional<GptHeader>(g);
}

// Reads and checks the entry array of `g`; on damage returns nullopt and a message.
Result<std::optional<std::vector<uint8_t>>> ReadGptEntries(const ReadFn& read, uint64_t disk_size,
                                                           uint32_t sector, const GptHeader& g,
                                                           std::string* problem) {
  std::vector<uint8_t> a(static_cast<size_t>(g.num_entries) * g.entry_size);
  auto off = CheckedMul<uint64_t>(g.entries_lba, sector);
  bool in = false;
  if (off) {
    HEXZ_ASSIGN_OR_RETURN(in, ReadIn(read, disk_size, *off, a.data(), a.size()));
  }
  if (!in) {
    *problem = "GPT entry array at LBA " + std::to_string(g.entries_lba) +
               " lies past the end of the disk";
    return std::optional<std::vector<uint8_t>>();
  }
  if (Crc32(a.data(), a.size()) != g.entries_crc) {
    *problem = "GPT entry array at LBA " + std::to_string(g.entries_lba) + " has a bad CRC32";
    return std::optional<std::vector<uint8_t>>();
  }
  return std::optional<std::vector<uint8_t>>(std::move(a));
}

void DecodeGptEntries(const std::vector<uint8_t>& a, const GptHeader& g, uint32_t sector,
                      uint64_t disk_size, PartitionTable* t) {
  static const uint8_t kUnused[16] = {};
  for (uint32_t i = 0; i < g.num_entries; ++i) {
    const uint8_t* e = a.data() + static_cast<size_t>(i) * g.entry_size;
    if (std::memcmp(e, kUnused, 16) == 0) continue;
    uint64_t first = GetLe64(e + 32), last = GetLe64(e + 40);
    auto start = CheckedMul<uint64_t>(first, sector);
    auto sectors = last >= first ? CheckedAdd<uint64_t>(last - first, 1) : std::nullopt;
    auto size = sectors ? CheckedMul<uint64_t>(*sectors, sector) : std::nullopt;
    Partition p;
    p.number = i + 1;
    if (!start || !size) {
      t->problems.push_back("partition " + std::to_string(p.number) + " has an invalid range");
      continue;
    }
    p.start = *start;
    p.size = *size;
    if (p.start > disk_size || p.size > disk_size - p.start)
      t->problems.push_back("partition " + std::to_string(p.number) + " extends past the disk");
    p.type_id = FormatGuid(e);
    p.type = GptTypeName(p.type_id);
    if (p.type.empty()) p.type = p.type_id;
    p.name = Utf16Name(e + 56, 36);
    p.bootable = (GetLe64(e + 48) & 0x4) != 0;
    t->partitions.push_back(std::move(p));
  }
}

// Tries the primary GPT at LBA 1, then the backup; fills `t` from the first
// good one. Returns false when neither is usable.
Result<bool> ReadGpt(const ReadFn& read, uint64_t disk_size, uint32_t sector, PartitionTable* t) {
  uint64_t last_lba = disk_size / sector;
  if (last_lba < 2) return false;
  --last_lba;
  std::string primary_problem, backup_problem;
  HEXZ_ASSIGN_OR_RETURN(auto primary, ReadGptHeader(read, disk_size, sector, 1, &primary_problem));
  std::optional<std::vector<uint8_t>> entries;
  if (primary) {
    HEXZ_ASSIGN_OR_RETURN(entries,
                          ReadGptEntries(read, disk_size, sector, *primary, &primary_problem));
  }
  // The backup header: where a good primary says, else the last sector.
  uint64_t backup_lba = primary ? primary->alternate_lba : last_lba;
  HEXZ_ASSIGN_OR_RETURN(auto backup,
                        ReadGptHeader(read, disk_size, sector, backup_lba, &backup_problem));
  std::optional<std::vector<uint8_t>> backup_entries;
  if (backup) {
    HEXZ_ASSIGN_OR_RETURN(backup_entries,
                          ReadGptEntries(read, disk_size, sector, *backup, &backup_problem));
  }
  t->sector_size = sector;
  if (primary && entries) {
    t->scheme = "gpt";
    t->gpt_header = "primary";
    t->disk_guid = primary->disk_guid;
    if (!backup_entries) t->problems.push_back("backup GPT damaged: " + backup_problem);
    DecodeGptEntries(*entries, *primary, sector, disk_size, t);
    return true;
  }
  if (!primary && primary_problem.rfind("no GPT signature", 0) == 0 && !backup) return false;
  if (backup && backup_entries) {
    t->scheme = "gpt";
    t->gpt_header = "backup";
    t->disk_guid = backup->disk_guid;
    t->problems.push_back("primary GPT damaged: " + primary_problem + "; using the backup");
    DecodeGptEntries(*backup_entries, *backup, sector, disk_size, t);
    return true;
  }
  t->scheme = "gpt";
  t->gpt_header = "none";
  t->problems.push_back("primary GPT damaged: " + primary_problem);
  t->problems.push_back("backup GPT damaged: " + backup_problem);
  return true;
}

// ---- MBR ----

struct MbrEntry {
  uint8_t flag = 0, type = 0;
  uint32_t start = 0, sectors = 0;
};

MbrEntry DecodeMbrEntry(const uint8_t* sector, int i) {
  const uint8_t* e = sector + 446 + 16 * i;
  return MbrEntry{e[0], e[4], GetLe32(e + 8), GetLe32(e + 12)};
}

bool IsExtended(uint8_t type) { return type == 0x05 || type == 0x0f || type == 0x85; }

void AddMbrPartition(uint32_t number, uint64_t start_lba, const MbrEntry& e, uint64_t disk_size,
                     PartitionTable* t) {
  Partition p;
  p.number = number;
  p.start = start_lba * 512;  // start_lba < 2^33, no overflow
  p.size = static_cast<uint64_t>(e.sectors) * 512;
  char id[8];
  std::snprintf(id, sizeof(id), "0x%02x", e.type);
  p.type_id = id;
  p.type = MbrTypeName(e.type);
  if (p.type.empty()) p.type = id;
  p.bootable = e.flag == 0x80;
  if (p.start > disk_size || p.size > disk_size - p.start)
    t->problems.push_back("partition " + std::to_string(number) + " extends past the disk");
  t->partitions.push_back(std::move(p));
}

// Follows the chain of extended boot records inside the extended partition.
Status ReadLogical(const ReadFn& read, uint64_t disk_size, const MbrEntry& ext, PartitionTable* t) {
  std::set<uint64_t> seen;
  uint64_t ebr = ext.start;
  uint8_t s[512];
  for (uint32_t n = 0;; ++n) {
    if (n == kMaxLogical) {
      t->problems.push_back("more than " + std::to_string(kMaxLogical) + " logical partitions");
      return Status::Ok();
    }
    if (!seen.insert(ebr).second) {
      t->problems.push_back("the chain of logical partitions loops");
      return Status::Ok();
    }
    HEXZ_ASSIGN_OR_RETURN(bool in, ReadIn(read, disk_size, ebr * 512, s, sizeof(s)));
    if (!in || s[510] != 0x55 || s[511] != 0xaa) {
      t->problems.push_back("extended boot record at LBA " + std::to_string(ebr) +
                            " is missing or damaged");
      return Status::Ok();
    }
    MbrEntry logical = DecodeMbrEntry(s, 0), next = DecodeMbrEntry(s, 1);
    if (logical.type != 0 && logical.sectors != 0)
      AddMbrPartition(5 + n, ebr + logical.start, logical, disk_size, t);
    if (!IsExtended(next.type) || next.start == 0) return Status::Ok();
    ebr = static_cast<uint64_t>(ext.start) + next.start;
    if (ebr >= static_cast<uint64_t>(ext.start) + ext.sectors) {
      t->problems.push_back("a logical partition link points outside the extended partition");
      return Status::Ok();
    }
  }
}

// An MBR: boot signature, flags 0x00/0x80, at least one used entry, and not
// the boot sector of a FAT or NTFS filesystem (which also ends in 55 AA).
bool LooksLikeMbr(const uint8_t* s) {
  if (s[510] != 0x55 || s[511] != 0xaa) return false;
  if (ProbeFat(s, 512) || std::memcmp(s + 3, "NTFS    ", 8) == 0) return false;
  bool any = false;
  for (int i = 0; i < 4; ++i) {
    MbrEntry e = DecodeMbrEntry(s, i);
    if (e.flag != 0 && e.flag != 0x80) return false;
    if (e.type != 0) {
      if (e.start == 0 || e.sectors == 0) return false;
      any = true;
    }
  }
  return any;
}

}  // namespace

uint32_t Crc32(const void* data, size_t len) {
  static const std::array<uint32_t, 256> kTable = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < len; ++i) c = kTable[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

std::string GptTypeName(const std::string& guid) {
  static const std::pair<const char*, const char*> kNames[] = {
      {"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System"},
      {"0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"},
      {"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"},
      {"E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM"},
      {"A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"},
      {"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "Linux root (x86-64)"},
      {"933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home"},
      {"BC13C2FF-59E6-4262-A352-B275FD6F7172", "Linux extended boot"},
      {"21686148-6449-6E6F-744E-656564454649", "BIOS boot"},
      {"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "Microsoft basic data"},
      {"E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved"},
      {"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "Windows recovery environment"},
  };
  for (const auto& [id, name] : kNames)
    if (guid == id) return name;
  return "";
}

std::string MbrTypeName(uint8_t type) {
  switch (type) {
    case 0x01:
      return "FAT12";
    case 0x04:
    case 0x06:
    case 0x0e:
      return "FAT16";
    case 0x05:
    case 0x0f:
    case 0x85:
      return "Extended";
    case 0x07:
      return "HPFS/NTFS/exFAT";
    case 0x0b:
    case 0x0c:
      return "W95 FAT32";
    case 0x82:
      return "Linux swap";
    case 0x83:
      return "Linux";
    case 0x8e:
      return "Linux LVM";
    case 0xef:
      return "EFI (FAT-12/16/32)";
    case 0xee:
      return "GPT protective";
    case 0xfd:
      return "Linux raid autodetect";
    default:
      return "";
  }
}

Result<Filesystem> ProbeFilesystem(const ReadFn& read, uint64_t offset, uint64_t size) {
  uint8_t b[kProbeLength];
  size_t n = static_cast<size_t>(std::min<uint64_t>(size, sizeof(b)));
  if (n < 512) return Filesystem{};
  HEXZ_RETURN_IF_ERROR(read(offset, b, n));
  if (auto fs = ProbeExt(b, n)) return *fs;
  if (auto fs = ProbeFat(b, n)) return *fs;
  if (auto fs = ProbeOther(b, n)) return *fs;
  if (size >= kBtrfsSuperblock + 4096) {
    uint8_t* sb = b;  // reuse the buffer: 4 KiB of btrfs superblock
    HEXZ_RETURN_IF_ERROR(read(offset + kBtrfsSuperblock, sb, 4096));
    if (std::memcmp(sb + 0x40, "_BHRfS_M", 8) == 0)
      return Filesystem{"btrfs", FixedString(sb + 0x12b, 256)};
  }
  return Filesystem{};
}

Result<PartitionTable> ReadPartitionTable(const ReadFn& read, uint64_t disk_size) {
  PartitionTable t;
  uint8_t mbr[512];
  HEXZ_ASSIGN_OR_RETURN(bool have_mbr, ReadIn(read, disk_size, 0, mbr, sizeof(mbr)));
  if (!have_mbr) return t;
  bool protective = false;
  for (int i = 0; i < 4; ++i) protective |= DecodeMbrEntry(mbr, i).type == 0xee;
  bool gpt = false;
  if (mbr[510] == 0x55 && mbr[511] == 0xaa && protective) {
    for (uint32_t sector : {512u, 4096u}) {
      PartitionTable g;
      HEXZ_ASSIGN_OR_RETURN(gpt, ReadGpt(read, disk_size, sector, &g));
      if (gpt) {
        t = std::move(g);
        break;
      }
    }
  }
  if (!gpt && LooksLikeMbr(mbr)) {
    t.scheme = "mbr";
    for (int i = 0; i < 4; ++i) {
      MbrEntry e = DecodeMbrEntry(mbr, i);
      if (e.type == 0 || e.sectors == 0) continue;
      AddMbrPartition(static_cast<uint32_t>(i + 1), e.start, e, disk_size, &t);
      if (IsExtended(e.type)) HEXZ_RETURN_IF_ERROR(ReadLogical(read, disk_size, e, &t));
    }
  }
  if (t.scheme == "none") {
    HEXZ_ASSIGN_OR_RETURN(t.whole_disk, ProbeFilesystem(read, 0, disk_size));
    return t;
  }
  for (Partition& p : t.partitions) {
    if (p.type == "Extended" || p.start >= disk_size) continue;
    uint64_t avail = std::min(p.size, disk_size - p.start);
    HEXZ_ASSIGN_OR_RETURN(p.fs, ProbeFilesystem(read, p.start, avail));
  }
  return t;
}

bool IsExtendedContainer(const Partition& p) {
  return p.type_id == "0x05" || p.type_id == "0x0f" || p.type_id == "0x85";
}

std::vector<Partition> UsablePartitions(const PartitionTable& t, uint64_t disk_size) {
  std::vector<Partition> out;
  for (const Partition& p : t.partitions) {
    if (IsExtendedContainer(p) || p.size == 0 || p.start > disk_size ||
        p.size > disk_size - p.start) {
      continue;
    }
    out.push_back(p);
  }
  return out;
}

std::string FormatPartitionList(const PartitionTable& t, const std::string& indent) {
  char line[512];
  std::snprintf(line, sizeof(line), "%s%-3s %12s %10s  %-22s %-8s %s\n", indent.c_str(), "#",
                "START", "SIZE", "TYPE", "FS", "LABEL");
  std::string out = line;
  for (const Partition& p : t.partitions) {
    std::snprintf(
        line, sizeof(line), "%s%-3u %12llu %10s  %-22s %-8s %s\n", indent.c_str(), p.number,
        static_cast<unsigned long long>(p.start), base::FormatSize(p.size).c_str(), p.type.c_str(),
        p.fs.type.empty() ? "-" : p.fs.type.c_str(), p.fs.label.empty() ? "-" : p.fs.label.c_str());
    out += line;
  }
  return out;
}

}  // namespace hexz::disk
