// TEMPORARY (branch fuse only): link-time placeholders for the snapshot reader
// that is being written on branch `format`. Removed when that branch is merged.
#include "common/format/snapshot.h"

namespace hexz::format {

const char* StreamName(StreamId id) { return id == StreamId::kDisk ? "disk" : "memory"; }

Result<std::shared_ptr<Snapshot>> Snapshot::Open(const std::string& path, const OpenOptions&) {
  return Status::Unavailable(path + ": the snapshot reader is not available yet in this build");
}

Result<std::shared_ptr<Snapshot>> Snapshot::OpenFds(std::vector<UniqueFd>,
                                                    std::vector<std::string> names,
                                                    const OpenOptions&) {
  return Status::Unavailable((names.empty() ? std::string("snapshot") : names[0]) +
                             ": the snapshot reader is not available yet in this build");
}

std::unique_ptr<io::Volume> Snapshot::StreamVolume(std::shared_ptr<const Snapshot>, StreamId) {
  return nullptr;
}

}  // namespace hexz::format
