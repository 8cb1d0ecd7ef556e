#define FUSE_USE_VERSION 312
#include "common/fuse/volume_fs.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
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
constexpr uint32_t kMaxWrite = 1024 * 1024;  // read-write mode
constexpr uint64_t kWritableHandle = 1;      // fuse_file_info::fh of a handle opened to write

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

VolumeFs* Fs(fuse_req_t req) { return static_cast<VolumeFs*>(fuse_req_userdata(req)); }

// The file behind an inode, or null.
const File* FileOf(VolumeFs* fs, fuse_ino_t ino) {
  if (ino < 2 || ino - 2 >= fs->files().size()) return nullptr;
  return &fs->files()[ino - 2];
}

// True when the file takes writes (read-write mode and marked writable).
bool Writable(VolumeFs* fs, const File& f) { return fs->options().read_write && f.writable; }

// The piece size requests are split into (see File::io_size).
uint32_t IoSize(const File& f) { return f.io_size != 0 ? f.io_size : f.volume->BlockSize(); }

// What a change to the directory (or to xattrs) gets: the tree is fixed.
int FixedTreeErrno(VolumeFs* fs) { return fs->options().read_write ? EPERM : EROFS; }

unsigned long long U(uint64_t v) { return static_cast<unsigned long long>(v); }

struct stat AttrOf(VolumeFs* fs, fuse_ino_t ino) {
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
  st.st_mode = S_IFREG | (Writable(fs, *f) ? 0644 : 0444);
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
  auto* fs = static_cast<VolumeFs*>(userdata);
  if (fs->options().read_write) {
    // Write-through: every write(2) reaches us before it returns, so a later
    // fsync/flush covers it (no kernel write-back cache).
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    conn->max_write = kMaxWrite;
  }
  fs->NotifyReady();
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  VolumeFs* fs = Fs(req);
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
  VolumeFs* fs = Fs(req);
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
  VolumeFs* fs = Fs(req);
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
  VolumeFs* fs = Fs(req);
  const File* f = FileOf(fs, ino);
  if (f == nullptr) {
    fuse_reply_err(req, ino == kRootIno ? EISDIR : ENOENT);
    return;
  }
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
    if (!fs->options().read_write) {
      fuse_reply_err(req, EROFS);
      return;
    }
    if (!f->writable) {
      fuse_reply_err(req, EACCES);  // memory stays read-only
      return;
    }
    if ((fi->flags & O_TRUNC) && f->volume->Size() != 0) {
      fuse_reply_err(req, EPERM);  // the size is fixed
      return;
    }
  }
  // The contents change only through this mount (writes go through the page
  // cache), so the cache stays valid in read-write mode too; files that
  // alias each other in read-write mode bypass it instead.
  fi->keep_cache = f->direct_io ? 0 : 1;
  fi->direct_io = f->direct_io ? 1 : 0;
  // FLUSH and FSYNC requests carry no open flags, only this handle.
  fi->fh = (fi->flags & O_ACCMODE) != O_RDONLY ? kWritableHandle : 0;
  fuse_reply_open(req, fi);
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  VolumeFs* fs = Fs(req);
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
  io::Volume* volume = f->volume.get();
  io::Readahead* ahead = fs->readahead();
  if (ahead != nullptr && ahead->Read(ino - 2, volume, offset, len, [&](const uint8_t* bytes) {
        fuse_reply_buf(req, reinterpret_cast<const char*>(bytes), len);
      })) {
    return;
  }
  std::unique_ptr<char[]> buf(new (std::nothrow) char[len]);
  if (!buf) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  Status st = fs->fanout().ForEachPiece(
      offset, len, IoSize(*f), [&](uint64_t piece_off, uint64_t piece_len, uint64_t pos) {
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

// The writable file `ino` names; or nullptr after replying EROFS (read-only
// mount) or EBADF (no such file, or a read-only one).
const File* WritableFileOrReply(fuse_req_t req, VolumeFs* fs, fuse_ino_t ino) {
  if (!fs->options().read_write) {
    fuse_reply_err(req, EROFS);
    return nullptr;
  }
  const File* f = FileOf(fs, ino);
  if (f == nullptr || !f->writable) {
    fuse_reply_err(req, EBADF);
    return nullptr;
  }
  return f;
}

void OpWrite(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off,
             struct fuse_file_info*) {
  VolumeFs* fs = Fs(req);
  const File* f = WritableFileOrReply(req, fs, ino);
  if (f == nullptr) return;
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  if (size == 0) {
    fuse_reply_write(req, 0);
    return;
  }
  const uint64_t offset = static_cast<uint64_t>(off);
  io::Volume* volume = f->volume.get();
  // Checked as a whole first: a write that ends past the end writes nothing.
  if (!base::RangeWithin<uint64_t>(offset, size, volume->Size())) {
    HEXZ_LOG_DEBUG("write of %zu bytes at offset %llu to %s ends past its end (%llu bytes)", size,
                   U(offset), f->name.c_str(), U(volume->Size()));
    fuse_reply_err(req, ENOSPC);
    return;
  }
  HEXZ_LOG_DEBUG("write %s offset %llu size %zu", f->name.c_str(), U(offset), size);
  Status st = fs->fanout().ForEachPiece(offset, size, IoSize(*f),
                                        [&](uint64_t piece_off, uint64_t piece_len, uint64_t pos) {
                                          return volume->Write(piece_off, data + pos, piece_len,
                                                               /*fua=*/false);
                                        });
  if (!st.ok()) {
    HEXZ_LOG_ERROR("write of %s at offset %llu, %zu bytes: %s", f->name.c_str(), U(offset), size,
                   st.ToString().c_str());
    fuse_reply_err(req, st.ToErrno());
    return;
  }
  fuse_reply_write(req, size);
}

// fsync, flush and release of a writable file make every acknowledged write
// durable (Volume::Flush) and report a failure to the caller. flush and
// release of a handle opened read-only do neither: a reader's close() must not
// fail with an earlier writer's error (such as a sticky ENOSPC), nor pay for a
// flush. fsync flushes for every handle, since it asks for durability.
void FlushFile(fuse_req_t req, fuse_ino_t ino, const char* what) {
  VolumeFs* fs = Fs(req);
  const File* f = FileOf(fs, ino);
  if (f == nullptr || !Writable(fs, *f)) {
    fuse_reply_err(req, 0);
    return;
  }
  Status st = f->volume->Flush();
  if (!st.ok()) {
    HEXZ_LOG_ERROR("%s of %s: %s", what, f->name.c_str(), st.ToString().c_str());
    fuse_reply_err(req, st.ToErrno());
    return;
  }
  fuse_reply_err(req, 0);
}

void OpFsync(fuse_req_t req, fuse_ino_t ino, int, struct fuse_file_info*) {
  FlushFile(req, ino, "fsync");
}
void OpFlush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  if (fi->fh != kWritableHandle) {
    fuse_reply_err(req, 0);
    return;
  }
  FlushFile(req, ino, "flush");
}
void OpRelease(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) == O_RDONLY) {
    fuse_reply_err(req, 0);
    return;
  }
  FlushFile(req, ino, "release");
}

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  VolumeFs* fs = Fs(req);
  struct statvfs sv = {};
  uint64_t bsize = 4096;
  uint64_t total = 0;
  for (const File& f : fs->files()) total += (f.volume->Size() + bsize - 1) / bsize;
  sv.f_bsize = sv.f_frsize = bsize;
  sv.f_blocks = total;
  sv.f_files = sv.f_ffree = 0;
  sv.f_files = 1 + fs->files().size();
  sv.f_namemax = 255;
  sv.f_flag = fs->options().read_write ? 0 : ST_RDONLY;
  fuse_reply_statfs(req, &sv);
}

