// Overlay: design notes.
//
// Goal. After Flush() returns OK, every block write acknowledged before it
// survives a SIGKILL of the worker and a power cut. A crash at any instant
// leaves an overlay that opens, and every 4 KiB block then reads either its
// old or its new content. Damage (anything a crash cannot produce) is never
// served and never "repaired": opening refuses, and a block whose data fails
// its checksum fails to read. FORMAT.md (overlay part) has the byte layout
// and states the crash-versus-damage rule that ReplayLog/CheckTail implement.
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
//    (each with the XXH3-64 of its block's data) under an exclusive gate, so
//    no write is half done, and marks their slots committed (later writes to
//    those blocks go to fresh slots); (b) fdatasyncs the data file; (c)
//    appends one log record with the batch at the end of the meta file
//    (sector-aligned, zero-padded) and fdatasyncs it.
//
// 3. Crash or damage. Records have a header checksum and a body checksum.
//    Appends only ever go to the end of the file, past which there is
//    nothing, so a record torn by a power cut is one whose header is valid
//    but which runs past the end of the file or holds an all-zero sector, or
//    whose header sector is all zero. Anything else that fails to check, and
//    any record of the log that follows a bad one, is damage.
//
// 4. Bounded log. When the log grows past max(compact_min_bytes, 4 x the size
//    of a checkpoint), Flush writes a checkpoint record (the whole map,
//    epoch = generation + 1) instead of a delta: at the start of the log area
//    when it fits below the current log (the dead space up to the current log
//    is then zeroed), else after the current log; fdatasyncs it; writes the
//    inactive superblock copy (generation + 1, new log start) and fdatasyncs;
//    then cuts the old log off the end of the file. A superblock write torn
//    by a crash is recognized by the durable checkpoint of the next
//    generation that must precede it, and the open then uses that checkpoint
//    (a read-write open writes the superblock again).
//
// 5. Creation. Create writes the meta file first and the data header last,
//    each made durable. A data file that is empty is therefore a creation
//    that never completed, and OpenOrCreate initializes it, unless the meta
//    file holds a log: then the data was lost, and the open refuses.
//
// 6. Errors. A failed write to a fresh slot returns the error to the writer
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
#include <linux/falloc.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/base/bytes.h"
#include "common/base/checked_math.h"
#include "common/base/endian.h"
#include "common/base/xxh3.h"
#include "common/io/file.h"
#include "common/overlay/overlay_layout.h"

namespace hexz::overlay {

namespace {

using namespace layout;  // NOLINT: the format's constants

enum SlotState : uint8_t { kSlotFree = 0, kSlotPending = 1, kSlotCommitted = 2 };

uint64_t SlotOffset(uint32_t slot) { return (uint64_t{slot} + 1) * kBlockSize; }

uint64_t Sum(const void* p, size_t n) { return XXH3_64bits(p, n); }

uint64_t RoundUp(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

std::string Num(uint64_t v) { return std::to_string(v); }

std::string Hex64(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%016llx", static_cast<unsigned long long>(v));
  return b;
}

// A record header checks: its magic and its own checksum.
bool HeaderChecks(const uint8_t* h) {
  return std::memcmp(h, kRecordMagic, 4) == 0 &&
         base::GetLe64(h + kRecordHeaderChecksumAt) == Sum(h, kRecordHeaderChecksumAt);
}

// The checksum a zero entry carries: that of the 4 KiB it reads as.
uint64_t ZeroBlockSum() {
  static const uint64_t sum = [] {
    std::vector<uint8_t> z(kBlockSize, 0);
    return Sum(z.data(), z.size());
  }();
  return sum;
}

const char kKeepHint[] =
    "; the overlay was left untouched (check it with hexz overlay verify; hexz commit --salvage "
    "recovers what is intact)";

std::string FormatOneMessage(const std::string& file) {
  return file +
         ": overlay format 1 (written by an earlier hexz) is not read by this hexz, which reads "
         "format 2; commit it into a snapshot with the hexz that wrote it (hexz commit --base "
         "BASE --overlay OVERLAY -o NEW.st), then mount NEW.st";
}

}  // namespace

// One block's entry in the map: its value (kEntryBase, kEntryZero or a
// slot), the record that last stored it (offset / kSector; 0 = not yet in
// the log) and the XXH3-64 of its 4 KiB.
struct Overlay::Entry {
  uint32_t value = kEntryBase;
  uint32_t rec = 0;
  uint64_t sum = 0;
};

// A record as read from the meta file, classified.
struct Overlay::Record {
  enum Kind {
    kEnd,        // at or past the end of the file
    kZero,       // the header sector is all zero
    kBadHeader,  // the header fails its magic, checksum or field checks
    kTorn,       // valid header, but the record is not all there
    kBadBody,    // complete, but the entries fail their checksum
    kGood,
  };
  Kind kind = kEnd;
  uint16_t type = 0;
  uint64_t epoch = 0;
  uint64_t seq = 0;
  uint64_t count = 0;
  uint64_t bytes = 0;  // padded length
  std::vector<uint8_t> body;
  std::string why;
};

// ---- BlockMap: block -> entry, two-level so that sparse overlays of huge
// disks cost memory only for the 4 MiB regions they touch.
class Overlay::BlockMap {
 public:
  static constexpr unsigned kShift = 10;
  static constexpr uint64_t kChunk = uint64_t{1} << kShift;

