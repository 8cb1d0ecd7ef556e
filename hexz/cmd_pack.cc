// hexz pack: packs a disk image (and optionally a memory dump) into a snapshot.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <optional>
#include <string>

#include "common/base/size.h"
#include "common/format/writer.h"
#include "common/io/file.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"
#include "hexz/progress.h"
#include "hexz/temp_file_watchdog.h"

namespace hexz::cli {
namespace {

using base::Status;
using format::Codec;
using format::StreamId;

std::atomic<bool> g_cancel{false};
extern "C" void OnSignal(int) { g_cancel.store(true); }

struct PackArgs {
  std::string disk, memory, output, compression = "lz4", block_size = "64K";
  std::optional<int> level;
  unsigned threads = 0;
  bool quiet = false;
};

// Usage errors (exit 2) are found here, before any file is touched.
Status BuildOptions(const PackArgs& a, format::WriterOptions* o) {
  HEXZ_ASSIGN_OR_RETURN(o->codec, format::ParseCodec(a.compression));
  HEXZ_ASSIGN_OR_RETURN(o->level, CheckLevel(a.compression, a.level));
  auto bs = base::ParseSize(a.block_size);
  if (!bs.ok()) return bs.status().WithContext("--block-size");
  if (*bs > (1u << 20) || *bs < 4096 || (*bs & (*bs - 1)) != 0) {
    return Status::InvalidArgument("--block-size " + a.block_size +
                                   ": must be a power of two from 4K to 1M");
  }
  o->block_size = static_cast<uint32_t>(*bs);
  o->threads = a.threads;
  o->cancel = &g_cancel;
  Status st = format::ValidateWriterOptions(*o);
  if (!st.ok()) return st.WithContext("hexz pack");
  return Status::Ok();
}

Status Pack(const PackArgs& a, format::WriterOptions o, bool show_progress) {
  struct Input {
    std::string path;
    StreamId stream;
    base::UniqueFd fd;
    uint64_t size = 0;
  };
  std::vector<Input> inputs;
  inputs.push_back({a.disk, StreamId::kDisk, {}, 0});
  if (!a.memory.empty()) inputs.push_back({a.memory, StreamId::kMemory, {}, 0});
  struct stat out_st;
  bool out_exists = stat(a.output.c_str(), &out_st) == 0;
  for (Input& in : inputs) {
    HEXZ_ASSIGN_OR_RETURN(in.fd, io::OpenFile(in.path, O_RDONLY | O_NONBLOCK));
    struct stat st;
    if (fstat(in.fd.get(), &st) != 0) return Status::FromErrno(errno, in.path);
    if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(in.path + ": is a directory");
    if (out_exists && SameFile(st, out_st))
      return Status::InvalidArgument(a.output + ": is also an input; choose another --output");
    HEXZ_ASSIGN_OR_RETURN(in.size, io::FileSize(in.fd.get(), in.path));
  }

  ProgressBar bar;
  uint64_t total_all = 0;
  for (const Input& in : inputs) total_all += in.size;
  if (show_progress)
    o.progress = [&bar, total_all](uint64_t done, uint64_t) { bar.Update(done, total_all); };
  HEXZ_ASSIGN_OR_RETURN(auto writer, format::SnapshotWriter::Create(a.output, o));
  // A SIGKILLed pack leaves no temporary output behind.
  TempFileWatchdog watchdog;  // stopped (destroyed) before the writer
  watchdog.Start(a.output);
  for (Input& in : inputs) {
    Status st = format::PackStream(writer.get(), in.fd.get(), in.path, in.stream, in.size);
    if (!st.ok()) {
      writer->Abort();
      if (show_progress) std::fprintf(stderr, "\n");
      return st;
    }
  }
  auto id = writer->Finish();
  if (show_progress) bar.Update(total_all, total_all, true);
  if (!id.ok()) return id.status();
  if (!a.quiet) {
    struct stat st;
    uint64_t out_size = stat(a.output.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    std::printf("%s: packed %s into %s (id %s)\n", a.output.c_str(),
                base::FormatSize(total_all).c_str(), base::FormatSize(out_size).c_str(),
                id->ToHex().c_str());
  }
  return Status::Ok();
}

}  // namespace

void AddPackCommand(CLI::App& parent, int* rc) {
  auto args = std::make_shared<PackArgs>();
  CLI::App* cmd =
      parent.add_subcommand("pack", "Pack a disk image (and a memory dump) into a snapshot");
  cmd->add_option("--disk", args->disk, "Raw disk image (file or block device)")->required();
  cmd->add_option("--memory", args->memory, "Raw memory dump (optional)");
  cmd->add_option("-o,--output", args->output, "Snapshot file to write (*.st)")->required();
  cmd->add_option("--compression", args->compression, "lz4 (default), zstd or none")
      ->check(CLI::IsMember({"lz4", "zstd", "none"}));
  cmd->add_option("--level", args->level, "Compression level (lz4: 1..12, zstd: 1..19)");
  cmd->add_option("--block-size", args->block_size, "Block size, 4K..1M, power of two (64K)");
  cmd->add_option("--threads", args->threads, "Compressor threads (default: all CPUs)");
  cmd->add_flag("-q,--quiet", args->quiet, "No progress bar and no summary");
  cmd->callback([rc, args] {
    bool show = !args->quiet && isatty(STDERR_FILENO) == 1;
    format::WriterOptions options;
    if (Status st = BuildOptions(*args, &options); !st.ok()) {
      Fail(st);
      *rc = 2;
      return;
    }
    struct sigaction sa = {};
    sa.sa_handler = OnSignal;
    sigemptyset(&sa.sa_mask);
    struct sigaction old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    Status st = Pack(*args, options, show);
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    *rc = st.ok() ? 0 : Fail(st);
  });
}

}  // namespace hexz::cli
