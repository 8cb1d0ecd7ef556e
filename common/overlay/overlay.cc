// Overlay: design notes.
//
// Goal. After Flush() returns OK, every block write acknowledged before it
// survives a SIGKILL of the worker and a power cut. A crash at any instant
// leaves an overlay that opens, and every 4 KiB block then reads either its
// old or its new content. FORMAT.md (overlay part) has the byte layout.
//
// 1. Never overwrite what the durable state references. The durable state is
//    "the map the meta log replays to". A block write goes to a slot of the
//    data file that this durable map does not reference: either a fresh slot
//    (a free one, or a new one at the end of the file) or the block's own
//    *pending* slot (written since the last flush, so not referenced by the
//    log yet). A committed slot is never written again until a later log
//    record that supersedes it is durable; only then does it return to the
//    free list. So a torn data write (power cut in the middle of a 4 KiB
//    pwrite) can only hit a slot that the replayed map does not point at.
//
// 2. Data before metadata. Flush() (a) takes the batch of changed map entries
//    under an exclusive gate, so no write is half done, and marks their slots
//    committed (later writes to those blocks go to fresh slots); (b)
//    fdatasyncs the data file; (c) appends one log record with the batch to
//    the meta file and fdatasyncs it. A record is only ever replayed when its
//    XXH64 checksum, epoch and sequence number match, so a record torn by a
//    power cut is ignored as a whole: the map falls back to the previous
//    flush, whose slots are intact by (1). Replay stops at the first record
//    that does not check; an opener with write access truncates the log there.
//
// 3. Bounded log. When the log grows past max(compact_min_bytes, 4 x a
//    checkpoint), Flush writes a checkpoint record (the whole map) instead of
//    a delta, at the start of the log area when it fits below the current log,
//    else after the current log; fdatasyncs it; then writes the inactive one
//    of two superblock copies (generation + 1, new log start) and fdatasyncs.
//    A torn superblock write leaves the other copy, which still points at the
//    intact old log. Records carry the generation ("epoch") of the log they
//    belong to, so stale records of an older log are never replayed.
//
// 4. Creation. Create writes the meta file first and the data header last,
//    each made durable. A data file that is empty is therefore a creation
//    that never completed (or a new file), and OpenOrCreate initializes it.
//
// 5. Errors. A failed write to a fresh slot returns the error to the writer
//    and leaves the map unchanged (the slot returns to the free list). A
//    failed in-place write (the block's pending slot may now be torn), a
//    failed fdatasync (Linux may drop the dirty pages and report success on
//    a later fsync) or a failed log append makes the error sticky: every
//    later Write/Flush fails with it until the overlay is reopened, which
//    recovers the state of the last successful flush. Nothing is silently
//    dropped.
//
// Locking. Callers serialize per block (OverlayVolume's striped locks).
// gate_ (shared by writers, exclusive by Flush while it takes a batch) makes a
// batch consistent. mu_ guards the map and slot bookkeeping; it is never held
// across I/O. flush_mu_ serializes flushes and guards the log position.
#include "common/overlay/overlay.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/base/checked_math.h"
#include "common/io/file.h"
#include "common/overlay/overlay_layout.h"

