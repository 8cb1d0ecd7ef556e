// hexz commit: writes a new snapshot from a base snapshot and an overlay.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/base/size.h"
#include "common/format/writer.h"
#include "common/io/file.h"
#include "common/overlay/commit.h"
#include "common/overlay/overlay_files.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"
#include "hexz/disk_source.h"
#include "hexz/progress.h"
#include "hexz/remote_cli.h"
#include "hexz/temp_file_watchdog.h"

namespace hexz::cli {
namespace {

using base::Result;
using base::Status;
using format::StreamId;

std::atomic<bool> g_cancel{false};
extern "C" void OnCommitSignal(int) { g_cancel.store(true); }

struct CommitArgs {
  std::string base, overlay, memory, memory_kind, output;
  CompressionFlags compression;
  bool thin = false, remove_overlay = false, quiet = false, salvage = false;
  std::shared_ptr<RemoteFlags> remote = std::make_shared<RemoteFlags>();
};

// Prints the lost blocks as ranges ("12-15 40"), a few per line.
void PrintLostBlocks(const std::vector<overlay::DamagedBlock>& lost) {
  std::vector<uint64_t> blocks;
  for (const auto& d : lost) blocks.push_back(d.block);
  std::sort(blocks.begin(), blocks.end());
  std::string line;
  for (size_t i = 0; i < blocks.size();) {
    size_t j = i;
    while (j + 1 < blocks.size() && blocks[j + 1] == blocks[j] + 1) ++j;
    line += (line.empty() ? "" : " ") + std::to_string(blocks[i]);
    if (j > i) line += "-" + std::to_string(blocks[j]);
    if (line.size() > 70) {
      std::printf("  %s\n", line.c_str());
      line.clear();
    }
    i = j + 1;
  }
  if (!line.empty()) std::printf("  %s\n", line.c_str());
}

// Salvage: the overlay was opened in salvage mode. Drops the blocks whose
// data fails its checksum (they read from the base) and reports everything
// that is lost, on stdout, before the commit writes what is left.
Status SalvageOverlay(overlay::Overlay& ov, const std::string& path) {
  HEXZ_ASSIGN_OR_RETURN(std::vector<overlay::DamagedBlock> lost, ov.CheckBlocks(true));
  for (const std::string& p : ov.problems()) std::printf("salvage: %s\n", p.c_str());
  for (const auto& d : lost) std::printf("salvage: %s\n", d.message.c_str());
  std::printf(
      "salvage: %s: %zu damaged 4 KiB block(s) lost (committed with the base's content)%s\n",
      path.c_str(), lost.size(), lost.empty() ? "" : ":");
  PrintLostBlocks(lost);
  if (!ov.problems().empty()) {
    std::printf(
        "salvage: the log was damaged: blocks changed only by the skipped records are "
        "not in the list above and read as before those records\n");
  }
  return Status::Ok();
}

// The output must not replace the base, a file of its chain, or the overlay.
Status CheckOutput(const CommitArgs& a, const format::Snapshot& base) {
  HEXZ_RETURN_IF_ERROR(CheckOutputNotInChain(a.output, base, "the base snapshot", "the base"));
  struct stat out;
  if (stat(a.output.c_str(), &out) != 0 || a.overlay.empty()) return Status::Ok();
  for (const std::string& p : {a.overlay, overlay::MetaPathFor(a.overlay)}) {
    struct stat st;
    if (stat(p.c_str(), &st) == 0 && SameFile(st, out)) {
      return Status::InvalidArgument(a.output + ": is the overlay (" + p +
                                     "); choose another --output");
    }
  }
  return Status::Ok();
}

// Opens the overlay read-only under a shared lock (refused while a read-write
// mount holds it); with --salvage, reports what is lost.
Result<std::shared_ptr<overlay::Overlay>> OpenOverlay(const CommitArgs& a,
                                                      const format::Snapshot& base) {
  HEXZ_ASSIGN_OR_RETURN(overlay::OverlayFiles files,
                        overlay::OpenOverlayFiles(a.overlay, overlay::LockMode::kShared, false));
  files.names.base = base.path();
  overlay::OverlayOptions ro;
  ro.read_only = true;
  ro.salvage = a.salvage;
  HEXZ_ASSIGN_OR_RETURN(
      std::shared_ptr<overlay::Overlay> ov,
      overlay::Overlay::Open(std::move(files.data), std::move(files.meta), files.names, base.id(),
                             base.StreamSize(StreamId::kDisk), ro));
  if (a.salvage) HEXZ_RETURN_IF_ERROR(SalvageOverlay(*ov, a.overlay));
  return ov;
}

Status Commit(const CommitArgs& a, format::WriterOptions o, bool show_progress) {
  if (a.thin && remote::IsUrl(a.base)) {
    return Status::InvalidArgument(
        "--thin: the base " + remote::RedactUrl(a.base) +
        " is remote, and a thin snapshot names its parent by a path beside it; commit without "
        "--thin (a standalone snapshot) or download the base first");
  }
  HEXZ_ASSIGN_OR_RETURN(std::shared_ptr<format::Snapshot> base,
                        OpenSnapshotChain(a.base, a.remote->OpenOptions()));
  if (!base->HasStream(StreamId::kDisk))
    return Status::InvalidArgument(base->path() + ": has no disk");
  HEXZ_RETURN_IF_ERROR(CheckOutput(a, *base));

  std::shared_ptr<overlay::Overlay> ov;
  if (!a.overlay.empty()) {
    HEXZ_ASSIGN_OR_RETURN(ov, OpenOverlay(a, *base));
  }
  // The new memory stream, opened before anything is written (an error in
  // its name leaves no output).
  std::unique_ptr<DiskSource> memory;
  if (!a.memory.empty()) {
    HEXZ_ASSIGN_OR_RETURN(memory, OpenDiskSource(a.memory, "raw"));
    auto id = memory->file_id();
    struct stat out;
    if (id && stat(a.output.c_str(), &out) == 0 && id->first == out.st_dev &&
        id->second == out.st_ino)
      return Status::InvalidArgument(a.output +
                                     ": is also the --memory input; choose another --output");
  }

  uint64_t total = base->StreamSize(StreamId::kDisk);
  if (memory) {
    total += memory->size().value_or(0);
  } else if (base->HasStream(StreamId::kMemory)) {
    total += base->StreamSize(StreamId::kMemory);
  }
  ProgressBar bar;
  if (show_progress)
    o.progress = [&bar, total](uint64_t done, uint64_t) { bar.Update(done, total); };
  o.block_size = base->block_size();
  HEXZ_ASSIGN_OR_RETURN(auto writer, format::SnapshotWriter::Create(a.output, o));
  TempFileWatchdog watchdog;  // stopped (destroyed) before the writer
  watchdog.Start(a.output);
  std::string parent_path = a.thin ? overlay::RelativeParentPath(a.base, a.output) : "";
  // The base's metadata describes its memory stream: it goes with it.
  format::Metadata metadata = base->metadata();
  if (memory) {
    metadata.clear();
    if (!a.memory_kind.empty()) metadata[format::kMetaMemoryKind] = a.memory_kind;
  }
  HEXZ_RETURN_IF_ERROR(writer->SetMetadata(metadata));
  auto stats = overlay::WriteCommit(base, ov, writer.get(), parent_path, memory == nullptr);
  if (stats.ok() && memory) {
    // Thin: memory blocks equal to the base's become references to it.
    const std::string name = a.memory == "-" ? "stdin" : a.memory;
    auto mem = PackSource(writer.get(), memory.get(), name, StreamId::kMemory,
                          a.thin ? base.get() : nullptr);
    if (mem.ok()) {
      stats->memory_blocks = mem->blocks;
    } else {
      stats = mem.status();
    }
  }
  if (!stats.ok()) {
    writer->Abort();
    if (show_progress) std::fprintf(stderr, "\n");
    return stats.status();
  }
  auto id = writer->Finish();
  if (show_progress) bar.Update(total, total, true);
  if (!id.ok()) return id.status();

  if (a.remove_overlay) {
    // N is durable (Finish synced it); only now may the changes go.
    for (const std::string& p : {a.overlay, overlay::MetaPathFor(a.overlay)}) {
      if (unlink(p.c_str()) != 0) {
        return Status::FromErrno(errno, "committed " + a.output + ", but cannot remove " + p);
      }
    }
    (void)io::FsyncParentDir(a.overlay);
  }
  if (!a.quiet) {
    overlay::OverlayStats os = ov ? ov->Stats() : overlay::OverlayStats{};
    std::printf(
        "%s: committed %s of changes (%llu of %llu blocks rewritten, %llu %s) into a %s "
        "snapshot, id %s%s\n",
        a.output.c_str(), base::FormatSize(os.changed_bytes).c_str(),
        static_cast<unsigned long long>(stats->rewritten_blocks),
        static_cast<unsigned long long>(stats->disk_blocks),
        static_cast<unsigned long long>(a.thin ? stats->parent_blocks : stats->copied_blocks),
        a.thin ? "referenced in the base" : "copied without recompression",
        a.thin ? "thin" : "standalone", id->ToHex().c_str(),
        a.thin ? (" (parent " + parent_path + ")").c_str() : "");
    if (memory) {
      std::printf("%s: memory stream from %s (%llu blocks)\n", a.output.c_str(),
                  a.memory == "-" ? "stdin" : a.memory.c_str(),
                  static_cast<unsigned long long>(stats->memory_blocks));
    }
    if (a.remove_overlay) std::printf("%s: removed (with its .meta)\n", a.overlay.c_str());
  }
  return Status::Ok();
}

}  // namespace

void AddCommitCommand(CLI::App& parent, int* rc) {
  auto args = std::make_shared<CommitArgs>();
  CLI::App* cmd = parent.add_subcommand("commit",
                                        "Write a new snapshot from a base snapshot and the overlay "
                                        "of a --rw mount, or a new memory stream");
  cmd->add_option("--base", args->base, "The snapshot (file or URL) the overlay was made on")
      ->required();
  CLI::Option* ov =
      cmd->add_option("--overlay", args->overlay,
                      "The overlay file (its .meta lies beside it); optional with --memory");
  cmd->add_option("--memory", args->memory,
                  "Add or replace the memory stream: a file, NBD URI or - for stdin (the disk's "
                  "blocks are copied as stored)");
  cmd->add_option("--memory-kind", args->memory_kind,
                  "Record what --memory holds: raw or qemu-migration (default: not recorded)")
      ->check(CLI::IsMember({format::kMemoryKindRaw, format::kMemoryKindQemu}))
      ->needs("--memory");
  cmd->add_flag("--remove-overlay", args->remove_overlay,
                "Delete the overlay and its .meta once the new snapshot is safely written")
      ->needs(ov);
  cmd->add_option("-o,--output", args->output, "The new snapshot (*.st), written atomically")
      ->required();
  cmd->add_flag("--thin", args->thin,
                "Reference the base (by relative path and id) instead of copying its blocks");
  AddCompressionFlags(cmd, &args->compression,
                      "Codec for rewritten blocks: lz4 (default), zstd or none");
  cmd->add_flag("--salvage", args->salvage,
                "Commit a damaged overlay: keep what checks, list the lost blocks")
      ->excludes("--remove-overlay")
      ->needs(ov);
  cmd->add_flag("-q,--quiet", args->quiet, "No progress bar and no summary");
  args->remote->Add(cmd);
  cmd->callback([rc, args] {
    if (args->overlay.empty() && args->memory.empty()) {
      Fail(Status::InvalidArgument(
          "hexz commit: give --overlay (the changes of a --rw mount), --memory, or both"));
      *rc = 2;
      return;
    }
    format::WriterOptions options;
    Status st = BuildWriterOptions(args->compression, &g_cancel, &options);
    if (!st.ok()) {
      Fail(st.WithContext("hexz commit"));
      *rc = 2;
      return;
    }
    bool show = !args->quiet && isatty(STDERR_FILENO) == 1;
    struct sigaction sa = {};
    sa.sa_handler = OnCommitSignal;
    sigemptyset(&sa.sa_mask);
    struct sigaction old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    st = Commit(*args, options, show);
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    *rc = st.ok() ? 0 : Fail(st);
  });
}

}  // namespace hexz::cli
