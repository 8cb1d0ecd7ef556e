// The snapshot reader: parses and validates one file per chain level, links
// the chain, and serves reads. Each structure is decoded by its function in
// layout.cc; this file reads the bytes, keeps the order of FORMAT.md's
// "Reader obligations", and checks what spans structures (the tiling of the
// data area, dedup targets, the parent chain).
#include "common/format/snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "common/base/bytes.h"
#include "common/base/checked_math.h"
#include "common/base/endian.h"
#include "common/base/log.h"
#include "common/base/path.h"
#include "common/cache/block_cache.h"
#include "common/io/file.h"
#include "common/io/source.h"

namespace hexz::format {

namespace L = layout;
using base::RangeWithin;
using L::AtOffset;

const char* StreamName(StreamId id) { return id == StreamId::kDisk ? "disk" : "memory"; }

std::string SnapshotId::ToHex() const { return base::HexEncode(bytes.data(), bytes.size()); }

Result<SnapshotId> SnapshotId::FromHex(std::string_view hex) {
  SnapshotId id;
  if (!base::HexDecode(hex, id.bytes.data(), id.bytes.size()))
    return Status::InvalidArgument("snapshot id must be 32 hex digits");
  return id;
}

namespace {

// An error of a structure decoder, prefixed with the file's name.
template <typename T>
Result<T> Named(Result<T> r, const std::string& name) {
  if (!r.ok()) return r.status().WithContext(name);
  return r;
}

struct StreamIndex {
  bool present = false;
  uint64_t size = 0;
  std::vector<L::Entry> entries;  // exactly one per block: FORMAT.md's memory promise
  StreamStats stats;
};

// Reads the index front to back in pieces and checksums it on the way, so
// that opening a file holds the decoded entries and one piece of raw index,
// never the whole raw index besides them.
class IndexReader {
 public:
  IndexReader(const io::Source& src, const std::string& name, const L::Footer& ft)
      : src_(src), name_(name), ft_(ft), pos_(ft.index_offset) {}

  // The next n bytes (n at most kPiece, or the parent path); valid until the
  // next call. The caller never asks beyond the index: DecodeIndexHeader
  // checked that the index length matches its contents.
  Result<const uint8_t*> Next(size_t n) {
    HEXZ_RETURN_IF_ERROR(io_error_);
    buf_.resize(std::max<size_t>(n, 1));  // a valid pointer even for n == 0
    io_error_ = src_.ReadAt(buf_.data(), n, pos_);
    HEXZ_RETURN_IF_ERROR(io_error_);
    hasher_.Update(buf_.data(), n);
    pos_ += n;
    return static_cast<const uint8_t*>(buf_.data());
  }

  // Reads and checksums the rest of the index (all of it when parsing
  // stopped early), then compares the checksum with the footer's.
  Status Finish() {
    uint64_t end = ft_.index_offset + ft_.index_length;
    while (io_error_.ok() && pos_ < end) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kPiece, end - pos_));
      (void)Next(n);
    }
    HEXZ_RETURN_IF_ERROR(io_error_);
    if (hasher_.Digest() != ft_.index_checksum)
      return Status::Corruption(name_ + ": index checksum mismatch" + AtOffset(ft_.index_offset));
    return Status::Ok();
  }

  // Entries per piece: a multiple of the entry size near 1 MiB.
  static constexpr size_t kPiece = (1u << 20) / L::kEntrySize * L::kEntrySize;

 private:
  const io::Source& src_;
  const std::string& name_;
  const L::Footer& ft_;
  uint64_t pos_;
  L::Hasher hasher_;
  std::vector<uint8_t> buf_;
  Status io_error_;
};

// The last block of one snapshot file that a part was read from, decoded:
// a sequential reader whose requests are smaller than the blocks (128 KiB
// FUSE reads of 256 KiB blocks) asks for the rest of it next, and without a
// cache would decode it again. Keep swaps buffers with the caller, so
// keeping costs no copy. Thread safety: internally locked.
class LastBlock {
 public:
  // Copies [from, from + len) of the block into dst when it is the one kept.
  bool Copy(StreamId stream, uint64_t block, uint32_t from, uint32_t len, void* dst) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!valid_ || stream_ != stream || block_ != block) return false;
    std::memcpy(dst, bytes_.data() + from, len);
    return true;
  }
  // Keeps *bytes (the whole decoded block) and gives back the old buffer.
  void Keep(StreamId stream, uint64_t block, std::vector<uint8_t>* bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_.swap(*bytes);
    stream_ = stream;
    block_ = block;
    valid_ = true;
  }

 private:
  std::mutex mu_;
  bool valid_ = false;  // guarded by mu_, like the rest
  StreamId stream_ = StreamId::kDisk;
  uint64_t block_ = 0;
  std::vector<uint8_t> bytes_;
};

