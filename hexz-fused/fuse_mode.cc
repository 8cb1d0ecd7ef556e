#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/base/log.h"
#include "common/disk/partition.h"
#include "common/fuse/volume_fs.h"
#include "common/io/window.h"
#include "common/overlay/overlay_volume.h"
#include "common/sandbox/sandbox.h"
#include "hexz-fused/lifeline.h"
#include "hexz-fused/modes.h"
#include "hexz-fused/volumes.h"

namespace hexz::fused {
namespace {

using base::Status;

// Makes the overlay durable before the worker exits; logs the outcome.
bool FlushBeforeExit(io::Volume* rw_disk, const char* why) {
  if (rw_disk == nullptr) return true;
  Status st = rw_disk->Flush();
  if (!st.ok()) {
    HEXZ_LOG_ERROR("flushing the overlay (%s) failed: %s", why, st.ToString().c_str());
    return false;
  }
  HEXZ_LOG_DEBUG("overlay flushed (%s)", why);
  return true;
}

// The pieces FUSE requests of the disk are split into (--rw): one snapshot
// block, at least one overlay block.
uint32_t RwIoSize(const WorkerVolumes& volumes) {
  return std::max<uint32_t>(volumes.snapshot->block_size(), overlay::kBlockSize);
}

// The files of the mount: "disk" (writable with --rw) and "memory". With
// partition files in a --rw mount, the disk bypasses the page cache: its
// bytes are also written through the partition files.
std::vector<fuse::File> MountFiles(WorkerVolumes& volumes, bool partitions) {
  std::vector<fuse::File> files;
  if (volumes.disk) {
    fuse::File file{format::StreamName(format::StreamId::kDisk), std::move(volumes.disk)};
    if (volumes.writable != nullptr) {
      file.writable = true;
      file.io_size = RwIoSize(volumes);
      file.direct_io = partitions;
    }
    files.push_back(std::move(file));
  }
  if (volumes.memory) {
    files.push_back(
        fuse::File{format::StreamName(format::StreamId::kMemory), std::move(volumes.memory)});
  }
  return files;
}

// The partition files of `disk` (disk-p1, disk-p2, ... by partition number,
// as the kernel names nbd0p1), from the partition table read through it.
// Called sandboxed: the table is the guest's bytes. A table that cannot be
// read, or a partition that cannot be shown, is a note for the user, not a
// failed mount. With --rw the files are writable windows of the overlay
// disk (direct I/O, like the disk then).
std::vector<fuse::File> PartitionFiles(io::Volume* disk, const WorkerVolumes& volumes,
                                       std::string* note) {
  std::vector<fuse::File> files;
  auto read = [disk](uint64_t off, void* buf, size_t len) { return disk->Read(off, buf, len); };
  auto table = disk::ReadPartitionTable(read, disk->Size());
  if (!table.ok()) {
    *note = "the disk's partition table is unreadable (" + table.status().ToString() +
            "); no partition files";
    return files;
  }
  if (table->scheme == "none") {
    *note = "the disk has no partition table; no partition files";
    return files;
  }
  for (const std::string& problem : table->problems) {
    *note += (note->empty() ? "" : "\n") + std::string("partition table: ") + problem;
  }
  const bool rw = volumes.writable != nullptr;
  for (const disk::Partition& p : disk::UsablePartitions(*table, disk->Size())) {
    auto window = io::WindowVolume::Create(disk, p.start, p.size, rw);
    if (!window.ok()) continue;  // UsablePartitions checked the range
    fuse::File file{
        std::string(format::StreamName(format::StreamId::kDisk)) + "-p" + std::to_string(p.number),
        std::move(*window)};
    if (rw) {
      file.writable = true;
      file.io_size = RwIoSize(volumes);
      file.direct_io = true;
    }
    files.push_back(std::move(file));
  }
  return files;
}

fuse::FsOptions MountOptions(const ipc::WorkerConfig& config, const WorkerVolumes& volumes,
                             int sock, const std::string* late_note) {
  fuse::FsOptions options;
  options.uid = config.uid;
  options.gid = config.gid;
  options.mtime = volumes.mtime;
  options.read_threads = config.read_threads;
  options.allow_root = config.allow_root;
  options.allow_other = config.allow_other;
  options.auto_unmount = config.auto_unmount;
  options.read_write = config.read_write;
  options.exit_on_signals = config.read_write;  // flush, then exit
  // `late_note` is filled after the sandbox is up, before the first request.
  options.on_ready = [sock, mnt = config.mountpoint, cache_note = volumes.cache_note, late_note] {
    std::string note = cache_note;
    if (!late_note->empty()) note += (note.empty() ? "" : "\n") + *late_note;
    // Logged before the reply, so the log says so once hexz mount returns.
    HEXZ_LOG_INFO("serving %s", mnt.c_str());
    // Lines after the first are notes for the user (hexz mount prints them).
    Status s = ipc::SendWorkerReady(
        sock, "pid " + std::to_string(getpid()) + (note.empty() ? "" : "\n" + note));
    if (!s.ok()) {
      HEXZ_LOG_WARN("could not tell hexz that %s is ready: %s", mnt.c_str(), s.ToString().c_str());
    }
  };
  return options;
}

}  // namespace

Status ServeFuse(ipc::WorkerConfig config, int sock) {
  HEXZ_ASSIGN_OR_RETURN(WorkerVolumes volumes, OpenWorkerVolumes(config));
  io::Volume* rw_disk = volumes.writable;  // owned by the files, then by the filesystem
  io::Volume* disk = volumes.disk.get();   // likewise
  std::vector<fuse::File> files = MountFiles(volumes, config.partitions);
  if (files.empty()) return Status::Corruption(config.chain_names[0] + ": snapshot has no streams");

  if (Status dev = fuse::CheckFuseDevice(); !dev.ok()) {
    return dev.WithContext("cannot mount on " + config.mountpoint);
  }
  std::string partition_note;  // read by on_ready, from a loop thread
  fuse::VolumeFs fs(std::move(files), MountOptions(config, volumes, sock, &partition_note));
  // Kept until exit: names this worker as the one serving the mountpoint
  // (WorkersOf in the front-end), so that `hexz unmount` can wait for it.
  int marker = open(config.mountpoint.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (marker < 0) HEXZ_LOG_DEBUG("O_PATH %s: %s", config.mountpoint.c_str(), std::strerror(errno));
  HEXZ_RETURN_IF_ERROR(fs.Mount(config.mountpoint));

  // In the foreground the mount lives as long as `hexz mount`: when the
  // front-end goes away (even by SIGKILL) the channel reaches end-of-file
  // and the worker leaves; auto_unmount then takes the mount away. Signals
  // are libfuse's (exit_on_signals above).
  std::unique_ptr<Lifeline> lifeline;
  if (!config.daemon) {
    HEXZ_ASSIGN_OR_RETURN(lifeline,
                          Lifeline::Start(sock, /*watch_frontend=*/true,
                                          /*catch_signals=*/false, [rw_disk](Lifeline::Cause) {
                                            HEXZ_LOG_WARN(
                                                "hexz mount went away; exiting, which "
                                                "unmounts");
                                            bool flushed =
                                                FlushBeforeExit(rw_disk, "the front-end went away");
                                            std::fflush(nullptr);
                                            _exit(flushed ? 0 : 1);
                                          }));
  }

  sandbox::Policy policy;
  // A writable overlay compacts its log: it punches out the dead space
  // (fallocate) and cuts the old tail (ftruncate), on the files it holds.
  if (config.read_write) {
    for (const char* call : {"ftruncate", "fallocate"}) policy.extra_syscalls.push_back(call);
  }
  // Not serving unsandboxed: auto_unmount takes the mount away when we exit.
  HEXZ_RETURN_IF_ERROR(sandbox::LockDown(policy));
  HEXZ_LOG_DEBUG("sandbox active (seccomp %s)", sandbox::DebugBuild() ? "trap" : "kill");
  if (config.partitions && disk != nullptr) {
    // Before Serve(): no request is answered yet, so the list may still grow.
    fs.AddFiles(PartitionFiles(disk, volumes, &partition_note));
    if (!partition_note.empty()) HEXZ_LOG_INFO("%s", partition_note.c_str());
  }
  Status served = fs.Serve();
  HEXZ_LOG_INFO("%s is no longer mounted; exiting", config.mountpoint.c_str());
  if (!FlushBeforeExit(rw_disk, "exit")) served = Status::Internal("the final flush failed");
  // The mount is gone; skip destructors that would try to unmount (the
  // sandbox forbids it and there is nothing left to unmount).
  std::fflush(nullptr);
  _exit(served.ok() ? 0 : 1);
}

}  // namespace hexz::fused
