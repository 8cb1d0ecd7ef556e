// The snapshot writer: a bounded producer / compressor pool / ordered writer
// pipeline. See writer.h for the contract and FORMAT.md for the layout.
#include "common/format/writer.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common/base/bytes.h"
#include "common/base/checked_math.h"
#include "common/base/endian.h"
#include "common/base/path.h"
#include "common/format/codec.h"
#include "common/format/index_spill.h"
#include "common/format/layout.h"
#include "common/io/file.h"

namespace hexz::format {

namespace L = layout;

int DefaultLevel(Codec codec) {
  switch (codec) {
    case Codec::kRaw:
      return 0;
    case Codec::kLz4:
      return 1;
    case Codec::kZstd:
      return 3;
  }
  return 0;
}

int MaxLevel(Codec codec) {
  switch (codec) {
    case Codec::kRaw:
      return 0;
    case Codec::kLz4:
      return 12;
    case Codec::kZstd:
      return 19;
  }
  return 0;
}

Result<Codec> ParseCodec(std::string_view name) {
  if (name == "lz4") return Codec::kLz4;
  if (name == "zstd") return Codec::kZstd;
  if (name == "none" || name == "raw") return Codec::kRaw;
  return Status::InvalidArgument("unknown compression '" + std::string(name) +
                                 "' (expected lz4, zstd or none)");
}

Status ValidateWriterOptions(const WriterOptions& o) {
  if (o.codec != Codec::kRaw && o.codec != Codec::kLz4 && o.codec != Codec::kZstd)
    return Status::InvalidArgument("unknown codec");
  if (o.codec == Codec::kRaw && o.level != 0)
    return Status::InvalidArgument("--level makes no sense without compression");
  if (o.level < 0 || o.level > MaxLevel(o.codec)) {
    return Status::InvalidArgument("level " + std::to_string(o.level) + " is outside 1.." +
                                   std::to_string(MaxLevel(o.codec)) + " for " +
                                   CodecName(o.codec));
  }
  uint32_t bs = o.block_size;
  if (bs < (1u << L::kMinBlockSizeLog2) || bs > (1u << L::kMaxBlockSizeLog2) ||
      (bs & (bs - 1)) != 0) {
    return Status::InvalidArgument("block size " + std::to_string(bs) +
                                   " must be a power of two from 4 KiB to 1 MiB");
  }
  if (o.threads > 256) return Status::InvalidArgument("at most 256 threads");
  return Status::Ok();
}

namespace {

struct DedupKey {
  uint64_t lo = 0, hi = 0;
  uint32_t length = 0;
  Codec codec = Codec::kRaw;
  bool operator==(const DedupKey&) const = default;
};
struct DedupHash {
  size_t operator()(const DedupKey& k) const { return static_cast<size_t>(k.lo); }
};

struct Job {
  // kRun: run_count blocks of entry.kind (zero or parent). kExtent: the
  // blocks of `extent`, copied from src_fd by the writer thread.
  enum Type { kData, kZero, kParent, kStored, kRun, kExtent } type = kData;
  uint64_t seq = 0;
  int stream = 0;
  uint32_t logical_length = 0;
  std::vector<uint8_t> data;  // raw data (kData) or stored bytes (kStored)
  std::vector<uint8_t> packed;
  bool use_packed = false;
  L::Entry entry;
  DedupKey key;
  Status status;
  uint64_t run_count = 0;
  std::shared_ptr<const UniqueFd> src_fd;
  std::string src_name;
  std::vector<L::Entry> extent;
};

// Marks an offset in the side file (never a real offset: files stay below 2^63).
constexpr uint64_t kSideBit = uint64_t{1} << 63;

// The most bytes of an extent copied and checked in one piece.
constexpr uint64_t kExtentPiece = uint64_t{4} << 20;

class WriterImpl final : public SnapshotWriter {
 public:
  WriterImpl(const std::string& out, const WriterOptions& o) : out_path_(out), options_(o) {}
  ~WriterImpl() override { Abort(); }

  Status Init();
  const SnapshotId& id() const override { return id_; }
  uint32_t block_size() const override { return options_.block_size; }
  Status SetParent(const std::string& relative_path, const SnapshotId& parent_id) override;
  Status BeginStream(StreamId stream, uint64_t logical_size) override;
  Status AddData(const void* data, size_t len) override;
  Status AddZero() override;
  Status AddParent() override;
  Status AddStored(const StoredBlock& block) override;
  Status AddRun(BlockKind kind, uint64_t count) override;
  Status AddStoredExtent(const StoredExtent& extent) override;
  Status EndStream() override;
  Status SetMetadata(const Metadata& metadata) override;
  Result<SnapshotId> Finish() override;
  void Abort() override;

