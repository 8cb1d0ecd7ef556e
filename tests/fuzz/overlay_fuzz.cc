// libFuzzer harness for the overlay reader (format 2: data header,
// superblocks, log replay with the crash-versus-damage rule, block
// checksums), from memfds as the sandboxed worker opens them.
//
// Input: byte 0 = flags (bit 0: recompute every checksum, so that mutations
// reach the checks behind them), byte 1 = number of 4 KiB slots in the data
// file, bytes 2..129 = the data header, the rest = the meta file.
// An overlay that opens read-only is then opened in salvage mode (which must
// not fail on damage it can skip), then read-write, written, flushed and
// reopened: what was flushed must read back.
// Seeds: tests/fuzz/corpus/overlay.
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/base/endian.h"
#include "common/overlay/overlay.h"
#include "common/overlay/overlay_layout.h"

namespace {

using hexz::base::UniqueFd;
using namespace hexz::overlay;
namespace L = hexz::overlay::layout;

UniqueFd MemFile(const std::vector<uint8_t>& bytes) {
  UniqueFd fd(memfd_create("hexz-overlay-fuzz", MFD_CLOEXEC));
  if (!fd.valid()) return fd;
  if (!bytes.empty() &&
      pwrite(fd.get(), bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    return UniqueFd();
  }
  return fd;
}

UniqueFd Dup(const UniqueFd& fd) { return UniqueFd(dup(fd.get())); }

void FixHeader(uint8_t* h) {
  hexz::base::PutLe64(h + L::kHeaderChecksumAt, XXH3_64bits(h, L::kHeaderChecksumAt));
}

// Recomputes the superblock checksums, and the record checksums along the
// log of the first superblock that has a plausible log start.
void FixMeta(std::vector<uint8_t>& m) {
  uint64_t start = 0;
  for (uint64_t off : L::kSuperblockOffset) {
    if (off + L::kHeaderBytes > m.size()) continue;
    FixHeader(m.data() + off);
    if (start == 0) start = hexz::base::GetLe64(m.data() + off + 72);
  }
  uint64_t pos = start;
  for (int i = 0; i < 64 && pos >= L::kLogBase && pos % L::kSector == 0 && pos <= m.size() &&
                  m.size() - pos >= L::kRecordHeaderBytes;
       ++i) {
    uint8_t* h = m.data() + pos;
    uint64_t bytes = uint64_t{hexz::base::GetLe32(h + L::kRecordCountAt)} * L::kEntryBytes;
    if (bytes > m.size() - pos - L::kRecordHeaderBytes) break;
    hexz::base::PutLe64(h + L::kRecordBodyChecksumAt,
                        XXH3_64bits(h + L::kRecordHeaderBytes, bytes));
    hexz::base::PutLe64(h + L::kRecordHeaderChecksumAt, XXH3_64bits(h, L::kRecordHeaderChecksumAt));
    pos += (L::kRecordHeaderBytes + bytes + L::kSector - 1) / L::kSector * L::kSector;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 + L::kHeaderBytes) return 0;
  const bool fix = data[0] & 1;
  const size_t slots = data[1];
  std::vector<uint8_t> dfile((slots + 1) * kBlockSize, 0);
  std::memcpy(dfile.data(), data + 2, L::kHeaderBytes);
  for (size_t s = 0; s < slots; ++s) {
    std::memset(dfile.data() + (s + 1) * kBlockSize, static_cast<int>(s + 1), kBlockSize);
  }
  std::vector<uint8_t> mfile(data + 2 + L::kHeaderBytes, data + size);
  if (fix) {
    FixHeader(dfile.data());
    FixMeta(mfile);
  }
  UniqueFd dfd = MemFile(dfile), mfd = MemFile(mfile);
  if (!dfd.valid() || !mfd.valid()) return 0;

  OverlayOptions ro;
  ro.read_only = true;
  OverlayNames names{"fuzz.ovl", "fuzz.ovl.meta", "fuzz.st"};
  auto ov = Overlay::OpenAnyBase(Dup(dfd), Dup(mfd), names, ro);
  if (!ov.ok()) return 0;
  const uint64_t blocks = (*ov)->block_count();
  std::vector<uint8_t> buf(kBlockSize);
  for (uint64_t b = 0; b < std::min<uint64_t>(blocks, 64); ++b)
    (void)(*ov)->ReadBlock(b, buf.data());
  (void)(*ov)->AnyChanged(0, blocks);
  OverlayStats stats = (*ov)->Stats();
  if (stats.data_blocks > slots) abort();  // every stored block has its own slot
  hexz::format::SnapshotId base = (*ov)->base_id();
  uint64_t disk = (*ov)->disk_size();
  ov = hexz::base::Status::Cancelled("done");

  // Salvage of an overlay that opens strictly finds no structural problem.
  OverlayOptions salvage;
  salvage.salvage = true;
  auto sv = Overlay::OpenAnyBase(Dup(dfd), Dup(mfd), names, salvage);
  if (!sv.ok()) abort();
  if (!(*sv)->CheckBlocks(true).ok()) abort();
  sv = hexz::base::Status::Cancelled("done");

  // Read-write: recovery truncation, a write and a flush, then read back.
  OverlayOptions rw;
  rw.durable = false;
  auto w = Overlay::Open(Dup(dfd), Dup(mfd), names, base, disk, rw);
  if (!w.ok()) return 0;
  std::vector<uint8_t> pattern(kBlockSize, 0xe7);
  const uint64_t target = blocks - 1;
  if (!(*w)->WriteBlock(target, pattern.data()).ok() || !(*w)->Flush().ok()) return 0;
  w = hexz::base::Status::Cancelled("done");
  auto again = Overlay::Open(Dup(dfd), Dup(mfd), names, base, disk, ro);
  if (!again.ok()) abort();  // what we just wrote must open
  auto state = (*again)->ReadBlock(target, buf.data());
  if (!state.ok() || *state != BlockState::kData || buf != pattern) abort();
  return 0;
}
