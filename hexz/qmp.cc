#include "hexz/qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

namespace hexz::cli {

using base::JsonValue;
using base::Result;
using base::Status;

namespace {

constexpr size_t kMaxLine = 16u << 20;

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

Result<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& path, int timeout_ms) {
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path))
    return Status::InvalidArgument(path + ": not a usable unix socket path (too long or empty)");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  base::UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::FromErrno(errno, "socket");
  if (connect(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    Status st = Status::FromErrno(err, path + ": cannot connect to the QMP socket");
    return Status::Unavailable(
        st.message() + " (is QEMU running with -qmp unix:" + path + ",server=on,wait=off?)", err);
  }
  std::unique_ptr<QmpClient> c(new QmpClient(std::move(fd), path, timeout_ms));
  HEXZ_ASSIGN_OR_RETURN(JsonValue greeting, c->ReadMessage(timeout_ms));
  const JsonValue* qmp = greeting.Find("QMP");
  const JsonValue* v = qmp ? qmp->Find("version") : nullptr;
  const JsonValue* q = v ? v->Find("qemu") : nullptr;
  if (q == nullptr || !q->is_object())
    return Status::Unsupported(path + ": not a QMP socket (no QMP greeting)");
  auto part = [q](const char* n) {
    const JsonValue* p = q->Find(n);
    auto i = p ? p->AsInt() : std::nullopt;
    return i ? std::to_string(*i) : std::string("?");
  };
  c->version_ = part("major") + "." + part("minor") + "." + part("micro");
  HEXZ_RETURN_IF_ERROR(c->Execute("qmp_capabilities").status());
  return c;
}

Status QmpClient::Send(const std::string& line, int fd_to_pass) {
  struct iovec iov = {const_cast<char*>(line.data()), line.size()};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd_to_pass >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    struct cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cm), &fd_to_pass, sizeof(int));
  }
  size_t done = 0;
  while (done < line.size()) {
    iov.iov_base = const_cast<char*>(line.data() + done);
    iov.iov_len = line.size() - done;
    ssize_t n = sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::FromErrno(errno, path_ + ": QMP send failed (QEMU gone?)");
    done += static_cast<size_t>(n);
    msg.msg_control = nullptr;  // the descriptor goes with the first bytes only
    msg.msg_controllen = 0;
  }
  return Status::Ok();
}

