#define FUSE_USE_VERSION 312
#include "common/fuse/read_only_fs.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstring>

#include "common/base/checked_math.h"
#include "common/base/log.h"

namespace hexz::fuse {

using base::Status;

namespace {

constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;  // 1; files are 2, 3, ...
constexpr double kTimeout = 86400.0;           // contents never change
constexpr uint32_t kMaxRead = 1024 * 1024;

// libfuse's own messages: the last error is kept so that a failed mount can
// be reported with libfuse's reason, and everything goes to our log.
std::mutex g_fuse_log_mu;
std::string g_fuse_last_error;  // guarded by g_fuse_log_mu

void FuseLog(enum fuse_log_level level, const char* fmt, va_list ap) {
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  size_t n = std::strlen(buf);
  while (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
  if (level <= FUSE_LOG_ERR) {
    std::lock_guard<std::mutex> lock(g_fuse_log_mu);
    g_fuse_last_error = buf;
  }
  if (level <= FUSE_LOG_WARNING) {
    HEXZ_LOG_WARN("libfuse: %s", buf);
  } else {
    HEXZ_LOG_DEBUG("libfuse: %s", buf);
  }
}

std::string TakeFuseError() {
  std::lock_guard<std::mutex> lock(g_fuse_log_mu);
  return std::exchange(g_fuse_last_error, std::string());
}

ReadOnlyFs* Fs(fuse_req_t req) { return static_cast<ReadOnlyFs*>(fuse_req_userdata(req)); }

// The file behind an inode, or null.
const File* FileOf(ReadOnlyFs* fs, fuse_ino_t ino) {
  if (ino < 2 || ino - 2 >= fs->files().size()) return nullptr;
  return &fs->files()[ino - 2];
}

struct stat AttrOf(ReadOnlyFs* fs, fuse_ino_t ino) {
  struct stat st = {};
  const FsOptions& o = fs->options();
  st.st_ino = ino;
  st.st_uid = o.uid;
  st.st_gid = o.gid;
  st.st_atim = st.st_mtim = st.st_ctim = o.mtime;
  if (ino == kRootIno) {
    st.st_mode = S_IFDIR | 0555;
    st.st_nlink = 2;
    st.st_blksize = 4096;
    return st;
  }
  const File* f = FileOf(fs, ino);
  st.st_mode = S_IFREG | 0444;
  st.st_nlink = 1;
  st.st_size = static_cast<off_t>(f->volume->Size());
  st.st_blksize = f->volume->BlockSize();
  st.st_blocks = static_cast<blkcnt_t>((f->volume->Size() + 511) / 512);
  return st;
}

void OpInit(void* userdata, struct fuse_conn_info* conn) {
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  conn->max_read = kMaxRead;  // must match the max_read mount option
  conn->max_readahead = std::min(conn->max_readahead, kMaxRead);
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  static_cast<ReadOnlyFs*>(userdata)->NotifyReady();
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  ReadOnlyFs* fs = Fs(req);
  if (parent != kRootIno) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  for (size_t i = 0; i < fs->files().size(); ++i) {
    if (fs->files()[i].name == name) {
      struct fuse_entry_param e = {};
      e.ino = i + 2;
      e.attr = AttrOf(fs, e.ino);
      e.attr_timeout = e.entry_timeout = kTimeout;
      fuse_reply_entry(req, &e);
      return;
    }
  }
  fuse_reply_err(req, ENOENT);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info*) {
  ReadOnlyFs* fs = Fs(req);
  if (ino != kRootIno && FileOf(fs, ino) == nullptr) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st = AttrOf(fs, ino);
  fuse_reply_attr(req, &st, kTimeout);
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  if (ino != kRootIno) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  if ((fi->flags & O_ACCMODE) != O_RDONLY) {
    fuse_reply_err(req, EROFS);
    return;
  }
  fi->cache_readdir = 1;
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  ReadOnlyFs* fs = Fs(req);
  if (ino != kRootIno) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  std::vector<char> buf(std::min<size_t>(size, 64 * 1024));
  size_t used = 0;
  // Entry i: 0 ".", 1 "..", 2+ files; an entry's offset is the index of the next.
  size_t count = 2 + fs->files().size();
  for (size_t i = static_cast<size_t>(std::max<off_t>(off, 0)); i < count; ++i) {
    struct stat st = {};
    const char* name;
    if (i < 2) {
      name = i == 0 ? "." : "..";
      st.st_ino = kRootIno;
      st.st_mode = S_IFDIR;
    } else {
      name = fs->files()[i - 2].name.c_str();
      st.st_ino = i;  // file k (0-based) is inode k + 2 == i
      st.st_mode = S_IFREG;
    }
    size_t need = fuse_add_direntry(req, buf.data() + used, buf.size() - used, name, &st,
                                    static_cast<off_t>(i + 1));
    if (need > buf.size() - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void OpReleasedir(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) { fuse_reply_err(req, 0); }

void OpOpen(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  if (FileOf(Fs(req), ino) == nullptr) {
    fuse_reply_err(req, ino == kRootIno ? EISDIR : ENOENT);
    return;
  }
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
    fuse_reply_err(req, EROFS);
    return;
  }
  fi->keep_cache = 1;  // a snapshot never changes under the page cache
  fuse_reply_open(req, fi);
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  ReadOnlyFs* fs = Fs(req);
  const File* f = FileOf(fs, ino);
  if (f == nullptr) {
    fuse_reply_err(req, EBADF);
    return;
  }
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  uint64_t file_size = f->volume->Size();
  uint64_t offset = static_cast<uint64_t>(off);
  if (offset >= file_size || size == 0) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  uint64_t len = std::min<uint64_t>({size, file_size - offset, kMaxRead});
  HEXZ_LOG_DEBUG("read %s offset %llu size %zu", f->name.c_str(),
                 static_cast<unsigned long long>(offset), size);
  std::unique_ptr<char[]> buf(new (std::nothrow) char[len]);
  if (!buf) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  io::Volume* volume = f->volume.get();
  Status st = fs->pool().ForEachPiece(offset, len, volume->BlockSize(),
                                      [&](uint64_t piece_off, uint64_t piece_len, uint64_t pos) {
                                        return volume->Read(piece_off, buf.get() + pos, piece_len);
                                      });
  if (!st.ok()) {
    HEXZ_LOG_ERROR("read of %s at offset %llu, %llu bytes: %s", f->name.c_str(),
                   static_cast<unsigned long long>(offset), static_cast<unsigned long long>(len),
                   st.ToString().c_str());
    fuse_reply_err(req, st.ToErrno());
    return;
  }
  fuse_reply_buf(req, buf.get(), len);
}

void OpRelease(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) { fuse_reply_err(req, 0); }
void OpFlush(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) { fuse_reply_err(req, 0); }

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  ReadOnlyFs* fs = Fs(req);
  struct statvfs sv = {};
  uint64_t bsize = 4096;
  uint64_t total = 0;
  for (const File& f : fs->files()) total += (f.volume->Size() + bsize - 1) / bsize;
  sv.f_bsize = sv.f_frsize = bsize;
  sv.f_blocks = total;
  sv.f_files = sv.f_ffree = 0;
  sv.f_files = 1 + fs->files().size();
  sv.f_namemax = 255;
  sv.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &sv);
}

// Every modifying operation.
void OpSetattr(fuse_req_t req, fuse_ino_t, struct stat*, int, struct fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void OpMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { fuse_reply_err(req, EROFS); }
void OpMkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { fuse_reply_err(req, EROFS); }
void OpUnlink(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpSymlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
  fuse_reply_err(req, EROFS);
}
void OpLink(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpWrite(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, struct fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void OpCreate(fuse_req_t req, fuse_ino_t, const char*, mode_t, struct fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void OpSetxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) {
  fuse_reply_err(req, EROFS);
}
void OpRemovexattr(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpFallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, struct fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}

const struct fuse_lowlevel_ops kOps = [] {
  struct fuse_lowlevel_ops ops = {};
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.getattr = OpGetattr;
  ops.setattr = OpSetattr;
  ops.mknod = OpMknod;
  ops.mkdir = OpMkdir;
  ops.unlink = OpUnlink;
  ops.rmdir = OpUnlink;
  ops.symlink = OpSymlink;
  ops.rename = OpRename;
  ops.link = OpLink;
  ops.open = OpOpen;
  ops.read = OpRead;
  ops.write = OpWrite;
  ops.flush = OpFlush;
  ops.release = OpRelease;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.releasedir = OpReleasedir;
  ops.statfs = OpStatfs;
  ops.setxattr = OpSetxattr;
  ops.removexattr = OpRemovexattr;
  ops.create = OpCreate;
  ops.fallocate = OpFallocate;
  return ops;
}();

}  // namespace

// ---- ReadPool ----

struct ReadPool::Job {
  uint64_t offset = 0;
  uint64_t len = 0;
  uint32_t block_size = 0;
  uint64_t pieces = 0;
  const std::function<Status(uint64_t, uint64_t, uint64_t)>* fn = nullptr;
  std::atomic<uint64_t> next{0};
  std::mutex mu;
  std::condition_variable done_cv;
  uint64_t done = 0;   // guarded by mu
  Status first_error;  // guarded by mu
};

ReadPool::ReadPool(uint32_t threads) {
  for (uint32_t i = 1; i < std::max<uint32_t>(threads, 1); ++i) {
    threads_.emplace_back([this] { WorkerLoop(); });
  }
}

ReadPool::~ReadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ReadPool::RunPieces(Job& job) {
  for (;;) {
    uint64_t i = job.next.fetch_add(1);
    if (i >= job.pieces) return;
    // Piece i covers [start, end) clipped to the request.
    uint64_t first_block = job.offset / job.block_size;
    uint64_t start = std::max(job.offset, (first_block + i) * job.block_size);
    uint64_t end = std::min(job.offset + job.len, (first_block + i + 1) * job.block_size);
    Status st = (*job.fn)(start, end - start, start - job.offset);
    std::lock_guard<std::mutex> lock(job.mu);
    if (!st.ok() && job.first_error.ok()) job.first_error = st;
    if (++job.done == job.pieces) job.done_cv.notify_all();
  }
}

void ReadPool::WorkerLoop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = queue_.front();
      // Leave the job queued while pieces remain, so other threads help too.
      if (job->next.load() + 1 >= job->pieces) queue_.pop_front();
    }
    RunPieces(*job);
    std::lock_guard<std::mutex> lock(mu_);
    if (!queue_.empty() && queue_.front() == job) queue_.pop_front();
  }
}

Status ReadPool::ForEachPiece(
    uint64_t offset, uint64_t len, uint32_t block_size,
    const std::function<Status(uint64_t off, uint64_t len, uint64_t buf_pos)>& fn) {
  if (len == 0) return Status::Ok();
  if (block_size == 0 || (block_size & (block_size - 1)) != 0) {
    return Status::Internal("read pool: block size " + std::to_string(block_size) +
                            " is not a power of two");
  }
  auto end = base::CheckedAdd(offset, len);
  if (!end) return Status::OutOfRange("read pool: offset + length overflows");
  uint64_t first = offset / block_size;
  uint64_t last = (*end - 1) / block_size;
  uint64_t pieces = last - first + 1;
  if (pieces == 1 || threads_.empty()) return fn(offset, len, 0);

  auto job = std::make_shared<Job>();
  job->offset = offset;
  job->len = len;
  job->block_size = block_size;
  job->pieces = pieces;
  job->fn = &fn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job);
  }
  cv_.notify_all();
  RunPieces(*job);
  std::unique_lock<std::mutex> lock(job->mu);
  job->done_cv.wait(lock, [&] { return job->done == job->pieces; });
  return job->first_error;
}

