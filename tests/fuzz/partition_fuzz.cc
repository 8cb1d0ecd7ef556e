// libFuzzer harness for the partition table reader: the input is a disk.
// A second pass recomputes the primary GPT header and entry array CRC32s
// (when the input has a header at LBA 1), so that mutations reach the checks
// behind them. Seeds: tests/fuzz/corpus/partition (a GPT disk made by
// sfdisk, an MBR disk with logical partitions).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/base/endian.h"
#include "common/disk/partition.h"

namespace {

using hexz::disk::ReadFn;

void Exercise(const std::vector<uint8_t>& d) {
  ReadFn read = [&d](uint64_t off, void* buf, size_t len) {
    if (off > d.size() || len > d.size() - off) return hexz::base::Status::OutOfRange("past end");
    std::memcpy(buf, d.data() + off, len);
    return hexz::base::Status::Ok();
  };
  (void)hexz::disk::ReadPartitionTable(read, d.size());
  // The same bytes seen as a larger disk: reads past the input fail.
  (void)hexz::disk::ReadPartitionTable(read, d.size() * 2 + 4096);
}

void FixGpt(std::vector<uint8_t>* d) {
  using hexz::base::GetLe32;
  using hexz::base::GetLe64;
  using hexz::base::PutLe32;
  if (d->size() < 1024 || std::memcmp(d->data() + 512, "EFI PART", 8) != 0) return;
  uint8_t* h = d->data() + 512;
  uint64_t lba = GetLe64(h + 72);
  uint64_t bytes = static_cast<uint64_t>(GetLe32(h + 80)) * GetLe32(h + 84);
  if (lba < d->size() / 512 && bytes <= d->size() - lba * 512)
    PutLe32(h + 88, hexz::disk::Crc32(d->data() + lba * 512, bytes));
  uint32_t hs = GetLe32(h + 12);
  if (hs >= 92 && hs <= 512) {
    PutLe32(h + 16, 0);
    PutLe32(h + 16, hexz::disk::Crc32(h, hs));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> d(data, data + size);
  Exercise(d);
  FixGpt(&d);
  Exercise(d);
  return 0;
}