  explicit BlockMap(uint64_t blocks) : chunks_((blocks + kChunk - 1) / kChunk) {}

  Entry Get(uint64_t b) const {
    const auto& c = chunks_[b >> kShift];
    return c ? c[b & (kChunk - 1)] : Entry{};
  }
  void Set(uint64_t b, const Entry& e) {
    auto& c = chunks_[b >> kShift];
    if (!c) {
      if (e.value == kEntryBase) return;
      c = std::make_unique<Entry[]>(kChunk);  // value-initialized: kEntryBase
    }
    c[b & (kChunk - 1)] = e;
  }
  bool AnyChanged(uint64_t first, uint64_t count) const {
    for (uint64_t b = first; b < first + count; ++b) {
      const auto& c = chunks_[b >> kShift];
      if (!c) {
        b |= kChunk - 1;  // skip the rest of this empty chunk
        continue;
      }
      if (c[b & (kChunk - 1)].value != kEntryBase) return true;
    }
    return false;
  }
  template <typename Fn>
  void ForEachChanged(Fn fn) const {
    for (uint64_t i = 0; i < chunks_.size(); ++i) {
      if (!chunks_[i]) continue;
      for (uint64_t j = 0; j < kChunk; ++j) {
        const Entry& e = chunks_[i][j];
        if (e.value != kEntryBase) fn((i << kShift) | j, e);
      }
    }
  }

 private:
  std::vector<std::unique_ptr<Entry[]>> chunks_;
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
  if (options.durable) HEXZ_RETURN_IF_ERROR(io::Fdatasync(dfd, names.data));
  if (::ftruncate(mfd, 0) != 0 || ::ftruncate(mfd, static_cast<off_t>(kLogBase)) != 0) {
    return Status::FromErrno(errno, "truncate " + names.meta);
  }
  ov->generation_ = 1;
  ov->log_start_ = kLogBase;
  ov->log_end_ = kLogBase;
  ov->first_seq_ = kFirstSeq;
  ov->next_seq_ = kFirstSeq;
  HEXZ_RETURN_IF_ERROR(ov->WriteSuperblock(1, kLogBase, kFirstSeq));
  if (options.durable) HEXZ_RETURN_IF_ERROR(io::Fdatasync(mfd, names.meta));

  uint8_t h[kBlockSize] = {};
  std::memcpy(h, kDataMagic, 8);
  base::PutLe32(h + 8, kVersion);
  base::PutLe32(h + 12, 0);
  std::memcpy(h + 16, ov->overlay_uuid_.data(), 16);
  std::memcpy(h + 32, base_id.bytes.data(), 16);
  base::PutLe64(h + 48, disk_size);
  base::PutLe32(h + 56, kBlockSize);
  base::PutLe64(h + kHeaderChecksumAt, Sum(h, kHeaderChecksumAt));
  HEXZ_RETURN_IF_ERROR(io::PwriteFull(dfd, h, sizeof h, 0, names.data));
  if (options.durable) HEXZ_RETURN_IF_ERROR(io::Fdatasync(dfd, names.data));

