// hexz_overlay_write: a test tool that changes an overlay the way a --rw
// mount would, without FUSE, so that `hexz commit` can be tested end to end.
//
//   hexz_overlay_write BASE.st OVERLAY [--hold] OP...
//     OFFSET:FILE        write FILE's bytes at OFFSET of the disk
//     zero:OFFSET:LEN    write zeroes
//     trim:OFFSET:LEN    trim
//     diff:IMAGE         write every 4 KiB block of IMAGE (a whole disk
//                        image) that differs from what the disk reads now
//   Flushes at the end. With --hold, then prints "ready" and keeps the
//   overlay open (locked) until standard input reaches end of file.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/format/snapshot.h"
#include "common/io/file.h"
#include "common/overlay/overlay_files.h"
#include "common/overlay/overlay_volume.h"

using namespace hexz;

namespace {

base::Status Run(int argc, char** argv) {
  if (argc < 3) return base::Status::InvalidArgument("usage: BASE.st OVERLAY [--hold] OP...");
  HEXZ_ASSIGN_OR_RETURN(std::shared_ptr<format::Snapshot> snap, format::Snapshot::Open(argv[1]));
  HEXZ_ASSIGN_OR_RETURN(overlay::OverlayFiles files,
                        overlay::OpenOverlayFiles(argv[2], overlay::LockMode::kExclusive, true));
  files.names.base = argv[1];
  uint64_t size = snap->StreamSize(format::StreamId::kDisk);
  HEXZ_RETURN_IF_ERROR(overlay::ValidateOverlayFiles(files, snap->id(), size));
  HEXZ_ASSIGN_OR_RETURN(auto vol, overlay::OpenOverlayVolume(snap, std::move(files.data),
                                                             std::move(files.meta), files.names,
                                                             /*ephemeral=*/false));
  bool hold = false;
  for (int i = 3; i < argc; ++i) {
    std::string op = argv[i];
    if (op == "--hold") {
      hold = true;
      continue;
    }
    if (op.rfind("diff:", 0) == 0) {
      std::string path = op.substr(5);
      HEXZ_ASSIGN_OR_RETURN(base::UniqueFd fd, io::OpenFile(path, O_RDONLY));
      HEXZ_ASSIGN_OR_RETURN(uint64_t n, io::FileSize(fd.get(), path));
      if (n != size) return base::Status::InvalidArgument(path + ": not the disk's size");
      std::vector<uint8_t> want(overlay::kBlockSize), have(overlay::kBlockSize);
      uint64_t changed = 0;
      for (uint64_t off = 0; off < size; off += overlay::kBlockSize) {
        size_t len = static_cast<size_t>(std::min<uint64_t>(overlay::kBlockSize, size - off));
        HEXZ_RETURN_IF_ERROR(io::PreadFull(fd.get(), want.data(), len, off, path));
        HEXZ_RETURN_IF_ERROR(vol->Read(off, have.data(), len));
        if (std::memcmp(want.data(), have.data(), len) == 0) continue;
        HEXZ_RETURN_IF_ERROR(vol->Write(off, want.data(), len, false));
        ++changed;
      }
      std::fprintf(stderr, "%s: %llu blocks differ\n", path.c_str(),
                   static_cast<unsigned long long>(changed));
      continue;
    }
    if (op.rfind("zero:", 0) == 0 || op.rfind("trim:", 0) == 0) {
      size_t c = op.find(':', 5);
      uint64_t off = std::stoull(op.substr(5, c - 5)), len = std::stoull(op.substr(c + 1));
      HEXZ_RETURN_IF_ERROR(op[0] == 'z' ? vol->WriteZeroes(off, len, false) : vol->Trim(off, len));
      continue;
    }
    size_t c = op.find(':');
    if (c == std::string::npos) return base::Status::InvalidArgument("bad op " + op);
    uint64_t off = std::stoull(op.substr(0, c));
    std::string path = op.substr(c + 1);
    HEXZ_ASSIGN_OR_RETURN(base::UniqueFd fd, io::OpenFile(path, O_RDONLY));
    HEXZ_ASSIGN_OR_RETURN(uint64_t n, io::FileSize(fd.get(), path));
    std::vector<uint8_t> buf(n);
    HEXZ_RETURN_IF_ERROR(io::PreadFull(fd.get(), buf.data(), n, 0, path));
    HEXZ_RETURN_IF_ERROR(vol->Write(off, buf.data(), n, false));
  }
  HEXZ_RETURN_IF_ERROR(vol->Flush());
  if (hold) {
    std::printf("ready\n");
    std::fflush(stdout);
    char c;
    while (read(STDIN_FILENO, &c, 1) > 0) {
    }
  }
  return base::Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  base::Status st = Run(argc, argv);
  if (!st.ok()) {
    std::fprintf(stderr, "hexz_overlay_write: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}