class SnapshotImpl final : public Snapshot {
 public:
  // Parses and validates one file (no parent linking).
  static Result<std::shared_ptr<SnapshotImpl>> Parse(std::unique_ptr<io::Source> src,
                                                     const OpenOptions& options);
  // Links `parent` under this snapshot, checking id, block size and ranges.
  Status Link(std::shared_ptr<const SnapshotImpl> parent);

  const SnapshotId& id() const override { return id_; }
  const std::string& path() const override { return name_; }
  uint32_t format_version() const override { return L::kVersion; }
  uint32_t block_size() const override { return block_size_; }
  bool HasStream(StreamId s) const override { return Stream(s).present; }
  uint64_t StreamSize(StreamId s) const override { return Stream(s).size; }
  StreamStats Stats(StreamId s) const override { return Stream(s).stats; }
  std::shared_ptr<const Snapshot> parent() const override { return parent_; }
  const std::string& parent_path() const override { return parent_path_; }
  const Metadata& metadata() const override { return metadata_; }
  bool thin() const { return thin_; }
  const SnapshotId& parent_id() const override { return parent_id_; }

  Result<std::vector<UniqueFd>> DupChainFds() const override;
  std::vector<std::string> ChainNames() const override;
  Status Read(StreamId stream, uint64_t offset, void* buf, size_t len) const override;
  uint64_t BlockCount(StreamId s) const override { return Stream(s).entries.size(); }
  uint32_t BlockLength(StreamId stream, uint64_t block) const override;
  Result<BlockEntry> GetBlockEntry(StreamId stream, uint64_t block) const override;
  Result<StoredBlock> ReadStoredBlock(StreamId stream, uint64_t block) const override;
  Status ReadBlock(StreamId stream, uint64_t block, void* dst) const override;
  Status Extents(StreamId stream, uint64_t offset, uint64_t len,
                 std::vector<io::Extent>* out) const override;
  Status Verify() const override;

 private:
  // ---- parsing, in FORMAT.md's order ----
  Status ParseFile();
  // Obligations 1-5: tells "not a snapshot" from damage, checks the header.
  Result<L::Header> ParseHeader(const uint8_t* head, size_t head_len, bool footer_intact,
                                uint64_t file_size) const;
  // Obligations 7-8 over the whole index (the footer was decoded: 6).
  Status ParseIndex(const L::Header& h, const L::Footer& ft);
  Status ParseIndexHeader(const L::Header& h, const L::Footer& ft, IndexReader* in,
                          L::IndexHeader* ih);
  Status ParseEntries(const L::IndexHeader& ih, const L::Footer& ft, IndexReader* in);
  // Counts entry e in *stats and checks that a stored e starts where the
  // previous one ended (*next_data) and ends before data_end.
  static const char* Place(const L::Entry& e, uint64_t data_end, uint64_t* next_data,
                           StreamStats* stats);
  Status CheckDedups(uint64_t entries_at) const;

  // ---- reading; every call goes down the chain only ----
  const StreamIndex& Stream(StreamId s) const { return streams_[static_cast<int>(s)]; }
  Status CheckBlock(StreamId stream, uint64_t block) const;
  std::string BlockName(StreamId stream, uint64_t block) const {
    return name_ + ": " + StreamName(stream) + " block " + std::to_string(block);
  }
  // Bytes [from, from + len) of a block, from wherever the block lives.
  Status ReadBlockPart(StreamId stream, uint64_t block, uint32_t from, uint32_t len,
                       void* dst) const;
  // The whole decoded block of a stored or dedup entry e of this file.
  Status ReadStored(StreamId stream, uint64_t block, const L::Entry& e, void* dst) const;
  // Reads the stored bytes of entry e into *buf and checks the checksum.
  Status ReadChecked(StreamId stream, uint64_t block, const L::Entry& e, void* buf,
                     size_t len) const;
  Status ReadStoredBytes(StreamId stream, uint64_t block, const L::Entry& e,
                         std::vector<uint8_t>* buf) const;
  Status Undecodable(StreamId stream, uint64_t block, const L::Entry& e, const Status& why) const {
    return Status::Corruption(BlockName(stream, block) + " " + why.message() + AtOffset(e.offset));
  }

  std::unique_ptr<io::Source> src_;
  std::string name_;
  SnapshotId id_;
  uint32_t block_size_ = 0;
  uint32_t block_shift_ = 0;
  bool thin_ = false;
  std::string parent_path_;
  Metadata metadata_;
  SnapshotId parent_id_;
  std::shared_ptr<const SnapshotImpl> parent_;
  StreamIndex streams_[kStreamCount];
  cache::BlockCache* cache_ = nullptr;
  mutable LastBlock last_part_;  // see LastBlock
};

