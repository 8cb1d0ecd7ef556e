// The snapshot reader: parses and validates one file per chain level, links
// the chain, and serves reads. See FORMAT.md for every rule checked here.
#include "common/format/snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <set>
#include <utility>

#include "common/base/checked_math.h"
#include "common/cache/block_cache.h"
#include "common/format/codec.h"
#include "common/format/layout.h"
#include "common/io/file.h"

namespace hexz::format {

namespace L = layout;
using base::CeilDiv;
using base::CheckedAdd;
using base::CheckedMul;
using base::RangeWithin;

const char* StreamName(StreamId id) { return id == StreamId::kDisk ? "disk" : "memory"; }

const char* CodecName(Codec codec) {
  switch (codec) {
    case Codec::kRaw:
      return "none";
    case Codec::kLz4:
      return "lz4";
    case Codec::kZstd:
      return "zstd";
  }
  return "unknown";
}

const char* BlockKindName(BlockKind kind) {
  switch (kind) {
    case BlockKind::kZero:
      return "zero";
    case BlockKind::kStored:
      return "stored";
    case BlockKind::kDedup:
      return "dedup";
    case BlockKind::kParent:
      return "parent";
  }
  return "unknown";
}

std::string SnapshotId::ToHex() const {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  for (uint8_t b : bytes) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 15]);
  }
  return s;
}

Result<SnapshotId> SnapshotId::FromHex(std::string_view hex) {
  if (hex.size() != 32) return Status::InvalidArgument("snapshot id must be 32 hex digits");
  SnapshotId id;
  for (size_t i = 0; i < 32; ++i) {
    char c = hex[i];
    int v;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      v = c - 'A' + 10;
    } else {
      return Status::InvalidArgument("snapshot id must be 32 hex digits");
    }
    id.bytes[i / 2] = static_cast<uint8_t>(id.bytes[i / 2] | (v << (i % 2 == 0 ? 4 : 0)));
  }
  return id;
}

namespace {

std::string Off(uint64_t offset) { return " at offset " + std::to_string(offset); }

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != 0) return false;
  return true;
}

struct StreamIndex {
  bool present = false;
  uint64_t size = 0;
  std::vector<L::Entry> entries;
  StreamStats stats;
};

