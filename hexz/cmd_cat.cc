// hexz cat: writes the raw bytes of one stream of a snapshot. A regular output
// file is replaced atomically (temp file, then rename); no output may be a
// file of the snapshot's chain.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/format/snapshot.h"
#include "common/io/file.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"
#include "hexz/remote_cli.h"

namespace hexz::cli {
namespace {

using base::Status;
using format::StreamId;

std::atomic<bool> g_cancel{false};
extern "C" void OnCatSignal(int) { g_cancel.store(true); }

struct CatArgs {
  std::string path, stream = "disk", output;
  std::shared_ptr<RemoteFlags> remote = std::make_shared<RemoteFlags>();
};

// Where the bytes go. A regular file (or a new one) is written as a temp file
// beside it and renamed over it at the end, so a failure leaves the old file
// alone (the destructor removes the temp file); devices, FIFOs and standard
// output are written in place.
class Output {
 public:
  Output() = default;
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;
  ~Output() {
    if (!temp_.empty()) unlink(temp_.c_str());
  }

  int fd() const { return fd_; }
  const std::string& name() const { return name_; }
  bool seekable() const { return seekable_; }
  bool replaces() const { return !temp_.empty(); }

  Status Open(const std::string& output) {
    name_ = final_ = output;
    struct stat st;
    bool exists = stat(output.c_str(), &st) == 0;
    if (exists && S_ISREG(st.st_mode) && access(output.c_str(), W_OK) != 0) {
      // Renaming over it would work, but a file you may not write stays.
      return Status::FromErrno(errno, output);
    }
    if (exists && !S_ISREG(st.st_mode)) {
      if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(output + ": is a directory");
      HEXZ_ASSIGN_OR_RETURN(owned_, io::OpenFile(output, O_WRONLY));
      fd_ = owned_.get();
      return Status::Ok();
    }
    // Through a symlink, the file it names is replaced, not the link.
    if (char* real = realpath(output.c_str(), nullptr); real != nullptr) {
      final_ = real;
      free(real);
    }
    size_t slash = final_.rfind('/');
    std::string tmpl = slash == std::string::npos ? "." + final_ + ".tmp-XXXXXX"
                                                  : final_.substr(0, slash + 1) + "." +
                                                        final_.substr(slash + 1) + ".tmp-XXXXXX";
    int fd = mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, output + ": cannot create a temp file next to it");
    owned_.reset(fd);
    temp_ = tmpl;
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0) return Status::FromErrno(errno, temp_);
    fd_ = fd;
    seekable_ = true;
    return Status::Ok();
  }

  // Sets the final size, syncs and renames the temp file into place.
  Status Commit(uint64_t size) {
    if (temp_.empty()) return Status::Ok();
    if (ftruncate(fd_, static_cast<off_t>(size)) != 0) return Status::FromErrno(errno, temp_);
    HEXZ_RETURN_IF_ERROR(io::Fsync(fd_, temp_));
    if (rename(temp_.c_str(), final_.c_str()) != 0) {
      return Status::FromErrno(errno, name_ + ": cannot rename the temp file into place");
    }
    temp_.clear();
    return io::FsyncParentDir(final_);
  }

 private:
  int fd_ = STDOUT_FILENO;
  base::UniqueFd owned_;
  std::string name_ = "standard output";
  std::string temp_;   // the temp file while it is pending
  std::string final_;  // what it replaces (symlinks resolved)
  bool seekable_ = false;
};

Status Cat(const CatArgs& a) {
  StreamId stream = a.stream == "memory" ? StreamId::kMemory : StreamId::kDisk;
  if (a.output.empty() && isatty(STDOUT_FILENO) == 1) {
    return Status::InvalidArgument(
        "refusing to write binary data to a terminal; use --output FILE or a pipe");
  }
  HEXZ_ASSIGN_OR_RETURN(auto snap, OpenSnapshotChain(a.path, a.remote->OpenOptions()));
  if (!snap->HasStream(stream))
    return Status::NotFound(snap->path() + ": has no " + a.stream + " stream");
  Output out;
  if (!a.output.empty()) {
    HEXZ_RETURN_IF_ERROR(
        CheckOutputNotInChain(a.output, *snap, "the snapshot itself", "the snapshot"));
    HEXZ_RETURN_IF_ERROR(out.Open(a.output));
  }
  const std::vector<std::string> chain = snap->ChainNames();
  uint64_t size = snap->StreamSize(stream);
  uint64_t chunk = std::max<uint64_t>(snap->block_size(), 1u << 20);
  std::vector<uint8_t> buf(chunk);
  for (uint64_t pos = 0; pos < size; pos += chunk) {
    if (g_cancel.load()) {
      return Status::Cancelled(out.name() + ": cancelled" +
                               (out.replaces() ? "; nothing was written" : ""));
    }
    uint64_t n = std::min(chunk, size - pos);
    if (out.seekable()) {
      // Holes stay holes in a regular output file.
      std::vector<io::Extent> ext;
      if (Status st = snap->Extents(stream, pos, n, &ext); !st.ok()) return NameChain(chain, st);
      if (!ext.empty() && ext[0].hole && ext[0].offset == pos && ext[0].length >= n) continue;
    }
    if (Status st = snap->Read(stream, pos, buf.data(), n); !st.ok()) return NameChain(chain, st);
    if (out.seekable()) {
      HEXZ_RETURN_IF_ERROR(io::PwriteFull(out.fd(), buf.data(), n, pos, out.name()));
    } else {
      HEXZ_RETURN_IF_ERROR(io::WriteFull(out.fd(), buf.data(), n, out.name()));
    }
  }
  return out.Commit(size);
}

}  // namespace

void AddCatCommand(CLI::App& parent, int* rc) {
  auto args = std::make_shared<CatArgs>();
  CLI::App* cmd = parent.add_subcommand("cat", "Write the raw bytes of a snapshot stream");
  cmd->add_option("SNAP", args->path, "Snapshot file or URL")->required();
  cmd->add_option("--stream", args->stream, "disk (default) or memory")
      ->check(CLI::IsMember({"disk", "memory"}));
  cmd->add_option("-o,--output", args->output, "Write to FILE instead of standard output");
  args->remote->Add(cmd);
  cmd->callback([rc, args] {
    // Ctrl+C and SIGTERM stop between chunks, so that the temp file goes.
    struct sigaction sa = {};
    sa.sa_handler = OnCatSignal;
    sigemptyset(&sa.sa_mask);
    struct sigaction old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    Status st = Cat(*args);
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    *rc = st.ok() ? 0 : Fail(st);
  });
}

}  // namespace hexz::cli