Result<std::shared_ptr<SnapshotImpl>> SnapshotImpl::Parse(std::unique_ptr<io::Source> src,
                                                          const OpenOptions& options) {
  auto snap = std::make_shared<SnapshotImpl>();
  snap->name_ = src->name();
  snap->src_ = std::move(src);
  snap->cache_ = options.cache;
  HEXZ_RETURN_IF_ERROR(snap->ParseFile());
  return snap;
}

Status SnapshotImpl::ParseFile() {
  const std::string& n = name_;
  const uint64_t file_size = src_->size();

  // The footer is read first too: an intact footer behind a damaged header
  // magic is a damaged snapshot, not "not a snapshot".
  uint8_t head[L::kHeaderSize] = {};
  size_t head_len = static_cast<size_t>(std::min<uint64_t>(file_size, L::kHeaderSize));
  HEXZ_RETURN_IF_ERROR(src_->ReadAt(head, head_len, 0));
  uint8_t foot[L::kFooterSize] = {};
  bool footer_intact = false;
  if (file_size >= L::kFooterSize) {
    HEXZ_RETURN_IF_ERROR(src_->ReadAt(foot, L::kFooterSize, file_size - L::kFooterSize));
    footer_intact = L::FooterMagicOk(foot) && L::FooterChecksumOk(foot);
  }
  HEXZ_ASSIGN_OR_RETURN(L::Header h, ParseHeader(head, head_len, footer_intact, file_size));
  block_shift_ = h.block_size_log2;
  block_size_ = h.block_size();
  id_.bytes = h.id;
  thin_ = h.thin();
  HEXZ_ASSIGN_OR_RETURN(L::Footer ft, Named(L::DecodeFooter(foot, file_size, h), n));
  return ParseIndex(h, ft);
}

Result<L::Header> SnapshotImpl::ParseHeader(const uint8_t* head, size_t head_len,
                                            bool footer_intact, uint64_t file_size) const {
  const std::string& n = name_;
  bool magic_ok =
      head_len >= L::kHeaderMagic.size() &&
      std::memcmp(head + L::kHeaderMagicAt, L::kHeaderMagic.data(), L::kHeaderMagic.size()) == 0;
  if (!magic_ok) {
    if (footer_intact) return Status::Corruption(n + ": header magic damaged" + AtOffset(0));
    if (file_size == 0) return Status::InvalidArgument(n + ": not a hexz snapshot (empty file)");
    return Status::InvalidArgument(n + ": not a hexz snapshot (no hexz magic at offset 0)");
  }
  if (file_size < L::kHeaderSize + L::kFooterSize) {
    return Status::Corruption(n + ": truncated file (" + std::to_string(file_size) +
                              " bytes, too short for header and footer)");
  }
  uint32_t header_size = base::GetLe32(head + L::kHeaderSizeAt);
  if (header_size == L::kHeaderSize) {
    if (!L::HeaderChecksumOk(head, L::kHeaderSize))
      return Status::Corruption(n + ": header checksum mismatch" + AtOffset(0));
  } else if (header_size < L::kHeaderSize || header_size > L::kMaxHeaderSize ||
             header_size > file_size - L::kFooterSize || header_size % 8 != 0) {
    return Status::Corruption(n + ": header size " + std::to_string(header_size) + " is invalid" +
                              AtOffset(L::kHeaderSizeAt));
  } else {
    // A later version may have a longer header; its checksum is still in the
    // last 8 bytes of it, so "newer" can be told from "damaged".
    std::vector<uint8_t> big(header_size);
    HEXZ_RETURN_IF_ERROR(src_->ReadAt(big.data(), header_size, 0));
    if (!L::HeaderChecksumOk(big.data(), header_size))
      return Status::Corruption(n + ": header checksum mismatch" + AtOffset(0));
  }
  return Named(L::DecodeHeader(head), n);
}

Status SnapshotImpl::ParseIndex(const L::Header& h, const L::Footer& ft) {
  IndexReader in(*src_, name_, ft);
  L::IndexHeader ih;
  Status structure = ParseIndexHeader(h, ft, &in, &ih);
  if (structure.ok()) structure = ParseEntries(ih, ft, &in);
  // A structure error waits for the checksum of the whole index: damage is
  // reported as a checksum mismatch, not as whatever it happens to look like.
  HEXZ_RETURN_IF_ERROR(in.Finish());
  HEXZ_RETURN_IF_ERROR(structure);
  HEXZ_RETURN_IF_ERROR(CheckDedups(ft.index_offset + L::kIndexParentPathAt +
                                   L::PaddedPathLength(ih.parent_path_length)));
  if (ih.metadata_length != 0) {
    // Small (at most 1 MiB) and checked once, here: its own checksum names it.
    const uint64_t at = ft.index_offset - ih.metadata_length;
    std::vector<uint8_t> section(ih.metadata_length);
    HEXZ_RETURN_IF_ERROR(src_->ReadAt(section.data(), section.size(), at));
    HEXZ_ASSIGN_OR_RETURN(metadata_,
                          Named(L::DecodeMetadata(section.data(), section.size(), at), name_));
  }
  return Status::Ok();
}