class SnapshotImpl final : public Snapshot {
 public:
  // Parses and validates one file (no parent linking).
  static Result<std::shared_ptr<SnapshotImpl>> Parse(UniqueFd fd, std::string name,
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
  bool thin() const { return thin_; }
  const SnapshotId& parent_id() const override { return parent_id_; }
  int fd() const { return fd_.get(); }

  Result<std::vector<UniqueFd>> DupChainFds() const override;
  std::vector<std::string> ChainNames() const override;
  Status Read(StreamId stream, uint64_t offset, void* buf, size_t len) const override;
  Status ReadParallel(StreamId stream, uint64_t offset, void* buf, size_t len,
                      const ParallelFor& parallel) const override;
  uint64_t BlockCount(StreamId s) const override { return Stream(s).entries.size(); }
  uint32_t BlockLength(StreamId stream, uint64_t block) const override;
  Result<BlockEntry> GetBlockEntry(StreamId stream, uint64_t block) const override;
  Result<StoredBlock> ReadStoredBlock(StreamId stream, uint64_t block) const override;
  Status ReadBlock(StreamId stream, uint64_t block, void* dst) const override;
  Status Extents(StreamId stream, uint64_t offset, uint64_t len,
                 std::vector<io::Extent>* out) const override;
  Status Verify() const override;

 private:
  const StreamIndex& Stream(StreamId s) const { return streams_[static_cast<int>(s)]; }
  Status CheckBlock(StreamId stream, uint64_t block) const;
  std::string BlockName(StreamId stream, uint64_t block) const {
    return name_ + ": " + StreamName(stream) + " block " + std::to_string(block);
  }
  // Reads the stored bytes of entry e into *buf and checks the checksum.
  Status ReadStoredBytes(StreamId stream, uint64_t block, const L::Entry& e,
                         std::vector<uint8_t>* buf) const;

  UniqueFd fd_;
  std::string name_;
  SnapshotId id_;
  uint32_t block_size_ = 0;
  uint32_t block_shift_ = 0;
  bool thin_ = false;
  std::string parent_path_;
  SnapshotId parent_id_;
  std::shared_ptr<const SnapshotImpl> parent_;
  StreamIndex streams_[kStreamCount];
  cache::BlockCache* cache_ = nullptr;
};

Result<std::shared_ptr<SnapshotImpl>> SnapshotImpl::Parse(UniqueFd fd, std::string name,
                                                          const OpenOptions& options) {
  auto snap = std::make_shared<SnapshotImpl>();
  snap->fd_ = std::move(fd);
  snap->name_ = std::move(name);
  snap->cache_ = options.cache;
  const std::string& n = snap->name_;
  int f = snap->fd_.get();

  struct stat st;
  if (fstat(f, &st) != 0) return Status::FromErrno(errno, n);
  if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(n + ": is a directory, not a snapshot");
  HEXZ_ASSIGN_OR_RETURN(uint64_t file_size, io::FileSize(f, n));

  // Header: magic first (to tell "not a snapshot" from damage), then checksum,
  // then version, then fields.
  uint8_t head[L::kHeaderSize] = {};
  size_t head_len = static_cast<size_t>(std::min<uint64_t>(file_size, L::kHeaderSize));
  HEXZ_RETURN_IF_ERROR(io::PreadFull(f, head, head_len, 0, n));
  bool magic_ok = head_len >= 8 && std::memcmp(head, L::kHeaderMagic.data(), 8) == 0;
  uint8_t foot[L::kFooterSize] = {};
  bool footer_ok = false;
  if (file_size >= L::kFooterSize) {
    HEXZ_RETURN_IF_ERROR(io::PreadFull(f, foot, L::kFooterSize, file_size - L::kFooterSize, n));
    footer_ok = std::memcmp(foot, L::kFooterMagic.data(), 8) == 0 &&
                L::Checksum(foot, 56) == L::Get64(foot + 56);
  }
  if (!magic_ok) {
    if (footer_ok) return Status::Corruption(n + ": header magic damaged" + Off(0));
    if (file_size == 0) return Status::InvalidArgument(n + ": not a hexz snapshot (empty file)");
    return Status::InvalidArgument(n + ": not a hexz snapshot (no hexz magic at offset 0)");
  }
  if (file_size < L::kHeaderSize + L::kFooterSize) {
    return Status::Corruption(n + ": truncated file (" + std::to_string(file_size) +
                              " bytes, too short for header and footer)");
  }
  uint32_t header_size = L::Get32(head + 12);
  if (header_size == L::kHeaderSize) {
    if (L::Checksum(head, 56) != L::Get64(head + 56))
      return Status::Corruption(n + ": header checksum mismatch" + Off(0));
  } else if (header_size < L::kHeaderSize || header_size > 4096 ||
             header_size > file_size - L::kFooterSize || header_size % 8 != 0) {
    return Status::Corruption(n + ": header size " + std::to_string(header_size) + " is invalid" +
                              Off(12));
  } else {
    // A later version may have a longer header; its checksum is still in the
    // last 8 bytes of it.
    std::vector<uint8_t> big(header_size);
    HEXZ_RETURN_IF_ERROR(io::PreadFull(f, big.data(), header_size, 0, n));
    if (L::Checksum(big.data(), header_size - 8) != L::Get64(big.data() + header_size - 8))
      return Status::Corruption(n + ": header checksum mismatch" + Off(0));
  }
  L::Header h = L::DecodeHeader(head);
  if (h.version > L::kVersion) {
    return Status::Unsupported(n + ": format version " + std::to_string(h.version) +
                               " is newer than this hexz supports (version " +
                               std::to_string(L::kVersion) + "); upgrade hexz");
  }
  if (h.version == 0) return Status::Corruption(n + ": format version 0 is invalid" + Off(8));
  if (header_size != L::kHeaderSize)
    return Status::Corruption(n + ": header size must be 64 in version 1" + Off(12));
  if (h.block_size_log2 < L::kMinBlockSizeLog2 || h.block_size_log2 > L::kMaxBlockSizeLog2) {
    return Status::Corruption(n + ": block size 2^" + std::to_string(h.block_size_log2) +
                              " is outside 4 KiB..1 MiB" + Off(16));
  }
  if ((h.flags & ~L::kKnownFlags) != 0) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "0x%08x", h.flags & ~L::kKnownFlags);
    return Status::Unsupported(n + ": unknown feature flags " + buf +
                               " (written by a newer hexz?)" + Off(20));
  }
  if (!AllZero(head + 28, 4) || !AllZero(head + 48, 8))
    return Status::Corruption(n + ": reserved header bytes are not zero" + Off(28));
  snap->block_shift_ = h.block_size_log2;
  snap->block_size_ = 1u << h.block_size_log2;
  std::memcpy(snap->id_.bytes.data(), h.id.data(), 16);
  snap->thin_ = (h.flags & L::kFlagThin) != 0;
  bool has_memory = (h.flags & L::kFlagHasMemory) != 0;

  // Footer.
  uint64_t footer_offset = file_size - L::kFooterSize;
  if (std::memcmp(foot, L::kFooterMagic.data(), 8) != 0) {
    return Status::Corruption(n +
                              ": no footer at the end of the file (truncated or not "
                              "completely written; file is " +
                              std::to_string(file_size) + " bytes)");
  }
  if (!footer_ok) return Status::Corruption(n + ": footer checksum mismatch" + Off(footer_offset));
  L::Footer ft = L::DecodeFooter(foot);
  if (ft.file_size != file_size) {
    return Status::Corruption(n + ": file is " + std::to_string(file_size) +
                              " bytes but its footer records " + std::to_string(ft.file_size) +
                              " (truncated or extended)" + Off(footer_offset + 32));
  }
  if (ft.id != h.id)
    return Status::Corruption(n + ": footer id differs from header id" + Off(footer_offset + 40));
  if (ft.index_length < L::kIndexHeaderSize || ft.index_length > L::kMaxIndexSize ||
      ft.index_offset < L::kHeaderSize ||
      !RangeWithin(ft.index_offset, ft.index_length, file_size) ||
      ft.index_offset + ft.index_length != footer_offset) {
    return Status::Corruption(n + ": footer index location is invalid" + Off(footer_offset + 8));
  }

  // Index.
  std::vector<uint8_t> index(ft.index_length);
  HEXZ_RETURN_IF_ERROR(io::PreadFull(f, index.data(), index.size(), ft.index_offset, n));
  if (L::Checksum(index.data(), index.size()) != ft.index_checksum)
    return Status::Corruption(n + ": index checksum mismatch" + Off(ft.index_offset));
  L::IndexHeader ih = L::DecodeIndexHeader(index.data());
  if (!AllZero(index.data() + 52, 12))
    return Status::Corruption(n + ": reserved index bytes are not zero" +
                              Off(ft.index_offset + 52));
  for (int s = 0; s < kStreamCount; ++s) {
    StreamIndex& si = snap->streams_[s];
    si.present = s == 0 || has_memory;
    si.size = ih.stream_size[s];
    if (!si.present && (ih.stream_size[s] != 0 || ih.entry_count[s] != 0))
      return Status::Corruption(n + ": index describes an absent memory stream" +
                                Off(ft.index_offset + 8));
    if (si.size > L::kMaxStreamSize)
      return Status::Corruption(n + ": " + StreamName(static_cast<StreamId>(s)) +
                                " stream size is beyond the format limit" +
                                Off(ft.index_offset + 8 * s));
    uint64_t want = *CeilDiv<uint64_t>(si.size, snap->block_size_);
    if (ih.entry_count[s] != want)
      return Status::Corruption(n + ": " + StreamName(static_cast<StreamId>(s)) +
                                " block count does not match its size" +
                                Off(ft.index_offset + 16 + 8 * s));
  }
  if (snap->thin_ != (ih.parent_path_length != 0))
    return Status::Corruption(n + ": parent path presence disagrees with the thin flag" +
                              Off(ft.index_offset + 48));
  if (ih.parent_path_length > L::kMaxParentPath)
    return Status::Corruption(n + ": parent path is longer than 4096 bytes" +
                              Off(ft.index_offset + 48));
  std::memcpy(snap->parent_id_.bytes.data(), ih.parent_id.data(), 16);
  if (!snap->thin_ && snap->parent_id_ != SnapshotId{})
    return Status::Corruption(n + ": parent id set in a snapshot without parent" +
                              Off(ft.index_offset + 32));
  uint64_t path_padded = (uint64_t{ih.parent_path_length} + 7) & ~uint64_t{7};
  auto entries_total = CheckedAdd(ih.entry_count[0], ih.entry_count[1]);
  auto entries_bytes =
      entries_total ? CheckedMul<uint64_t>(*entries_total, L::kEntrySize) : std::nullopt;
  auto expect_len = entries_bytes
                        ? CheckedAdd<uint64_t>(*entries_bytes, L::kIndexHeaderSize + path_padded)
                        : std::nullopt;
  if (!expect_len || *expect_len != ft.index_length)
    return Status::Corruption(n + ": index length does not match its contents" +
                              Off(footer_offset + 16));
  const uint8_t* path_bytes = index.data() + L::kIndexHeaderSize;
  snap->parent_path_.assign(reinterpret_cast<const char*>(path_bytes), ih.parent_path_length);
  if (snap->parent_path_.find('\0') != std::string::npos)
    return Status::Corruption(n + ": parent path contains a NUL byte" +
                              Off(ft.index_offset + L::kIndexHeaderSize));
  if (!AllZero(path_bytes + ih.parent_path_length, path_padded - ih.parent_path_length))
    return Status::Corruption(n + ": parent path padding is not zero" +
                              Off(ft.index_offset + L::kIndexHeaderSize));

  // Entries. Stored blocks tile the data area [header, index) exactly, in
  // order; dedup entries must repeat a stored entry exactly.
  uint64_t next_data = L::kHeaderSize;
  uint64_t entry_pos = ft.index_offset + L::kIndexHeaderSize + path_padded;
  const uint8_t* p = path_bytes + path_padded;
  std::vector<std::pair<uint64_t, L::Entry>> stored;  // by offset
  std::vector<std::pair<L::Entry, uint64_t>> dedups;  // entry, entry position
  for (int s = 0; s < kStreamCount; ++s) {
    StreamIndex& si = snap->streams_[s];
    StreamId sid = static_cast<StreamId>(s);
    si.stats.present = si.present;
    si.stats.logical_size = si.size;
    si.stats.block_count = ih.entry_count[s];
    si.entries.resize(ih.entry_count[s]);
    for (uint64_t b = 0; b < ih.entry_count[s];
         ++b, p += L::kEntrySize, entry_pos += L::kEntrySize) {
      uint16_t reserved;
      L::Entry e = L::DecodeEntry(p, &reserved);
      uint64_t blen = std::min<uint64_t>(snap->block_size_, si.size - (b << snap->block_shift_));
      auto bad = [&](const char* why) {
        return Status::Corruption(n + ": index entry of " + StreamName(sid) + " block " +
                                  std::to_string(b) + " " + why + Off(entry_pos));
      };
      if (reserved != 0) return bad("has reserved bits set");
      switch (e.kind) {
        case L::Kind::kZero:
        case L::Kind::kParent:
          if (e.offset != 0 || e.stored_length != 0 || e.codec != 0 || e.checksum != 0)
            return bad("has storage fields set");
          if (e.kind == L::Kind::kParent) {
            if (!snap->thin_) return bad("refers to a parent, but the snapshot has none");
            ++si.stats.parent_blocks;
          } else {
            ++si.stats.zero_blocks;
          }
          break;
        case L::Kind::kStored:
        case L::Kind::kDedup: {
          if (e.codec > static_cast<uint8_t>(Codec::kZstd)) return bad("has an unknown codec");
          if (e.stored_length == 0 || e.stored_length > blen) return bad("has a bad stored length");
          if (e.codec == static_cast<uint8_t>(Codec::kRaw) ? e.stored_length != blen
                                                           : e.stored_length >= blen)
            return bad("has a stored length that does not fit its codec");
          if (e.kind == L::Kind::kStored) {
            if (e.offset != next_data) return bad("is not where the previous block ended");
            next_data += e.stored_length;
            if (next_data > ft.index_offset) return bad("runs into the index");
            stored.emplace_back(e.offset, e);
            si.stats.stored_bytes += e.stored_length;
            si.stats.codecs_used |= 1u << e.codec;
          } else {
            dedups.emplace_back(e, entry_pos);
            ++si.stats.dedup_blocks;
          }
          break;
        }
        default:
          return bad("has an unknown kind");
      }
      si.entries[b] = e;
    }
  }
  if (next_data != ft.index_offset)
    return Status::Corruption(n + ": stored blocks do not fill the data area (gap" +
                              Off(next_data) + ")");
  for (const auto& [e, pos] : dedups) {
    auto it = std::lower_bound(stored.begin(), stored.end(), e.offset,
                               [](const auto& a, uint64_t off) { return a.first < off; });
    if (it == stored.end() || it->first != e.offset ||
        it->second.stored_length != e.stored_length || it->second.codec != e.codec ||
        it->second.checksum != e.checksum)
      return Status::Corruption(n + ": dedup index entry does not match a stored block" + Off(pos));
  }
  return snap;
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
    int fd = fcntl(s->fd_.get(), F_DUPFD_CLOEXEC, 0);
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
  const L::Entry& e = Stream(stream).entries[block];
  BlockEntry out;
  out.kind = static_cast<BlockKind>(e.kind);
  out.codec = static_cast<Codec>(e.codec);
  out.stored_length = e.stored_length;
  out.offset = e.offset;
  out.checksum = e.checksum;
  return out;
}