 private:
  Status CheckNext(size_t len, bool need_len);
  // Checks that `count` more blocks fit the current (known-size) stream and
  // sets next_length_ to the logical length of the first; *bytes gets their
  // logical bytes.
  Status CheckRun(uint64_t count, uint64_t* bytes);
  uint32_t LengthOf(uint64_t block) const;
  Status Submit(std::unique_ptr<Job> job, uint64_t blocks = 1, uint64_t bytes = 0);
  std::unique_ptr<Job> NewJob(Job::Type type);
  void CompressLoop();
  void WriteLoop();
  void Compress(Job* job);
  Status WriteOne(Job* job);
  // Copies the stored bytes of a kExtent job to write_pos_ and checks them.
  Status WriteExtent(Job* job);
  Status CheckExtentPiece(const Job& job, size_t first, size_t end, const uint8_t* bytes);
  // A kExtent job of one kDedup entry: a dedup entry into a copied piece.
  Status WriteDedupRef(Job* job);
  // Where a job's stored bytes go: the side file for a memory stream written
  // before the disk stream, else the output. Offsets into the side file carry
  // kSideBit until WriteIndex moves them.
  bool ToSide(const Job& job) const {
    return job.stream == static_cast<int>(StreamId::kMemory) && side_fd_.valid();
  }
  int TargetFd(bool side) const { return side ? side_fd_.get() : fd_.get(); }
  uint64_t& TargetPos(bool side) { return side ? side_pos_ : write_pos_; }
  static uint64_t Tagged(bool side, uint64_t pos) { return side ? pos | kSideBit : pos; }
  // Reads back stored bytes written at `offset` (tagged or not).
  Status ReadBack(uint64_t offset, void* buf, size_t len);
  // Appends the side file's bytes after the disk blocks (Finish).
  Status AppendSide();
  L::IndexHeader IndexHeaderSoFar() const;
  // Writes the index at `offset` piece by piece (never a second copy of all
  // entries) and fills in the footer that describes it.
  Status WriteIndex(uint64_t offset, L::Footer* ft);
  void SetError(const Status& st);
  Status Error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  Status TooManyBlocks() const {
    return Status::NoSpace(out_path_ +
                           ": too many blocks for one index (over 1 GiB); use a larger "
                           "--block-size");
  }
  Status Cancelled() { return Status::Cancelled(out_path_ + ": cancelled; nothing was written"); }
  bool IsCancelled() const { return options_.cancel != nullptr && options_.cancel->load(); }
  void StopThreads();

  std::string out_path_;
  std::string tmp_path_;
  WriterOptions options_;
  SnapshotId id_;
  UniqueFd fd_;
  bool finished_ = false;
  bool aborted_ = false;

  // Producer state (caller's thread).
  std::string parent_path_;
  SnapshotId parent_id_;
  std::vector<uint8_t> metadata_;  // the encoded section, or empty
  bool thin_ = false;
  bool begun_[kStreamCount] = {false, false};
  int cur_stream_ = -1;  // the stream being written (or last written)
  bool in_stream_ = false;
  bool unknown_size_ = false;  // the current stream grows block by block
  uint32_t next_length_ = 0;   // logical length of the block being added
  uint64_t stream_size_[kStreamCount] = {0, 0};
  uint64_t cur_block_ = 0, cur_count_ = 0;
  uint64_t next_seq_ = 0;
  uint64_t done_bytes_ = 0, total_bytes_ = 0;

  // Pipeline (guarded by mu_).
  std::mutex mu_;
  std::condition_variable cv_todo_, cv_done_, cv_space_;
  std::deque<std::unique_ptr<Job>> todo_;
  std::map<uint64_t, std::unique_ptr<Job>> done_;
  std::vector<std::unique_ptr<Job>> free_;
  uint64_t written_seq_ = 0;  // jobs fully written
  size_t max_in_flight_ = 4;
  bool closing_ = false;
  Status error_;
  std::vector<std::thread> compressors_;
  std::thread writer_thread_;

  // Writer thread only (read by Finish after join).
  uint64_t write_pos_ = L::kHeaderSize;
  // The entries of each stream, in index order. Offsets with kSideBit set
  // lie in side_fd_ (see below) and are moved in WriteIndex.
  std::unique_ptr<IndexSpill> index_[kStreamCount];
  // A memory stream written before the disk stream keeps its stored bytes in
  // this unlinked temp file (the data area holds disk blocks first, FORMAT.md
  // "Tiling"); Finish appends them after the disk blocks at side_base_.
  UniqueFd side_fd_;
  uint64_t side_pos_ = 0;
  uint64_t side_base_ = 0;
  std::unordered_map<DedupKey, L::Entry, DedupHash> dedup_;
  std::vector<uint8_t> compare_buf_;
  std::vector<uint8_t> extent_buf_;
  // Where the pieces of stored extents went, per source file, in the order
  // copied: {source offset, length, output offset}.
  struct CopiedPiece {
    uint64_t src, len, out;
  };
  std::map<const UniqueFd*, std::vector<CopiedPiece>> copied_;
  std::vector<std::shared_ptr<const UniqueFd>> copied_files_;  // keeps the keys unique
  bool copy_range_works_ = true;  // until copy_file_range says it cannot (Init)
};

Status WriterImpl::Init() {
  HEXZ_RETURN_IF_ERROR(ValidateWriterOptions(options_));
  if (options_.level == 0) options_.level = DefaultLevel(options_.codec);
  if (options_.id) {
    id_ = *options_.id;
  } else {
    size_t got = 0;
    while (got < id_.bytes.size()) {
      ssize_t n = getrandom(id_.bytes.data() + got, id_.bytes.size() - got, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, "getrandom");
      }
      got += static_cast<size_t>(n);
    }
  }
  std::string tmpl = base::DirName(out_path_) + "/." + base::BaseName(out_path_) + ".tmp-XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  int fd = mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, out_path_ + ": cannot create a temp file next to it");
  fd_.reset(fd);
  tmp_path_ = name.data();
  mode_t mask = umask(0);
  umask(mask);
  if (fchmod(fd, 0666 & ~mask) != 0) return Status::FromErrno(errno, out_path_);
  for (auto& index : index_)
    index = std::make_unique<IndexSpill>(base::DirName(out_path_), out_path_);
  copy_range_works_ = options_.copy_file_range;
  uint8_t zero_header[L::kHeaderSize] = {};
  HEXZ_RETURN_IF_ERROR(io::PwriteFull(fd, zero_header, sizeof(zero_header), 0, out_path_));

