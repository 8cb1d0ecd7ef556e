#include "common/remote/disk_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/base/endian.h"
#include "common/base/size.h"
#include "common/base/xxh3.h"

namespace hexz::remote {

namespace {

constexpr char kFileName[] = "blocks.cache";
constexpr uint64_t kEntryMagic = 0x3130434458454821ull;  // "!HEXZDC01" folded

// Entry header: magic u64, id [16], object size u64, chunk u64, length u32,
// zero [12], checksum u64 (of bytes 0..56 and the data). Little-endian.
void EncodeHeader(const DiskCacheKey& key, uint64_t chunk, uint32_t len, uint8_t* h) {
  std::memset(h, 0, kEntryHeaderBytes);
  base::PutLe64(h, kEntryMagic);
  std::memcpy(h + 8, key.id.data(), key.id.size());
  base::PutLe64(h + 24, key.size);
  base::PutLe64(h + 32, chunk);
  base::PutLe32(h + 40, len);
}

uint64_t EntryChecksum(const uint8_t* header, const void* data, uint32_t len) {
  uint64_t seed = XXH3_64bits(header, kEntryHeaderBytes - 8);
  return XXH3_64bits_withSeed(data, len, seed);
}

// Splits "DIR[:SIZE]": the last ':' starts SIZE when what follows parses.
// SIZE is 0 when not given.
Result<std::pair<std::string, uint64_t>> ParseSpec(const std::string& spec) {
  std::string dir = spec;
  uint64_t bytes = 0;
  size_t colon = spec.rfind(':');
  if (colon != std::string::npos) {
    auto parsed = base::ParseSize(std::string_view(spec).substr(colon + 1));
    if (!parsed.ok()) {
      return Status::InvalidArgument("--disk-cache " + spec +
                                     ": SIZE: " + parsed.status().message());
    }
    dir = spec.substr(0, colon);
    bytes = *parsed;
  }
  if (dir.empty()) return Status::InvalidArgument("--disk-cache: no directory given");
  if (colon != std::string::npos && bytes < DiskCache::SlotBytes()) {
    return Status::InvalidArgument("--disk-cache " + spec + ": SIZE must be at least " +
                                   std::to_string(DiskCache::SlotBytes()) + " bytes");
  }
  return std::make_pair(dir, bytes);
}

Status CheckOwned(const struct stat& st, const std::string& name, mode_t type) {
  if ((st.st_mode & S_IFMT) != type) {
    return Status::InvalidArgument(
        name + (type == S_IFDIR ? " is not a directory" : " is not a regular file"));
  }
  if (st.st_uid != getuid()) {
    return Status::PermissionDenied(name + " belongs to uid " + std::to_string(st.st_uid) +
                                    ", not to this user: a disk cache is one user's alone");
  }
  if ((st.st_mode & 022) != 0) {
    return Status::PermissionDenied(name + " is writable by group or others");
  }
  return Status::Ok();
}

}  // namespace

uint64_t DiskCache::SlotsFor(uint64_t bytes) { return std::max<uint64_t>(1, bytes / SlotBytes()); }

Result<UniqueFd> DiskCache::OpenFile(const std::string& spec) {
  HEXZ_ASSIGN_OR_RETURN(auto parsed, ParseSpec(spec));
  const std::string& dir = parsed.first;
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::FromErrno(errno, "disk cache " + dir);
  }
  UniqueFd dfd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dfd) return Status::FromErrno(errno, "disk cache " + dir);
  struct stat st;
  if (fstat(dfd.get(), &st) != 0) return Status::FromErrno(errno, "disk cache " + dir);
  HEXZ_RETURN_IF_ERROR(CheckOwned(st, "disk cache " + dir, S_IFDIR));
  const std::string path = dir + "/" + kFileName;
  UniqueFd fd(openat(dfd.get(), kFileName, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return Status::FromErrno(errno, "disk cache " + path);
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "disk cache " + path);
  HEXZ_RETURN_IF_ERROR(CheckOwned(st, "disk cache " + path, S_IFREG));
  // Without SIZE, an existing file keeps its size (and so its entries: the
  // slot of a chunk depends on the number of slots).
  uint64_t bytes = parsed.second;
  if (bytes == 0) {
    bytes = static_cast<uint64_t>(st.st_size) >= SlotBytes() ? static_cast<uint64_t>(st.st_size)
                                                             : kDefaultDiskCacheBytes;
  }
  const uint64_t want = SlotsFor(bytes) * SlotBytes();
  if (static_cast<uint64_t>(st.st_size) != want &&
      ftruncate(fd.get(), static_cast<off_t>(want)) != 0) {
    return Status::FromErrno(errno, "disk cache " + path + ": setting its size");
  }
  return fd;
}

