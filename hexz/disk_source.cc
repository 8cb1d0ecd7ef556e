#include "hexz/disk_source.h"

#include <fcntl.h>
#include <libnbd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <vector>

#include "common/base/endian.h"
#include "common/format/layout.h"
#include "common/io/file.h"
#include "hexz/nbd_api.h"
#include "hexz/worker_session.h"

namespace hexz::cli {
namespace {

// libnbd, loaded by NbdSource::Create (which returns its error) before any
// other use here.
const NbdApi& Nbd() { return **LoadNbd(); }

using base::UniqueFd;
using format::StreamId;

constexpr size_t kProbeBytes = 512;
constexpr uint64_t kStatusChunk = 64ull << 20;  // bytes asked about per block status call

bool HasPrefix(const uint8_t* p, size_t n, std::string_view magic, size_t at = 0) {
  return n >= at + magic.size() && std::memcmp(p + at, magic.data(), magic.size()) == 0;
}

Status Refuse(const std::string& name, const std::string& what, const std::string& hint) {
  return Status::Unsupported(name + ": is " + what +
                             "; hexz packs raw disks and qcow2, VMDK, VHDX, VDI and VPC images" +
                             (hint.empty() ? "" : ": " + hint));
}

bool IsNbdUri(const std::string& s) {
  for (const char* scheme :
       {"nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+vsock://", "nbds+vsock://"}) {
    if (s.rfind(scheme, 0) == 0) return true;
  }
  return false;
}

std::string NbdError(const std::string& what) {
  const char* e = Nbd().get_error();
  return what + ": " + (e != nullptr ? e : "unknown libnbd error");
}

// ---- raw files and block devices ----

class FileSource final : public DiskSource {
 public:
  FileSource(UniqueFd fd, std::string name, uint64_t size, const struct stat& st)
      : fd_(std::move(fd)),
        name_(std::move(name)),
        size_(size),
        holes_(fd_.get(), size),
        id_{st.st_dev, st.st_ino} {}
  std::optional<uint64_t> size() const override { return size_; }
  const std::string& format() const override { return format_; }
  std::optional<std::pair<dev_t, ino_t>> file_id() const override { return id_; }
  Result<size_t> Read(uint64_t offset, void* buf, size_t len, bool* zero) override {
    if (offset >= size_) return size_t{0};
    len = static_cast<size_t>(std::min<uint64_t>(len, size_ - offset));
    *zero = holes_.IsHole(offset, len);
    if (!*zero) HEXZ_RETURN_IF_ERROR(io::PreadFull(fd_.get(), buf, len, offset, name_));
    return len;
  }

 private:
  UniqueFd fd_;
  std::string name_, format_ = "raw";
  uint64_t size_;
  io::HoleScanner holes_;
  std::pair<dev_t, ino_t> id_;
};

// ---- pipes: a stream of unknown length ----

class PipeSource final : public DiskSource {
 public:
  PipeSource(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  std::optional<uint64_t> size() const override { return std::nullopt; }
  const std::string& format() const override { return format_; }
  Result<size_t> Read(uint64_t offset, void* buf, size_t len, bool* zero) override {
    *zero = false;
    if (offset != pos_) return Status::Internal(name_ + ": a stream is read in order");
    HEXZ_ASSIGN_OR_RETURN(size_t got, io::ReadUpTo(fd_.get(), buf, len, name_));
    if (offset == 0) {
      // A container cannot be read from a stream: refuse it rather than
      // packing its bytes as a disk.
      auto fmt = DetectFormat(static_cast<const uint8_t*>(buf), got, nullptr, 0, name_);
      if (!fmt.ok()) return fmt.status();
      if (*fmt != "raw") {
        return Status::Unsupported(name_ + ": holds a " + *fmt +
                                   " image, which hexz reads from a file only (qemu-nbd needs "
                                   "to seek in it): give its path to --disk");
      }
    }
    pos_ += got;
    return got;
  }

 private:
  UniqueFd fd_;
  std::string name_, format_ = "raw";
  uint64_t pos_ = 0;
};

// ---- NBD: qemu-nbd for containers, or a URI ----

class NbdSource final : public DiskSource {
 public:
  NbdSource(std::string name, std::string format)
      : name_(std::move(name)), format_(std::move(format)) {}
  ~NbdSource() override {
    if (h_ != nullptr) {
      Nbd().shutdown(h_, 0);
      Nbd().close(h_);
    }
  }
  std::optional<uint64_t> size() const override { return size_; }
  const std::string& format() const override { return format_; }
  std::optional<std::pair<dev_t, ino_t>> file_id() const override { return id_; }