  unsigned n = options_.threads;
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  max_in_flight_ = 2 * static_cast<size_t>(n) + 4;
  for (unsigned i = 0; i < n; ++i) compressors_.emplace_back([this] { CompressLoop(); });
  writer_thread_ = std::thread([this] { WriteLoop(); });
  return Status::Ok();
}

void WriterImpl::SetError(const Status& st) {
  std::lock_guard<std::mutex> lock(mu_);
  if (error_.ok()) error_ = st;
  cv_space_.notify_all();
  cv_done_.notify_all();
  cv_todo_.notify_all();
}

Status WriterImpl::SetParent(const std::string& relative_path, const SnapshotId& parent_id) {
  if (begun_[0] || begun_[1]) {
    // The same parent again (hexz vm snapshot --continue sets it before the
    // memory stream, and the commit of the disk stream sets it too).
    if (thin_ && relative_path == parent_path_ && parent_id == parent_id_) return Status::Ok();
    return Status::Internal("SetParent after BeginStream");
  }
  if (relative_path.empty() || relative_path.size() > L::kMaxParentPath ||
      relative_path.find('\0') != std::string::npos) {
    return Status::InvalidArgument("parent path must be 1..4096 bytes without NUL");
  }
  parent_path_ = relative_path;
  parent_id_ = parent_id;
  thin_ = true;
  return Status::Ok();
}

Status WriterImpl::BeginStream(StreamId stream, uint64_t logical_size) {
  if (finished_ || aborted_) return Status::Internal("writer already finished");
  if (in_stream_) return Status::Internal("BeginStream inside a stream");
  int s = static_cast<int>(stream);
  if (s < 0 || s >= kStreamCount || begun_[s])
    return Status::Internal("each stream is written once: disk and memory, in either order");
  if (s == static_cast<int>(StreamId::kMemory) && !begun_[static_cast<int>(StreamId::kDisk)] &&
      !side_fd_.valid()) {
    HEXZ_ASSIGN_OR_RETURN(
        side_fd_, CreateUnlinkedTemp(base::DirName(out_path_), out_path_ + ": the memory stream"));
  }
  unknown_size_ = logical_size == kUnknownSize;
  if (!unknown_size_ && logical_size > L::kMaxStreamSize)
    return Status::NoSpace(std::string(StreamName(stream)) + " stream is larger than 4 PiB");
  stream_size_[s] = unknown_size_ ? 0 : logical_size;
  cur_block_ = 0;
  cur_count_ = (stream_size_[s] + options_.block_size - 1) / options_.block_size;
  L::IndexHeader ih = IndexHeaderSoFar();
  ih.entry_count[s] = cur_count_;
  std::optional<uint64_t> index_len = L::IndexLength(ih);
  if (!index_len || *index_len > L::kMaxIndexSize) return TooManyBlocks();
  if (unknown_size_) {
    // The most blocks this stream may grow to: what the index and the
    // stream size limit allow.
    cur_count_ = std::min<uint64_t>((L::kMaxIndexSize - *index_len) / L::kEntrySize,
                                    L::kMaxStreamSize / options_.block_size);
  }
  in_stream_ = true;
  begun_[s] = true;
  cur_stream_ = s;
  if (!unknown_size_) total_bytes_ += logical_size;
  return Error();
}

Status WriterImpl::CheckNext(size_t len, bool need_len) {
  if (!in_stream_) return Status::Internal("Add* outside a stream");
  const uint32_t bs = options_.block_size;
  if (unknown_size_) {
    if (cur_block_ >= cur_count_) return TooManyBlocks();
    if (stream_size_[cur_stream_] % bs != 0)
      return Status::Internal("a block after the short last block of a stream");
    if (need_len && (len == 0 || len > bs))
      return Status::Internal("block length differs from the stream's layout");
    next_length_ = need_len ? static_cast<uint32_t>(len) : bs;
  } else {
    if (cur_block_ >= cur_count_) return Status::Internal("more blocks than the stream holds");
    uint64_t start = cur_block_ * bs;
    uint64_t want = std::min<uint64_t>(bs, stream_size_[cur_stream_] - start);
    if (need_len && len != want)
      return Status::Internal("block length differs from the stream's layout");
    next_length_ = static_cast<uint32_t>(want);
  }
  if (IsCancelled()) return Cancelled();
  return Error();
}

std::unique_ptr<Job> WriterImpl::NewJob(Job::Type type) {
  std::unique_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      job = std::move(free_.back());
      free_.pop_back();
    }
  }
  if (!job) job = std::make_unique<Job>();
  job->type = type;
  job->stream = cur_stream_;
  job->logical_length = next_length_;
  job->use_packed = false;
  job->entry = L::Entry{};
  job->status = Status::Ok();
  return job;
}

Status WriterImpl::Submit(std::unique_ptr<Job> job, uint64_t blocks, uint64_t bytes) {
  uint64_t len = blocks == 1 ? job->logical_length : bytes;
  {
    std::unique_lock<std::mutex> lock(mu_);
    while (error_.ok() && next_seq_ - written_seq_ >= max_in_flight_) {
      cv_space_.wait_for(lock, std::chrono::milliseconds(100));
      if (IsCancelled()) return Cancelled();
    }
    if (!error_.ok()) return error_;
    job->seq = next_seq_++;
    todo_.push_back(std::move(job));
  }
  cv_todo_.notify_one();
  cur_block_ += blocks;
  done_bytes_ += len;
  if (unknown_size_) {
    stream_size_[cur_stream_] += len;
    total_bytes_ += len;
  }
  if (options_.progress) options_.progress(done_bytes_, total_bytes_);
  return Status::Ok();
}