Status SnapshotImpl::ReadStoredBytes(StreamId stream, uint64_t block, const L::Entry& e,
                                     std::vector<uint8_t>* buf) const {
  buf->resize(e.stored_length);
  HEXZ_RETURN_IF_ERROR(io::PreadFull(fd_.get(), buf->data(), e.stored_length, e.offset, name_));
  if (L::Checksum(buf->data(), e.stored_length) != e.checksum)
    return Status::Corruption(BlockName(stream, block) + " checksum mismatch" + Off(e.offset));
  return Status::Ok();
}

Result<StoredBlock> SnapshotImpl::ReadStoredBlock(StreamId stream, uint64_t block) const {
  HEXZ_RETURN_IF_ERROR(CheckBlock(stream, block));
  const L::Entry& e = Stream(stream).entries[block];
  StoredBlock out;
  out.logical_length = BlockLength(stream, block);
  if (e.kind == L::Kind::kZero || e.kind == L::Kind::kParent) {
    out.kind = static_cast<BlockKind>(e.kind);
    return out;
  }
  out.kind = BlockKind::kStored;
  out.codec = static_cast<Codec>(e.codec);
  out.checksum = e.checksum;
  HEXZ_RETURN_IF_ERROR(ReadStoredBytes(stream, block, e, &out.bytes));
  return out;
}

