// Test tool for the reader's memory bound: writes a legal snapshot whose
// index is large but whose file is sparse.
//
//   hexz_sparse_index OUTPUT INDEX_MIB
//       Writes OUTPUT with a disk stream of all-zero 64 KiB blocks, as many
//       as fit in an index of about INDEX_MIB MiB (at most 1024, the format's
//       limit). Zero entries are 24 zero bytes, so the index is a hole in
//       the file: OUTPUT takes a few KiB on disk however large its index.
//       Prints the block count.
//
// It encodes the file with common/format/layout.h, as the writer does, but
// without the writer's pipeline (which would take minutes for 44 million
// blocks).
#include <fcntl.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/base/fd.h"
#include "common/format/layout.h"
#include "common/io/file.h"

namespace {

namespace L = hexz::format::layout;
using hexz::base::Status;

Status Write(const std::string& path, uint64_t index_bytes) {
  const uint64_t blocks = (index_bytes - L::kIndexHeaderSize) / L::kEntrySize;
  L::IndexHeader ih;
  ih.entry_count[0] = blocks;
  ih.stream_size[0] = blocks * L::kDefaultBlockSize;
  const uint64_t index_length = *L::IndexLength(ih);
  const uint64_t index_offset = L::kHeaderSize;  // no stored blocks: no data area

  auto fd = hexz::io::OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!fd.ok()) return fd.status();
  if (ftruncate(fd->get(), static_cast<off_t>(index_offset + index_length + L::kFooterSize)) != 0)
    return Status::FromErrno(errno, path);
  uint8_t head[L::kIndexHeaderSize];
  L::EncodeIndexHeader(ih, head);
  HEXZ_RETURN_IF_ERROR(hexz::io::PwriteFull(fd->get(), head, sizeof head, index_offset, path));

  L::Hasher hasher;
  hasher.Update(head, sizeof head);
  std::vector<uint8_t> zeros(1 << 20, 0);
  for (uint64_t left = index_length - sizeof head; left > 0;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, zeros.size()));
    hasher.Update(zeros.data(), n);
    left -= n;
  }
  L::Footer ft;
  ft.index_offset = index_offset;
  ft.index_length = index_length;
  ft.index_checksum = hasher.Digest();
  ft.file_size = index_offset + index_length + L::kFooterSize;
  ft.id = {'s', 'p', 'a', 'r', 's', 'e', '-', 'i', 'n', 'd', 'e', 'x'};
  uint8_t foot[L::kFooterSize];
  L::EncodeFooter(ft, foot);
  HEXZ_RETURN_IF_ERROR(
      hexz::io::PwriteFull(fd->get(), foot, sizeof foot, index_offset + index_length, path));

  L::Header h;
  h.block_size_log2 = 16;
  h.id = ft.id;
  uint8_t header[L::kHeaderSize];
  L::EncodeHeader(h, header);
  HEXZ_RETURN_IF_ERROR(hexz::io::PwriteFull(fd->get(), header, sizeof header, 0, path));
  std::printf("%" PRIu64 "\n", blocks);
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: hexz_sparse_index OUTPUT INDEX_MIB\n");
    return 2;
  }
  uint64_t mib = std::strtoull(argv[2], nullptr, 10);
  if (mib == 0 || mib > 1024) {
    std::fprintf(stderr, "hexz_sparse_index: INDEX_MIB must be 1..1024\n");
    return 2;
  }
  Status st = Write(argv[1], std::min<uint64_t>(mib << 20, L::kMaxIndexSize));
  if (!st.ok()) {
    std::fprintf(stderr, "hexz_sparse_index: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}