  ov->map_ = std::make_unique<BlockMap>(blocks);
  return ov;
}

Status Overlay::WriteSuperblock(uint64_t generation, uint64_t log_start, uint64_t first_seq) {
  uint8_t s[kBlockSize] = {};
  std::memcpy(s, kMetaMagic, 8);
  base::PutLe32(s + 8, kVersion);
  base::PutLe32(s + 12, 0);
  base::PutLe64(s + 16, generation);
  std::memcpy(s + 24, overlay_uuid_.data(), 16);
  std::memcpy(s + 40, base_id_.bytes.data(), 16);
  base::PutLe64(s + 56, disk_size_);
  base::PutLe32(s + 64, kBlockSize);
  base::PutLe64(s + 72, log_start);
  base::PutLe64(s + 80, first_seq);
  base::PutLe64(s + kHeaderChecksumAt, Sum(s, kHeaderChecksumAt));
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
  HEXZ_ASSIGN_OR_RETURN(uint64_t size, io::FileSize(data.get(), names.data));
  if (size == 0 && !options.read_only) {
    // An interrupted creation leaves at most the superblocks. A meta file
    // with a log means the data was lost: never build an empty overlay over
    // that evidence.
    HEXZ_ASSIGN_OR_RETURN(uint64_t msize, io::FileSize(meta.get(), names.meta));
    if (msize > kLogBase) {
      return Status::Corruption(names.data + " is empty, but " + names.meta + " holds a log (" +
                                Num(msize) + " bytes): the overlay's data is lost" + kKeepHint);
    }
    return Create(std::move(data), std::move(meta), std::move(names), base_id, disk_size, options);
  }
  return Open(std::move(data), std::move(meta), std::move(names), base_id, disk_size, options);
}

Result<std::unique_ptr<Overlay>> Overlay::OpenImpl(UniqueFd data, UniqueFd meta, OverlayNames names,
                                                   const format::SnapshotId* expect_base,
                                                   const uint64_t* expect_size,
                                                   OverlayOptions options) {
  if (options.salvage) options.read_only = true;
  std::unique_ptr<Overlay> ov(new Overlay(std::move(data), std::move(meta), names, options));
  HEXZ_RETURN_IF_ERROR(ov->LoadHeaders(expect_base, expect_size));
  HEXZ_RETURN_IF_ERROR(ov->LoadSuperblocks());
  ov->map_ = std::make_unique<BlockMap>(ov->block_count_);
  HEXZ_RETURN_IF_ERROR(ov->ReplayLog());
  return ov;
}

Status Overlay::Damage(const std::string& what) {
  if (options_.salvage) {
    problems_.push_back(what);
    return Status::Ok();
  }
  return Status::Corruption(what + kKeepHint);
}

Status Overlay::LoadHeaders(const format::SnapshotId* expect_base, const uint64_t* expect_size) {
  const std::string& dn = names_.data;
  HEXZ_ASSIGN_OR_RETURN(uint64_t dsize, io::FileSize(data_fd_.get(), dn));
  if (dsize == 0) {
    return Status::Corruption(dn + ": empty file, not an overlay (its creation never completed)");
  }
  if (dsize < kBlockSize) return Status::Corruption(dn + ": truncated overlay header");
  uint8_t h[kHeaderBytes];
  HEXZ_RETURN_IF_ERROR(io::PreadFull(data_fd_.get(), h, sizeof h, 0, dn));
  if (std::memcmp(h, kDataMagic, 8) != 0) {
    return Status::Corruption(dn + ": not a hexz overlay data file (bad magic)");
  }
  if (base::GetLe32(h + 8) == kOldVersion) return Status::Unsupported(FormatOneMessage(dn));
  if (base::GetLe64(h + kHeaderChecksumAt) != Sum(h, kHeaderChecksumAt)) {
    return Status::Corruption(dn + ": overlay header checksum mismatch at offset 0" + kKeepHint);
  }
  if (base::GetLe32(h + 8) != kVersion) {
    return Status::Unsupported(dn + ": overlay format version " + Num(base::GetLe32(h + 8)) +
                               " is not supported (this hexz reads version 2)");
  }
  if (base::GetLe32(h + 12) != 0) {
    return Status::Unsupported(dn + ": overlay header has unknown flags 0x" +
                               base::HexEncode(h + 12, 4));
  }
  if (base::GetLe32(h + 56) != kBlockSize || base::GetLe32(h + 60) != 0 ||
      !base::AllZero(h + 64, 56)) {
    return Status::Corruption(dn + ": overlay header has a bad block size or reserved bytes");
  }
  std::memcpy(overlay_uuid_.data(), h + 16, 16);
  std::memcpy(base_id_.bytes.data(), h + 32, 16);
  disk_size_ = base::GetLe64(h + 48);
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
    return Status::InvalidArgument("overlay " + dn + " covers a disk of " + Num(disk_size_) +
                                   " bytes, but the disk of " + names_.base + " has " +
                                   Num(*expect_size));
  }
  return Status::Ok();
}

// Superblocks: the valid copy with the higher generation is active; the
// other copy must be the previous generation (or, for generation 1, never
// written). A copy that fails its checks is remembered (bad_copy_): it is a
// torn write only if ReplayLog finds the checkpoint it was to point at.
Status Overlay::LoadSuperblocks() {
  const std::string& mn = names_.meta;
  HEXZ_ASSIGN_OR_RETURN(uint64_t msize, io::FileSize(meta_fd_.get(), mn));
  enum { kBlank, kBad, kValid } state[2];
  uint64_t gen[2] = {0, 0}, start[2] = {0, 0}, first[2] = {0, 0};
  std::string why[2];
  for (int copy = 0; copy < 2; ++copy) {
    const uint64_t off = kSuperblockOffset[copy];
    uint8_t s[kHeaderBytes] = {};
    if (off < msize) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kHeaderBytes, msize - off));
      HEXZ_RETURN_IF_ERROR(io::PreadFull(meta_fd_.get(), s, n, off, mn));
    }
    state[copy] = kBad;
    if (base::AllZero(s, kHeaderBytes)) {
      state[copy] = kBlank;
    } else if (std::memcmp(s, kMetaMagic, 8) != 0) {
      why[copy] = "bad magic";
    } else if (base::GetLe32(s + 8) == kOldVersion) {
      return Status::Unsupported(FormatOneMessage(mn));
    } else if (base::GetLe64(s + kHeaderChecksumAt) != Sum(s, kHeaderChecksumAt)) {
      why[copy] = "checksum mismatch";
    } else if (base::GetLe32(s + 8) != kVersion || base::GetLe32(s + 12) != 0) {
      return Status::Unsupported(
          mn + ": superblock " + Num(copy) + " has version " + Num(base::GetLe32(s + 8)) +
          " and flags 0x" + base::HexEncode(s + 12, 4) + " (this hexz reads version 2, no flags)");
    } else if (std::memcmp(s + 24, overlay_uuid_.data(), 16) != 0) {
      return Status::Corruption(mn + " belongs to another overlay than " + names_.data +
                                " (their overlay ids differ)");
    } else {
      gen[copy] = base::GetLe64(s + 16);
      start[copy] = base::GetLe64(s + 72);
      first[copy] = base::GetLe64(s + 80);
      if (std::memcmp(s + 40, base_id_.bytes.data(), 16) != 0 ||
          base::GetLe64(s + 56) != disk_size_ || base::GetLe32(s + 64) != kBlockSize ||
          base::GetLe32(s + 68) != 0 || !base::AllZero(s + 88, 32) || gen[copy] == 0 ||
          gen[copy] % 2 != static_cast<uint64_t>(copy) || start[copy] < kLogBase ||
          start[copy] % kCheckpointAlign != 0) {
        why[copy] = "fields that disagree with the data header or with each other";
      } else {
        state[copy] = kValid;
      }
    }
  }
  int a = -1;
  for (int copy = 0; copy < 2; ++copy) {
    if (state[copy] == kValid && (a < 0 || gen[copy] > gen[a])) a = copy;
  }
  if (a < 0) {
    return Status::Corruption(
        mn +
        ": no valid superblock (copy 0: " + (state[0] == kBlank ? std::string("empty") : why[0]) +
        ", copy 1: " + (state[1] == kBlank ? std::string("empty") : why[1]) + ")" + kKeepHint);
  }
  generation_ = gen[a];
  log_start_ = start[a];
  first_seq_ = first[a];
  const int o = 1 - a;
  const std::string where =
      "superblock copy " + Num(o) + " at offset " + Num(kSuperblockOffset[o]) + " of " + mn;
  if (state[o] == kBad) {
    bad_copy_ = o;
    bad_copy_why_ = where + " is damaged (" + why[o] + ")";
  } else if (state[o] == kValid && gen[o] + 1 != generation_) {
    return Damage(where + " holds generation " + Num(gen[o]) + ", but the other copy holds " +
                  Num(generation_) + " (they must be consecutive)");
  } else if (state[o] == kBlank && generation_ != 1) {
    return Damage(where + " is empty, but generation " + Num(generation_) +
                  " needs the previous generation there");
  }
  return Status::Ok();
}