Status WriterImpl::AddData(const void* data, size_t len) {
  HEXZ_RETURN_IF_ERROR(CheckNext(len, true));
  auto job = NewJob(Job::kData);
  job->data.assign(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + len);
  return Submit(std::move(job));
}

Status WriterImpl::AddZero() {
  HEXZ_RETURN_IF_ERROR(CheckNext(0, false));
  return Submit(NewJob(Job::kZero));
}

Status WriterImpl::AddParent() {
  HEXZ_RETURN_IF_ERROR(CheckNext(0, false));
  if (!thin_) return Status::InvalidArgument("a parent block needs a thin output (SetParent)");
  return Submit(NewJob(Job::kParent));
}

Status WriterImpl::AddStored(const StoredBlock& block) {
  HEXZ_RETURN_IF_ERROR(CheckNext(block.logical_length, true));
  switch (block.kind) {
    case BlockKind::kZero:
      return Submit(NewJob(Job::kZero));
    case BlockKind::kParent:
      if (!thin_) return Status::InvalidArgument("a parent block needs a thin output (SetParent)");
      return Submit(NewJob(Job::kParent));
    case BlockKind::kStored:
    case BlockKind::kDedup:
      break;
  }
  size_t n = block.bytes.size();
  bool raw = block.codec == Codec::kRaw;
  if (n == 0 || (raw ? n != block.logical_length : n >= block.logical_length) ||
      static_cast<int>(block.codec) > static_cast<int>(Codec::kZstd)) {
    return Status::InvalidArgument("stored block does not fit its codec and length");
  }
  auto job = NewJob(Job::kStored);
  job->data = block.bytes;
  job->entry.codec = block.codec;
  job->entry.checksum = block.checksum;
  return Submit(std::move(job));
}

uint32_t WriterImpl::LengthOf(uint64_t block) const {
  const uint32_t bs = options_.block_size;
  return static_cast<uint32_t>(std::min<uint64_t>(bs, stream_size_[cur_stream_] - block * bs));
}

Status WriterImpl::CheckRun(uint64_t count, uint64_t* bytes) {
  if (!in_stream_) return Status::Internal("Add* outside a stream");
  if (unknown_size_) return Status::Internal("a run of blocks needs a stream of known size");
  if (count == 0 || count > cur_count_ - cur_block_)
    return Status::Internal("more blocks than the stream holds");
  const uint64_t size = stream_size_[cur_stream_];
  *bytes = std::min<uint64_t>(size, (cur_block_ + count) * options_.block_size) -
           cur_block_ * options_.block_size;
  next_length_ = LengthOf(cur_block_);
  if (IsCancelled()) return Cancelled();
  return Error();
}

Status WriterImpl::AddRun(BlockKind kind, uint64_t count) {
  if (kind != BlockKind::kZero && kind != BlockKind::kParent)
    return Status::Internal("a run of blocks is of zero or parent blocks");
  if (kind == BlockKind::kParent && !thin_)
    return Status::InvalidArgument("a parent block needs a thin output (SetParent)");
  uint64_t bytes = 0;
  HEXZ_RETURN_IF_ERROR(CheckRun(count, &bytes));
  auto job = NewJob(Job::kRun);
  job->entry.kind = kind;
  job->run_count = count;
  return Submit(std::move(job), count, bytes);
}

Status WriterImpl::AddStoredExtent(const StoredExtent& extent) {
  const std::vector<L::Entry>& es = extent.entries;
  if (!extent.fd || extent.fd->get() < 0) return Status::Internal("a stored extent needs its file");
  uint64_t bytes = 0;
  HEXZ_RETURN_IF_ERROR(CheckRun(es.size(), &bytes));
  for (size_t i = 0; i < es.size(); ++i) {
    const L::Entry& e = es[i];
    const uint32_t logical = LengthOf(cur_block_ + i);
    bool raw = e.codec == Codec::kRaw;
    const bool kind_ok =
        e.kind == L::Kind::kStored || (e.kind == L::Kind::kDedup && es.size() == 1);
    if (!kind_ok || e.stored_length == 0 ||
        (raw ? e.stored_length != logical : e.stored_length >= logical) ||
        static_cast<int>(e.codec) > static_cast<int>(Codec::kZstd) ||
        (i > 0 && e.offset != es[i - 1].offset + es[i - 1].stored_length)) {
      return Status::InvalidArgument(extent.name +
                                     ": stored extent does not fit its codecs and lengths");
    }
  }
  auto job = NewJob(Job::kExtent);
  job->src_fd = extent.fd;
  job->src_name = extent.name;
  job->extent.assign(es.begin(), es.end());
  return Submit(std::move(job), es.size(), bytes);
}

Status WriterImpl::EndStream() {
  if (!in_stream_) return Status::Internal("EndStream outside a stream");
  if (!unknown_size_ && cur_block_ != cur_count_)
    return Status::Internal("stream ended before its last block");
  in_stream_ = false;
  unknown_size_ = false;
  return Error();
}

