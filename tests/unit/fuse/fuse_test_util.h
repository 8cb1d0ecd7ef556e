// Helpers for the VolumeFs tests: deterministic random bytes, the in-memory
// volume (tests/unit/testing/mem_volume.h), and a fixture that mounts a VolumeFs for real on a
// fresh temp dir (when the test can: root and /dev/fuse) and serves it on a thread. The fixture
// owns the mount, its serving thread and the temp dir; TearDown unmounts and removes them. Not
// thread-safe: use from the test's thread.
#pragma once

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/base/checked_math.h"
#include "common/fuse/volume_fs.h"
#include "tests/unit/testing/mem_volume.h"

namespace hexz::fuse::testing {

inline std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

using hexz::testing::MemVolume;

class MountedFixture : public ::testing::Test {
 protected:
  // Why this test cannot mount, or "" when it can.
  static std::string WhyCannotMount() {
    if (geteuid() != 0) return "mounting in a unit test needs root";
    if (!CheckFuseDevice().ok()) return "/dev/fuse is not usable";
    return "";
  }
  // Mounts `files` on a fresh temp dir named after `dir_prefix` and serves
  // it; call with ASSERT_NO_FATAL_FAILURE.
  void MountFiles(const std::string& dir_prefix, std::vector<File> files, FsOptions opts) {
    std::string tmpl = "/tmp/" + dir_prefix + ".XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    fs_ = std::make_unique<VolumeFs>(std::move(files), std::move(opts));
    base::Status st = fs_->Mount(dir_);
    ASSERT_TRUE(st.ok()) << st.ToString();
    loop_ = std::thread([this] { served_ = fs_->Serve(); });
  }
  void TearDown() override {
    if (fs_ == nullptr) return;
    umount2(dir_.c_str(), MNT_DETACH);
    if (loop_.joinable()) loop_.join();
    fs_.reset();
    rmdir(dir_.c_str());
  }
  std::string Path(const char* name) { return dir_ + "/" + name; }

  std::string dir_;
  std::unique_ptr<VolumeFs> fs_;
  std::thread loop_;
  base::Status served_;
};

}  // namespace hexz::fuse::testing
