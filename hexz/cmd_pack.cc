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
#include "common/overlay/commit.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"
#include "hexz/disk_source.h"
#include "hexz/progress.h"
#include "hexz/temp_file_watchdog.h"

namespace hexz::cli {
namespace {

using base::Result;
using base::Status;
using format::Codec;
using format::StreamId;

std::atomic<bool> g_cancel{false};
extern "C" void OnSignal(int) { g_cancel.store(true); }

struct PackArgs {
  std::string disk, memory, memory_kind, output, parent, disk_format, block_size;
  CompressionFlags compression;
  bool quiet = false;
};

// Usage errors (exit 2) are found here, before any file is touched.
Status BuildOptions(const PackArgs& a, format::WriterOptions* o) {
  const std::string block_size = a.block_size.empty() ? "64K" : a.block_size;
  auto bs = base::ParseSize(block_size);
  if (!bs.ok()) return bs.status().WithContext("--block-size");
  if (*bs > (1u << 20) || *bs < 4096 || (*bs & (*bs - 1)) != 0) {
    return Status::InvalidArgument("--block-size " + block_size +
                                   ": must be a power of two from 4K to 1M");
  }
  o->block_size = static_cast<uint32_t>(*bs);
  if (a.disk == "-" && a.memory == "-")
    return Status::InvalidArgument("--disk - and --memory -: only one input can be stdin");
  Status st = BuildWriterOptions(a.compression, &g_cancel, o);
  if (!st.ok()) return st.WithContext("hexz pack");
  return Status::Ok();
}

// Opens --parent; its block size becomes the output's (a different
// --block-size is refused: blocks are inherited whole).
Result<std::shared_ptr<const format::Snapshot>> OpenParent(const PackArgs& a,
                                                           format::WriterOptions* o) {
  HEXZ_ASSIGN_OR_RETURN(auto parent, OpenSnapshotAsUser(a.parent));
  if (!a.block_size.empty() && parent->block_size() != o->block_size) {
    return Status::InvalidArgument(
        "--block-size " + a.block_size + " differs from the block size of the parent " + a.parent +
        " (" + base::FormatSize(parent->block_size()) +
        "); a thin snapshot has its parent's block size: leave out --block-size");
  }
  o->block_size = parent->block_size();
  // Replacing a file of the chain would leave the new snapshot without its parent.
  HEXZ_RETURN_IF_ERROR(
      CheckOutputNotInChain(a.output, *parent, "the --parent snapshot", "the --parent snapshot"));
  return std::shared_ptr<const format::Snapshot>(std::move(parent));
}

struct Input {
  std::string name;
  StreamId stream;
  std::unique_ptr<DiskSource> source;
};

Status OpenInputs(const PackArgs& a, std::vector<Input>* inputs) {
  inputs->push_back({a.disk, StreamId::kDisk, nullptr});
  if (!a.memory.empty()) inputs->push_back({a.memory, StreamId::kMemory, nullptr});
  struct stat out_st;
  bool out_exists = stat(a.output.c_str(), &out_st) == 0;
  for (Input& in : *inputs) {
    if (in.name == "-") in.name = "stdin";
    const std::string& spec = in.stream == StreamId::kDisk ? a.disk : a.memory;
    const std::string forced = in.stream == StreamId::kDisk ? a.disk_format : "";
    HEXZ_ASSIGN_OR_RETURN(in.source, OpenDiskSource(spec, forced));
    auto id = in.source->file_id();
    if (out_exists && id && id->first == out_st.st_dev && id->second == out_st.st_ino)
      return Status::InvalidArgument(a.output + ": is also an input; choose another --output");
  }
  return Status::Ok();
}

Status Pack(const PackArgs& a, format::WriterOptions o, bool show_progress) {
  std::shared_ptr<const format::Snapshot> parent;
  if (!a.parent.empty()) {
    HEXZ_ASSIGN_OR_RETURN(parent, OpenParent(a, &o));
  }
  // Inputs open before the writer starts its threads (qemu-nbd is started
  // with this process's stderr briefly redirected).
  std::vector<Input> inputs;
  HEXZ_RETURN_IF_ERROR(OpenInputs(a, &inputs));

  ProgressBar bar;
  uint64_t total_all = 0;
  bool known = true;
  for (const Input& in : inputs) {
    if (auto size = in.source->size()) {
      total_all += *size;
    } else {
      known = false;
    }
  }
  if (show_progress) {
    o.progress = [&bar, total_all, known](uint64_t done, uint64_t) {
      bar.Update(done, known ? total_all : 0);
    };
  }
  HEXZ_ASSIGN_OR_RETURN(auto writer, format::SnapshotWriter::Create(a.output, o));
  // A SIGKILLed pack leaves no temporary output behind.
  TempFileWatchdog watchdog;  // stopped (destroyed) before the writer
  watchdog.Start(a.output);
  if (parent) {
    Status st = writer->SetParent(overlay::RelativeParentPath(a.parent, a.output), parent->id());
    if (!st.ok()) return st;
  }
  if (!a.memory_kind.empty()) {
    HEXZ_RETURN_IF_ERROR(writer->SetMetadata({{format::kMetaMemoryKind, a.memory_kind}}));
  }
  uint64_t blocks = 0, parent_blocks = 0;
  for (Input& in : inputs) {
    auto stats = PackSource(writer.get(), in.source.get(), in.name, in.stream, parent.get());
    if (!stats.ok()) {
      writer->Abort();
      if (show_progress) std::fprintf(stderr, "\n");
      // Ctrl+C also reaches qemu-nbd (same process group): its end is not the error.
      if (g_cancel.load()) return Status::Cancelled(a.output + ": cancelled; nothing was written");
      return stats.status();
    }
    blocks += stats->blocks;
    parent_blocks += stats->parent_blocks;
    in.source.reset();  // ends qemu-nbd
  }
  auto id = writer->Finish();
  if (!id.ok()) return id.status();
  if (show_progress) bar.Update(total_all, total_all, true);
  if (!a.quiet) {
    struct stat st;
    uint64_t out_size = stat(a.output.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    if (!known) total_all = 0;
    std::printf("%s: packed %s into %s (id %s)", a.output.c_str(),
                known ? base::FormatSize(total_all).c_str() : "a stream",
                base::FormatSize(out_size).c_str(), id->ToHex().c_str());
    if (parent) {
      std::printf("; %llu of %llu blocks from the parent %s",
                  static_cast<unsigned long long>(parent_blocks),
                  static_cast<unsigned long long>(blocks), a.parent.c_str());
    }
    std::printf("\n");
  }
  return Status::Ok();
}

}  // namespace

void AddPackCommand(CLI::App& parent, int* rc) {
  auto args = std::make_shared<PackArgs>();
  CLI::App* cmd =
      parent.add_subcommand("pack", "Pack a disk image (and a memory dump) into a snapshot");
  cmd->add_option("--disk", args->disk,
                  "Disk image: raw file, block device, qcow2/VMDK/VHDX/VDI/VPC image, "
                  "NBD URI, or - for stdin")
      ->required();
  cmd->add_option("--disk-format", args->disk_format,
                  "Format of --disk: raw, qcow2, vmdk, vhdx, vdi or vpc (default: detected)")
      ->check(CLI::IsMember({"raw", "qcow2", "vmdk", "vhdx", "vdi", "vpc"}));
  cmd->add_option("--memory", args->memory, "Memory dump (optional): a file, NBD URI or -");
  cmd->add_option("--memory-kind", args->memory_kind,
                  "Record what --memory holds: raw (a plain dump) or qemu-migration (a QEMU "
                  "migration stream); default: not recorded (read as raw)")
      ->check(CLI::IsMember({format::kMemoryKindRaw, format::kMemoryKindQemu}))
      ->needs("--memory");
  cmd->add_option("--parent", args->parent,
                  "Write a thin snapshot: store only blocks that differ from this snapshot");
  cmd->add_option("-o,--output", args->output, "Snapshot file to write (*.st)")->required();
  AddCompressionFlags(cmd, &args->compression, "lz4 (default), zstd or none");
  cmd->add_option("--block-size", args->block_size,
                  "Block size, 4K..1M, power of two (64K; with --parent, the parent's)");
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