Result<Overlay::Record> Overlay::ReadRecord(uint64_t pos, uint64_t msize, bool want_body) const {
  Record r;
  if (pos >= msize) return r;
  uint8_t sec[kSector];
  const size_t avail = static_cast<size_t>(std::min<uint64_t>(kSector, msize - pos));
  HEXZ_RETURN_IF_ERROR(io::PreadFull(meta_fd_.get(), sec, avail, pos, names_.meta));
  if (base::AllZero(sec, avail)) {
    r.kind = Record::kZero;
    return r;
  }
  if (avail < kRecordHeaderBytes) {
    r.kind = Record::kTorn;
    return r;
  }
  if (!HeaderChecks(sec)) {
    r.kind = Record::kBadHeader;
    r.why = std::memcmp(sec, kRecordMagic, 4) != 0 ? "bad magic" : "header checksum mismatch";
    return r;
  }
  r.type = base::GetLe16(sec + 4);
  r.epoch = base::GetLe64(sec + 8);
  r.seq = base::GetLe64(sec + 16);
  r.count = base::GetLe32(sec + kRecordCountAt);
  if (base::GetLe16(sec + 6) != 0 || base::GetLe32(sec + 28) != 0 ||
      (r.type != kRecordDelta && r.type != kRecordCheckpoint) || r.count > block_count_) {
    r.kind = Record::kBadHeader;
    r.why = "impossible header fields";
    return r;
  }
  r.bytes = RoundUp(kRecordHeaderBytes + r.count * kEntryBytes, kSector);
  if (r.bytes > msize - pos) {
    r.kind = Record::kTorn;
    return r;
  }
  if (!want_body) {
    r.kind = Record::kGood;  // header only: callers that skip bodies
    return r;
  }
  std::vector<uint8_t> all(r.bytes);
  std::memcpy(all.data(), sec, kSector);
  if (r.bytes > kSector) {
    HEXZ_RETURN_IF_ERROR(io::PreadFull(meta_fd_.get(), all.data() + kSector, r.bytes - kSector,
                                       pos + kSector, names_.meta));
  }
  for (uint64_t off = kSector; off < r.bytes; off += kSector) {
    if (base::AllZero(all.data() + off, kSector)) {
      r.kind = Record::kTorn;  // a sector the write never reached
      return r;
    }
  }
  const uint8_t* body = all.data() + kRecordHeaderBytes;
  if (base::GetLe64(sec + kRecordBodyChecksumAt) != Sum(body, r.count * kEntryBytes)) {
    r.kind = Record::kBadBody;
    r.why = "entries checksum mismatch";
    return r;
  }
  r.body.assign(body, body + r.count * kEntryBytes);
  r.kind = Record::kGood;
  return r;
}

Status Overlay::ApplyRecord(const Record& r, uint64_t pos, uint64_t full_slots) {
  const std::string where =
      names_.meta + ": log record " + Num(r.seq) + " at offset " + Num(pos) + " maps block ";
  for (uint64_t i = 0; i < r.count; ++i) {
    const uint8_t* p = r.body.data() + i * kEntryBytes;
    Entry e;
    uint64_t block = base::GetLe32(p);
    e.value = base::GetLe32(p + 4);
    e.sum = base::GetLe64(p + 8);
    e.rec = static_cast<uint32_t>(pos / kSector);
    if (block >= block_count_ || e.value == kEntryBase) {
      HEXZ_RETURN_IF_ERROR(Damage(where + Num(block) + " to value " + Num(e.value) +
                                  ", which is impossible (" + Num(block_count_) + " blocks)"));
      continue;
    }
    if (e.value >= kEntryFirstSlot && e.value - kEntryFirstSlot >= full_slots) {
      HEXZ_RETURN_IF_ERROR(Damage(where + Num(block) + " to slot " +
                                  Num(e.value - kEntryFirstSlot) + ", past the end of " +
                                  names_.data + " (is the data file truncated?)"));
      continue;
    }
    map_->Set(block, e);
  }
  return Status::Ok();
}

