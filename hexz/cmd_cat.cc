// hexz cat: writes the raw bytes of one stream of a snapshot.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "common/format/snapshot.h"
#include "common/io/file.h"
#include "hexz/commands.h"

namespace hexz::cli {
namespace {

using base::Status;
using format::StreamId;

struct CatArgs {
  std::string path, stream = "disk", output;
};

Status Cat(const CatArgs& a) {
  StreamId stream = a.stream == "memory" ? StreamId::kMemory : StreamId::kDisk;
  if (a.output.empty() && isatty(STDOUT_FILENO) == 1) {
    return Status::InvalidArgument(
        "refusing to write binary data to a terminal; use --output FILE or a pipe");
  }
  HEXZ_ASSIGN_OR_RETURN(auto snap, format::Snapshot::Open(a.path));
  if (!snap->HasStream(stream))
    return Status::NotFound(a.path + ": has no " + a.stream + " stream");
  int out = STDOUT_FILENO;
  base::UniqueFd out_fd;
  std::string out_name = a.output.empty() ? "standard output" : a.output;
  bool seekable = false;
  if (!a.output.empty()) {
    struct stat in_st, out_st;
    if (stat(a.output.c_str(), &out_st) == 0 && stat(a.path.c_str(), &in_st) == 0 &&
        in_st.st_dev == out_st.st_dev && in_st.st_ino == out_st.st_ino) {
      return Status::InvalidArgument(a.output +
                                     ": is the snapshot itself; choose another --output");
    }
    HEXZ_ASSIGN_OR_RETURN(out_fd, io::OpenFile(a.output, O_WRONLY | O_CREAT | O_TRUNC, 0666));
    out = out_fd.get();
    struct stat st;
    seekable = fstat(out, &st) == 0 && S_ISREG(st.st_mode);
  }
  uint64_t size = snap->StreamSize(stream);
  uint64_t chunk = std::max<uint64_t>(snap->block_size(), 1u << 20);
  std::vector<uint8_t> buf(chunk);
  for (uint64_t pos = 0; pos < size; pos += chunk) {
    uint64_t n = std::min(chunk, size - pos);
    if (seekable) {
      // Holes stay holes in a regular output file.
      std::vector<io::Extent> ext;
      HEXZ_RETURN_IF_ERROR(snap->Extents(stream, pos, n, &ext));
      if (!ext.empty() && ext[0].hole && ext[0].offset == pos && ext[0].length >= n) continue;
    }
    HEXZ_RETURN_IF_ERROR(snap->Read(stream, pos, buf.data(), n));
    if (seekable) {
      HEXZ_RETURN_IF_ERROR(io::PwriteFull(out, buf.data(), n, pos, out_name));
    } else {
      HEXZ_RETURN_IF_ERROR(io::WriteFull(out, buf.data(), n, out_name));
    }
  }
  if (seekable) {
    if (ftruncate(out, static_cast<off_t>(size)) != 0) return Status::FromErrno(errno, out_name);
  }
  return Status::Ok();
}

}  // namespace

void AddCatCommand(CLI::App& parent, int* rc) {
  auto args = std::make_shared<CatArgs>();
  CLI::App* cmd = parent.add_subcommand("cat", "Write the raw bytes of a snapshot stream");
  cmd->add_option("SNAP", args->path, "Snapshot file")->required();
  cmd->add_option("--stream", args->stream, "disk (default) or memory")
      ->check(CLI::IsMember({"disk", "memory"}));
  cmd->add_option("-o,--output", args->output, "Write to FILE instead of standard output");
  cmd->callback([rc, args] {
    Status st = Cat(*args);
    *rc = st.ok() ? 0 : Fail(st);
  });
}

}  // namespace hexz::cli
