// hexz_nbd_testserver: serves raw image files through the hexz NBD server
// library, so that real NBD clients can be tested against it before the
// snapshot reader and the sandboxed worker are wired in. Test tool only.
//
//   hexz_nbd_testserver --image disk.img [--memory mem.img] [--rw]
//                       (--socket PATH | --port N) [--threads N] [--verbose]
//
// Read-only exports read the file with pread and report holes (SEEK_HOLE)
// and all-zero blocks in block status. With --rw the image is copied into
// memory and writes go to the copy (the file is never modified).
// SIGINT/SIGTERM stop it cleanly.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "common/base/bytes.h"
#include "common/base/log.h"
#include "common/io/file.h"
#include "common/nbd/server.h"

namespace {

using hexz::base::Status;
using hexz::io::Extent;

constexpr uint32_t kGranule = 4096;
constexpr uint64_t kMaxScan = 64u << 20;  // bytes examined per Extents call

void AddExtent(std::vector<Extent>* out, uint64_t off, uint64_t len, bool zero, bool hole) {
  if (!out->empty() && out->back().zero == zero && out->back().hole == hole &&
      out->back().offset + out->back().length == off) {
    out->back().length += len;
  } else {
    out->push_back(Extent{off, len, zero, hole});
  }
}

class FileVolume : public hexz::io::Volume {
 public:
  FileVolume(hexz::base::UniqueFd fd, uint64_t size) : fd_(std::move(fd)), size_(size) {}
  uint64_t Size() const override { return size_; }
  uint32_t BlockSize() const override { return kGranule; }
  Status Read(uint64_t off, void* buf, size_t len) override {
    return hexz::io::PreadFull(fd_.get(), buf, len, off, "image");
  }
  Status Extents(uint64_t off, uint64_t len, std::vector<Extent>* out) override {
    uint64_t end = off + std::min(len, kMaxScan);
    std::vector<uint8_t> buf(kGranule);
    for (uint64_t pos = off; pos < end;) {
      off_t data = ::lseek(fd_.get(), static_cast<off_t>(pos), SEEK_DATA);
      if (data < 0 && errno == ENXIO) data = static_cast<off_t>(size_);
      if (data >= 0 && static_cast<uint64_t>(data) > pos) {
        uint64_t hole_end = std::min<uint64_t>(static_cast<uint64_t>(data), end);
        AddExtent(out, pos, hole_end - pos, true, true);
        pos = hole_end;
        continue;
      }
      uint64_t next = std::min<uint64_t>((pos / kGranule + 1) * kGranule, end);
      size_t n = static_cast<size_t>(next - pos);
      HEXZ_RETURN_IF_ERROR(hexz::io::PreadFull(fd_.get(), buf.data(), n, pos, "image"));
      AddExtent(out, pos, n, hexz::base::AllZero(buf.data(), n), false);
      pos = next;
    }
    return Status::Ok();
  }

 private:
  hexz::base::UniqueFd fd_;
  uint64_t size_;
};

class MemoryVolume : public hexz::io::Volume {
 public:
  explicit MemoryVolume(std::vector<uint8_t> data) : data_(std::move(data)) {}
  uint64_t Size() const override { return data_.size(); }
  uint32_t BlockSize() const override { return kGranule; }
  bool Writable() const override { return true; }
  Status Read(uint64_t off, void* buf, size_t len) override {
    std::shared_lock lock(mu_);
    std::memcpy(buf, data_.data() + off, len);
    return Status::Ok();
  }
  Status Write(uint64_t off, const void* buf, size_t len, bool) override {
    std::unique_lock lock(mu_);
    std::memcpy(data_.data() + off, buf, len);
    return Status::Ok();
  }
  Status WriteZeroes(uint64_t off, uint64_t len, bool) override {
    std::unique_lock lock(mu_);
    std::memset(data_.data() + off, 0, len);
    return Status::Ok();
  }
  Status Trim(uint64_t off, uint64_t len) override { return WriteZeroes(off, len, false); }
  Status Extents(uint64_t off, uint64_t len, std::vector<Extent>* out) override {
    std::shared_lock lock(mu_);
    uint64_t end = off + std::min(len, kMaxScan);
    for (uint64_t pos = off; pos < end;) {
      uint64_t next = std::min<uint64_t>((pos / kGranule + 1) * kGranule, end);
      bool zero = hexz::base::AllZero(data_.data() + pos, next - pos);
      AddExtent(out, pos, next - pos, zero, zero);
      pos = next;
    }
    return Status::Ok();
  }

