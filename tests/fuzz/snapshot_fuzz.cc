// libFuzzer harness for the snapshot reader: opens the input as a snapshot
// (from a memfd, as the sandboxed worker does with its descriptors) and reads
// everything it can. An input holding two footer magics is also tried as a
// thin pair: the bytes up to the end of the first footer are the child, the
// rest its parent. The metadata section's checksum is resealed along with
// the others' (FixChecksums). Seeds: tests/fuzz/corpus/snapshot (the thin pair) and
// the golden files in tests/data, both passed to libFuzzer by CTest.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/base/endian.h"
#include "common/format/layout.h"
#include "common/format/snapshot.h"

namespace {

using hexz::base::UniqueFd;
using hexz::format::Snapshot;
using hexz::format::StreamId;

UniqueFd MemFile(const uint8_t* data, size_t size) {
  UniqueFd fd(memfd_create("hexz-fuzz", MFD_CLOEXEC));
  if (!fd.valid()) return fd;
  size_t done = 0;
  while (done < size) {
    ssize_t n = write(fd.get(), data + done, size - done);
    if (n <= 0) return UniqueFd();
    done += static_cast<size_t>(n);
  }
  return fd;
}

void Exercise(const Snapshot& s) {
  std::vector<uint8_t> buf;
  for (StreamId id : {StreamId::kDisk, StreamId::kMemory}) {
    if (!s.HasStream(id)) continue;
    uint64_t size = s.StreamSize(id);
    uint64_t limit = std::min<uint64_t>(size, 4u << 20);
    uint64_t chunk = 3 * s.block_size() / 2 + 1;
    for (uint64_t off = 0; off < limit; off += chunk) {
      uint64_t n = std::min(chunk, size - off);
      buf.resize(n);
      (void)s.Read(id, off, buf.data(), n);
    }
    std::vector<hexz::io::Extent> ext;
    if (size > 0) (void)s.Extents(id, 0, size, &ext);
    uint64_t blocks = std::min<uint64_t>(s.BlockCount(id), 64);
    for (uint64_t b = 0; b < blocks; ++b) {
      (void)s.GetBlockEntry(id, b);
      (void)s.ReadStoredBlock(id, b);
    }
  }
  (void)s.Verify();
}

// Recomputes the header, index and footer checksums so that mutations reach
// the structure checks behind them.
std::vector<uint8_t> FixChecksums(const uint8_t* data, size_t size) {
  namespace L = hexz::format::layout;
  using hexz::base::GetLe64;
  using hexz::base::PutLe64;
  std::vector<uint8_t> v(data, data + size);
  if (size < L::kHeaderSize + L::kFooterSize) return v;
  PutLe64(v.data() + L::kHeaderChecksumAt, L::Checksum(v.data(), L::kHeaderChecksumAt));
  uint8_t* foot = v.data() + size - L::kFooterSize;
  uint64_t off = GetLe64(foot + L::kFooterIndexOffsetAt);
  uint64_t len = GetLe64(foot + L::kFooterIndexLengthAt);
  // The metadata section (its length is in the index header) ends at the index.
  if (off <= size && size - off >= L::kIndexHeaderSize) {
    uint64_t mlen = hexz::base::GetLe32(v.data() + off + L::kIndexMetadataLengthAt);
    if (mlen >= 8 && mlen <= off)
      PutLe64(v.data() + off - 8, L::Checksum(v.data() + off - mlen, mlen - 8));
  }
  if (off <= size && len <= size - off)
    PutLe64(foot + L::kFooterIndexChecksumAt, L::Checksum(v.data() + off, len));
  PutLe64(foot + L::kFooterChecksumAt, L::Checksum(foot, L::kFooterChecksumAt));
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::vector<UniqueFd> fds;
    fds.push_back(MemFile(data, size));
    if (!fds[0].valid()) return 0;
    auto s = Snapshot::OpenFds(std::move(fds), {"fuzz.st"});
    if (s.ok()) Exercise(**s);
  }
  {
    std::vector<uint8_t> fixed = FixChecksums(data, size);
    std::vector<UniqueFd> fds;
    fds.push_back(MemFile(fixed.data(), fixed.size()));
    if (!fds[0].valid()) return 0;
    auto s = Snapshot::OpenFds(std::move(fds), {"fixed.st"});
    if (s.ok()) Exercise(**s);
  }
  // Thin pair: split after the first footer.
  const auto& magic = hexz::format::layout::kFooterMagic;
  const uint8_t* hit = static_cast<const uint8_t*>(memmem(data, size, magic.data(), magic.size()));
  if (hit != nullptr) {
    size_t split = static_cast<size_t>(hit - data) + hexz::format::layout::kFooterSize;
    if (split < size) {
      std::vector<UniqueFd> fds;
      fds.push_back(MemFile(data, split));
      fds.push_back(MemFile(data + split, size - split));
      if (!fds[0].valid() || !fds[1].valid()) return 0;
      auto s = Snapshot::OpenFds(std::move(fds), {"child.st", "parent.st"});
      if (s.ok()) Exercise(**s);
    }
  }
  return 0;
}
