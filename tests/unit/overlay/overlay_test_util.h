// Shared helpers for the overlay unit tests: a private temp directory, an
// in-memory base Volume (tests/unit/testing/mem_volume.h), and opening an
// overlay by path.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/io/volume.h"
#include "common/overlay/overlay.h"
#include "common/overlay/overlay_files.h"
#include "common/overlay/overlay_volume.h"
#include "tests/unit/testing/mem_volume.h"

namespace hexz::overlay::testing {

class TempDir {
 public:
  TempDir() {
    char templ[] = "/tmp/hexz-overlay-test.XXXXXX";
    path_ = ::mkdtemp(templ);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A read-only base disk held in memory.
using hexz::testing::MemVolume;

inline std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

inline format::SnapshotId MakeId(uint8_t fill) {
  format::SnapshotId id;
  id.bytes.fill(fill);
  return id;
}

inline Result<std::unique_ptr<Overlay>> OpenPath(const std::string& path,
                                                 const format::SnapshotId& id, uint64_t size,
                                                 OverlayOptions options = {}) {
  HEXZ_ASSIGN_OR_RETURN(OverlayFiles f, OpenOverlayFiles(path, LockMode::kExclusive, true));
  f.names.base = "base.st";
  return Overlay::OpenOrCreate(std::move(f.data), std::move(f.meta), f.names, id, size, options);
}

// The whole file at `path`.
inline std::vector<uint8_t> Slurp(const std::string& path) {
  std::vector<uint8_t> v(std::filesystem::file_size(path));
  int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_EQ(::pread(fd, v.data(), v.size(), 0), static_cast<ssize_t>(v.size()));
  ::close(fd);
  return v;
}

// Replaces the file at `path` (created 0600 when missing) with `v`.
inline void Spit(const std::string& path, const std::vector<uint8_t>& v) {
  int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CREAT, 0600);
  EXPECT_EQ(::pwrite(fd, v.data(), v.size(), 0), static_cast<ssize_t>(v.size()));
  ::close(fd);
}

}  // namespace hexz::overlay::testing