// Attribute changes: EROFS in read-only mode. In read-write mode only a
// truncate to the current size passes (it changes nothing); another size,
// and mode, owner or time changes, get EPERM.
void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
               struct fuse_file_info*) {
  VolumeFs* fs = Fs(req);
  if (!fs->options().read_write) {
    fuse_reply_err(req, EROFS);
    return;
  }
  const File* f = FileOf(fs, ino);
  if (f == nullptr) {
    fuse_reply_err(req, ino == kRootIno ? EPERM : ENOENT);
    return;
  }
  constexpr int kFixed = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
                         FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
                         FUSE_SET_ATTR_MTIME_NOW;
  if ((to_set & kFixed) != 0) {
    fuse_reply_err(req, EPERM);
    return;
  }
  if ((to_set & FUSE_SET_ATTR_SIZE) &&
      (attr->st_size < 0 || static_cast<uint64_t>(attr->st_size) != f->volume->Size())) {
    HEXZ_LOG_DEBUG("truncate of %s to %lld bytes refused: its size is fixed", f->name.c_str(),
                   static_cast<long long>(attr->st_size));
    fuse_reply_err(req, EPERM);
    return;
  }
  struct stat st = AttrOf(fs, ino);
  fuse_reply_attr(req, &st, kTimeout);
}

// Changes to the directory: EROFS, or EPERM in read-write mode.
void OpMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) {
  fuse_reply_err(req, FixedTreeErrno(Fs(req)));
}
void OpMkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) {
  fuse_reply_err(req, FixedTreeErrno(Fs(req)));
}
void OpUnlink(fuse_req_t req, fuse_ino_t, const char*) {
  fuse_reply_err(req, FixedTreeErrno(Fs(req)));
}
void OpSymlink(fuse_req_t req, const char*, fuse_ino_t, const char*) {
  fuse_reply_err(req, FixedTreeErrno(Fs(req)));
}
void OpRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
  fuse_reply_err(req, FixedTreeErrno(Fs(req)));
}
void OpLink(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) {
  fuse_reply_err(req, FixedTreeErrno(Fs(req)));
}
void OpCreate(fuse_req_t req, fuse_ino_t, const char*, mode_t, struct fuse_file_info*) {
  fuse_reply_err(req, FixedTreeErrno(Fs(req)));
}
// Extended attributes: none, and none can be set.
void OpSetxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) {
  fuse_reply_err(req, Fs(req)->options().read_write ? ENOTSUP : EROFS);
}
void OpRemovexattr(fuse_req_t req, fuse_ino_t, const char*) {
  fuse_reply_err(req, Fs(req)->options().read_write ? ENOTSUP : EROFS);
}