Status SnapshotImpl::ReadBlock(StreamId stream, uint64_t block, void* dst) const {
  HEXZ_RETURN_IF_ERROR(CheckBlock(stream, block));
  const L::Entry& e = Stream(stream).entries[block];
  uint32_t blen = BlockLength(stream, block);
  switch (e.kind) {
    case L::Kind::kZero:
      std::memset(dst, 0, blen);
      return Status::Ok();
    case L::Kind::kParent:
      if (parent_ == nullptr)
        return Status::Unavailable(BlockName(stream, block) + " is in parent " + parent_path_ +
                                   ", which was not opened");
      if (parent_->BlockLength(stream, block) == blen)
        return parent_->ReadBlock(stream, block, dst);
      return parent_->Read(stream, block << block_shift_, dst, blen);
    case L::Kind::kStored:
    case L::Kind::kDedup:
      break;
  }
  cache::BlockKey key;
  if (cache_ != nullptr) {
    key.snapshot_id = id_.bytes;
    key.stream = static_cast<uint32_t>(stream);
    key.block = block;
    if (cache_->Lookup(key, dst, blen)) return Status::Ok();
  }
  if (e.codec == static_cast<uint8_t>(Codec::kRaw)) {
    HEXZ_RETURN_IF_ERROR(io::PreadFull(fd_.get(), dst, blen, e.offset, name_));
    if (L::Checksum(dst, blen) != e.checksum) {
      std::memset(dst, 0, blen);
      return Status::Corruption(BlockName(stream, block) + " checksum mismatch" + Off(e.offset));
    }
  } else {
    thread_local std::vector<uint8_t> stored;
    HEXZ_RETURN_IF_ERROR(ReadStoredBytes(stream, block, e, &stored));
    if (!DecompressBlock(static_cast<Codec>(e.codec), stored.data(), stored.size(), dst, blen)) {
      std::memset(dst, 0, blen);
      return Status::Corruption(BlockName(stream, block) + " does not decompress (" +
                                CodecName(static_cast<Codec>(e.codec)) + ")" + Off(e.offset));
    }
  }
  if (cache_ != nullptr) cache_->Insert(key, dst, blen);
  return Status::Ok();
}

