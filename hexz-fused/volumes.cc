#include "hexz-fused/volumes.h"

#include <sys/stat.h>
#include <time.h>

#include <cerrno>
#include <utility>

#include "common/base/log.h"
#include "common/cache/worker_cache.h"
#include "common/io/source.h"
#include "common/ipc/fetch_protocol.h"
#include "common/overlay/overlay_files.h"
#include "common/overlay/overlay_volume.h"

namespace hexz::fused {

using base::Result;
using base::Status;

namespace {

// The one naming rule for the overlay in messages: the path the front-end
// opened it as; an ephemeral overlay's files have no path left.
overlay::OverlayNames OverlayNamesOf(const ipc::WorkerConfig& config) {
  overlay::OverlayNames names;
  names.data = config.overlay_name.empty() ? "(overlay)" : config.overlay_name;
  names.meta = config.overlay_ephemeral ? names.data + " meta" : overlay::MetaPathFor(names.data);
  names.base = config.chain_names.at(0);
  return names;
}

// The chain: from its descriptors, or, for a remote chain, read through the
// fetcher's channels (every block is still checked here).
Result<std::shared_ptr<format::Snapshot>> OpenChain(ipc::WorkerConfig& config,
                                                    const format::OpenOptions& options) {
  if (config.fetcher_fds.empty()) {
    return format::Snapshot::OpenFds(std::move(config.chain_fds), config.chain_names, options);
  }
  auto client =
      std::make_shared<ipc::FetchClient>(std::move(config.fetcher_fds), config.fetch_timeout);
  std::vector<std::unique_ptr<io::Source>> sources;
  for (size_t i = 0; i < config.chain_names.size(); ++i) {
    sources.push_back(ipc::FetchSource(client, static_cast<uint32_t>(i), config.chain_sizes[i],
                                       config.chain_names[i]));
  }
  return format::Snapshot::OpenSources(std::move(sources), options);
}

}  // namespace

Result<WorkerVolumes> OpenWorkerVolumes(ipc::WorkerConfig& config) {
  WorkerVolumes v;
  if (config.fetcher_fds.empty()) {
    struct stat st;
    if (fstat(config.chain_fds.at(0).get(), &st) != 0) {
      return Status::FromErrno(errno, config.chain_names.at(0));
    }
    v.mtime = st.st_mtim;
  } else {
    clock_gettime(CLOCK_REALTIME, &v.mtime);  // a remote object: when it was mounted
  }
  // The shared block cache (--cache-size), joined before the lockdown.
  HEXZ_ASSIGN_OR_RETURN(v.cache, cache::AttachForWorker(config.cache_size, &v.cache_note));
  format::OpenOptions open_options;
  open_options.cache = v.cache.get();
  HEXZ_ASSIGN_OR_RETURN(v.snapshot, OpenChain(config, open_options));
  HEXZ_RETURN_IF_ERROR(cache::CheckWorkerBlockSize(v.cache.get(), v.snapshot->block_size()));
  if (!v.cache_note.empty()) HEXZ_LOG_INFO("%s", v.cache_note.c_str());

  const std::string& name = config.chain_names[0];
  if (config.read_write) {
    overlay::OverlayNames names = OverlayNamesOf(config);
    v.disk_description = "disk of " + name + " + " + names.data;
    HEXZ_ASSIGN_OR_RETURN(
        v.disk, overlay::OpenOverlayVolume(v.snapshot, std::move(config.overlay_data_fd),
                                           std::move(config.overlay_meta_fd), std::move(names),
                                           config.overlay_ephemeral));
    v.writable = v.disk.get();
  } else if (v.snapshot->HasStream(format::StreamId::kDisk)) {
    v.disk = format::Snapshot::StreamVolume(v.snapshot, format::StreamId::kDisk);
    if (!v.disk) return Status::Internal("no volume for the disk stream");
    v.disk_description = "disk of " + name;
  }
  if (v.snapshot->HasStream(format::StreamId::kMemory)) {
    v.memory = format::Snapshot::StreamVolume(v.snapshot, format::StreamId::kMemory);
    if (!v.memory) return Status::Internal("no volume for the memory stream");
  }
  return v;
}

}  // namespace hexz::fused