Status SnapshotImpl::ParseIndexHeader(const L::Header& h, const L::Footer& ft, IndexReader* in,
                                      L::IndexHeader* ih) {
  HEXZ_ASSIGN_OR_RETURN(const uint8_t* p, in->Next(L::kIndexHeaderSize));
  HEXZ_ASSIGN_OR_RETURN(*ih, Named(L::DecodeIndexHeader(p, h, ft), name_));
  HEXZ_ASSIGN_OR_RETURN(p, in->Next(L::PaddedPathLength(ih->parent_path_length)));
  HEXZ_ASSIGN_OR_RETURN(parent_path_, Named(L::DecodeParentPath(p, *ih, ft), name_));
  parent_id_.bytes = ih->parent_id;
  for (int s = 0; s < kStreamCount; ++s) {
    StreamIndex& si = streams_[s];
    si.present = s == 0 || h.has_memory();
    si.size = ih->stream_size[s];
    si.stats.present = si.present;
    si.stats.logical_size = si.size;
    si.stats.block_count = ih->entry_count[s];
  }
  return Status::Ok();
}

Status SnapshotImpl::ParseEntries(const L::IndexHeader& ih, const L::Footer& ft, IndexReader* in) {
  uint64_t next_data = L::kHeaderSize;  // stored blocks tile [header, metadata or index)
  const uint64_t data_end = ft.index_offset - ih.metadata_length;
  uint64_t entry_at =
      ft.index_offset + L::kIndexParentPathAt + L::PaddedPathLength(ih.parent_path_length);
  constexpr uint64_t kPerPiece = IndexReader::kPiece / L::kEntrySize;
  for (int s = 0; s < kStreamCount; ++s) {
    StreamIndex& si = streams_[s];
    si.entries.resize(ih.entry_count[s]);
    for (uint64_t b = 0; b < si.entries.size();) {
      uint64_t batch = std::min<uint64_t>(kPerPiece, si.entries.size() - b);
      HEXZ_ASSIGN_OR_RETURN(const uint8_t* p, in->Next(batch * L::kEntrySize));
      for (uint64_t end = b + batch; b < end; ++b, p += L::kEntrySize, entry_at += L::kEntrySize) {
        L::Entry& e = si.entries[b];
        uint64_t length = std::min<uint64_t>(block_size_, si.size - (b << block_shift_));
        const char* why = L::DecodeEntry(p, length, thin_, &e);
        if (why == nullptr) why = Place(e, data_end, &next_data, &si.stats);
        if (why != nullptr) {
          return Status::Corruption(name_ + ": index entry of " +
                                    StreamName(static_cast<StreamId>(s)) + " block " +
                                    std::to_string(b) + " " + why + AtOffset(entry_at));
        }
      }
    }
  }
  if (next_data != data_end) {
    return Status::Corruption(name_ + ": stored blocks do not fill the data area (gap" +
                              AtOffset(next_data) + ")");
  }
  return Status::Ok();
}

const char* SnapshotImpl::Place(const L::Entry& e, uint64_t data_end, uint64_t* next_data,
                                StreamStats* stats) {
  switch (e.kind) {
    case L::Kind::kZero:
      ++stats->zero_blocks;
      break;
    case L::Kind::kParent:
      ++stats->parent_blocks;
      break;
    case L::Kind::kDedup:
      ++stats->dedup_blocks;
      break;
    case L::Kind::kStored:
      if (e.offset != *next_data) return "is not where the previous block ended";
      *next_data += e.stored_length;
      if (*next_data > data_end) return "runs past the data area";
      stats->stored_bytes += e.stored_length;
      stats->codecs_used |= 1u << static_cast<unsigned>(e.codec);
      break;
  }
  return nullptr;
}