namespace hexz::overlay {

namespace {

using namespace layout;  // NOLINT: the format's constants

enum SlotState : uint8_t { kSlotFree = 0, kSlotPending = 1, kSlotCommitted = 2 };

uint64_t SlotOffset(uint32_t slot) { return (uint64_t{slot} + 1) * kBlockSize; }

void Put16(uint8_t* p, uint16_t v) {
  for (int i = 0; i < 2; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

std::string Hex(const uint8_t* p, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s.push_back(kDigits[p[i] >> 4]);
    s.push_back(kDigits[p[i] & 15]);
  }
  return s;
}

uint64_t RecordChecksum(const uint8_t* header, const uint8_t* entries, size_t entry_bytes) {
  XXH64_state_t* st = XXH64_createState();
  XXH64_reset(st, 0);
  XXH64_update(st, header, kRecordChecksumAt);
  if (entry_bytes > 0) XXH64_update(st, entries, entry_bytes);
  uint64_t h = XXH64_digest(st);
  XXH64_freeState(st);
  return h;
}

Status Fdatasync(int fd, const std::string& what) {
  while (::fdatasync(fd) != 0) {
    if (errno == EINTR) continue;
    return Status::FromErrno(errno, "fdatasync failed on " + what);
  }
  return Status::Ok();
}

Result<uint64_t> SizeOf(int fd, const std::string& what) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, "fstat failed on " + what);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(what + ": not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

// ---- BlockMap: block -> entry, two-level so that sparse overlays of huge
// disks cost memory only for the 4 MiB regions they touch.
class Overlay::BlockMap {
 public:
  static constexpr unsigned kShift = 10;
  static constexpr uint64_t kChunk = uint64_t{1} << kShift;

  explicit BlockMap(uint64_t blocks) : chunks_((blocks + kChunk - 1) / kChunk) {}

  uint32_t Get(uint64_t b) const {
    const auto& c = chunks_[b >> kShift];
    return c ? c[b & (kChunk - 1)] : kEntryBase;
  }
  void Set(uint64_t b, uint32_t v) {
    auto& c = chunks_[b >> kShift];
    if (!c) {
      if (v == kEntryBase) return;
      c = std::make_unique<uint32_t[]>(kChunk);  // value-initialized: zeros
    }
    c[b & (kChunk - 1)] = v;
  }
  bool AnyChanged(uint64_t first, uint64_t count) const {
    for (uint64_t b = first; b < first + count; ++b) {
      const auto& c = chunks_[b >> kShift];
      if (!c) {
        b |= kChunk - 1;  // skip the rest of this empty chunk
        continue;
      }
      if (c[b & (kChunk - 1)] != kEntryBase) return true;
    }
    return false;
  }
  template <typename Fn>
  void ForEachChanged(Fn fn) const {
    for (uint64_t i = 0; i < chunks_.size(); ++i) {
      if (!chunks_[i]) continue;
      for (uint64_t j = 0; j < kChunk; ++j) {
        uint32_t v = chunks_[i][j];
        if (v != kEntryBase) fn((i << kShift) | j, v);
      }
    }
  }

 private:
  std::vector<std::unique_ptr<uint32_t[]>> chunks_;
};

Overlay::Overlay(UniqueFd data, UniqueFd meta, OverlayNames names, const OverlayOptions& options)
    : data_fd_(std::move(data)),
      meta_fd_(std::move(meta)),
      names_(std::move(names)),
      options_(options) {}

Overlay::~Overlay() = default;

Overlay::Gate::Gate() {
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&lock_, &attr);
  pthread_rwlockattr_destroy(&attr);
}

Overlay::Gate::~Gate() { pthread_rwlock_destroy(&lock_); }

Status Overlay::Sticky() const {
  if (!failed_.load(std::memory_order_acquire)) return Status::Ok();
  std::lock_guard<std::mutex> lock(sticky_mu_);
  return sticky_;
}

void Overlay::SetSticky(const Status& status) {
  std::lock_guard<std::mutex> lock(sticky_mu_);
  if (failed_.load()) return;
  sticky_ = Status(status.code(),
                   status.message() + " (overlay " + names_.data +
                       " refuses further writes until it is reopened; data up to the last "
                       "successful flush is safe)",
                   status.sys_errno() != 0 ? status.sys_errno() : EIO);
  failed_.store(true, std::memory_order_release);
}

// ---- Creation ----

Result<std::unique_ptr<Overlay>> Overlay::Create(UniqueFd data, UniqueFd meta, OverlayNames names,
                                                 const format::SnapshotId& base_id,
                                                 uint64_t disk_size,
                                                 const OverlayOptions& options) {
  if (options.read_only) return Status::InvalidArgument(names.data + ": cannot create read-only");
  if (disk_size == 0) return Status::InvalidArgument(names.data + ": the disk size is zero");
  uint64_t blocks = disk_size / kBlockSize + (disk_size % kBlockSize != 0 ? 1 : 0);
  if (blocks > kMaxBlocks) {
    return Status::InvalidArgument(names.data + ": a disk of " + std::to_string(disk_size) +
                                   " bytes is larger than an overlay can cover (16 TiB)");
  }
  std::unique_ptr<Overlay> ov(new Overlay(std::move(data), std::move(meta), names, options));
  ov->base_id_ = base_id;
  ov->disk_size_ = disk_size;
  ov->block_count_ = blocks;
  if (getrandom(ov->overlay_uuid_.data(), ov->overlay_uuid_.size(), 0) !=
      static_cast<ssize_t>(ov->overlay_uuid_.size())) {
    return Status::FromErrno(errno, "getrandom");
  }
  const int dfd = ov->data_fd_.get();
  const int mfd = ov->meta_fd_.get();
  // The data file is emptied first: until its header is back, OpenOrCreate
  // treats the pair as never created.
  if (::ftruncate(dfd, 0) != 0) return Status::FromErrno(errno, "truncate " + names.data);
  if (options.durable) HEXZ_RETURN_IF_ERROR(Fdatasync(dfd, names.data));
  if (::ftruncate(mfd, 0) != 0 || ::ftruncate(mfd, static_cast<off_t>(kLogBase)) != 0) {
    return Status::FromErrno(errno, "truncate " + names.meta);
  }
  ov->generation_ = 1;
  ov->log_start_ = kLogBase;
  ov->log_end_ = kLogBase;
  ov->first_seq_ = kFirstSeq;
  ov->next_seq_ = kFirstSeq;
  HEXZ_RETURN_IF_ERROR(ov->WriteSuperblock(1, kLogBase, kFirstSeq));
  if (options.durable) HEXZ_RETURN_IF_ERROR(Fdatasync(mfd, names.meta));

  uint8_t h[kBlockSize] = {};
  std::memcpy(h, kDataMagic, 8);
  Put32(h + 8, kVersion);
  Put32(h + 12, 0);
  std::memcpy(h + 16, ov->overlay_uuid_.data(), 16);
  std::memcpy(h + 32, base_id.bytes.data(), 16);
  Put64(h + 48, disk_size);
  Put32(h + 56, kBlockSize);
  Put64(h + kHeaderChecksumAt, XXH64(h, kHeaderChecksumAt, 0));
  HEXZ_RETURN_IF_ERROR(io::PwriteFull(dfd, h, sizeof h, 0, names.data));
  if (options.durable) HEXZ_RETURN_IF_ERROR(Fdatasync(dfd, names.data));

  ov->map_ = std::make_unique<BlockMap>(blocks);
  return ov;
}

Status Overlay::WriteSuperblock(uint64_t generation, uint64_t log_start, uint64_t first_seq) {
  uint8_t s[kBlockSize] = {};
  std::memcpy(s, kMetaMagic, 8);
  Put32(s + 8, kVersion);
  Put32(s + 12, 0);
  Put64(s + 16, generation);
  std::memcpy(s + 24, overlay_uuid_.data(), 16);
  std::memcpy(s + 40, base_id_.bytes.data(), 16);
  Put64(s + 56, disk_size_);
  Put32(s + 64, kBlockSize);
  Put64(s + 72, log_start);
  Put64(s + 80, first_seq);
  Put64(s + kHeaderChecksumAt, XXH64(s, kHeaderChecksumAt, 0));
  return io::PwriteFull(meta_fd_.get(), s, sizeof s, kSuperblockOffset[generation % 2],
                        names_.meta);
}

// ---- Opening ----

Result<std::unique_ptr<Overlay>> Overlay::Open(UniqueFd data, UniqueFd meta, OverlayNames names,
                                               const format::SnapshotId& base_id,
                                               uint64_t disk_size, const OverlayOptions& options) {
  return OpenImpl(std::move(data), std::move(meta), std::move(names), &base_id, &disk_size,
                  options);
}

Result<std::unique_ptr<Overlay>> Overlay::OpenAnyBase(UniqueFd data, UniqueFd meta,
                                                      OverlayNames names,
                                                      const OverlayOptions& options) {
  return OpenImpl(std::move(data), std::move(meta), std::move(names), nullptr, nullptr, options);
}

Result<std::unique_ptr<Overlay>> Overlay::OpenOrCreate(UniqueFd data, UniqueFd meta,
                                                       OverlayNames names,
                                                       const format::SnapshotId& base_id,
                                                       uint64_t disk_size,
                                                       const OverlayOptions& options) {
  HEXZ_ASSIGN_OR_RETURN(uint64_t size, SizeOf(data.get(), names.data));
  if (size == 0 && !options.read_only) {
    return Create(std::move(data), std::move(meta), std::move(names), base_id, disk_size, options);
  }
  return Open(std::move(data), std::move(meta), std::move(names), base_id, disk_size, options);
}

Result<std::unique_ptr<Overlay>> Overlay::OpenImpl(UniqueFd data, UniqueFd meta, OverlayNames names,
                                                   const format::SnapshotId* expect_base,
                                                   const uint64_t* expect_size,
                                                   const OverlayOptions& options) {
  std::unique_ptr<Overlay> ov(new Overlay(std::move(data), std::move(meta), names, options));
  HEXZ_RETURN_IF_ERROR(ov->LoadHeaders(expect_base, expect_size));
  ov->map_ = std::make_unique<BlockMap>(ov->block_count_);
  HEXZ_RETURN_IF_ERROR(ov->ReplayLog());
  return ov;
}

Status Overlay::LoadHeaders(const format::SnapshotId* expect_base, const uint64_t* expect_size) {
  const std::string& dn = names_.data;
  const std::string& mn = names_.meta;
  HEXZ_ASSIGN_OR_RETURN(uint64_t dsize, SizeOf(data_fd_.get(), dn));
  if (dsize == 0) {
    return Status::Corruption(dn + ": empty file, not an overlay (its creation never completed)");
  }
  if (dsize < kBlockSize) return Status::Corruption(dn + ": truncated overlay header");
  uint8_t h[kHeaderBytes];
  HEXZ_RETURN_IF_ERROR(io::PreadFull(data_fd_.get(), h, sizeof h, 0, dn));
  if (std::memcmp(h, kDataMagic, 8) != 0) {
    return Status::Corruption(dn + ": not a hexz overlay data file (bad magic)");
  }
  if (Get64(h + kHeaderChecksumAt) != XXH64(h, kHeaderChecksumAt, 0)) {
    return Status::Corruption(dn + ": overlay header checksum mismatch at offset 0");
  }
  if (Get32(h + 8) != kVersion) {
    return Status::Unsupported(dn + ": overlay format version " + std::to_string(Get32(h + 8)) +
                               " is not supported (this hexz reads version 1)");
  }
  if (Get32(h + 12) != 0) {
    return Status::Unsupported(dn + ": overlay header has unknown flags 0x" + Hex(h + 12, 4));
  }
  if (Get32(h + 56) != kBlockSize || Get32(h + 60) != 0 || !AllZero(h + 64, 56)) {
    return Status::Corruption(dn + ": overlay header has a bad block size or reserved bytes");
  }
  std::memcpy(overlay_uuid_.data(), h + 16, 16);
  std::memcpy(base_id_.bytes.data(), h + 32, 16);
  disk_size_ = Get64(h + 48);
  if (disk_size_ == 0) return Status::Corruption(dn + ": overlay header records a zero disk size");
  block_count_ = disk_size_ / kBlockSize + (disk_size_ % kBlockSize != 0 ? 1 : 0);
  if (block_count_ > kMaxBlocks) {
    return Status::Corruption(dn + ": overlay header records a disk size beyond the limit");
  }

  if (expect_base != nullptr && !(*expect_base == base_id_)) {
    return Status::InvalidArgument(
        "overlay " + dn + " belongs to snapshot id " + base_id_.ToHex() + ", but the base " +
        names_.base + " has id " + expect_base->ToHex() +
        "; use the snapshot the overlay was made on, or another overlay path");
  }
  if (expect_size != nullptr && *expect_size != disk_size_) {
    return Status::InvalidArgument("overlay " + dn + " covers a disk of " +
                                   std::to_string(disk_size_) + " bytes, but the disk of " +
                                   names_.base + " has " + std::to_string(*expect_size));
  }

  // Superblocks: the valid copy with the higher generation wins.
  HEXZ_ASSIGN_OR_RETURN(uint64_t msize, SizeOf(meta_fd_.get(), mn));
  bool found = false;
  for (int copy = 0; copy < 2; ++copy) {
    if (kSuperblockOffset[copy] + kHeaderBytes > msize) continue;
    uint8_t s[kHeaderBytes];
    HEXZ_RETURN_IF_ERROR(io::PreadFull(meta_fd_.get(), s, sizeof s, kSuperblockOffset[copy], mn));
    if (std::memcmp(s, kMetaMagic, 8) != 0) continue;
    if (Get64(s + kHeaderChecksumAt) != XXH64(s, kHeaderChecksumAt, 0)) continue;
    if (Get32(s + 8) != kVersion) {
      return Status::Unsupported(mn + ": overlay meta version " + std::to_string(Get32(s + 8)) +
                                 " is not supported (this hexz reads version 1)");
    }
    if (Get32(s + 12) != 0) {
      return Status::Unsupported(mn + ": overlay meta has unknown flags 0x" + Hex(s + 12, 4));
    }
    if (std::memcmp(s + 24, overlay_uuid_.data(), 16) != 0) {
      return Status::Corruption(mn + " belongs to another overlay than " + dn +
                                " (their overlay ids differ)");
    }
    uint64_t gen = Get64(s + 16);
    uint64_t start = Get64(s + 72);
    if (std::memcmp(s + 40, base_id_.bytes.data(), 16) != 0 || Get64(s + 56) != disk_size_ ||
        Get32(s + 64) != kBlockSize || Get32(s + 68) != 0 || !AllZero(s + 88, 32) || gen == 0 ||
        start < kLogBase || start % kBlockSize != 0) {
      return Status::Corruption(mn + ": superblock " + std::to_string(copy) +
                                " disagrees with the data header or has bad fields");
    }
    if (!found || gen > generation_) {
      found = true;
      generation_ = gen;
      log_start_ = start;
      first_seq_ = Get64(s + 80);
    }
  }
  if (!found) {
    return Status::Corruption(mn + ": no valid superblock (the meta file is damaged or " +
                              (msize == 0 ? std::string("empty") : std::string("not a hexz meta")) +
                              ")");
  }
  return Status::Ok();
}

Status Overlay::ReplayLog() {
  const std::string& mn = names_.meta;
  const int mfd = meta_fd_.get();
  HEXZ_ASSIGN_OR_RETURN(uint64_t msize, SizeOf(mfd, mn));
  HEXZ_ASSIGN_OR_RETURN(uint64_t dsize, SizeOf(data_fd_.get(), names_.data));
  const uint64_t full_slots = (dsize - kBlockSize) / kBlockSize;
  const uint64_t any_slots = (dsize - kBlockSize + kBlockSize - 1) / kBlockSize;

  uint64_t pos = log_start_;
  uint64_t seq = first_seq_;
  std::vector<uint8_t> entries;
  // The log is read through a 1 MiB window: most records are small.
  std::vector<uint8_t> window;
  uint64_t window_at = 0;
  auto read_log = [&](uint64_t at, uint8_t* out, size_t n) -> Status {
    if (at < window_at || at + n > window_at + window.size()) {
      if (n > (size_t{1} << 20)) return io::PreadFull(mfd, out, n, at, mn);
      window.resize(std::min<uint64_t>(uint64_t{1} << 20, msize - at));
      HEXZ_RETURN_IF_ERROR(io::PreadFull(mfd, window.data(), window.size(), at, mn));
      window_at = at;
    }
    std::memcpy(out, window.data() + (at - window_at), n);
    return Status::Ok();
  };
  while (pos <= msize && msize - pos >= kRecordHeaderBytes) {
    uint8_t h[kRecordHeaderBytes];
    HEXZ_RETURN_IF_ERROR(read_log(pos, h, sizeof h));
    if (std::memcmp(h, kRecordMagic, 4) != 0) break;
    uint16_t type = Get16(h + 4);
    if (Get64(h + 8) != generation_ || Get64(h + 16) != seq) break;
    if (type != kRecordDelta && !(type == kRecordCheckpoint && pos == log_start_)) break;
    uint64_t count = Get32(h + 24);
    if (Get16(h + 6) != 0 || Get32(h + 28) != 0) break;
    if (count > (msize - pos - kRecordHeaderBytes) / 8) break;  // torn tail
    entries.resize(count * 8);
    if (count > 0) {
      HEXZ_RETURN_IF_ERROR(read_log(pos + kRecordHeaderBytes, entries.data(), entries.size()));
    }
    if (Get64(h + kRecordChecksumAt) != RecordChecksum(h, entries.data(), entries.size())) break;
    // A record that checks is trusted to be ours; content that is still
    // impossible is corruption, not a torn write.
    for (uint64_t i = 0; i < count; ++i) {
      uint64_t block = Get32(&entries[i * 8]);
      uint32_t value = Get32(&entries[i * 8 + 4]);
      if (block >= block_count_ ||
          (value >= kEntryFirstSlot && value - kEntryFirstSlot >= full_slots)) {
        return Status::Corruption(mn + ": log record " + std::to_string(seq) + " at offset " +
                                  std::to_string(pos) + " maps block " + std::to_string(block) +
                                  " to a slot outside " + names_.data);
      }
      map_->Set(block, value);
    }
    pos += kRecordHeaderBytes + count * 8;
    ++seq;
  }
  log_end_ = pos;
  next_seq_ = seq;

  // Slot bookkeeping: every slot referenced once, the rest free.
  slot_state_.assign(any_slots, kSlotFree);
  Status bad;
  map_->ForEachChanged([&](uint64_t block, uint32_t v) {
    if (v == kEntryZero) {
      ++zero_blocks_;
      return;
    }
    uint32_t slot = v - kEntryFirstSlot;
    if (slot_state_[slot] != kSlotFree && bad.ok()) {
      bad = Status::Corruption(mn + ": slot " + std::to_string(slot) +
                               " is mapped by two blocks (second: block " + std::to_string(block) +
                               ")");
    }
    slot_state_[slot] = kSlotCommitted;
    ++data_blocks_;
  });
  HEXZ_RETURN_IF_ERROR(bad);
  for (uint64_t s = any_slots; s-- > 0;) {
    if (slot_state_[s] == kSlotFree) free_slots_.push_back(static_cast<uint32_t>(s));
  }
  if (!options_.read_only && log_end_ < msize) {
    // Drop the torn or stale tail, so that later appends never sit next to
    // bytes of an older record.
    if (::ftruncate(mfd, static_cast<off_t>(log_end_)) != 0) {
      return Status::FromErrno(errno, "truncate the log tail of " + mn);
    }
  }
  return Status::Ok();
}

// ---- Blocks ----

BlockState Overlay::State(uint64_t block) const {
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t v = map_->Get(block);
  return v == kEntryBase   ? BlockState::kBase
         : v == kEntryZero ? BlockState::kZero
                           : BlockState::kData;
}

bool Overlay::AnyChanged(uint64_t first, uint64_t count) const {
  if (first >= block_count_) return false;
  count = std::min(count, block_count_ - first);
  std::lock_guard<std::mutex> lock(mu_);
  return map_->AnyChanged(first, count);
}

Result<BlockState> Overlay::ReadBlock(uint64_t block, void* buf) const {
  if (block >= block_count_) {
    return Status::OutOfRange(names_.data + ": block " + std::to_string(block) +
                              " is past the end of the disk");
  }
  uint32_t v;
  {
    std::lock_guard<std::mutex> lock(mu_);
    v = map_->Get(block);
  }
  if (v == kEntryBase) return BlockState::kBase;
  if (v == kEntryZero) return BlockState::kZero;
  if (buf != nullptr) {
    // The slot cannot be reused while we read it: that needs a write to this
    // block, which the caller serializes with this read.
    HEXZ_RETURN_IF_ERROR(io::PreadFull(data_fd_.get(), buf, kBlockSize,
                                       SlotOffset(v - kEntryFirstSlot), names_.data));
  }
  return BlockState::kData;
}

uint32_t Overlay::AllocateSlotLocked() {
  if (!free_slots_.empty()) {
    uint32_t s = free_slots_.back();
    free_slots_.pop_back();
    slot_state_[s] = kSlotPending;
    return s;
  }
  auto s = static_cast<uint32_t>(slot_state_.size());
  slot_state_.push_back(kSlotPending);
  return s;
}

void Overlay::ReleaseSlotLocked(uint32_t slot) {
  slot_state_[slot] = kSlotFree;
  free_slots_.push_back(slot);
}

Status Overlay::CheckWritable(uint64_t block) const {
  if (options_.read_only) return Status::ReadOnly(names_.data + ": overlay is open read-only");
  if (block >= block_count_) {
    return Status::NoSpace(names_.data + ": block " + std::to_string(block) +
                           " is past the end of the disk (" + std::to_string(disk_size_) +
                           " bytes)");
  }
  return Sticky();
}

Status Overlay::WriteBlock(uint64_t block, const void* data) {
  HEXZ_RETURN_IF_ERROR(CheckWritable(block));
  std::shared_lock<Gate> gate(gate_);
  uint32_t slot;
  bool in_place = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t v = map_->Get(block);
    if (v >= kEntryFirstSlot && slot_state_[v - kEntryFirstSlot] == kSlotPending) {
      slot = v - kEntryFirstSlot;
      in_place = true;
    } else {
      if (slot_state_.size() >= kMaxBlocks && free_slots_.empty()) {
        return Status::NoSpace(names_.data + ": no free slot left");
      }
      slot = AllocateSlotLocked();
    }
  }
  Status st = io::PwriteFull(data_fd_.get(), data, kBlockSize, SlotOffset(slot), names_.data);
  if (!st.ok()) {
    if (in_place) {
      SetSticky(st);
      return Sticky();
    }
    std::lock_guard<std::mutex> lock(mu_);
    ReleaseSlotLocked(slot);
    return st;
  }
  if (in_place) return Status::Ok();
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t old = map_->Get(block);
  map_->Set(block, slot + kEntryFirstSlot);
  dirty_blocks_.push_back(static_cast<uint32_t>(block));
  ++data_blocks_;
  if (old == kEntryZero) {
    --zero_blocks_;
  } else if (old >= kEntryFirstSlot) {
    --data_blocks_;
    // old is committed here: a pending slot would have been written in place.
    release_after_commit_.push_back(old - kEntryFirstSlot);
  }
  return Status::Ok();
}

Status Overlay::ZeroBlock(uint64_t block) {
  HEXZ_RETURN_IF_ERROR(CheckWritable(block));
  std::shared_lock<Gate> gate(gate_);
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t old = map_->Get(block);
  if (old == kEntryZero) return Status::Ok();
  map_->Set(block, kEntryZero);
  dirty_blocks_.push_back(static_cast<uint32_t>(block));
  ++zero_blocks_;
  if (old >= kEntryFirstSlot) {
    --data_blocks_;
    uint32_t slot = old - kEntryFirstSlot;
    if (slot_state_[slot] == kSlotPending) {
      ReleaseSlotLocked(slot);  // never referenced by the durable log
    } else {
      release_after_commit_.push_back(slot);
    }
  }
  return Status::Ok();
}

// ---- Flush ----

Status Overlay::AppendRecord(uint16_t type, const std::vector<uint64_t>& entries) {
  // entries: (block << 32) | value.
  std::vector<uint8_t> rec(kRecordHeaderBytes + entries.size() * 8);
  uint8_t* h = rec.data();
  std::memcpy(h, kRecordMagic, 4);
  Put16(h + 4, type);
  uint64_t gen = type == kRecordCheckpoint ? generation_ + 1 : generation_;
  Put64(h + 8, gen);
  Put64(h + 16, next_seq_);
  Put32(h + 24, static_cast<uint32_t>(entries.size()));
  for (size_t i = 0; i < entries.size(); ++i) {
    Put32(h + kRecordHeaderBytes + i * 8, static_cast<uint32_t>(entries[i] >> 32));
    Put32(h + kRecordHeaderBytes + i * 8 + 4, static_cast<uint32_t>(entries[i]));
  }
  Put64(h + kRecordChecksumAt,
        RecordChecksum(h, h + kRecordHeaderBytes, rec.size() - kRecordHeaderBytes));

  const int mfd = meta_fd_.get();
  if (type == kRecordDelta) {
    HEXZ_RETURN_IF_ERROR(io::PwriteFull(mfd, rec.data(), rec.size(), log_end_, names_.meta));
    if (options_.durable) HEXZ_RETURN_IF_ERROR(Fdatasync(mfd, names_.meta));
    log_end_ += rec.size();
    ++next_seq_;
    return Status::Ok();
  }
  // Checkpoint: below the current log when it fits, else after it.
  uint64_t target = (log_end_ + kBlockSize - 1) / kBlockSize * kBlockSize;
  if (log_start_ != kLogBase && kLogBase + rec.size() <= log_start_) target = kLogBase;
  HEXZ_RETURN_IF_ERROR(io::PwriteFull(mfd, rec.data(), rec.size(), target, names_.meta));
  if (options_.durable) HEXZ_RETURN_IF_ERROR(Fdatasync(mfd, names_.meta));
  HEXZ_RETURN_IF_ERROR(WriteSuperblock(gen, target, next_seq_));
  if (options_.durable) HEXZ_RETURN_IF_ERROR(Fdatasync(mfd, names_.meta));
  generation_ = gen;
  log_start_ = target;
  first_seq_ = next_seq_;
  log_end_ = target + rec.size();
  ++next_seq_;
  if (target == kLogBase) {
    // The old log after the new one is dead; give its space back.
    (void)::ftruncate(mfd, static_cast<off_t>(log_end_));
  }
  return Status::Ok();
}

Status Overlay::Flush() {
  if (options_.read_only) return Status::Ok();
  std::lock_guard<std::mutex> flush_lock(flush_mu_);
  HEXZ_RETURN_IF_ERROR(Sticky());
  std::vector<uint64_t> entries;
  std::vector<uint32_t> release;
  bool checkpoint = false;
  {
    std::unique_lock<Gate> gate(gate_);
    std::lock_guard<std::mutex> lock(mu_);
    if (dirty_blocks_.empty()) return Status::Ok();
    std::sort(dirty_blocks_.begin(), dirty_blocks_.end());
    dirty_blocks_.erase(std::unique(dirty_blocks_.begin(), dirty_blocks_.end()),
                        dirty_blocks_.end());
    uint64_t live = data_blocks_ + zero_blocks_;
    uint64_t checkpoint_bytes = kRecordHeaderBytes + live * 8;
    uint64_t log_bytes = log_end_ - log_start_ + kRecordHeaderBytes + dirty_blocks_.size() * 8;
    checkpoint = log_bytes > std::max(options_.compact_min_bytes, 4 * checkpoint_bytes);
    for (uint32_t b : dirty_blocks_) {
      uint32_t v = map_->Get(b);
      if (v >= kEntryFirstSlot) slot_state_[v - kEntryFirstSlot] = kSlotCommitted;
      if (!checkpoint) entries.push_back((uint64_t{b} << 32) | v);
    }
    if (checkpoint) {
      entries.reserve(live);
      map_->ForEachChanged([&](uint64_t b, uint32_t v) { entries.push_back((b << 32) | v); });
    }
    dirty_blocks_.clear();
    release.swap(release_after_commit_);
  }
  Status st;
  if (options_.durable) st = Fdatasync(data_fd_.get(), names_.data);
  if (st.ok()) st = AppendRecord(checkpoint ? kRecordCheckpoint : kRecordDelta, entries);
  if (!st.ok()) {
    SetSticky(st);
    return Sticky();
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t s : release) ReleaseSlotLocked(s);
  return Status::Ok();
}

OverlayStats Overlay::Stats() const {
  OverlayStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.data_blocks = data_blocks_;
    s.zero_blocks = zero_blocks_;
    s.slots = slot_state_.size();
    uint64_t changed = data_blocks_ + zero_blocks_;
    s.changed_bytes = changed * kBlockSize;
    uint64_t tail = disk_size_ % kBlockSize;
    if (tail != 0 && map_->Get(block_count_ - 1) != kEntryBase) {
      s.changed_bytes -= kBlockSize - tail;
    }
  }
  auto d = SizeOf(data_fd_.get(), names_.data);
  auto m = SizeOf(meta_fd_.get(), names_.meta);
  s.data_file_bytes = d.ok() ? *d : 0;
  s.meta_file_bytes = m.ok() ? *m : 0;
  return s;
}

}  // namespace hexz::overlay