// Applies the records of the log that starts at pos with sequence seq, up to
// the first one that is not part of it; returns where that is. In salvage
// mode, damage is noted and replay continues at the next record that checks.
Status Overlay::ReplayFrom(uint64_t pos, uint64_t seq, uint64_t* end, uint64_t* next_seq,
                           Record* stop) {
  const std::string& mn = names_.meta;
  HEXZ_ASSIGN_OR_RETURN(uint64_t msize, io::FileSize(meta_fd_.get(), mn));
  HEXZ_ASSIGN_OR_RETURN(uint64_t dsize, io::FileSize(data_fd_.get(), names_.data));
  const uint64_t full_slots = (dsize - kBlockSize) / kBlockSize;
  const uint64_t start = pos;
  for (;;) {
    HEXZ_ASSIGN_OR_RETURN(Record r, ReadRecord(pos, msize, true));
    const bool ours = r.kind == Record::kGood && r.epoch == generation_ && r.seq == seq &&
                      (r.type == kRecordDelta || pos == start);
    if (pos == start && generation_ >= 2 && !(ours && r.type == kRecordCheckpoint)) {
      // The superblock is written only after its checkpoint is durable.
      HEXZ_RETURN_IF_ERROR(
          Damage(mn + ": the log of generation " + Num(generation_) +
                 " must start with a checkpoint at " + "offset " + Num(pos) + ", but " +
                 (r.kind == Record::kEnd ? "the file ends at " + Num(msize)
                                         : "the record there does not check (" + r.why + ")")));
    } else if (ours) {
      HEXZ_RETURN_IF_ERROR(ApplyRecord(r, pos, full_slots));
      pos += r.bytes;
      ++seq;
      ++records_;
      continue;
    }
    if (!options_.salvage) {
      *stop = std::move(r);
      break;
    }
    HEXZ_RETURN_IF_ERROR(CheckTail(pos, seq, r));  // notes damage, if any
    uint64_t next = NextValidRecord(pos, msize, seq);
    if (next >= msize) break;
    HEXZ_ASSIGN_OR_RETURN(Record n, ReadRecord(next, msize, false));
    problems_.push_back(mn + ": skipped the damaged log from offset " + Num(pos) + " to " +
                        Num(next) + " (records " + Num(seq) + " to " + Num(n.seq - 1) +
                        "): the blocks they changed are unknown and read from the base or an "
                        "older record");
    pos = next;
    seq = n.seq;
  }
  *end = pos;
  *next_seq = seq;
  return Status::Ok();
}

uint64_t Overlay::NextValidRecord(uint64_t pos, uint64_t msize, uint64_t min_seq) const {
  for (uint64_t at = pos + kSector; at < msize; at += kSector) {
    auto r = ReadRecord(at, msize, true);
    if (r.ok() && r->kind == Record::kGood && r->epoch == generation_ && r->seq >= min_seq &&
        r->type == kRecordDelta) {
      return at;
    }
  }
  return msize;
}

// What follows the last record of the log: a crash leftover (OK) or damage.
Status Overlay::CheckTail(uint64_t pos, uint64_t expected_seq, const Record& first) {
  const std::string& mn = names_.meta;
  if (first.kind == Record::kEnd) return Status::Ok();
  HEXZ_ASSIGN_OR_RETURN(uint64_t msize, io::FileSize(meta_fd_.get(), mn));
  const std::string bad = "log record at offset " + Num(pos) + " of " + mn + " (sequence " +
                          Num(expected_seq) + " expected) ";
  // A record of this log after it cannot be the leftover of a crash: appends
  // go to the end of the file. Nor can a delta of the next generation (it
  // needs the next superblock, which is durable before the first one).
  std::vector<uint8_t> buf;
  for (uint64_t at = pos + kSector; at < msize;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(uint64_t{1} << 20, msize - at));
    buf.resize(n);
    HEXZ_RETURN_IF_ERROR(io::PreadFull(meta_fd_.get(), buf.data(), n, at, mn));
    for (size_t off = 0; off + kRecordHeaderBytes <= n; off += kSector) {
      const uint8_t* h = buf.data() + off;
      if (!HeaderChecks(h)) continue;
      uint64_t epoch = base::GetLe64(h + 8), seq = base::GetLe64(h + 16);
      if (epoch == generation_ && seq >= expected_seq) {
        return Damage(bad + "is damaged or missing, but record " + Num(seq) + " of the same log " +
                      "follows at offset " + Num(at + off));
      }
      if (epoch == generation_ + 1 && base::GetLe16(h + 4) == kRecordDelta) {
        return Damage(mn + ": a record of generation " + Num(epoch) + " lies at offset " +
                      Num(at + off) + ", but the active superblock is of generation " +
                      Num(generation_) + " (a newer superblock is missing or damaged)");
      }
    }
    at += n;
  }
  switch (first.kind) {
    case Record::kZero:
    case Record::kTorn:
      return Status::Ok();  // a write that a crash interrupted
    case Record::kGood:
      if (first.epoch < generation_) return Status::Ok();  // an older log, cut off
      if (first.epoch == generation_ + 1 && first.type == kRecordCheckpoint) {
        return Status::Ok();  // a checkpoint whose superblock was never written
      }
      return Damage(bad + "is a valid record of generation " + Num(first.epoch) + ", sequence " +
                    Num(first.seq) + ", type " + Num(first.type) + ", which cannot follow here");
    default:
      return Damage(bad + "is damaged (" + first.why + ")");
  }
}