Result<JsonValue> QmpClient::ReadMessage(int timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      auto v = base::ParseJson(line);
      if (!v.ok()) return v.status().WithContext(path_ + ": QMP message");
      if (!v->is_object())
        return Status::Corruption(path_ + ": QMP message is not a JSON object: " + line);
      return v;
    }
    if (buffer_.size() > kMaxLine)
      return Status::Corruption(path_ + ": QMP message longer than 16 MiB");
    const int64_t left = deadline - NowMs();
    if (left <= 0)
      return Status::Unavailable(path_ + ": QEMU did not answer on the QMP socket within " +
                                 std::to_string(timeout_ms / 1000) + " s");
    struct pollfd p = {fd_.get(), POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno(errno, path_ + ": poll");
    if (r == 0) continue;
    char buf[65536];
    ssize_t n = read(fd_.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, path_ + ": QMP read");
    if (n == 0) return Status::Unavailable(path_ + ": QEMU closed the QMP connection");
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

Result<JsonValue> QmpClient::ReadReply(const std::string& command) {
  for (;;) {
    HEXZ_ASSIGN_OR_RETURN(JsonValue m, ReadMessage(timeout_ms_));
    if (m.Find("event") != nullptr) {
      events_.push_back(std::move(m));
      continue;
    }
    if (const JsonValue* r = m.Find("return")) return *r;
    if (const JsonValue* e = m.Find("error")) {
      const JsonValue* cls = e->Find("class");
      const JsonValue* desc = e->Find("desc");
      return Status::Unavailable(path_ + ": QEMU refused " + command + ": " +
                                 (cls ? cls->AsString() : std::string("error")) + ": " +
                                 (desc ? desc->AsString() : m.Serialize()));
    }
    return Status::Corruption(path_ + ": unexpected QMP message: " + m.Serialize());
  }
}

Result<JsonValue> QmpClient::Execute(const std::string& command, const JsonValue& args) {
  std::vector<std::pair<std::string, JsonValue>> members = {
      {"execute", JsonValue::String(command)}};
  if (!args.is_null()) members.emplace_back("arguments", args);
  HEXZ_RETURN_IF_ERROR(Send(JsonValue::Object(std::move(members)).Serialize() + "\n", -1));
  return ReadReply(command);
}

Status QmpClient::SendFd(const std::string& name, int fd) {
  JsonValue cmd =
      JsonValue::Object({{"execute", JsonValue::String("getfd")},
                         {"arguments", JsonValue::Object({{"fdname", JsonValue::String(name)}})}});
  HEXZ_RETURN_IF_ERROR(Send(cmd.Serialize() + "\n", fd));
  return ReadReply("getfd").status();
}

Result<int> QmpClient::PeerPid() const {
  struct ucred cred = {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return Status::FromErrno(errno, path_ + ": SO_PEERCRED");
  return static_cast<int>(cred.pid);
}

Result<JsonValue> QmpClient::WaitEvent(const std::string& name, int timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  for (;;) {
    for (size_t i = 0; i < events_.size(); ++i) {
      const JsonValue* e = events_[i].Find("event");
      if (e != nullptr && e->AsString() == name) {
        JsonValue found = std::move(events_[i]);
        events_.erase(events_.begin() + static_cast<ptrdiff_t>(i));
        return found;
      }
    }
    const int64_t left = deadline - NowMs();
    if (left <= 0) return Status::Unavailable(path_ + ": no " + name + " event from QEMU");
    HEXZ_ASSIGN_OR_RETURN(JsonValue m, ReadMessage(static_cast<int>(left)));
    if (m.Find("event") == nullptr)
      return Status::Corruption(path_ + ": unexpected QMP message: " + m.Serialize());
    events_.push_back(std::move(m));
  }
}

Status WaitForMigration(QmpClient& qmp, bool incoming, const std::function<uint64_t()>& progress) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kStall = std::chrono::seconds(60);
  auto last_progress = Clock::now();
  std::string last_state;
  int64_t last_bytes = -1;
  for (;;) {
    auto reply = qmp.Execute("query-migrate");
    if (!reply.ok())
      return reply.status().WithContext("the migration of the guest's memory did not complete");
    const JsonValue& m = *reply;
    const JsonValue* st = m.Find("status");
    const std::string s = st ? st->AsString() : "";
    if (s == "completed") return Status::Ok();
    if (s == "failed" || s == "cancelled" || (s.empty() && !incoming)) {
      const JsonValue* why = m.Find("error-desc");
      return Status::Unavailable(
          qmp.path() + ": the migration of the guest's memory " +
          (s.empty() ? "did not start" : s) +
          (why ? ": " + why->AsString()
               : std::string(" (QEMU gave no reason over QMP, its stderr may; one known cause: "
                             "a QEMU started with -daemonize, which changes to /, and a disk "
                             "file named by a relative path)")));
    }
    // (An incoming migration shows no status until it has begun.)
    const JsonValue* ram = m.Find("ram");
    const JsonValue* sent = ram != nullptr ? ram->Find("transferred") : nullptr;
    const int64_t bytes = (sent != nullptr ? sent->AsInt().value_or(-1) : -1) +
                          (progress ? static_cast<int64_t>(progress()) : 0);
    if (s != last_state || bytes != last_bytes) {
      last_state = s;
      last_bytes = bytes;
      last_progress = Clock::now();
    } else if (Clock::now() - last_progress > kStall) {
      return Status::Unavailable(
          qmp.path() + ": the migration of the guest's memory made no " +
          "progress for 60 s (QEMU status: " + (s.empty() ? std::string("not begun") : s) + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace hexz::cli
