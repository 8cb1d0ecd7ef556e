// Partition tables (GPT, MBR with extended/logical partitions) and the
// filesystems found in them by their superblocks, for `hexz info`.
//
// Everything here reads untrusted bytes (a guest's disk): every offset and
// length is computed with checked math and bounded by the disk's size; GPT
// headers and entry arrays are only trusted when their CRC32s match, and a
// damaged primary GPT header falls back to the backup (the result says so).
// The reader does at most a few hundred small reads, whatever the bytes say.
//
// Ownership: the functions borrow the read callback for the call only.
// Thread safety: stateless; concurrent calls are fine if the callback is.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/base/status.h"

namespace hexz::disk {

using base::Result;
using base::Status;

// Reads exactly `len` bytes at `offset`; the range lies within the disk.
using ReadFn = std::function<Status(uint64_t offset, void* buf, size_t len)>;

// A filesystem (or volume) signature found at some offset.
struct Filesystem {
  std::string type;  // "ext4", "vfat", "xfs", "btrfs", "swap", "LVM2_member", "ntfs"...; "" if none
  std::string label;  // volume label, "" if none
};

struct Partition {
  uint32_t number = 0;    // 1-based: GPT entry index + 1; MBR 1..4 primary, 5.. logical
  uint64_t start = 0;     // bytes from the start of the disk
  uint64_t size = 0;      // bytes
  std::string type;       // "EFI System", "Linux filesystem", ...; else the GUID or "0xNN"
  std::string type_id;    // GPT type GUID (upper case) or MBR type byte "0x83"
  std::string name;       // GPT partition name (UTF-8), "" for MBR
  bool bootable = false;  // MBR active flag / GPT legacy BIOS bootable attribute
  Filesystem fs;
};

struct PartitionTable {
  // "gpt", "mbr", or "none" (no table: `whole_disk` says what the disk holds).
  std::string scheme = "none";
  uint32_t sector_size = 512;
  std::string disk_guid;  // GPT only
  // GPT: "primary", or "backup" when the primary header or its entries are
  // damaged; `problems` then says what was wrong.
  std::string gpt_header;
  std::vector<std::string> problems;  // damage found and worked around (or not)
  std::vector<Partition> partitions;
  Filesystem whole_disk;  // for scheme "none"
};

// Reads the partition table of a disk of `disk_size` bytes. A disk without a
// table is not an error (scheme "none"). Errors are only those of `read`.
Result<PartitionTable> ReadPartitionTable(const ReadFn& read, uint64_t disk_size);

// Looks for a filesystem superblock in [offset, offset + size).
Result<Filesystem> ProbeFilesystem(const ReadFn& read, uint64_t offset, uint64_t size);

// True for an MBR extended partition: a container of logical partitions,
// not a volume of its own.
bool IsExtendedContainer(const Partition& p);

// The partitions that are volumes of their own and lie wholly within a disk
// of `disk_size` bytes: no extended containers, no empty ones and none that
// extend past the end. These get partition files (`hexz mount --partitions`)
// and are the ones `hexz mount --nbd --partition N` accepts.
std::vector<Partition> UsablePartitions(const PartitionTable& t, uint64_t disk_size);

// The partitions as text: a header line, then one line per partition
// (number, start, size, type, filesystem, label), each line starting with
// `indent` and ending with a newline. For `hexz info` and for the errors
// that list the partitions to choose from.
std::string FormatPartitionList(const PartitionTable& t, const std::string& indent);

// CRC-32 (IEEE 802.3, as in GPT and zlib) of `len` bytes.
uint32_t Crc32(const void* data, size_t len);

// The name of a GPT type GUID ("EFI System"), or "" if unknown.
std::string GptTypeName(const std::string& guid);
// The name of an MBR type byte ("Linux"), or "" if unknown.
std::string MbrTypeName(uint8_t type);

}  // namespace hexz::disk