Status Overlay::ReplayLog() {
  const std::string& mn = names_.meta;
  uint64_t end = log_start_, seq = first_seq_;
  Record stop;
  Status st = ReplayFrom(log_start_, first_seq_, &end, &seq, &stop);
  if (bad_copy_ >= 0) {
    // A damaged superblock copy is a torn write only while a compaction is
    // in flight: then a durable checkpoint of the next generation exists
    // (at the start of the log area, or after the active log).
    HEXZ_ASSIGN_OR_RETURN(uint64_t msize, io::FileSize(meta_fd_.get(), mn));
    uint64_t found = 0, found_seq = 0;
    for (uint64_t at : {kLogBase, RoundUp(end, kCheckpointAlign)}) {
      if (at == log_start_ || found != 0) continue;
      HEXZ_ASSIGN_OR_RETURN(Record c, ReadRecord(at, msize, true));
      if (c.kind == Record::kGood && c.type == kRecordCheckpoint && c.epoch == generation_ + 1) {
        found = at;
        found_seq = c.seq;
      }
    }
    if (found == 0) {
      if (st.ok()) st = Damage(bad_copy_why_);
    } else {
      problems_.push_back(bad_copy_why_ + "; it is taken as a superblock write that a crash " +
                          "interrupted, and the checkpoint of generation " + Num(generation_ + 1) +
                          " at offset " + Num(found) + " is used");
      map_ = std::make_unique<BlockMap>(block_count_);
      records_ = 0;
      ++generation_;
      log_start_ = found;
      first_seq_ = found_seq;
      finish_compaction_ = true;
      stop = Record();
      st = ReplayFrom(found, found_seq, &end, &seq, &stop);
      if (st.ok() && records_ > 1) {
        // Records after the checkpoint were appended only once the
        // superblock was durable: so it was damaged later, not torn.
        st = Damage(bad_copy_why_ + ", and the log of generation " + Num(generation_) +
                    " at offset " + Num(found) + " already holds " + Num(records_) +
                    " records, so its superblock had been written");
      }
    }
  }
  HEXZ_RETURN_IF_ERROR(st);
  if (!options_.salvage) HEXZ_RETURN_IF_ERROR(CheckTail(end, seq, stop));
  log_end_ = end;
  next_seq_ = seq;
  HEXZ_ASSIGN_OR_RETURN(uint64_t dsize, io::FileSize(data_fd_.get(), names_.data));
  HEXZ_RETURN_IF_ERROR(CountSlots(dsize));
  return options_.read_only ? Status::Ok() : RecoverForWriting();
}

Status Overlay::CountSlots(uint64_t dsize) {
  // Slot bookkeeping: every slot referenced once, the rest free.
  const uint64_t any_slots = (dsize - kBlockSize + kBlockSize - 1) / kBlockSize;
  slot_state_.assign(any_slots, kSlotFree);
  std::string twice;
  map_->ForEachChanged([&](uint64_t block, const Entry& e) {
    if (e.value == kEntryZero) {
      ++zero_blocks_;
      return;
    }
    uint32_t slot = e.value - kEntryFirstSlot;
    if (slot_state_[slot] != kSlotFree && twice.empty()) {
      twice = names_.meta + ": slot " + Num(slot) + " is mapped by two blocks (second: block " +
              Num(block) + ")";
    }
    slot_state_[slot] = kSlotCommitted;
    ++data_blocks_;
  });
  if (!twice.empty()) HEXZ_RETURN_IF_ERROR(Damage(twice));
  for (uint64_t s = any_slots; s-- > 0;) {
    if (slot_state_[s] == kSlotFree) free_slots_.push_back(static_cast<uint32_t>(s));
  }
  return Status::Ok();
}

// Crash recovery before the first write, after every check has passed:
// finish an interrupted compaction, drop a torn or stale tail (so that later
// appends never sit next to bytes of another record), each made durable.
Status Overlay::RecoverForWriting() {
  const std::string& mn = names_.meta;
  const int mfd = meta_fd_.get();
  if (finish_compaction_) {
    HEXZ_RETURN_IF_ERROR(WriteSuperblock(generation_, log_start_, first_seq_));
    HEXZ_RETURN_IF_ERROR(io::Fdatasync(mfd, mn));
  }
  HEXZ_ASSIGN_OR_RETURN(uint64_t msize, io::FileSize(mfd, mn));
  if (log_end_ < msize) {
    if (::ftruncate(mfd, static_cast<off_t>(log_end_)) != 0) {
      return Status::FromErrno(errno, "truncate the log tail of " + mn);
    }
    if (options_.durable) HEXZ_RETURN_IF_ERROR(io::Fdatasync(mfd, mn));
  }
  return Status::Ok();
}

// ---- Blocks ----

