// The control socket of hexz vm resume: see vm_control.h.
#include "hexz/vm_control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "common/base/log.h"
#include "common/base/path.h"
#include "common/ipc/channel.h"
#include "common/ipc/worker_protocol.h"

namespace hexz::cli {

using base::Result;
using base::Status;
using base::UniqueFd;

std::string ControlSocketFor(const std::string& nbd_socket) {
  return base::DirName(nbd_socket) + "/control";
}

namespace {

Result<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path)
    return Status::InvalidArgument("socket path " + path + " is too long");
  std::memcpy(sa.sun_path, path.c_str(), path.size());
  return sa;
}

}  // namespace

Result<std::unique_ptr<VmControlClient>> VmControlClient::Connect(const std::string& path) {
  HEXZ_ASSIGN_OR_RETURN(sockaddr_un sa, UnixAddress(path));
  auto c = std::unique_ptr<VmControlClient>(new VmControlClient());
  c->path_ = path;
  c->fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!c->fd_) return Status::FromErrno(errno, "socket");
  if (::connect(c->fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    return Status::FromErrno(errno, "cannot connect to hexz vm resume's control socket " + path);
  }
  return c;
}

Status VmControlClient::Request(uint32_t type, const std::vector<uint8_t>& payload,
                                std::string* detail) {
  HEXZ_RETURN_IF_ERROR(ipc::Send(fd_.get(), type, payload));
  auto reply = ipc::ReceiveWorkerReply(fd_.get());
  if (!reply.ok()) return reply.status().WithContext("hexz vm resume (" + path_ + ")");
  if (detail != nullptr) *detail = *reply;
  return Status::Ok();
}

Result<std::string> VmControlClient::Switch(const std::string& output,
                                            const format::SnapshotId& id) {
  ipc::Encoder e;
  e.Str(output);
  for (uint8_t b : id.bytes) e.U8(b);
  std::string frozen;
  HEXZ_RETURN_IF_ERROR(Request(kVmSwitch, e.bytes(), &frozen));
  return frozen;
}

Status VmControlClient::Captured() { return Request(kVmCaptured, {}, nullptr); }
Status VmControlClient::Failed() { return Request(kVmFailed, {}, nullptr); }

Result<std::unique_ptr<VmControlServer>> VmControlServer::Start(const std::string& path,
                                                                VmControlHandlers handlers) {
  HEXZ_ASSIGN_OR_RETURN(sockaddr_un sa, UnixAddress(path));
  auto s = std::unique_ptr<VmControlServer>(new VmControlServer());
  s->path_ = path;
  s->handlers_ = std::move(handlers);
  s->listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s->listen_) return Status::FromErrno(errno, "socket");
  mode_t old = ::umask(0177);
  int rc = ::bind(s->listen_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  int err = errno;
  ::umask(old);
  if (rc != 0) return Status::FromErrno(err, "binding " + path);
  if (::listen(s->listen_.get(), 4) != 0) return Status::FromErrno(errno, "listening on " + path);
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  s->quit_read_ = UniqueFd(p[0]);
  s->quit_write_ = UniqueFd(p[1]);
  s->thread_ = std::thread([raw = s.get()] { raw->Run(); });
  return s;
}

VmControlServer::~VmControlServer() {
  if (thread_.joinable()) {
    (void)!::write(quit_write_.get(), "x", 1);
    thread_.join();
  }
  ::unlink(path_.c_str());
}

void VmControlServer::Run() {
  for (;;) {
    struct pollfd pfd[2] = {{quit_read_.get(), POLLIN, 0}, {listen_.get(), POLLIN, 0}};
    if (::poll(pfd, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (pfd[0].revents != 0) return;
    UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) continue;
    struct ucred cred = {};
    socklen_t len = sizeof cred;
    if (::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        cred.uid != ::getuid()) {
      (void)ipc::SendWorkerError(
          conn.get(), Status::PermissionDenied(path_ + ": refused a connection from uid " +
                                               std::to_string(cred.uid) +
                                               "; only the owner of the resumed guest (uid " +
                                               std::to_string(::getuid()) + ") may control it"));
      continue;
    }
    Serve(conn.get());
  }
}

// One client: requests until it hangs up. A switch not followed by
// "captured" is undone.
void VmControlServer::Serve(int conn) {
  bool switched = false;
  for (;;) {
    struct pollfd pfd[2] = {{quit_read_.get(), POLLIN, 0}, {conn, POLLIN, 0}};
    if (::poll(pfd, 2, -1) < 0 && errno == EINTR) continue;
    if (pfd[0].revents != 0) break;
    auto m = ipc::Receive(conn, {kVmSwitch, kVmCaptured, kVmFailed});
    if (!m.ok()) break;
    Status st;
    std::string detail = "ok";
    ipc::Decoder d(m->payload);
    if (m->type == kVmSwitch) {
      auto output = d.Str(4096);
      format::SnapshotId id;
      st = output.status();
      for (uint8_t& b : id.bytes) {
        auto v = d.U8();
        if (!v.ok()) st = v.status();
        b = v.ok() ? *v : 0;
      }
      if (st.ok()) st = d.Finish();
      if (st.ok() && switched) st = Status::Busy("a switch is already under way");
      if (st.ok()) {
        auto frozen = handlers_.on_switch(*output, id);
        st = frozen.status();
        if (frozen.ok()) detail = *frozen;
        switched = frozen.ok();
      }
    } else if (!switched) {
      st = Status::InvalidArgument("no switch to end");
    } else {
      st = m->type == kVmCaptured ? handlers_.on_captured() : handlers_.on_failed();
      switched = false;
    }
    if (!(st.ok() ? ipc::SendWorkerReady(conn, detail) : ipc::SendWorkerError(conn, st)).ok())
      break;
  }
  if (switched) {
    Status st = handlers_.on_failed();
    if (!st.ok()) HEXZ_LOG_ERROR("undoing the overlay switch: %s", st.ToString().c_str());
  }
}

}  // namespace hexz::cli