// ---- ReadOnlyFs ----

ReadOnlyFs::ReadOnlyFs(std::vector<File> files, FsOptions options)
    : files_(std::move(files)), options_(std::move(options)), pool_(options_.read_threads) {}

ReadOnlyFs::~ReadOnlyFs() {
  if (session_ != nullptr) {
    if (mounted_) fuse_session_unmount(session_);
    fuse_session_destroy(session_);
  }
}

void ReadOnlyFs::NotifyReady() {
  std::call_once(ready_once_, [this] {
    if (options_.on_ready) options_.on_ready();
  });
}

Status ReadOnlyFs::Mount(const std::string& mountpoint) {
  fuse_set_log_func(FuseLog);
  std::string opts = "ro,default_permissions,fsname=" + options_.fsname +
                     ",subtype=hexz,max_read=" + std::to_string(kMaxRead);
  if (options_.allow_root) opts += ",allow_root";
  if (options_.auto_unmount) opts += ",auto_unmount";
  std::string prog = "hexz-fused";
  std::string dash_o = "-o";
  char* argv[] = {prog.data(), dash_o.data(), opts.data(), nullptr};
  struct fuse_args args = FUSE_ARGS_INIT(3, argv);
  TakeFuseError();
  session_ = fuse_session_new(&args, &kOps, sizeof kOps, this);
  fuse_opt_free_args(&args);
  if (session_ == nullptr) {
    return Status::Internal("creating the FUSE session with options '" + opts +
                            "' failed: " + TakeFuseError());
  }
  if (fuse_session_mount(session_, mountpoint.c_str()) != 0) {
    std::string why = TakeFuseError();
    return Status::Unavailable("mounting on " + mountpoint + " failed" +
                               (why.empty() ? std::string() : ": " + why));
  }
  mounted_ = true;
  return Status::Ok();
}