BlockState Overlay::State(uint64_t block) const {
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t v = map_->Get(block).value;
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

std::string Overlay::BlockDamage(uint64_t block, const Entry& e, uint64_t got) const {
  const uint32_t slot = e.value - kEntryFirstSlot;
  std::string by =
      e.rec == 0 ? std::string("the write since the last flush")
                 : "log record at offset " + Num(uint64_t{e.rec} * kSector) + " of " + names_.meta;
  return names_.data + ": block " + Num(block) + " (disk offset " + Num(block * kBlockSize) +
         ") is damaged: slot " + Num(slot) + " at offset " + Num(SlotOffset(slot)) +
         " has checksum " + Hex64(got) + ", but " + by + " recorded " + Hex64(e.sum);
}

Result<BlockState> Overlay::ReadBlock(uint64_t block, void* buf) const {
  if (block >= block_count_) {
    return Status::OutOfRange(names_.data + ": block " + Num(block) +
                              " is past the end of the disk");
  }
  Entry e;
  {
    std::lock_guard<std::mutex> lock(mu_);
    e = map_->Get(block);
  }
  if (e.value == kEntryBase) return BlockState::kBase;
  if (e.value == kEntryZero) return BlockState::kZero;
  if (buf != nullptr) {
    // The slot cannot be reused while we read it: that needs a write to this
    // block, which the caller serializes with this read.
    HEXZ_RETURN_IF_ERROR(io::PreadFull(data_fd_.get(), buf, kBlockSize,
                                       SlotOffset(e.value - kEntryFirstSlot), names_.data));
    uint64_t got = Sum(buf, kBlockSize);
    if (got != e.sum) return Status::Corruption(BlockDamage(block, e, got));
  }
  return BlockState::kData;
}

Result<std::vector<DamagedBlock>> Overlay::CheckBlocks(bool forget) {
  std::vector<std::pair<uint64_t, Entry>> stored;
  {
    std::lock_guard<std::mutex> lock(mu_);
    map_->ForEachChanged([&](uint64_t b, const Entry& e) {
      if (e.value >= kEntryFirstSlot) stored.emplace_back(b, e);
    });
  }
  std::vector<DamagedBlock> damaged;
  std::vector<uint8_t> buf(kBlockSize);
  for (const auto& [block, e] : stored) {
    HEXZ_RETURN_IF_ERROR(io::PreadFull(data_fd_.get(), buf.data(), kBlockSize,
                                       SlotOffset(e.value - kEntryFirstSlot), names_.data));
    uint64_t got = Sum(buf.data(), kBlockSize);
    if (got != e.sum) damaged.push_back({block, BlockDamage(block, e, got)});
  }
  if (forget && !damaged.empty()) {
    if (!options_.read_only) {
      return Status::Internal(names_.data + ": damaged blocks can only be dropped read-only");
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (const DamagedBlock& d : damaged) {
      map_->Set(d.block, Entry{});
      --data_blocks_;
    }
  }
  return damaged;
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
    return Status::NoSpace(names_.data + ": block " + Num(block) +
                           " is past the end of the disk (" + Num(disk_size_) + " bytes)");
  }
  return Sticky();
}

Status Overlay::WriteBlock(uint64_t block, const void* data) {
  HEXZ_RETURN_IF_ERROR(CheckWritable(block));
  const uint64_t sum = Sum(data, kBlockSize);
  std::shared_lock<Gate> gate(gate_);
  uint32_t slot;
  bool in_place = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t v = map_->Get(block).value;
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
  std::lock_guard<std::mutex> lock(mu_);
  if (in_place) {
    map_->Set(block, Entry{slot + kEntryFirstSlot, 0, sum});
    return Status::Ok();
  }
  uint32_t old = map_->Get(block).value;
  map_->Set(block, Entry{slot + kEntryFirstSlot, 0, sum});
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
  uint32_t old = map_->Get(block).value;
  if (old == kEntryZero) return Status::Ok();
  map_->Set(block, Entry{kEntryZero, 0, ZeroBlockSum()});
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

// Zeroes [from, to) of the meta file: the dead space between a checkpoint at
// the start of the log area and the log it replaces, so that nothing there
// can be mistaken for records (see CheckTail).
Status Overlay::ZeroMeta(uint64_t from, uint64_t to) {
  if (from >= to) return Status::Ok();
  const int mfd = meta_fd_.get();
  if (::fallocate(mfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(from),
                  static_cast<off_t>(to - from)) == 0) {
    return Status::Ok();
  }
  std::vector<uint8_t> zeros(std::min<uint64_t>(to - from, uint64_t{1} << 20), 0);
  for (uint64_t at = from; at < to;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), to - at));
    HEXZ_RETURN_IF_ERROR(io::PwriteFull(mfd, zeros.data(), n, at, names_.meta));
    at += n;
  }
  return Status::Ok();
}

