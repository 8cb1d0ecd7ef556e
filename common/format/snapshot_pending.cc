// TEMPORARY (branch fuse only): a placeholder for the snapshot reader that is
// being written on branch `format`, so that the mount path can be exercised
// before it lands. It serves a plain file as the `disk` stream, plus
// `<path>.memory` as `memory` when that exists. Removed when branch `format`
// is merged.
#include <fcntl.h>
#include <sys/stat.h>

#include "common/format/snapshot.h"
#include "common/io/file.h"

namespace hexz::format {

namespace {

class RawSnapshot : public Snapshot {
 public:
  RawSnapshot(std::vector<UniqueFd> fds, std::vector<std::string> names)
      : fds_(std::move(fds)), names_(std::move(names)) {
    for (size_t i = 0; i < fds_.size() && i < 2; ++i) {
      struct stat st;
      fstat(fds_[i].get(), &st);
      sizes_[i] = static_cast<uint64_t>(st.st_size);
    }
  }
  const SnapshotId& id() const override { return id_; }
  const std::string& path() const override { return names_[0]; }
  uint32_t format_version() const override { return 0; }
  uint32_t block_size() const override { return 65536; }
  bool HasStream(StreamId s) const override { return static_cast<size_t>(s) < fds_.size(); }
  uint64_t StreamSize(StreamId s) const override { return sizes_[static_cast<int>(s)]; }
  StreamStats Stats(StreamId) const override { return {}; }
  std::shared_ptr<const Snapshot> parent() const override { return nullptr; }
  const std::string& parent_path() const override { return empty_; }
  Result<std::vector<UniqueFd>> DupChainFds() const override {
    std::vector<UniqueFd> out;
    for (const auto& fd : fds_) out.emplace_back(fcntl(fd.get(), F_DUPFD_CLOEXEC, 3));
    return out;
  }
  std::vector<std::string> ChainNames() const override { return names_; }
  Status Read(StreamId s, uint64_t offset, void* buf, size_t len) const override {
    if (offset > StreamSize(s) || len > StreamSize(s) - offset) return Status::OutOfRange("range");
    return io::PreadFull(fds_[static_cast<int>(s)].get(), buf, len, offset,
                         names_[static_cast<int>(s)]);
  }
  Status Extents(StreamId, uint64_t, uint64_t, std::vector<io::Extent>*) const override {
    return Status::Ok();
  }
  Status Verify() const override { return Status::Ok(); }

 private:
  std::vector<UniqueFd> fds_;
  std::vector<std::string> names_;
  uint64_t sizes_[2] = {0, 0};
  SnapshotId id_;
  std::string empty_;
};

class StreamVol : public io::Volume {
 public:
  StreamVol(std::shared_ptr<const Snapshot> s, StreamId id) : s_(std::move(s)), id_(id) {}
  uint64_t Size() const override { return s_->StreamSize(id_); }
  uint32_t BlockSize() const override { return s_->block_size(); }
  Status Read(uint64_t offset, void* buf, size_t len) override {
    return s_->Read(id_, offset, buf, len);
  }

 private:
  std::shared_ptr<const Snapshot> s_;
  StreamId id_;
};

}  // namespace

const char* StreamName(StreamId id) { return id == StreamId::kDisk ? "disk" : "memory"; }

Result<std::shared_ptr<Snapshot>> Snapshot::Open(const std::string& path, const OpenOptions&) {
  HEXZ_ASSIGN_OR_RETURN(UniqueFd fd, io::OpenFile(path, O_RDONLY | O_CLOEXEC));
  std::vector<UniqueFd> fds;
  std::vector<std::string> names = {path};
  fds.push_back(std::move(fd));
  auto mem = io::OpenFile(path + ".memory", O_RDONLY | O_CLOEXEC);
  if (mem.ok()) {
    fds.push_back(std::move(*mem));
    names.push_back(path + ".memory");
  }
  return std::shared_ptr<Snapshot>(new RawSnapshot(std::move(fds), std::move(names)));
}

Result<std::shared_ptr<Snapshot>> Snapshot::OpenFds(std::vector<UniqueFd> chain,
                                                    std::vector<std::string> names,
                                                    const OpenOptions&) {
  return std::shared_ptr<Snapshot>(new RawSnapshot(std::move(chain), std::move(names)));
}

std::unique_ptr<io::Volume> Snapshot::StreamVolume(std::shared_ptr<const Snapshot> s, StreamId id) {
  return std::make_unique<StreamVol>(std::move(s), id);
}

}  // namespace hexz::format