 private:
  std::shared_mutex mu_;
  std::vector<uint8_t> data_;  // guarded by mu_
};

int stop_pipe[2] = {-1, -1};
void OnSignal(int) { (void)!::write(stop_pipe[1], "x", 1); }

std::shared_ptr<hexz::io::Volume> OpenVolume(const std::string& path, bool rw) {
  auto fd = hexz::io::OpenFile(path, O_RDONLY);
  if (!fd.ok()) {
    std::fprintf(stderr, "hexz_nbd_testserver: %s\n", fd.status().ToString().c_str());
    return nullptr;
  }
  auto size = hexz::io::FileSize(fd->get(), path);
  if (!size.ok()) {
    std::fprintf(stderr, "hexz_nbd_testserver: %s\n", size.status().ToString().c_str());
    return nullptr;
  }
  if (!rw) return std::make_shared<FileVolume>(std::move(*fd), *size);
  std::vector<uint8_t> data(*size);
  Status s = hexz::io::PreadFull(fd->get(), data.data(), data.size(), 0, path);
  if (!s.ok()) {
    std::fprintf(stderr, "hexz_nbd_testserver: %s\n", s.ToString().c_str());
    return nullptr;
  }
  return std::make_shared<MemoryVolume>(std::move(data));
}

int Usage() {
  std::fprintf(stderr,
               "usage: hexz_nbd_testserver --image FILE [--memory FILE] [--rw] "
               "(--socket PATH | --port N) [--threads N] [--verbose]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string image, memory, socket_path;
  int port = -1;
  bool rw = false;
  hexz::nbd::ServerOptions opts;
  hexz::base::SetLogProgram("hexz_nbd_testserver");
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (a == "--rw") {
      rw = true;
    } else if (a == "--verbose") {
      hexz::base::SetLogLevel(hexz::base::LogLevel::kDebug);
    } else if ((a == "--image" || a == "--memory" || a == "--socket" || a == "--port" ||
                a == "--threads") &&
               (v = next()) != nullptr) {
      if (a == "--image") image = v;
      if (a == "--memory") memory = v;
      if (a == "--socket") socket_path = v;
      if (a == "--port") port = std::atoi(v);
      if (a == "--threads") opts.threads_per_connection = static_cast<unsigned>(std::atoi(v));
    } else {
      return Usage();
    }
  }
  if (image.empty() || (socket_path.empty() == (port < 0))) return Usage();

  std::vector<hexz::nbd::Export> exports;
  auto disk = OpenVolume(image, rw);
  if (!disk) return 1;
  exports.push_back({"disk", disk, "test disk image", true});
  if (!memory.empty()) {
    auto mem = OpenVolume(memory, false);
    if (!mem) return 1;
    exports.push_back({"memory", mem, "test memory image", true});
  }

  int lfd;
  if (!socket_path.empty()) {
    // Bind under a temporary name and rename once listening, so the path
    // appears only when clients can connect.
    std::string tmp = socket_path + ".tmp";
    lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {};
    sa.sun_family = AF_UNIX;
    if (tmp.size() >= sizeof sa.sun_path) return Usage();
    std::strcpy(sa.sun_path, tmp.c_str());
    ::unlink(tmp.c_str());
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(lfd, 64) != 0 ||
        ::rename(tmp.c_str(), socket_path.c_str()) != 0) {
      std::perror("hexz_nbd_testserver: bind/listen");
      return 1;
    }
  } else {
    lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(lfd, 64) != 0) {
      std::perror("hexz_nbd_testserver: bind/listen");
      return 1;
    }
  }
  if (::pipe2(stop_pipe, O_CLOEXEC) != 0) return 1;
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  hexz::nbd::Server server(std::move(exports), opts);
  Status s = server.ServeListener(lfd, stop_pipe[0]);
  ::close(lfd);
  if (!socket_path.empty()) ::unlink(socket_path.c_str());
  if (!s.ok()) {
    std::fprintf(stderr, "hexz_nbd_testserver: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