Status Overlay::AppendRecord(uint16_t type, const std::vector<std::pair<uint32_t, Entry>>& batch,
                             uint64_t* record_at) {
  const uint64_t body_bytes = batch.size() * kEntryBytes;
  std::vector<uint8_t> rec(RoundUp(kRecordHeaderBytes + body_bytes, kSector), 0);
  uint8_t* h = rec.data();
  std::memcpy(h, kRecordMagic, 4);
  base::PutLe16(h + 4, type);
  const uint64_t gen = type == kRecordCheckpoint ? generation_ + 1 : generation_;
  base::PutLe64(h + 8, gen);
  base::PutLe64(h + 16, next_seq_);
  base::PutLe32(h + kRecordCountAt, static_cast<uint32_t>(batch.size()));
  for (size_t i = 0; i < batch.size(); ++i) {
    uint8_t* p = h + kRecordHeaderBytes + i * kEntryBytes;
    base::PutLe32(p, batch[i].first);
    base::PutLe32(p + 4, batch[i].second.value);
    base::PutLe64(p + 8, batch[i].second.sum);
  }
  base::PutLe64(h + kRecordBodyChecksumAt, Sum(h + kRecordHeaderBytes, body_bytes));
  base::PutLe64(h + kRecordHeaderChecksumAt, Sum(h, kRecordHeaderChecksumAt));

  const int mfd = meta_fd_.get();
  const std::string& mn = names_.meta;
  if (type == kRecordDelta) {
    HEXZ_RETURN_IF_ERROR(io::PwriteFull(mfd, rec.data(), rec.size(), log_end_, mn));
    if (options_.durable) HEXZ_RETURN_IF_ERROR(io::Fdatasync(mfd, mn));
    *record_at = log_end_;
    log_end_ += rec.size();
    ++next_seq_;
    ++records_;
    return Status::Ok();
  }
  // Checkpoint: below the current log when it fits, else after it.
  uint64_t target = RoundUp(log_end_, kCheckpointAlign);
  if (log_start_ != kLogBase && kLogBase + RoundUp(rec.size(), kCheckpointAlign) <= log_start_) {
    target = kLogBase;
  }
  HEXZ_RETURN_IF_ERROR(io::PwriteFull(mfd, rec.data(), rec.size(), target, mn));
  if (target == kLogBase) HEXZ_RETURN_IF_ERROR(ZeroMeta(target + rec.size(), log_start_));
  if (options_.durable) HEXZ_RETURN_IF_ERROR(io::Fdatasync(mfd, mn));
  HEXZ_RETURN_IF_ERROR(WriteSuperblock(gen, target, next_seq_));
  if (options_.durable) HEXZ_RETURN_IF_ERROR(io::Fdatasync(mfd, mn));
  generation_ = gen;
  log_start_ = target;
  first_seq_ = next_seq_;
  log_end_ = target + rec.size();
  ++next_seq_;
  records_ = 1;
  *record_at = target;
  if (target == kLogBase) {
    // The old log now lies after the new one: cut it off before the next
    // append, which would otherwise end next to the middle of an old record.
    if (::ftruncate(mfd, static_cast<off_t>(log_end_)) != 0) {
      return Status::FromErrno(errno, "truncate the old log of " + mn);
    }
    if (options_.durable) HEXZ_RETURN_IF_ERROR(io::Fdatasync(mfd, mn));
  }
  return Status::Ok();
}

Status Overlay::Flush() {
  if (options_.read_only) return Status::Ok();
  std::lock_guard<std::mutex> flush_lock(flush_mu_);
  HEXZ_RETURN_IF_ERROR(Sticky());
  std::vector<std::pair<uint32_t, Entry>> batch;
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
    uint64_t checkpoint_bytes = kRecordHeaderBytes + live * kEntryBytes;
    uint64_t log_bytes =
        log_end_ - log_start_ + kRecordHeaderBytes + dirty_blocks_.size() * kEntryBytes;
    checkpoint = log_bytes > std::max(options_.compact_min_bytes, 4 * checkpoint_bytes);
    for (uint32_t b : dirty_blocks_) {
      Entry e = map_->Get(b);
      if (e.value >= kEntryFirstSlot) slot_state_[e.value - kEntryFirstSlot] = kSlotCommitted;
      if (!checkpoint) batch.emplace_back(b, e);
    }
    if (checkpoint) {
      batch.reserve(live);
      map_->ForEachChanged(
          [&](uint64_t b, const Entry& e) { batch.emplace_back(static_cast<uint32_t>(b), e); });
    }
    dirty_blocks_.clear();
    release.swap(release_after_commit_);
  }
  Status st;
  uint64_t record_at = 0;
  if (options_.durable) st = io::Fdatasync(data_fd_.get(), names_.data);
  if (st.ok()) st = AppendRecord(checkpoint ? kRecordCheckpoint : kRecordDelta, batch, &record_at);
  if (!st.ok()) {
    SetSticky(st);
    return Sticky();
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t s : release) ReleaseSlotLocked(s);
  for (const auto& [b, e] : batch) {
    Entry now = map_->Get(b);
    if (now.value == e.value && now.sum == e.sum) {
      now.rec = static_cast<uint32_t>(record_at / kSector);
      map_->Set(b, now);
    }
  }
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
    if (tail != 0 && map_->Get(block_count_ - 1).value != kEntryBase) {
      s.changed_bytes -= kBlockSize - tail;
    }
  }
  {
    std::lock_guard<std::mutex> lock(flush_mu_);
    s.generation = generation_;
    s.records = records_;
  }
  auto d = io::FileSize(data_fd_.get(), names_.data);
  auto m = io::FileSize(meta_fd_.get(), names_.meta);
  s.data_file_bytes = d.ok() ? *d : 0;
  s.meta_file_bytes = m.ok() ? *m : 0;
  return s;
}

}  // namespace hexz::overlay