Status SnapshotImpl::CheckDedups(uint64_t entries_at) const {
  const uint64_t disk_count = streams_[0].entries.size();
  uint64_t stored_count = 0, dedup_count = 0;
  for (const StreamIndex& si : streams_) {
    dedup_count += si.stats.dedup_blocks;
    stored_count += si.stats.block_count - si.stats.zero_blocks - si.stats.parent_blocks -
                    si.stats.dedup_blocks;
  }
  if (dedup_count == 0) return Status::Ok();
  // Entry numbers across both streams fit in 32 bits (the index is at most
  // 1 GiB). Stored entries in index order lie at increasing offsets (they
  // tile the data area), so their numbers are sorted by offset: 4 bytes per
  // stored block, only while a file with dedup entries is opened.
  static_assert(L::kMaxIndexSize / L::kEntrySize <= UINT32_MAX);
  auto entry = [&](uint64_t i) -> const L::Entry& {
    return i < disk_count ? streams_[0].entries[i] : streams_[1].entries[i - disk_count];
  };
  const uint64_t total = disk_count + streams_[1].entries.size();
  std::vector<uint32_t> stored;
  stored.reserve(stored_count);
  for (uint64_t i = 0; i < total; ++i) {
    if (entry(i).kind == L::Kind::kStored) stored.push_back(static_cast<uint32_t>(i));
  }
  for (uint64_t i = 0; i < total; ++i) {
    const L::Entry& e = entry(i);
    if (e.kind != L::Kind::kDedup) continue;
    auto it = std::lower_bound(stored.begin(), stored.end(), e.offset,
                               [&](uint32_t k, uint64_t off) { return entry(k).offset < off; });
    if (it == stored.end() || entry(*it).offset != e.offset ||
        entry(*it).stored_length != e.stored_length || entry(*it).codec != e.codec ||
        entry(*it).checksum != e.checksum) {
      return Status::Corruption(name_ + ": dedup index entry does not match a stored block" +
                                AtOffset(entries_at + i * L::kEntrySize));
    }
  }
  return Status::Ok();
}

Status SnapshotImpl::Link(std::shared_ptr<const SnapshotImpl> parent) {
  if (parent->id_ != parent_id_) {
    return Status::InvalidArgument(name_ + ": parent " + parent->name_ + " has id " +
                                   parent->id_.ToHex() + " but " + name_ + " expects " +
                                   parent_id_.ToHex() + " (the parent was replaced or rewritten)");
  }
  if (parent->block_size_ != block_size_) {
    return Status::InvalidArgument(name_ + ": parent " + parent->name_ + " has block size " +
                                   std::to_string(parent->block_size_) + " but " + name_ +
                                   " uses " + std::to_string(block_size_));
  }
  for (int s = 0; s < kStreamCount; ++s) {
    const StreamIndex& si = streams_[s];
    for (uint64_t b = si.entries.size(); b-- > 0;) {
      if (si.entries[b].kind != L::Kind::kParent) continue;
      uint64_t end = std::min<uint64_t>((b + 1) << block_shift_, si.size);
      const StreamIndex& pi = parent->streams_[s];
      if (!pi.present || end > pi.size) {
        return Status::Corruption(name_ + ": " + StreamName(static_cast<StreamId>(s)) + " block " +
                                  std::to_string(b) + " refers to parent " + parent->name_ +
                                  " beyond the end of its stream");
      }
      break;  // the last parent block is the furthest
    }
  }
  parent_ = std::move(parent);
  return Status::Ok();
}