void WriterImpl::Compress(Job* job) {
  L::Entry& e = job->entry;
  const std::vector<uint8_t>* stored = &job->data;
  switch (job->type) {
    case Job::kZero:
      e.kind = L::Kind::kZero;
      return;
    case Job::kParent:
      e.kind = L::Kind::kParent;
      return;
    case Job::kRun:
    case Job::kExtent:
      return;  // nothing to compute: the writer thread appends or copies them
    case Job::kData:
      if (base::AllZero(job->data.data(), job->data.size())) {
        e.kind = L::Kind::kZero;
        return;
      }
      e.kind = L::Kind::kStored;
      if (CompressBlock(options_.codec, options_.level, job->data.data(), job->data.size(),
                        &job->packed)) {
        job->use_packed = true;
        stored = &job->packed;
        e.codec = options_.codec;
      } else {
        e.codec = Codec::kRaw;
      }
      e.checksum = L::Checksum(stored->data(), stored->size());
      break;
    case Job::kStored:
      e.kind = L::Kind::kStored;
      if (L::Checksum(job->data.data(), job->data.size()) != e.checksum) {
        job->status = Status::Corruption("stored block copied from a snapshot has a bad checksum");
        return;
      }
      break;
  }
  e.stored_length = static_cast<uint32_t>(stored->size());
  XXH128_hash_t h = XXH3_128bits(stored->data(), stored->size());
  job->key = DedupKey{h.low64, h.high64, e.stored_length, e.codec};
}

void WriterImpl::CompressLoop() {
  while (true) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_todo_.wait(lock, [this] { return !todo_.empty() || closing_ || !error_.ok(); });
      if (todo_.empty() || !error_.ok()) return;
      job = std::move(todo_.front());
      todo_.pop_front();
    }
    Compress(job.get());
    {
      std::lock_guard<std::mutex> lock(mu_);
      uint64_t seq = job->seq;
      done_[seq] = std::move(job);
    }
    cv_done_.notify_all();
  }
}

Status WriterImpl::CheckExtentPiece(const Job& job, size_t first, size_t end,
                                    const uint8_t* bytes) {
  const uint64_t base = job.extent[first].offset;
  for (size_t i = first; i < end; ++i) {
    const L::Entry& e = job.extent[i];
    if (L::Checksum(bytes + (e.offset - base), e.stored_length) != e.checksum) {
      return Status::Corruption(job.src_name + ": stored block checksum mismatch at offset " +
                                std::to_string(e.offset) + "; nothing was written");
    }
  }
  return Status::Ok();
}

Status WriterImpl::WriteDedupRef(Job* job) {
  const L::Entry& d = job->extent[0];
  auto it = copied_.find(job->src_fd.get());
  if (it != copied_.end()) {
    const std::vector<CopiedPiece>& pieces = it->second;
    auto p = std::upper_bound(pieces.begin(), pieces.end(), d.offset,
                              [](uint64_t off, const CopiedPiece& c) { return off < c.src; });
    if (p != pieces.begin() && d.offset + d.stored_length <= (--p)->src + p->len) {
      // The source's index (checked when it was opened) says a stored block
      // with these bytes lies there; it was copied and checked.
      L::Entry e = d;
      e.offset = p->out + (d.offset - p->src);
      job->src_fd.reset();
      return index_[job->stream]->Append(e);
    }
  }
  job->extent[0].kind = L::Kind::kStored;  // not copied yet: copy its bytes
  return WriteExtent(job);
}

Status WriterImpl::WriteExtent(Job* job) {
  const std::vector<L::Entry>& es = job->extent;
  const int src = job->src_fd->get();
  const bool side = ToSide(*job);
  const int out = TargetFd(side);
  uint64_t& pos = TargetPos(side);
  std::vector<CopiedPiece>& pieces = copied_[job->src_fd.get()];
  if (pieces.empty()) copied_files_.push_back(job->src_fd);
  size_t first = 0;
  while (first < es.size()) {
    // A piece of whole blocks, at most kExtentPiece bytes (at least one block).
    const uint64_t from = es[first].offset;
    size_t end = first + 1;
    while (end < es.size() && es[end].offset + es[end].stored_length - from <= kExtentPiece) ++end;
    const uint64_t len = es[end - 1].offset + es[end - 1].stored_length - from;
    extent_buf_.resize(std::max<size_t>(extent_buf_.size(), len));
    bool copied = false;
    if (copy_range_works_) {
      HEXZ_ASSIGN_OR_RETURN(copied, io::CopyFileRange(src, from, out, pos, len, out_path_));
      copy_range_works_ = copied;
    }
    if (copied) {
      // Check what the output holds now: the bytes that will be served.
      HEXZ_RETURN_IF_ERROR(io::PreadFull(out, extent_buf_.data(), len, pos, out_path_));
      HEXZ_RETURN_IF_ERROR(CheckExtentPiece(*job, first, end, extent_buf_.data()));
    } else {
      HEXZ_RETURN_IF_ERROR(io::PreadFull(src, extent_buf_.data(), len, from, job->src_name));
      HEXZ_RETURN_IF_ERROR(CheckExtentPiece(*job, first, end, extent_buf_.data()));
      HEXZ_RETURN_IF_ERROR(io::PwriteFull(out, extent_buf_.data(), len, pos, out_path_));
    }
    const uint64_t at = Tagged(side, pos);
    for (size_t i = first; i < end; ++i) {
      L::Entry e = es[i];
      e.offset = at + (es[i].offset - from);
      HEXZ_RETURN_IF_ERROR(index_[job->stream]->Append(e));
    }
    // Kept sorted by source offset (WriteDedupRef searches them): one piece
    // per run copied back to back.
    auto after = std::upper_bound(pieces.begin(), pieces.end(), from,
                                  [](uint64_t off, const CopiedPiece& c) { return off < c.src; });
    if (after != pieces.begin() && std::prev(after)->src + std::prev(after)->len == from &&
        std::prev(after)->out + std::prev(after)->len == at) {
      std::prev(after)->len += len;
    } else {
      pieces.insert(after, {from, len, at});
    }
    pos += len;
    first = end;
  }
  job->src_fd.reset();
  return Status::Ok();
}