Status SnapshotImpl::Read(StreamId stream, uint64_t offset, void* buf, size_t len) const {
  return ReadParallel(stream, offset, buf, len, nullptr);
}

Status SnapshotImpl::ReadParallel(StreamId stream, uint64_t offset, void* buf, size_t len,
                                  const ParallelFor& parallel) const {
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
  if (len == 0) return Status::Ok();
  uint64_t first = offset >> block_shift_;
  uint64_t last = (offset + len - 1) >> block_shift_;
  auto* out = static_cast<uint8_t*>(buf);
  auto one = [&](uint64_t b) -> Status {
    uint64_t bstart = b << block_shift_;
    uint32_t blen = BlockLength(stream, b);
    uint64_t from = std::max(bstart, offset);
    uint64_t to = std::min(bstart + blen, offset + len);
    uint8_t* dst = out + (from - offset);
    if (from == bstart && to == bstart + blen) return ReadBlock(stream, b, dst);
    // A partial block is read whole into scratch, then the part is copied.
    // The scratch is this thread's spare buffer, taken out while in use (not
    // merely referenced): ReadBlock comes back here for a parent block of
    // another length, and that nested read must get a buffer of its own.
    thread_local std::vector<uint8_t> spare;
    std::vector<uint8_t> tmp = std::move(spare);
    tmp.resize(blen);
    Status st = ReadBlock(stream, b, tmp.data());
    if (st.ok()) std::memcpy(dst, tmp.data() + (from - bstart), to - from);
    spare = std::move(tmp);
    return st;
  };
  if (!parallel || first == last) {
    for (uint64_t b = first; b <= last; ++b) HEXZ_RETURN_IF_ERROR(one(b));
    return Status::Ok();
  }
  std::mutex mu;
  uint64_t bad_block = UINT64_MAX;
  Status first_error;
  parallel(static_cast<size_t>(last - first + 1), [&](size_t i) {
    Status st = one(first + i);
    if (!st.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (first + i < bad_block) {
        bad_block = first + i;
        first_error = st;
      }
    }
  });
  return first_error;
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
      uint32_t blen = BlockLength(sid, b);
      if (!DecompressBlock(static_cast<Codec>(e.codec), stored.data(), stored.size(), plain.data(),
                           blen)) {
        return Status::Corruption(BlockName(sid, b) + " does not decompress (" +
                                  CodecName(static_cast<Codec>(e.codec)) + ")" + Off(e.offset));
      }
    }
  }
  if (parent_ != nullptr) return parent_->Verify();
  return Status::Ok();
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
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
  std::vector<std::shared_ptr<SnapshotImpl>> chain;
  std::set<std::pair<dev_t, ino_t>> seen;
  std::string current = path;
  while (true) {
    auto fd = io::OpenFile(current, O_RDONLY | O_NONBLOCK);
    if (!fd.ok()) {
      if (chain.empty()) return fd.status();
      const SnapshotImpl& child = *chain.back();
      std::string msg = child.path() + ": parent " + child.parent_path() +
                        (current != child.parent_path() ? " (" + current + ")" : "") + ": ";
      if (fd.status().code() == base::Code::kNotFound) {
        return Status::NotFound(msg + "not found; a thin snapshot needs its parent next to it");
      }
      return Status(fd.status().code(), msg + fd.status().message(), fd.status().sys_errno());
    }
    struct stat st;
    if (fstat(fd->get(), &st) != 0) return Status::FromErrno(errno, current);
    if (!seen.insert({st.st_dev, st.st_ino}).second) {
      return Status::InvalidArgument(chain.back()->path() + ": parent chain loops: " + current +
                                     " is already part of the chain");
    }
    HEXZ_ASSIGN_OR_RETURN(auto snap, SnapshotImpl::Parse(std::move(*fd), current, options));
    chain.push_back(snap);
    if (!snap->thin() || options.skip_parents) break;
    HEXZ_RETURN_IF_ERROR(CheckDepth(*chain.front(), chain.size(), options));
    const std::string& pp = snap->parent_path();
    current = pp.front() == '/' ? pp : DirName(current) + "/" + pp;
  }
  return LinkChain(std::move(chain));
}