Result<std::vector<UniqueFd>> SnapshotImpl::DupChainFds() const {
  std::vector<UniqueFd> out;
  for (const SnapshotImpl* s = this; s != nullptr; s = s->parent_.get()) {
    if (s->src_->fd() < 0) {
      return Status::Unsupported(s->name_ +
                                 ": is a remote object; only a local file can be handed on");
    }
    int fd = fcntl(s->src_->fd(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return Status::FromErrno(errno, s->name_ + ": dup");
    out.emplace_back(fd);
  }
  return out;
}

std::vector<std::string> SnapshotImpl::ChainNames() const {
  std::vector<std::string> out;
  for (const SnapshotImpl* s = this; s != nullptr; s = s->parent_.get()) out.push_back(s->name_);
  return out;
}

uint32_t SnapshotImpl::BlockLength(StreamId stream, uint64_t block) const {
  const StreamIndex& si = Stream(stream);
  if (block >= si.entries.size()) return 0;
  return static_cast<uint32_t>(std::min<uint64_t>(block_size_, si.size - (block << block_shift_)));
}

Status SnapshotImpl::CheckBlock(StreamId stream, uint64_t block) const {
  if (static_cast<int>(stream) >= kStreamCount)
    return Status::InvalidArgument(name_ + ": no such stream");
  const StreamIndex& si = Stream(stream);
  if (!si.present) return Status::NotFound(name_ + ": has no " + StreamName(stream) + " stream");
  if (block >= si.entries.size())
    return Status::OutOfRange(BlockName(stream, block) + " is beyond the end of the stream");
  return Status::Ok();
}

Result<BlockEntry> SnapshotImpl::GetBlockEntry(StreamId stream, uint64_t block) const {
  HEXZ_RETURN_IF_ERROR(CheckBlock(stream, block));
  return Stream(stream).entries[block];
}

Status SnapshotImpl::ReadStoredBytes(StreamId stream, uint64_t block, const L::Entry& e,
                                     std::vector<uint8_t>* buf) const {
  buf->resize(e.stored_length);
  return ReadChecked(stream, block, e, buf->data(), e.stored_length);
}

// Reads a block's stored bytes and checks them. On a mismatch a source with
// a local copy (a remote object read through a disk cache) is read once more
// past it, so damage that copy took from a transient fault costs one refetch
// rather than every later read of the block.
Status SnapshotImpl::ReadChecked(StreamId stream, uint64_t block, const L::Entry& e, void* buf,
                                 size_t len) const {
  HEXZ_RETURN_IF_ERROR(src_->ReadAt(buf, len, e.offset));
  if (L::Checksum(buf, len) == e.checksum) return Status::Ok();
  std::string bad = BlockName(stream, block) + " checksum mismatch" + AtOffset(e.offset);
  if (!src_->has_fresh_read()) return Status::Corruption(bad);
  HEXZ_LOG_WARN("%s; reading it again past the disk cache", bad.c_str());
  HEXZ_RETURN_IF_ERROR(src_->ReadFreshAt(buf, len, e.offset));
  if (L::Checksum(buf, len) == e.checksum) return Status::Ok();
  return Status::Corruption(bad + " (also when read again past the disk cache)");
}

Result<StoredBlock> SnapshotImpl::ReadStoredBlock(StreamId stream, uint64_t block) const {
  HEXZ_RETURN_IF_ERROR(CheckBlock(stream, block));
  const L::Entry& e = Stream(stream).entries[block];
  StoredBlock out;
  out.logical_length = BlockLength(stream, block);
  if (e.kind == L::Kind::kZero || e.kind == L::Kind::kParent) {
    out.kind = e.kind;
    return out;
  }
  out.kind = BlockKind::kStored;
  out.codec = e.codec;
  out.checksum = e.checksum;
  HEXZ_RETURN_IF_ERROR(ReadStoredBytes(stream, block, e, &out.bytes));
  return out;
}

Status SnapshotImpl::ReadBlock(StreamId stream, uint64_t block, void* dst) const {
  HEXZ_RETURN_IF_ERROR(CheckBlock(stream, block));
  return ReadBlockPart(stream, block, 0, BlockLength(stream, block), dst);
}

Status SnapshotImpl::ReadBlockPart(StreamId stream, uint64_t block, uint32_t from, uint32_t len,
                                   void* dst) const {
  const L::Entry& e = Stream(stream).entries[block];
  switch (e.kind) {
    case L::Kind::kZero:
      std::memset(dst, 0, len);
      return Status::Ok();
    case L::Kind::kParent:
      if (parent_ == nullptr) {
        return Status::Unavailable(BlockName(stream, block) + " is in parent " + parent_path_ +
                                   ", which was not opened");
      }
      // Link checked that the parent's stream covers this block's range, so
      // the same part of the parent's block exists (the parent's block is
      // longer when this stream ends inside it).
      return parent_->ReadBlockPart(stream, block, from, len, dst);
    case L::Kind::kStored:
    case L::Kind::kDedup:
      break;
  }
  uint32_t blen = BlockLength(stream, block);
  if (from == 0 && len == blen) return ReadStored(stream, block, e, dst);
  if (last_part_.Copy(stream, block, from, len, dst)) return Status::Ok();
  // ReadStored never comes back here, so this thread's buffer is free.
  thread_local std::vector<uint8_t> whole;
  whole.resize(blen);
  HEXZ_RETURN_IF_ERROR(ReadStored(stream, block, e, whole.data()));
  std::memcpy(dst, whole.data() + from, len);
  last_part_.Keep(stream, block, &whole);
  return Status::Ok();
}

Status SnapshotImpl::ReadStored(StreamId stream, uint64_t block, const L::Entry& e,
                                void* dst) const {
  uint32_t blen = BlockLength(stream, block);
  cache::BlockKey key;
  if (cache_ != nullptr) {
    key.snapshot_id = id_.bytes;
    key.stream = static_cast<uint32_t>(stream);
    key.block = block;
    if (cache_->Lookup(key, dst, blen)) return Status::Ok();
  }
  if (e.codec == Codec::kRaw) {
    Status st = ReadChecked(stream, block, e, dst, blen);
    if (!st.ok()) {
      std::memset(dst, 0, blen);
      return st;
    }
  } else {
    thread_local std::vector<uint8_t> stored;
    HEXZ_RETURN_IF_ERROR(ReadStoredBytes(stream, block, e, &stored));
    Status st = DecompressBlock(e.codec, stored.data(), stored.size(), dst, blen);
    if (!st.ok()) {
      std::memset(dst, 0, blen);
      return Undecodable(stream, block, e, st);
    }
  }
  if (cache_ != nullptr) cache_->Insert(key, dst, blen);
  return Status::Ok();
}

Status SnapshotImpl::Read(StreamId stream, uint64_t offset, void* buf, size_t len) const {
  if (static_cast<int>(stream) >= kStreamCount)
    return Status::InvalidArgument(name_ + ": no such stream");
  const StreamIndex& si = Stream(stream);
  if (!si.present) return Status::NotFound(name_ + ": has no " + StreamName(stream) + " stream");
  if (!RangeWithin<uint64_t>(offset, len, si.size)) {
    return Status::OutOfRange(name_ + ": read of " + std::to_string(len) + " bytes at " +
                              std::to_string(offset) + " is beyond the end of the " +
                              StreamName(stream) + " stream (" + std::to_string(si.size) +
                              " bytes)");
  }
  auto* out = static_cast<uint8_t*>(buf);
  const uint64_t end = offset + len;
  for (uint64_t pos = offset; pos < end;) {
    uint64_t b = pos >> block_shift_;
    uint64_t bstart = b << block_shift_;
    uint64_t to = std::min<uint64_t>(bstart + BlockLength(stream, b), end);
    HEXZ_RETURN_IF_ERROR(ReadBlockPart(stream, b, static_cast<uint32_t>(pos - bstart),
                                       static_cast<uint32_t>(to - pos), out + (pos - offset)));
    pos = to;
  }
  return Status::Ok();
}

Status SnapshotImpl::Extents(StreamId stream, uint64_t offset, uint64_t len,
                             std::vector<io::Extent>* out) const {
  if (static_cast<int>(stream) >= kStreamCount)
    return Status::InvalidArgument(name_ + ": no such stream");
  if (!Stream(stream).present)
    return Status::NotFound(name_ + ": has no " + StreamName(stream) + " stream");
  const StreamIndex& si = Stream(stream);
  if (len == 0 && offset <= si.size) return Status::Ok();
  if (!RangeWithin(offset, len, si.size))
    return Status::OutOfRange(name_ + ": extents request beyond the end of the stream");
  auto add = [out](uint64_t off, uint64_t n, bool zero) {
    if (!out->empty() && out->back().zero == zero &&
        out->back().offset + out->back().length == off) {
      out->back().length += n;
    } else {
      out->push_back(io::Extent{off, n, zero, zero});
    }
  };
  // Describe at most this many blocks per call: callers only need the first
  // byte covered, and an NBD request can span a huge range.
  constexpr uint64_t kMaxBlocks = 1u << 16;
  uint64_t end = offset + len;
  uint64_t b = offset >> block_shift_;
  for (uint64_t scanned = 0; offset < end && scanned < kMaxBlocks; ++scanned, ++b) {
    uint64_t bend = std::min<uint64_t>((b + 1) << block_shift_, end);
    uint64_t n = bend - offset;
    switch (si.entries[b].kind) {
      case L::Kind::kZero:
        add(offset, n, true);
        break;
      case L::Kind::kParent: {
        if (parent_ == nullptr) {
          add(offset, n, false);
          break;
        }
        std::vector<io::Extent> sub;
        HEXZ_RETURN_IF_ERROR(parent_->Extents(stream, offset, n, &sub));
        uint64_t covered = offset;
        for (const io::Extent& x : sub) {
          uint64_t xend = std::min(x.offset + x.length, bend);
          if (x.offset != covered || xend <= covered) break;
          add(covered, xend - covered, x.zero);
          covered = xend;
        }
        if (covered < bend) add(covered, bend - covered, false);
        break;
      }
      default:
        add(offset, n, false);
        break;
    }
    offset = bend;
  }
  return Status::Ok();
}

Status SnapshotImpl::Verify() const {
  std::vector<uint8_t> stored;
  std::vector<uint8_t> plain(block_size_);
  for (int s = 0; s < kStreamCount; ++s) {
    StreamId sid = static_cast<StreamId>(s);
    const StreamIndex& si = streams_[s];
    for (uint64_t b = 0; b < si.entries.size(); ++b) {
      const L::Entry& e = si.entries[b];
      if (e.kind != L::Kind::kStored) continue;
      HEXZ_RETURN_IF_ERROR(ReadStoredBytes(sid, b, e, &stored));
      Status st =
          DecompressBlock(e.codec, stored.data(), stored.size(), plain.data(), BlockLength(sid, b));
      if (!st.ok()) return Undecodable(sid, b, e, st);
    }
  }
  if (parent_ != nullptr) return parent_->Verify();
  return Status::Ok();
}

Result<std::shared_ptr<Snapshot>> LinkChain(std::vector<std::shared_ptr<SnapshotImpl>> chain) {
  for (size_t i = chain.size() - 1; i-- > 0;) HEXZ_RETURN_IF_ERROR(chain[i]->Link(chain[i + 1]));
  return std::shared_ptr<Snapshot>(chain.front());
}

Status CheckDepth(const SnapshotImpl& child, size_t depth, const OpenOptions& options) {
  uint32_t limit = std::min(options.max_chain_depth, L::kMaxChainDepth);
  if (depth > limit) {
    return Status::InvalidArgument(child.path() + ": parent chain too deep (more than " +
                                   std::to_string(limit) + " parents)");
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<Snapshot>> Snapshot::Open(const std::string& path,
                                                 const OpenOptions& options) {
  const io::SourceOpener& opener = options.opener ? *options.opener : io::LocalOpener();
  std::vector<std::shared_ptr<SnapshotImpl>> chain;
  std::set<std::string> seen;
  std::string current = path;
  while (true) {
    auto src = opener.Open(current);
    // A parent that could not be opened is named with its child; one that
    // opened but is no snapshot at all (a directory, a FIFO: kInvalidArgument,
    // the message names it) is reported as a parse error is.
    if (!src.ok()) {
      if (chain.empty() || src.status().code() == base::Code::kInvalidArgument) return src.status();
      const SnapshotImpl& child = *chain.back();
      std::string what = child.path() + ": parent " + child.parent_path() +
                         (current != child.parent_path() ? " (" + current + ")" : "");
      if (src.status().code() == base::Code::kNotFound) {
        return Status::NotFound(what + ": not found; a thin snapshot needs its parent next to it");
      }
      return src.status().WithContext(what);
    }
    if (!seen.insert((*src)->identity()).second) {
      return Status::InvalidArgument(chain.back()->path() + ": parent chain loops: " + current +
                                     " is already part of the chain");
    }
    HEXZ_ASSIGN_OR_RETURN(auto snap, SnapshotImpl::Parse(std::move(*src), options));
    chain.push_back(snap);
    if (!snap->thin() || options.skip_parents) break;
    HEXZ_RETURN_IF_ERROR(CheckDepth(*chain.front(), chain.size(), options));
    HEXZ_ASSIGN_OR_RETURN(current, opener.ResolveParent(current, snap->parent_path()));
  }
  return LinkChain(std::move(chain));
}

Result<std::shared_ptr<Snapshot>> Snapshot::OpenFds(std::vector<UniqueFd> fds,
                                                    std::vector<std::string> names,
                                                    const OpenOptions& options) {
  if (fds.empty() || fds.size() != names.size())
    return Status::InvalidArgument("snapshot chain: descriptors and names do not match");
  std::vector<std::unique_ptr<io::Source>> sources;
  for (size_t i = 0; i < fds.size(); ++i) {
    HEXZ_ASSIGN_OR_RETURN(auto src, io::FileSource(std::move(fds[i]), names[i]));
    sources.push_back(std::move(src));
  }
  return OpenSources(std::move(sources), options);
}

Result<std::shared_ptr<Snapshot>> Snapshot::OpenSources(
    std::vector<std::unique_ptr<io::Source>> sources, const OpenOptions& options) {
  if (sources.empty()) return Status::InvalidArgument("snapshot chain: no files");
  std::vector<std::shared_ptr<SnapshotImpl>> chain;
  std::set<std::string> seen;
  const std::string top = sources[0]->name();
  for (size_t i = 0; i < sources.size(); ++i) {
    const std::string name = sources[i]->name();
    if (!seen.insert(sources[i]->identity()).second) {
      return Status::InvalidArgument(top + ": parent chain loops: " + name +
                                     " is already part of the chain");
    }
    HEXZ_ASSIGN_OR_RETURN(auto snap, SnapshotImpl::Parse(std::move(sources[i]), options));
    chain.push_back(snap);
    if (snap->thin()) {
      HEXZ_RETURN_IF_ERROR(CheckDepth(*chain.front(), chain.size(), options));
      if (i + 1 == sources.size())
        return Status::NotFound(name + ": parent " + snap->parent_path() + " was not provided");
    } else if (i + 1 != sources.size()) {
      return Status::InvalidArgument(name + ": has no parent, but more files follow it");
    }
  }
  return LinkChain(std::move(chain));
}

namespace {

class SnapshotVolume final : public io::Volume {
 public:
  SnapshotVolume(std::shared_ptr<const Snapshot> snap, StreamId stream)
      : snap_(std::move(snap)), stream_(stream) {}
  uint64_t Size() const override { return snap_->StreamSize(stream_); }
  uint32_t BlockSize() const override { return snap_->block_size(); }
  Status Read(uint64_t offset, void* buf, size_t len) override {
    return snap_->Read(stream_, offset, buf, len);
  }
  Status Extents(uint64_t offset, uint64_t len, std::vector<io::Extent>* out) override {
    return snap_->Extents(stream_, offset, len, out);
  }

 private:
  std::shared_ptr<const Snapshot> snap_;
  StreamId stream_;
};

}  // namespace

std::unique_ptr<io::Volume> Snapshot::StreamVolume(std::shared_ptr<const Snapshot> snapshot,
                                                   StreamId stream) {
  return std::make_unique<SnapshotVolume>(std::move(snapshot), stream);
}

}  // namespace hexz::format