// Read-write mode: PUNCH_HOLE and ZERO_RANGE make the range read as zeros
// (Volume::WriteZeroes); the size cannot grow (ENOSPC without KEEP_SIZE) and
// space cannot be reserved in an overlay (plain allocation: EOPNOTSUPP).
void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                 struct fuse_file_info*) {
  VolumeFs* fs = Fs(req);
  const File* f = WritableFileOrReply(req, fs, ino);
  if (f == nullptr) return;
  if (off < 0 || len <= 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) != 0) {
    fuse_reply_err(req, EOPNOTSUPP);
    return;
  }
  const uint64_t size = f->volume->Size();
  uint64_t offset = static_cast<uint64_t>(off);
  uint64_t length = static_cast<uint64_t>(len);
  if (!base::RangeWithin(offset, length, size)) {
    if (!(mode & FALLOC_FL_KEEP_SIZE)) {
      fuse_reply_err(req, ENOSPC);  // the size is fixed
      return;
    }
    if (offset >= size) {
      fuse_reply_err(req, 0);  // nothing of the file is in the range
      return;
    }
    length = size - offset;
  }
  if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
    fuse_reply_err(req, EOPNOTSUPP);
    return;
  }
  Status st = f->volume->WriteZeroes(offset, length, /*fua=*/false);
  if (!st.ok()) {
    HEXZ_LOG_ERROR("zeroing %llu bytes of %s at offset %llu: %s", U(length), f->name.c_str(),
                   U(offset), st.ToString().c_str());
    fuse_reply_err(req, st.ToErrno());
    return;
  }
  fuse_reply_err(req, 0);
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
  ops.fsync = OpFsync;
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

// ---- VolumeFs ----

VolumeFs::VolumeFs(std::vector<File> files, FsOptions options)
    : files_(std::move(files)), options_(std::move(options)), fanout_(options_.read_threads) {
  // Ranges read ahead are never invalidated: only where nothing changes.
  if (!options_.read_write && options_.readahead) readahead_ = std::make_unique<io::Readahead>();
}

VolumeFs::~VolumeFs() {
  if (session_ != nullptr) {
    if (mounted_) fuse_session_unmount(session_);
    fuse_session_destroy(session_);
  }
}

void VolumeFs::NotifyReady() {
  std::call_once(ready_once_, [this] {
    if (options_.on_ready) options_.on_ready();
  });
}

Status VolumeFs::Mount(const std::string& mountpoint) {
  fuse_set_log_func(FuseLog);
  std::string opts = std::string(options_.read_write ? "rw" : "ro") +
                     ",default_permissions,fsname=" + options_.fsname +
                     ",subtype=hexz,max_read=" + std::to_string(kMaxRead);
  if (options_.allow_other) {
    opts += ",allow_other";
  } else if (options_.allow_root) {
    opts += ",allow_root";
  }
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

void VolumeFs::AddFiles(std::vector<File> files) {
  for (File& f : files) files_.push_back(std::move(f));
}

Status VolumeFs::Serve() {
  if (session_ == nullptr) return Status::Internal("Serve() before Mount()");
  struct fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  fuse_loop_cfg_set_max_threads(cfg, 16);
  fuse_loop_cfg_set_idle_threads(cfg, 4);
  if (options_.exit_on_signals && fuse_set_signal_handlers(session_) != 0) {
    fuse_loop_cfg_destroy(cfg);
    return Status::Internal("installing the FUSE signal handlers failed");
  }
  int rc = fuse_session_loop_mt(session_, cfg);
  if (readahead_ != nullptr) {
    HEXZ_LOG_DEBUG("readahead: %llu reads served from %llu ranges read ahead",
                   U(readahead_->hits()), U(readahead_->ahead_reads()));
  }
  if (options_.exit_on_signals) fuse_remove_signal_handlers(session_);
  fuse_loop_cfg_destroy(cfg);
  if (rc < 0) return Status::FromErrno(-rc, "FUSE session loop");
  return Status::Ok();
}

void VolumeFs::Exit() {
  if (session_ != nullptr) fuse_session_exit(session_);
}

void VolumeFs::Unmount() {
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
    return Status::Unavailable(path + ": " + std::strerror(err) + advice, err);
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