Result<std::shared_ptr<Snapshot>> Snapshot::OpenFds(std::vector<UniqueFd> fds,
                                                    std::vector<std::string> names,
                                                    const OpenOptions& options) {
  if (fds.empty() || fds.size() != names.size())
    return Status::InvalidArgument("snapshot chain: descriptors and names do not match");
  std::vector<std::shared_ptr<SnapshotImpl>> chain;
  std::set<std::pair<dev_t, ino_t>> seen;
  for (size_t i = 0; i < fds.size(); ++i) {
    struct stat st;
    if (fstat(fds[i].get(), &st) != 0) return Status::FromErrno(errno, names[i]);
    if (!seen.insert({st.st_dev, st.st_ino}).second) {
      return Status::InvalidArgument(names[0] + ": parent chain loops: " + names[i] +
                                     " is already part of the chain");
    }
    HEXZ_ASSIGN_OR_RETURN(auto snap, SnapshotImpl::Parse(std::move(fds[i]), names[i], options));
    chain.push_back(snap);
    if (snap->thin()) {
      HEXZ_RETURN_IF_ERROR(CheckDepth(*chain.front(), chain.size(), options));
      if (i + 1 == fds.size())
        return Status::NotFound(names[i] + ": parent " + snap->parent_path() + " was not provided");
    } else if (i + 1 != fds.size()) {
      return Status::InvalidArgument(names[i] + ": has no parent, but more files follow it");
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