Status WriterImpl::ReadBack(uint64_t offset, void* buf, size_t len) {
  if ((offset & kSideBit) != 0)
    return io::PreadFull(side_fd_.get(), buf, len, offset & ~kSideBit, out_path_ + ": temp file");
  return io::PreadFull(fd_.get(), buf, len, offset, out_path_);
}

Status WriterImpl::AppendSide() {
  side_base_ = write_pos_;
  const std::string what = out_path_ + ": copying the memory stream from its temp file";
  bool copied = false;
  if (copy_range_works_) {
    HEXZ_ASSIGN_OR_RETURN(
        copied, io::CopyFileRange(side_fd_.get(), 0, fd_.get(), side_base_, side_pos_, what));
    copy_range_works_ = copied;
  }
  if (!copied) {
    std::vector<uint8_t> buf(std::min<uint64_t>(side_pos_, kExtentPiece));
    for (uint64_t done = 0; done < side_pos_;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), side_pos_ - done));
      HEXZ_RETURN_IF_ERROR(io::PreadFull(side_fd_.get(), buf.data(), n, done, what));
      HEXZ_RETURN_IF_ERROR(io::PwriteFull(fd_.get(), buf.data(), n, side_base_ + done, what));
      done += n;
    }
  }
  write_pos_ += side_pos_;
  return Status::Ok();
}

Status WriterImpl::WriteOne(Job* job) {
  HEXZ_RETURN_IF_ERROR(job->status);
  if (job->type == Job::kRun) {
    L::Entry e;
    e.kind = job->entry.kind;
    for (uint64_t i = 0; i < job->run_count; ++i)
      HEXZ_RETURN_IF_ERROR(index_[job->stream]->Append(e));
    return Status::Ok();
  }
  if (job->type == Job::kExtent) {
    return job->extent[0].kind == L::Kind::kDedup ? WriteDedupRef(job) : WriteExtent(job);
  }
  L::Entry e = job->entry;
  if (e.kind == L::Kind::kStored) {
    const std::vector<uint8_t>& bytes = job->use_packed ? job->packed : job->data;
    bool deduped = false;
    auto it = dedup_.find(job->key);
    if (it != dedup_.end()) {
      // A 128-bit hash match; compare the bytes to be certain.
      compare_buf_.resize(bytes.size());
      HEXZ_RETURN_IF_ERROR(ReadBack(it->second.offset, compare_buf_.data(), bytes.size()));
      if (std::memcmp(compare_buf_.data(), bytes.data(), bytes.size()) == 0) {
        e = it->second;
        e.kind = L::Kind::kDedup;
        deduped = true;
      }
    }
    if (!deduped) {
      const bool side = ToSide(*job);
      uint64_t& pos = TargetPos(side);
      e.offset = Tagged(side, pos);
      HEXZ_RETURN_IF_ERROR(
          io::PwriteFull(TargetFd(side), bytes.data(), bytes.size(), pos, out_path_));
      pos += bytes.size();
      if (dedup_.size() < options_.dedup_entries) dedup_.emplace(job->key, e);
    }
  }
  return index_[job->stream]->Append(e);
}

void WriterImpl::WriteLoop() {
  while (true) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_done_.wait(lock, [this] {
        return done_.count(written_seq_) != 0 || (closing_ && written_seq_ == next_seq_) ||
               !error_.ok();
      });
      if (!error_.ok() || (closing_ && written_seq_ == next_seq_ && done_.empty())) return;
      auto it = done_.find(written_seq_);
      job = std::move(it->second);
      done_.erase(it);
    }
    Status st = WriteOne(job.get());
    if (!st.ok()) {
      SetError(st);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++written_seq_;
      if (free_.size() < max_in_flight_) free_.push_back(std::move(job));
    }
    cv_space_.notify_all();
    cv_done_.notify_all();
  }
}

void WriterImpl::StopThreads() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  cv_todo_.notify_all();
  cv_done_.notify_all();
  for (auto& t : compressors_)
    if (t.joinable()) t.join();
  compressors_.clear();
  { std::lock_guard<std::mutex> lock(mu_); }
  cv_done_.notify_all();
  if (writer_thread_.joinable()) writer_thread_.join();
}

Status WriterImpl::SetMetadata(const Metadata& metadata) {
  if (finished_ || aborted_) return Status::Internal("SetMetadata after Finish or Abort");
  if (metadata.empty()) {
    metadata_.clear();
    return Status::Ok();
  }
  auto encoded = L::EncodeMetadata(metadata);
  if (!encoded.ok()) return encoded.status().WithContext(out_path_);
  metadata_ = std::move(*encoded);
  return Status::Ok();
}