Result<std::unique_ptr<DiskCache>> DiskCache::FromFd(UniqueFd fd) {
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "disk cache");
  uint64_t slots = static_cast<uint64_t>(st.st_size) / SlotBytes();
  if (slots == 0) return Status::InvalidArgument("disk cache: the file holds no slot");
  return std::unique_ptr<DiskCache>(new DiskCache(std::move(fd), slots));
}

DiskCache::Set DiskCache::SetOf(const DiskCacheKey& key, uint64_t chunk) const {
  Set set;
  set.ways = std::min<uint64_t>(kWays, slots_);
  uint8_t h[kEntryHeaderBytes];
  EncodeHeader(key, 0, 0, h);
  // Consecutive chunks of an object in consecutive sets: a sequential read
  // of the object reads the file sequentially.
  set.base = ((XXH3_64bits(h, 32) + chunk) % (slots_ / set.ways)) * set.ways * SlotBytes();
  return set;
}

// Reads the set's headers into `headers` (ways * kEntryHeaderBytes); returns
// the way whose header names chunk `chunk` of `key` (any length), or -1.
int DiskCache::FindWay(const DiskCacheKey& key, uint64_t chunk, const Set& set,
                       uint8_t* headers) const {
  const size_t n = set.ways * kEntryHeaderBytes;
  if (pread(fd_.get(), headers, n, static_cast<off_t>(set.base)) != static_cast<ssize_t>(n)) {
    std::memset(headers, 0, n);
    return -1;
  }
  uint8_t want[kEntryHeaderBytes];
  EncodeHeader(key, chunk, 0, want);
  for (uint64_t w = 0; w < set.ways; ++w) {
    if (std::memcmp(headers + w * kEntryHeaderBytes, want, 40) == 0) return static_cast<int>(w);
  }
  return -1;
}

bool DiskCache::Get(const DiskCacheKey& key, uint64_t chunk, void* buf, uint32_t len) const {
  if (len > kChunkBytes) return false;
  const Set set = SetOf(key, chunk);
  uint8_t headers[kWays * kEntryHeaderBytes];
  int way = FindWay(key, chunk, set, headers);
  if (way < 0) return false;
  const uint8_t* header = headers + static_cast<uint64_t>(way) * kEntryHeaderBytes;
  uint8_t want[kEntryHeaderBytes];
  EncodeHeader(key, chunk, len, want);
  if (std::memcmp(header, want, kEntryHeaderBytes - 8) != 0) return false;
  if (pread(fd_.get(), buf, len, static_cast<off_t>(set.DataOffset(way))) !=
      static_cast<ssize_t>(len)) {
    return false;
  }
  return base::GetLe64(header + kEntryHeaderBytes - 8) == EntryChecksum(want, buf, len);
}