  // Starts qemu-nbd on `path` (socket activation) and connects.
  Status StartQemuNbd(const std::string& qemu_nbd, const std::string& path, const struct stat& st);
  Status ConnectUri(const std::string& uri);
  Result<size_t> Read(uint64_t offset, void* buf, size_t len, bool* zero) override;
  // The first and last bytes of the export (container detection on a URI).
  Status ReadProbe(std::vector<uint8_t>* head, std::vector<uint8_t>* tail);

 private:
  Status Create();
  Status AfterConnect();
  Result<bool> KnownZero(uint64_t offset, uint64_t len);
  std::string QemuNbdMessages() const;

  struct Extent {
    uint64_t end;  // exclusive
    bool zero;
  };
  static int OnExtents(void* self, const char* context, uint64_t offset, uint32_t* entries,
                       size_t n, int* error);

  std::string name_, format_;
  nbd_handle* h_ = nullptr;
  uint64_t size_ = 0;
  bool block_status_ = false;
  std::deque<Extent> extents_;  // known extents, in order, ending at covered_
  uint64_t covered_ = 0;
  std::optional<std::pair<dev_t, ino_t>> id_;
  UniqueFd qemu_stderr_;  // what qemu-nbd printed (a memfd)
};

Status NbdSource::Create() {
  HEXZ_RETURN_IF_ERROR(LoadNbd().status());
  h_ = Nbd().create();
  if (h_ == nullptr) return Status::Internal(NbdError("nbd_create"));
  if (Nbd().add_meta_context(h_, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    return Status::Internal(NbdError(name_));
  return Status::Ok();
}

std::string NbdSource::QemuNbdMessages() const {
  if (!qemu_stderr_.valid()) return "";
  char buf[4096];
  ssize_t n = pread(qemu_stderr_.get(), buf, sizeof(buf) - 1, 0);
  if (n <= 0) return "";
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s;
}

Status NbdSource::StartQemuNbd(const std::string& qemu_nbd, const std::string& path,
                               const struct stat& st) {
  id_ = std::make_pair(st.st_dev, st.st_ino);
  HEXZ_RETURN_IF_ERROR(Create());
  // qemu-nbd's messages go to a memfd, so that a failure can quote them.
  qemu_stderr_.reset(memfd_create("hexz-qemu-nbd-stderr", MFD_CLOEXEC));
  if (!qemu_stderr_.valid()) return Status::FromErrno(errno, "memfd_create");
  std::string fmt = "--format=" + format_;
  std::vector<const char*> argv = {qemu_nbd.c_str(), "--read-only", fmt.c_str(), "--",
                                   path.c_str(),     nullptr};
  fflush(stderr);
  UniqueFd saved(fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3));
  if (!saved.valid()) return Status::FromErrno(errno, "dup stderr");
  dup2(qemu_stderr_.get(), STDERR_FILENO);
  int rc = Nbd().connect_systemd_socket_activation(h_, const_cast<char**>(argv.data()));
  std::string err = rc == -1 ? NbdError("qemu-nbd") : "";
  dup2(saved.get(), STDERR_FILENO);
  if (rc == -1) {
    std::string said = QemuNbdMessages();
    return Status::IoError(name_ + ": " + format_ +
                           " image: qemu-nbd cannot serve it: " + (said.empty() ? err : said));
  }
  return AfterConnect();
}

Status NbdSource::ConnectUri(const std::string& uri) {
  HEXZ_RETURN_IF_ERROR(Create());
  if (Nbd().connect_uri(h_, uri.c_str()) == -1) return Status::IoError(NbdError(name_));
  return AfterConnect();
}

Status NbdSource::AfterConnect() {
  int64_t size = Nbd().get_size(h_);
  if (size < 0) return Status::IoError(NbdError(name_));
  size_ = static_cast<uint64_t>(size);
  block_status_ = Nbd().can_meta_context(h_, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  return Status::Ok();
}

int NbdSource::OnExtents(void* self, const char* context, uint64_t offset, uint32_t* entries,
                         size_t n, int*) {
  auto* s = static_cast<NbdSource*>(self);
  if (std::strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || offset != s->covered_) return 0;
  uint64_t pos = offset;
  for (size_t i = 0; i + 1 < n; i += 2) {
    if (entries[i] == 0) break;
    pos += entries[i];
    s->extents_.push_back({pos, (entries[i + 1] & LIBNBD_STATE_ZERO) != 0});
  }
  return 0;
}

// Whether [offset, offset + len) reads as zeros, by block status.
Result<bool> NbdSource::KnownZero(uint64_t offset, uint64_t len) {
  if (!block_status_) return false;
  while (!extents_.empty() && extents_.front().end <= offset) extents_.pop_front();
  if (extents_.empty() && covered_ < offset) covered_ = offset;
  while (covered_ < offset + len) {
    uint64_t count = std::min(kStatusChunk, size_ - covered_);
    nbd_extent_callback cb = {OnExtents, this, nullptr};
    size_t before = extents_.size();
    if (Nbd().block_status(h_, count, covered_, cb, 0) == -1)
      return Status::IoError(NbdError(name_ + ": block status"));
    if (extents_.size() == before) {  // the server said nothing usable: read everything
      block_status_ = false;
      return false;
    }
    covered_ = std::min(extents_.back().end, size_);
  }
  for (const Extent& e : extents_) {
    if (!e.zero) return false;
    if (e.end >= offset + len) return true;
  }
  return false;
}

Result<size_t> NbdSource::Read(uint64_t offset, void* buf, size_t len, bool* zero) {
  if (offset >= size_) return size_t{0};
  len = static_cast<size_t>(std::min<uint64_t>(len, size_ - offset));
  HEXZ_ASSIGN_OR_RETURN(*zero, KnownZero(offset, len));
  if (*zero) return len;
  if (Nbd().pread(h_, buf, len, offset, 0) == -1) {
    std::string said = QemuNbdMessages();
    return Status::IoError(NbdError(name_ + ": read of " + std::to_string(len) + " bytes at " +
                                    std::to_string(offset)) +
                           (said.empty() ? "" : " (qemu-nbd: " + said + ")"));
  }
  return len;
}

Status NbdSource::ReadProbe(std::vector<uint8_t>* head, std::vector<uint8_t>* tail) {
  size_t n = static_cast<size_t>(std::min<uint64_t>(kProbeBytes, size_));
  head->resize(n);
  tail->resize(n);
  if (n == 0) return Status::Ok();
  if (Nbd().pread(h_, head->data(), n, 0, 0) == -1 ||
      Nbd().pread(h_, tail->data(), n, size_ - n, 0) == -1)
    return Status::IoError(NbdError(name_));
  return Status::Ok();
}

// ---- opening ----

// Finds qemu-nbd ($HEXZ_QEMU_NBD, else PATH) or qemu-img (next to the
// qemu-nbd used, else PATH).
Result<std::string> FindQemuTool(const std::string& tool, const std::string& near,
                                 const std::string& name, const std::string& format) {
  std::string why = name + ": is a " + format + " image, which hexz reads with " + tool + ", but ";
  std::string hint = "; install qemu-utils, or convert the image with qemu-img convert -O raw";
  if (const char* env = std::getenv("HEXZ_QEMU_NBD");
      tool == "qemu-nbd" && env != nullptr && *env != '\0') {
    if (access(env, X_OK) != 0)
      return Status::NotFound(why + "HEXZ_QEMU_NBD=" + env + " is not an executable" + hint);
    return std::string(env);
  }
  if (!near.empty()) {
    std::string cand = near.substr(0, near.rfind('/') + 1) + tool;
    if (near.find('/') != std::string::npos && access(cand.c_str(), X_OK) == 0) return cand;
  }
  if (auto found = FindInPath(tool); found.ok()) return found;
  return Status::NotFound(why + tool + " is not installed (not found in PATH)" + hint);
}

// qemu reads a cluster past the end of a truncated image as zeros, without
// an error; its metadata check finds that. Runs `qemu-img check` (read-only)
// and refuses an image with errors, quoting them. Formats whose check qemu
// does not implement pass.
Status CheckImage(const std::string& qemu_img, const std::string& path, const std::string& format) {
  UniqueFd out(memfd_create("hexz-qemu-img-check", MFD_CLOEXEC));
  if (!out.valid()) return Status::FromErrno(errno, "memfd_create");
  std::string fmt = "--format=" + format;
  pid_t pid = fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    dup2(out.get(), STDOUT_FILENO);
    dup2(out.get(), STDERR_FILENO);
    execl(qemu_img.c_str(), qemu_img.c_str(), "check", fmt.c_str(), "--", path.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  int wst = 0;
  while (waitpid(pid, &wst, 0) < 0) {
    if (errno != EINTR) return Status::FromErrno(errno, "waitpid");
  }
  int rc = WIFEXITED(wst) ? WEXITSTATUS(wst) : 128;
  if (rc == 0 || rc == 3 || rc == 63) return Status::Ok();  // clean, leaks only, no check
  char buf[2048];
  ssize_t n = pread(out.get(), buf, sizeof(buf) - 1, 0);
  // The first three lines say enough.
  std::string said;
  int lines = 0;
  for (ssize_t i = 0; i < n && lines < 3; ++i) {
    if (buf[i] == '\n') {
      if (++lines < 3) said.push_back(' ');
    } else {
      said.push_back(buf[i]);
    }
  }
  if (rc == 2) {
    return Status::Corruption(
        path + ": the " + format +
        " image is damaged (truncated or corrupt); qemu-img check says: " + said);
  }
  return Status::IoError(path + ": qemu-img check cannot read the " + format + " image: " + said);
}

Status CheckFormatName(const std::string& format) {
  for (const char* f : kDiskFormats)
    if (format == f) return Status::Ok();
  return Status::InvalidArgument("--disk-format " + format +
                                 ": unknown (expected raw, qcow2, vmdk, vhdx, vdi or vpc)");
}

Result<std::unique_ptr<DiskSource>> OpenUri(const std::string& uri) {
  auto src = std::make_unique<NbdSource>(uri, "nbd");
  HEXZ_RETURN_IF_ERROR(src->ConnectUri(uri));
  std::vector<uint8_t> head, tail;
  HEXZ_RETURN_IF_ERROR(src->ReadProbe(&head, &tail));
  HEXZ_ASSIGN_OR_RETURN(std::string fmt,
                        DetectFormat(head.data(), head.size(), tail.data(), tail.size(), uri));
  if (fmt != "raw") {
    return Status::Unsupported(
        uri + ": the NBD export holds a " + fmt +
        " image, not a disk; serve the disk instead (qemu-nbd --format=" + fmt + ")");
  }
  return std::unique_ptr<DiskSource>(std::move(src));
}

Result<std::unique_ptr<DiskSource>> OpenPath(const std::string& path, const std::string& forced) {
  HEXZ_ASSIGN_OR_RETURN(UniqueFd fd, io::OpenFile(path, O_RDONLY | O_NONBLOCK));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, path);
  if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(path + ": is a directory");
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    // A FIFO by name would block until a writer comes: streams come as -.
    return Status::InvalidArgument(path +
                                   ": not a regular file or block device; to read a stream, "
                                   "pipe it into --disk -");
  }
  HEXZ_ASSIGN_OR_RETURN(uint64_t size, io::FileSize(fd.get(), path));
  std::string fmt = forced;
  if (fmt.empty()) {
    uint8_t head[kProbeBytes] = {}, tail[kProbeBytes] = {};
    size_t n = static_cast<size_t>(std::min<uint64_t>(kProbeBytes, size));
    HEXZ_RETURN_IF_ERROR(io::PreadFull(fd.get(), head, n, 0, path));
    HEXZ_RETURN_IF_ERROR(io::PreadFull(fd.get(), tail, n, size - n, path));
    HEXZ_ASSIGN_OR_RETURN(fmt, DetectFormat(head, n, tail, n, path));
  }
  if (fmt == "raw")
    return std::unique_ptr<DiskSource>(std::make_unique<FileSource>(std::move(fd), path, size, st));
  HEXZ_ASSIGN_OR_RETURN(std::string qemu_nbd, FindQemuTool("qemu-nbd", "", path, fmt));
  HEXZ_ASSIGN_OR_RETURN(std::string qemu_img, FindQemuTool("qemu-img", qemu_nbd, path, fmt));
  HEXZ_RETURN_IF_ERROR(CheckImage(qemu_img, path, fmt));
  auto src = std::make_unique<NbdSource>(path, fmt);
  HEXZ_RETURN_IF_ERROR(src->StartQemuNbd(qemu_nbd, path, st));
  return std::unique_ptr<DiskSource>(std::move(src));
}

}  // namespace

Result<std::string> DetectFormat(const uint8_t* h, size_t n, const uint8_t* t, size_t tn,
                                 const std::string& name) {
  if (HasPrefix(h, n, "QFI\xfb")) {
    uint32_t version = n >= 8 ? base::GetBe32(h + 4) : 0;
    if (version == 2 || version == 3) return std::string("qcow2");
    return Refuse(name, "a qcow image of version " + std::to_string(version),
                  "convert it with qemu-img convert -O qcow2");
  }
  if (HasPrefix(h, n, "KDMV") || HasPrefix(h, n, "COWD") ||
      HasPrefix(h, n, "# Disk DescriptorFile"))
    return std::string("vmdk");
  if (HasPrefix(h, n, "vhdxfile")) return std::string("vhdx");
  if (n >= 0x44 && base::GetLe32(h + 0x40) == 0xbeda107f) return std::string("vdi");
  if (HasPrefix(h, n, "conectix") || (tn >= 512 && HasPrefix(t + tn - 512, 512, "conectix")) ||
      (tn >= 511 && HasPrefix(t + tn - 511, 511, "conectix")))
    return std::string("vpc");
  const std::string convert = "convert it with qemu-img convert -O qcow2";
  if (HasPrefix(h, n, "QED\0")) return Refuse(name, "a QED image", convert);
  if (HasPrefix(h, n, "LUKS\xba\xbe"))
    return Refuse(name, "a LUKS encrypted volume", "open it with cryptsetup and pack the mapping");
  if (HasPrefix(h, n, "WithoutFreeSpace") || HasPrefix(h, n, "WithouFreSpacExt"))
    return Refuse(name, "a Parallels image", convert);
  if (HasPrefix(h, n, "Bochs Virtual HD Image")) return Refuse(name, "a Bochs image", convert);
  if (tn >= 512 && HasPrefix(t + tn - 512, 512, "koly"))
    return Refuse(name, "an Apple disk image (DMG)", convert);
  const std::string pipe = "decompress it into a pipe: ... | hexz pack --disk - ...";
  if (HasPrefix(h, n, "\x1f\x8b")) return Refuse(name, "a gzip-compressed file", pipe);
  if (HasPrefix(h, n,
                "\xfd"
                "7zXZ"))
    return Refuse(name, "an xz-compressed file", pipe);
  if (HasPrefix(h, n, "\x28\xb5\x2f\xfd")) return Refuse(name, "a zstd-compressed file", pipe);
  if (HasPrefix(h, n, "BZh") && HasPrefix(h, n, "1AY&SY", 4))
    return Refuse(name, "a bzip2-compressed file", pipe);
  const auto& magic = format::layout::kHeaderMagic;
  if (n >= magic.size() && std::memcmp(h, magic.data(), magic.size()) == 0)
    return Refuse(name, "a hexz snapshot", "read it with hexz cat, or mount it");
  return std::string("raw");
}

Result<std::unique_ptr<DiskSource>> OpenDiskSource(const std::string& spec,
                                                   const std::string& forced_format) {
  if (!forced_format.empty()) HEXZ_RETURN_IF_ERROR(CheckFormatName(forced_format));
  if (IsNbdUri(spec)) {
    if (!forced_format.empty() && forced_format != "raw")
      return Status::InvalidArgument(spec +
                                     ": an NBD export is a disk; --disk-format applies "
                                     "to files only");
    return OpenUri(spec);
  }
  if (spec == "-") {
    if (!forced_format.empty() && forced_format != "raw")
      return Status::InvalidArgument("stdin: a " + forced_format + " image must be a file");
    UniqueFd fd(fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3));
    if (!fd.valid()) return Status::FromErrno(errno, "stdin");
    return std::unique_ptr<DiskSource>(std::make_unique<PipeSource>(std::move(fd), "stdin"));
  }
  return OpenPath(spec, forced_format);
}

std::unique_ptr<DiskSource> OpenStreamSource(UniqueFd fd, const std::string& name) {
  return std::make_unique<PipeSource>(std::move(fd), name);
}

Result<PackSourceStats> PackSource(format::SnapshotWriter* writer, DiskSource* source,
                                   const std::string& name, StreamId stream,
                                   const format::Snapshot* parent) {
  const uint32_t bs = writer->block_size();
  const std::optional<uint64_t> size = source->size();
  HEXZ_RETURN_IF_ERROR(
      writer->BeginStream(stream, size ? *size : format::SnapshotWriter::kUnknownSize));
  const bool parent_has = parent != nullptr && parent->HasStream(stream);
  const uint64_t parent_size = parent_has ? parent->StreamSize(stream) : 0;
  std::vector<uint8_t> buf(bs), pbuf;
  PackSourceStats stats;
  for (uint64_t b = 0;; ++b) {
    const uint64_t pos = b * bs;
    if (size && pos >= *size) break;
    bool zero = false;
    HEXZ_ASSIGN_OR_RETURN(size_t got, source->Read(pos, buf.data(), bs, &zero));
    if (got == 0) break;
    ++stats.blocks;
    if (zero) {
      HEXZ_RETURN_IF_ERROR(writer->AddZero());
      continue;
    }
    // The thin snapshot's reading semantics: a parent block reads the same
    // range of the parent chain, which must cover it.
    if (parent_has && pos + got <= parent_size && (size || got == bs)) {
      pbuf.resize(parent->BlockLength(stream, b));
      HEXZ_RETURN_IF_ERROR(parent->ReadBlock(stream, b, pbuf.data()));
      if (std::memcmp(pbuf.data(), buf.data(), got) == 0) {
        HEXZ_RETURN_IF_ERROR(writer->AddParent());
        ++stats.parent_blocks;
        continue;
      }
    }
    HEXZ_RETURN_IF_ERROR(writer->AddData(buf.data(), got));
    if (got < bs && !size) break;
  }
  Status st = writer->EndStream();
  if (!st.ok()) return st.WithContext(name);
  return stats;
}

}  // namespace hexz::cli