Result<SnapshotId> WriterImpl::Finish() {
  if (finished_ || aborted_) return Status::Internal("writer already finished");
  auto fail = [this](Status st) -> Status {
    Abort();
    return st;
  };
  if (IsCancelled()) return fail(Cancelled());
  if (in_stream_) return fail(Status::Internal("Finish inside a stream"));
  if (!begun_[0]) return fail(Status::Internal("a snapshot needs a disk stream"));
  StopThreads();
  {
    Status st = Error();
    if (!st.ok()) return fail(st);
  }
  if (IsCancelled()) return fail(Cancelled());

  if (side_pos_ > 0) {
    Status st = AppendSide();
    if (!st.ok()) return fail(st);
  }
  // The metadata section ends where the index begins.
  Status st = io::PwriteFull(fd_.get(), metadata_.data(), metadata_.size(), write_pos_, out_path_);
  if (!st.ok()) return fail(st);
  uint64_t index_offset = write_pos_ + metadata_.size();
  L::Footer ft;
  st = WriteIndex(index_offset, &ft);
  if (!st.ok()) return fail(st);
  uint8_t foot[L::kFooterSize];
  L::EncodeFooter(ft, foot);
  st = io::PwriteFull(fd_.get(), foot, sizeof(foot), ft.index_offset + ft.index_length, out_path_);
  if (!st.ok()) return fail(st);

  L::Header h;
  uint32_t log2 = 0;
  while ((1u << log2) < options_.block_size) ++log2;
  h.block_size_log2 = log2;
  h.flags = (thin_ ? L::kFlagThin : 0) | (begun_[1] ? L::kFlagHasMemory : 0) |
            (metadata_.empty() ? 0 : L::kFlagHasMetadata);
  h.id = id_.bytes;
  uint8_t head[L::kHeaderSize];
  L::EncodeHeader(h, head);
  st = io::PwriteFull(fd_.get(), head, sizeof(head), 0, out_path_);
  if (!st.ok()) return fail(st);
  st = io::Fsync(fd_.get(), out_path_);
  if (!st.ok()) return fail(st);
  if (IsCancelled()) return fail(Cancelled());
  if (rename(tmp_path_.c_str(), out_path_.c_str()) != 0)
    return fail(Status::FromErrno(errno, out_path_ + ": cannot rename the temp file into place"));
  finished_ = true;
  fd_.reset();
  st = io::FsyncParentDir(out_path_);
  if (!st.ok()) return st;
  return id_;
}

L::IndexHeader WriterImpl::IndexHeaderSoFar() const {
  L::IndexHeader ih;
  for (int s = 0; s < kStreamCount; ++s) {
    ih.stream_size[s] = stream_size_[s];
    ih.entry_count[s] = (stream_size_[s] + options_.block_size - 1) / options_.block_size;
  }
  ih.parent_id = parent_id_.bytes;
  ih.parent_path_length = static_cast<uint32_t>(parent_path_.size());
  ih.metadata_length = static_cast<uint32_t>(metadata_.size());
  return ih;
}

Status WriterImpl::WriteIndex(uint64_t offset, L::Footer* ft) {
  L::IndexHeader ih = IndexHeaderSoFar();
  std::vector<uint8_t> piece(L::kIndexHeaderSize + L::PaddedPathLength(ih.parent_path_length), 0);
  L::EncodeIndexHeader(ih, piece.data());
  std::memcpy(piece.data() + L::kIndexParentPathAt, parent_path_.data(), parent_path_.size());
  L::Hasher hasher;
  uint64_t pos = offset;
  auto flush = [&]() -> Status {
    hasher.Update(piece.data(), piece.size());
    HEXZ_RETURN_IF_ERROR(io::PwriteFull(fd_.get(), piece.data(), piece.size(), pos, out_path_));
    pos += piece.size();
    piece.clear();
    return Status::Ok();
  };
  HEXZ_RETURN_IF_ERROR(flush());
  // Disk entries, then memory entries, whichever stream was written first;
  // offsets into the side file move to where AppendSide put its bytes.
  std::vector<uint8_t> moved;
  auto write_piece = [&](const uint8_t* p, size_t n) -> Status {
    if (side_fd_.valid()) {
      moved.assign(p, p + n);
      for (size_t at = 0; at + L::kEntrySize <= n; at += L::kEntrySize) {
        uint8_t* off = moved.data() + at + L::kEntryOffsetAt;
        const uint64_t o = base::GetLe64(off);
        if ((o & kSideBit) != 0) base::PutLe64(off, side_base_ + (o & ~kSideBit));
      }
      p = moved.data();
    }
    hasher.Update(p, n);
    HEXZ_RETURN_IF_ERROR(io::PwriteFull(fd_.get(), p, n, pos, out_path_));
    pos += n;
    return Status::Ok();
  };
  for (auto& index : index_) HEXZ_RETURN_IF_ERROR(index->ForEachPiece(write_piece));
  ft->index_offset = offset;
  ft->index_length = pos - offset;
  ft->index_checksum = hasher.Digest();
  ft->file_size = pos + L::kFooterSize;
  ft->id = id_.bytes;
  return Status::Ok();
}

void WriterImpl::Abort() {
  if (finished_ || aborted_) return;
  aborted_ = true;
  SetError(Status::Cancelled("aborted"));
  StopThreads();
  if (!tmp_path_.empty()) unlink(tmp_path_.c_str());
  fd_.reset();
}

}  // namespace

Result<std::unique_ptr<SnapshotWriter>> SnapshotWriter::Create(const std::string& output_path,
                                                               const WriterOptions& options) {
  auto w = std::make_unique<WriterImpl>(output_path, options);
  HEXZ_RETURN_IF_ERROR(w->Init());
  return std::unique_ptr<SnapshotWriter>(std::move(w));
}

Status PackStream(SnapshotWriter* writer, int fd, const std::string& name, StreamId stream,
                  uint64_t size) {
  HEXZ_RETURN_IF_ERROR(writer->BeginStream(stream, size));
  uint32_t bs = writer->block_size();
  std::vector<uint8_t> buf(bs);
  io::HoleScanner holes(fd, size);
  for (uint64_t pos = 0; pos < size; pos += bs) {
    uint64_t len = std::min<uint64_t>(bs, size - pos);
    if (holes.IsHole(pos, len)) {
      HEXZ_RETURN_IF_ERROR(writer->AddZero());
      continue;
    }
    HEXZ_RETURN_IF_ERROR(io::PreadFull(fd, buf.data(), len, pos, name));
    HEXZ_RETURN_IF_ERROR(writer->AddData(buf.data(), len));
  }
  return writer->EndStream();
}