Status ReadOnlyFs::Serve() {
  if (session_ == nullptr) return Status::Internal("Serve() before Mount()");
  struct fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  fuse_loop_cfg_set_max_threads(cfg, 16);
  fuse_loop_cfg_set_idle_threads(cfg, 4);
  int rc = fuse_session_loop_mt(session_, cfg);
  fuse_loop_cfg_destroy(cfg);
  if (rc < 0) return Status::FromErrno(-rc, "FUSE session loop");
  return Status::Ok();
}

void ReadOnlyFs::Exit() {
  if (session_ != nullptr) fuse_session_exit(session_);
}

void ReadOnlyFs::Unmount() {
  if (session_ != nullptr && mounted_) {
    fuse_session_unmount(session_);
    mounted_ = false;
  }
}

Status CheckFuseDevice(const std::string& path) {
  const std::string advice =
      " (FUSE mounts need the fuse kernel module and a " + path +
      " that users may open, mode 0666 as on Debian; scripts/setup.sh prepares this)";
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    return Status(base::Code::kUnavailable, path + ": " + std::strerror(err) + advice, err);
  }
  struct stat st;
  int rc = ::fstat(fd, &st);
  ::close(fd);
  if (rc != 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != 10 || minor(st.st_rdev) != 229) {
    return Status::Unavailable(path + ": not the FUSE character device (10:229)" + advice);
  }
  return Status::Ok();
}

}  // namespace hexz::fuse