void DiskCache::Put(const DiskCacheKey& key, uint64_t chunk, const void* buf, uint32_t len) const {
  if (len > kChunkBytes) return;
  const Set set = SetOf(key, chunk);
  uint8_t headers[kWays * kEntryHeaderBytes];
  // The way that holds this chunk already, else a free one (no valid magic),
  // else one in turn.
  int way = FindWay(key, chunk, set, headers);
  for (uint64_t w = 0; way < 0 && w < set.ways; ++w) {
    if (base::GetLe64(headers + w * kEntryHeaderBytes) != kEntryMagic) way = static_cast<int>(w);
  }
  if (way < 0) {
    way = static_cast<int>(next_way_.fetch_add(1, std::memory_order_relaxed) % set.ways);
  }
  // Data, then header: a reader in between (or a crash) sees a checksum
  // that does not match, a miss.
  uint8_t header[kEntryHeaderBytes];
  EncodeHeader(key, chunk, len, header);
  base::PutLe64(header + kEntryHeaderBytes - 8, EntryChecksum(header, buf, len));
  if (pwrite(fd_.get(), buf, len, static_cast<off_t>(set.DataOffset(way))) !=
      static_cast<ssize_t>(len)) {
    return;
  }
  (void)!pwrite(fd_.get(), header, sizeof header,
                static_cast<off_t>(set.base + static_cast<uint64_t>(way) * kEntryHeaderBytes));
}

CachedSource::CachedSource(std::unique_ptr<io::Source> inner, const DiskCache* cache,
                           const std::array<uint8_t, 16>& id)
    : inner_(std::move(inner)), cache_(cache) {
  key_.id = id;
  key_.size = inner_->size();
}

uint32_t CachedSource::ChunkLength(uint64_t chunk) const {
  return static_cast<uint32_t>(std::min<uint64_t>(kChunkBytes, key_.size - chunk * kChunkBytes));
}

// Reads chunks [first, end) from the inner source into `data` and stores them.
Status CachedSource::FetchRun(uint64_t first, uint64_t end, std::vector<uint8_t>* data) const {
  const uint64_t from = first * kChunkBytes;
  const uint64_t to = std::min<uint64_t>(end * kChunkBytes, key_.size);
  data->resize(to - from);
  HEXZ_RETURN_IF_ERROR(inner_->ReadAt(data->data(), data->size(), from));
  for (uint64_t c = first; c < end; ++c) {
    cache_->Put(key_, c, data->data() + (c - first) * kChunkBytes, ChunkLength(c));
  }
  return Status::Ok();
}

Status CachedSource::ReadFreshAt(void* buf, size_t len, uint64_t offset) const {
  if (len == 0) return Status::Ok();
  const uint64_t first = offset / kChunkBytes;
  std::vector<uint8_t> run;
  HEXZ_RETURN_IF_ERROR(FetchRun(first, (offset + len - 1) / kChunkBytes + 1, &run));
  std::memcpy(buf, run.data() + (offset - first * kChunkBytes), len);
  return Status::Ok();
}

Status CachedSource::ReadAt(void* buf, size_t len, uint64_t offset) const {
  if (len == 0) return Status::Ok();
  auto* out = static_cast<uint8_t*>(buf);
  const uint64_t first = offset / kChunkBytes;
  const uint64_t last = (offset + len - 1) / kChunkBytes;
  // Copies the part of chunk c (whose bytes are at `data`) that the read wants.
  auto take = [&](uint64_t c, const uint8_t* data) {
    uint64_t lo = std::max<uint64_t>(offset, c * kChunkBytes);
    uint64_t hi = std::min<uint64_t>(offset + len, (c + 1) * kChunkBytes);
    std::memcpy(out + (lo - offset), data + (lo - c * kChunkBytes), hi - lo);
  };
  std::vector<uint8_t> chunk(kChunkBytes), run;
  uint64_t missing_from = last + 1;  // the first chunk of the current run of misses
  for (uint64_t c = first; c <= last + 1; ++c) {
    bool hit = c <= last && cache_->Get(key_, c, chunk.data(), ChunkLength(c));
    if (hit) take(c, chunk.data());
    if (c <= last && !hit) {
      if (missing_from > last) missing_from = c;
      continue;
    }
    if (missing_from <= last) {
      HEXZ_RETURN_IF_ERROR(FetchRun(missing_from, c, &run));
      for (uint64_t m = missing_from; m < c; ++m) {
        take(m, run.data() + (m - missing_from) * kChunkBytes);
      }
      missing_from = last + 1;
    }
  }
  return Status::Ok();
}

}  // namespace hexz::remote
