// Joining the user's shared block cache from a sandboxed worker (hexz-fused
// serving FUSE or NBD). One call, before Snapshot::OpenFds and before the
// seccomp lockdown:
//
//   std::string note;
//   HEXZ_ASSIGN_OR_RETURN(auto shm, cache::AttachForWorker(config.cache_size, &note));
//   format::OpenOptions options;
//   options.cache = shm.get();  // shm may be null: no --cache-size
//   ... Snapshot::OpenFds(..., options), then CheckWorkerBlockSize(shm.get(), block_size)
//   ... lock down, serve, _exit (no Detach needed; see below)
//
// Leaving the segment: ShmCache::Detach needs flock, kill and unlink of
// /dev/shm/<name>. unlink cannot be confined by seccomp (its argument is a
// path, and "../" leaves any directory), so the worker's sandbox does not
// allow it. Instead AttachForWorker first forks a small cleanup process
// ("hexz-cache-gc", no descriptors, nothing mapped, not sandboxed: it reads
// no snapshot bytes). It waits for the worker to exit (pidfd), however it
// exits, SIGKILL included, then removes the worker from the segment and the
// segment itself when no live process uses it any more (ShmCache::Drop
// without force). The worker itself never detaches; its mapping goes with it.
//
// Ownership: the caller owns the returned cache; the cleanup process is a
// child of the caller that exits on its own.
// Thread safety: call before any thread is started (it forks).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/base/status.h"
#include "common/cache/shm_cache.h"

namespace hexz::cache {

// For front-ends (hexz mount, hexz serve): parses a --cache-size value
// ("256M", "1G", "4G"; see base::ParseSize) and checks that such a cache can
// hold blocks of block_size bytes. Messages name the option and the sizes.
Result<uint64_t> ParseCacheSize(const std::string& text, uint64_t block_size);

// size == 0: no cache (returns null, starts nothing). Otherwise attaches to
// (or creates) the segment ShmCache::SegmentName() with `size` bytes and sets
// *note to one line for the user ("created the shared cache ..." or "joined
// the shared cache ... (256 MiB, not the 1 GiB asked for ...)").
Result<std::unique_ptr<ShmCache>> AttachForWorker(uint64_t size, std::string* note);

// After opening the snapshot: fails (naming both sizes) when the cache joined
// cannot hold the snapshot's blocks. Ok for a null cache.
Status CheckWorkerBlockSize(const ShmCache* shm, uint64_t block_size);

}  // namespace hexz::cache
