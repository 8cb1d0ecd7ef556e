// Helpers for the snapshot format tests: temp dirs, deterministic data, and
// packing in-memory buffers with the library writer.
#pragma once

#include <fcntl.h>
#include <ftw.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "common/base/endian.h"
#include "common/format/layout.h"
#include "common/format/snapshot.h"
#include "common/format/writer.h"

namespace hexz::format::testing {

using Bytes = std::vector<uint8_t>;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/hexz-format-test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    nftw(
        path_.c_str(),
        [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// splitmix64: deterministic everywhere, so golden files can be regenerated.
inline uint64_t Mix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline Bytes RandomBytes(size_t n, uint64_t seed) {
  Bytes out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(Mix(&seed));
  return out;
}

inline Bytes TextBytes(size_t n, uint64_t seed) {
  static const char* kWords[] = {"hexz ", "snapshot ", "block ",      "disk ",      "memory ",
                                 "the ",  "of ",       "compressed ", "seekable\n", "index "};
  Bytes out;
  while (out.size() < n) {
    const char* w = kWords[Mix(&seed) % 10];
    out.insert(out.end(), w, w + std::strlen(w));
  }
  out.resize(n);
  return out;
}

// Blocks of `unit` bytes drawn from a few distinct patterns: dedups well.
inline Bytes RepeatedBytes(size_t n, size_t unit, uint64_t seed) {
  Bytes a = RandomBytes(unit, seed), b = RandomBytes(unit, seed + 1);
  Bytes out;
  for (size_t i = 0; out.size() < n; ++i) {
    const Bytes& src = (i % 3 == 1) ? b : a;
    out.insert(out.end(), src.begin(), src.end());
  }
  out.resize(n);
  return out;
}

// The encoding of the qemu.args metadata value: each argument, then a NUL.
inline std::string NulTerminated(std::initializer_list<const char*> args) {
  std::string out;
  for (const char* a : args) {
    out += a;
    out.push_back('\0');
  }
  return out;
}

// Packs disk (and memory, if given) with the writer, with `metadata`;
// returns the id.
inline SnapshotId PackBuffers(const std::string& path, const Bytes& disk,
                              const std::optional<Bytes>& memory, WriterOptions options = {},
                              const Metadata& metadata = {}) {
  auto w = SnapshotWriter::Create(path, options);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  uint32_t bs = (*w)->block_size();
  auto add_stream = [&](StreamId s, const Bytes& data) {
    EXPECT_TRUE((*w)->BeginStream(s, data.size()).ok());
    for (size_t off = 0; off < data.size(); off += bs) {
      size_t n = std::min<size_t>(bs, data.size() - off);
      Status st = (*w)->AddData(data.data() + off, n);
      EXPECT_TRUE(st.ok()) << st.ToString();
    }
    EXPECT_TRUE((*w)->EndStream().ok());
  };
  add_stream(StreamId::kDisk, disk);
  if (memory) add_stream(StreamId::kMemory, *memory);
  EXPECT_TRUE((*w)->SetMetadata(metadata).ok());
  auto id = (*w)->Finish();
  EXPECT_TRUE(id.ok()) << id.status().ToString();
  return id.ok() ? *id : SnapshotId{};
}

inline Bytes ReadAll(const Snapshot& s, StreamId stream) {
  Bytes out(s.StreamSize(stream));
  Status st = s.Read(stream, 0, out.data(), out.size());
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out;
}

inline Bytes ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline void WriteFile(const std::string& path, const Bytes& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

// Recomputes the header checksum of a whole file after a test edited the
// header, so that the reader gets past the checksum to the field.
inline void ResealHeader(Bytes* file) {
  base::PutLe64(file->data() + layout::kHeaderChecksumAt,
                layout::Checksum(file->data(), layout::kHeaderChecksumAt));
}

// Recomputes the index and footer checksums of a whole file after a test
// edited the index.
inline void ResealIndex(Bytes* file) {
  uint8_t* foot = file->data() + file->size() - layout::kFooterSize;
  uint64_t off = base::GetLe64(foot + layout::kFooterIndexOffsetAt);
  uint64_t len = base::GetLe64(foot + layout::kFooterIndexLengthAt);
  base::PutLe64(foot + layout::kFooterIndexChecksumAt, layout::Checksum(file->data() + off, len));
  base::PutLe64(foot + layout::kFooterChecksumAt,
                layout::Checksum(foot, layout::kFooterChecksumAt));
}

// File offset of the index entry of block `block` of the disk stream.
inline uint64_t DiskEntryOffset(const Bytes& file, uint64_t block) {
  const uint8_t* foot = file.data() + file.size() - layout::kFooterSize;
  uint64_t index = base::GetLe64(foot + layout::kFooterIndexOffsetAt);
  uint32_t path = base::GetLe32(file.data() + index + layout::kIndexParentPathLengthAt);
  return index + layout::kIndexParentPathAt + layout::PaddedPathLength(path) +
         block * layout::kEntrySize;
}

}  // namespace hexz::format::testing