Status CopyBlock(SnapshotWriter* writer, const Snapshot& source, StreamId stream, uint64_t b,
                 std::vector<uint8_t>* buf) {
  const uint32_t blen = source.BlockLength(stream, b);
  // Walk up the chain to the file that holds the block, if lengths agree.
  const Snapshot* s = &source;
  HEXZ_ASSIGN_OR_RETURN(BlockEntry e, s->GetBlockEntry(stream, b));
  while (e.kind == BlockKind::kParent && s->parent() != nullptr &&
         s->parent()->BlockLength(stream, b) == blen) {
    s = s->parent().get();
    HEXZ_ASSIGN_OR_RETURN(e, s->GetBlockEntry(stream, b));
  }
  if (e.kind == BlockKind::kZero) return writer->AddZero();
  if (e.kind == BlockKind::kParent) {
    // A parent whose stream is shorter: the reader resolves it; recompress.
    buf->resize(blen);
    HEXZ_RETURN_IF_ERROR(source.ReadBlock(stream, b, buf->data()));
    return writer->AddData(buf->data(), blen);
  }
  HEXZ_ASSIGN_OR_RETURN(StoredBlock sb, s->ReadStoredBlock(stream, b));
  return writer->AddStored(sb);
}

namespace {
// The most bytes and blocks of one AddStoredExtent call: a few calls per
// second of copying, and a small index piece per queued job.
constexpr uint64_t kMaxExtentBytes = uint64_t{16} << 20;
constexpr size_t kMaxExtentBlocks = 4096;
}  // namespace

BlockCopier::BlockCopier(SnapshotWriter* writer, const Snapshot& source)
    : writer_(writer), source_(source) {
  // A chain with a remote file has no descriptors: every block is then
  // copied one by one through the snapshot.
  auto fds = source.DupChainFds();
  if (!fds.ok()) return;
  for (UniqueFd& fd : *fds) fds_.push_back(std::make_shared<const UniqueFd>(std::move(fd)));
  names_ = source.ChainNames();
}

Status BlockCopier::Flush() {
  if (zeros_ > 0) {
    HEXZ_RETURN_IF_ERROR(writer_->AddRun(BlockKind::kZero, zeros_));
    zeros_ = 0;
  }
  if (!extent_.entries.empty()) {
    extent_.fd = fds_[extent_depth_];
    extent_.name = names_[extent_depth_];
    HEXZ_RETURN_IF_ERROR(writer_->AddStoredExtent(extent_));
    extent_.entries.clear();
    extent_bytes_ = 0;
  }
  return Status::Ok();
}

Status BlockCopier::Copy(StreamId stream, uint64_t from, uint64_t to) {
  for (uint64_t b = from; b < to; ++b) {
    const uint32_t blen = source_.BlockLength(stream, b);
    // Walk up the chain to the file that holds the block, if lengths agree.
    const Snapshot* s = &source_;
    size_t depth = 0;
    HEXZ_ASSIGN_OR_RETURN(BlockEntry e, s->GetBlockEntry(stream, b));
    while (e.kind == BlockKind::kParent && s->parent() != nullptr &&
           s->parent()->BlockLength(stream, b) == blen) {
      s = s->parent().get();
      ++depth;
      HEXZ_ASSIGN_OR_RETURN(e, s->GetBlockEntry(stream, b));
    }
    if (e.kind == BlockKind::kZero) {
      if (!extent_.entries.empty()) HEXZ_RETURN_IF_ERROR(Flush());
      ++zeros_;
      continue;
    }
    if (e.kind == BlockKind::kStored && depth < fds_.size()) {
      const bool extends =
          !extent_.entries.empty() && depth == extent_depth_ &&
          e.offset == extent_.entries.back().offset + extent_.entries.back().stored_length &&
          extent_bytes_ + e.stored_length <= kMaxExtentBytes &&
          extent_.entries.size() < kMaxExtentBlocks;
      if (!extends) HEXZ_RETURN_IF_ERROR(Flush());
      extent_depth_ = depth;
      extent_.entries.push_back(e);
      extent_bytes_ += e.stored_length;
      continue;
    }
    if (e.kind == BlockKind::kDedup && depth < fds_.size()) {
      // Its own extent, after the one that may hold its target.
      HEXZ_RETURN_IF_ERROR(Flush());
      extent_depth_ = depth;
      extent_.entries.push_back(e);
      HEXZ_RETURN_IF_ERROR(Flush());
      continue;
    }
    HEXZ_RETURN_IF_ERROR(Flush());
    HEXZ_RETURN_IF_ERROR(CopyBlock(writer_, source_, stream, b, &buf_));
  }
  return Flush();
}

Status CopyStream(SnapshotWriter* writer, const Snapshot& source, StreamId stream) {
  if (source.block_size() != writer->block_size())
    return Status::InvalidArgument(source.path() + ": block size differs from the output's");
  HEXZ_RETURN_IF_ERROR(writer->BeginStream(stream, source.StreamSize(stream)));
  BlockCopier copier(writer, source);
  HEXZ_RETURN_IF_ERROR(copier.Copy(stream, 0, source.BlockCount(stream)));
  return writer->EndStream();
}

}  // namespace hexz::format
