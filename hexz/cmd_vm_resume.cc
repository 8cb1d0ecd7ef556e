// hexz vm resume: brings back a guest captured by `hexz vm snapshot`.
//
// Serves the snapshot's disk read-write through the sandboxed worker (as
// `hexz serve --rw` does) on a unix socket in a private 0700 directory, its
// writes going into a copy-on-write overlay (--overlay, kept; else an
// ephemeral one in that directory, removed at the end), with disk.json
// beside the socket for vm snapshot (vm_session.h). Refuses a QEMU older
// than the recorded qemu.version. Starts QEMU from the recorded qemu.args,
// with the -drive named by qemu.disk replaced by the NBD export, -machine
// naming the recorded qemu.machine, `-incoming fd:3`, a QMP socket and the
// extra arguments (QEMU starts while the server gets ready). Once QEMU's
// QMP greets it with QEMU's version, and that version can load the stream,
// it feeds the memory stream into fd 3 from this process (MemoryFeed), waits over QMP until the
// incoming migration has completed, then `cont`. Then it stays in the foreground like QEMU itself:
// when QEMU exits, the server flushes the overlay and stops; SIGINT, SIGTERM or SIGHUP are passed
// on to QEMU (which shuts down). Any failure before that stops QEMU and the server and names QEMU's
// own message.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/format/snapshot.h"
#include "common/overlay/overlay.h"
#include "common/overlay/overlay_files.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"
#include "hexz/memory_feed.h"
#include "hexz/qmp.h"
#include "hexz/vm_control.h"
#include "hexz/vm_session.h"
#include "hexz/worker_session.h"

namespace hexz::cli {
namespace {

using base::Result;
using base::Status;
using base::UniqueFd;

struct ResumeArgs {
  std::string snapshot, overlay, qmp, qemu;
  std::vector<std::string> extra;
};

// What the snapshot recorded for a resume.
struct Recorded {
  std::vector<std::string> args;  // qemu.args
  std::string disk;               // qemu.disk
  std::string program;            // qemu.program
  std::string version;            // qemu.version
  std::string machine;            // qemu.machine (the resolved type, e.g. pc-i440fx-7.2)
};

// The snapshot's memory stream must be a QEMU migration stream, with the
// arguments and the disk's drive recorded next to it.
Result<Recorded> ReadRecorded(const std::string& name, const format::Snapshot& s) {
  const std::string hint = "; hexz vm resume takes a snapshot written by hexz vm snapshot";
  if (!s.HasStream(format::StreamId::kMemory)) {
    return Status::InvalidArgument(name + " has no memory stream (it holds only a disk)" + hint);
  }
  const format::Metadata& m = s.metadata();
  if (m.empty()) {
    return Status::InvalidArgument(name +
                                   " has no metadata section (the memory stream's kind and "
                                   "QEMU's arguments)" +
                                   hint);
  }
  auto get = [&m](const char* key) {
    auto it = m.find(key);
    return it == m.end() ? std::string() : it->second;
  };
  const std::string kind = get(format::kMetaMemoryKind);
  if (kind != format::kMemoryKindQemu) {
    return Status::InvalidArgument(name + ": its memory stream is " +
                                   (kind.empty() ? "raw" : kind) +
                                   " (memory.kind), not a QEMU migration stream" + hint);
  }
  Recorded r;
  const std::string args = get(format::kMetaQemuArgs);
  for (size_t s0 = 0, e; s0 < args.size(); s0 = e + 1) {
    e = args.find('\0', s0);
    if (e == std::string::npos) e = args.size();
    r.args.push_back(args.substr(s0, e - s0));
  }
  r.disk = get(format::kMetaQemuDisk);
  r.program = get(format::kMetaQemuProgram);
  r.version = get(format::kMetaQemuVersion);
  r.machine = get(format::kMetaQemuMachine);
  if (r.args.empty() || r.disk.empty()) {
    return Status::InvalidArgument(
        name + ": its metadata lacks " +
        (r.args.empty() ? "qemu.args" : "qemu.disk (the disk's -drive)") + hint);
  }
  return r;
}

// "MAJOR.MINOR.MICRO" as numbers (missing parts are 0).
std::vector<long> VersionParts(const std::string& v) {
  std::vector<long> parts;
  for (size_t i = 0; i < v.size() && parts.size() < 3;) {
    size_t end = v.find('.', i);
    if (end == std::string::npos) end = v.size();
    parts.push_back(std::strtol(v.substr(i, end - i).c_str(), nullptr, 10));
    i = end + 1;
  }
  parts.resize(3, 0);
  return parts;
}

// A QEMU program that does not run is named before anything starts, rather
// than seen exiting: `program` itself when it names a path, else in $PATH.
Status CheckProgram(const std::string& program) {
  const bool found = program.find('/') != std::string::npos
                         ? ::access(program.c_str(), X_OK) == 0
                         : !program.empty() && FindInPath(program).ok();
  if (found) return Status::Ok();
  return Status::NotFound("cannot run the QEMU program " + program +
                          " (not found, or not executable); name it with --qemu");
}

// QEMU loads migration streams of its own and older versions only: a QEMU
// older than the one that wrote the stream is refused before the stream is
// fed. `have` is the version in QEMU's QMP greeting (QEMU waits for the
// stream on fd 3 meanwhile).
Status CheckQemuVersion(const std::string& have, const std::string& program, const Recorded& r,
                        const std::string& name) {
  if (have.empty() || r.version.empty()) return Status::Ok();  // cannot tell: QEMU will
  if (VersionParts(have) >= VersionParts(r.version)) return Status::Ok();
  return Status::Unsupported(name + ": its memory stream was written by QEMU " + r.version +
                             ", and " + program + " is QEMU " + have +
                             ", which cannot load the migration stream of a newer QEMU; resume "
                             "with QEMU " +
                             r.version + " or later (--qemu PROGRAM)");
}

// The -machine (or -M) of `args` names the recorded machine type instead of
// an alias: `-machine pc` means the newest pc-i440fx-X.Y of whichever QEMU
// runs, and a newer QEMU loads an older stream only into the older type.
void PinMachine(const std::string& machine, std::vector<std::string>* args) {
  if (machine.empty()) return;
  bool seen = false;
  for (size_t i = 0; i + 1 < args->size(); ++i) {
    if ((*args)[i] != "-machine" && (*args)[i] != "-M") continue;
    std::string out;
    bool typed = false;
    for (std::string& o : SplitDriveOptions((*args)[i + 1])) {
      if (o.find('=') == std::string::npos || o.starts_with("type=")) {
        o = "type=" + machine;
        typed = true;
      }
      out += (out.empty() ? "" : ",") + o;
    }
    (*args)[i + 1] = typed ? out : "type=" + machine + "," + out;
    seen = true;
  }
  if (!seen) args->insert(args->end(), {"-machine", "type=" + machine});
}

// The recorded arguments with the -drive whose id= is `disk` reading the NBD
// export at `socket` instead of its file (its other options are kept).
Result<std::vector<std::string>> ReplaceDisk(const Recorded& r, const std::string& socket,
                                             const std::string& name) {
  std::vector<std::string> out = r.args;
  const std::string uri = DriveNbdUri(socket);
  for (size_t i = 0; i + 1 < out.size(); ++i) {
    if (out[i] != "-drive") continue;
    std::vector<std::string> opts = SplitDriveOptions(out[i + 1]);
    bool match = false;
    for (const std::string& o : opts) match = match || o == "id=" + r.disk;
    if (!match) continue;
    std::string drive = "file=" + uri + ",format=raw";
    for (const std::string& o : opts) {
      if (o.starts_with("file=") || o.starts_with("file.") || o.starts_with("format=")) continue;
      drive += "," + o;
    }
    out[i + 1] = drive;
    return out;
  }
  return Status::Unsupported(name + ": qemu.args has no -drive with id=" + r.disk +
                             " (qemu.disk); hexz vm resume replaces a -drive, not a -blockdev");
}

Result<std::string> Absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[4096];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return Status::FromErrno(errno, "getcwd");
  return std::string(cwd) + "/" + path;
}

// A listening unix socket at `path`, in a fresh private directory (so no
// stale socket can be there), mode 0600.
Result<UniqueFd> ListenUnix(const std::string& path) {
  struct sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path)
    return Status::InvalidArgument("socket path " + path + " is too long");
  std::memcpy(sa.sun_path, path.c_str(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::FromErrno(errno, "socket");
  mode_t old = ::umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  int err = errno;
  ::umask(old);
  if (rc != 0) return Status::FromErrno(err, "binding " + path);
  if (::listen(fd.get(), 16) != 0) return Status::FromErrno(errno, "listening on " + path);
  return fd;
}

// QEMU's stderr goes on to ours; its last lines are kept for error messages.
class StderrTee {
 public:
  // Takes the read end of QEMU's stderr pipe.
  explicit StderrTee(UniqueFd fd) : fd_(std::move(fd)), thread_([this] { Run(); }) {}
  ~StderrTee() { Finish(); }
  // Waits for the end of the pipe (QEMU has exited) and returns the tail.
  std::string Finish() {
    if (thread_.joinable()) thread_.join();
    std::string t = tail_;
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
    return t;
  }

 private:
  void Run() {
    char buf[4096];
    for (ssize_t n; (n = ::read(fd_.get(), buf, sizeof buf)) != 0;) {
      if (n < 0) {
        if (errno == EINTR) continue;
        break;
      }
      (void)!::write(2, buf, static_cast<size_t>(n));
      std::lock_guard<std::mutex> lock(mu_);
      tail_.append(buf, static_cast<size_t>(n));
      if (tail_.size() > 2048) tail_.erase(0, tail_.size() - 2048);
    }
  }
  UniqueFd fd_;
  std::mutex mu_;
  std::string tail_;
  std::thread thread_;
};

// The resumed guest: the disk server, QEMU, and what they leave behind.
// Owns the worker session, the QEMU child, the tee of QEMU's stderr and the
// private directory; the destructor stops and removes whatever is left.
// Thread safety: the front-end's main thread only.
class Resume {
 public:
  explicit Resume(const ResumeArgs& a) : a_(a) {}
  ~Resume() { Cleanup(); }

  Status Start();
  int Foreground();

 private:
  // Launches the disk server on the listening socket; AwaitServer waits
  // until it serves (QEMU may connect before: the socket queues it).
  Status Serve(const format::Snapshot& snapshot);
  Status AwaitServer();
  Status StartQemu(const Recorded& r);
  std::string QemuProgram(const Recorded& r) const;
  Status Incoming(const Recorded& r);
  // Stops QEMU (when `kill_qemu`) and the server, removes the private files.
  void Cleanup();
  std::string QemuSaid();
  // The control socket's requests (vm_control.h).
  Result<std::string> SwitchOverlay(const std::string& output, const format::SnapshotId& id);
  Status Captured();
  Status FoldBack();
  // Puts the frozen overlay back at overlay_ (the fresh one removed).
  void RestoreFrozen();

  const ResumeArgs& a_;
  std::string dir_, nbd_socket_, qmp_socket_, overlay_;
  std::string overlay_abs_;           // overlay_, absolute (disk.json)
  std::string served_;                // the snapshot disk.json names (absolute)
  std::string frozen_, next_served_;  // during a switch: the frozen overlay, the output
  uint64_t disk_size_ = 0;
  bool ephemeral_ = false;
  std::unique_ptr<VmControlServer> control_;  // stopped before the session goes
  std::optional<WorkerSession> session_;
  std::shared_ptr<format::Snapshot> snapshot_;  // until the memory stream is fed
  MemoryFeed feed_;
  pid_t qemu_ = -1;
  std::unique_ptr<StderrTee> tee_;
};

Status Resume::Serve(const format::Snapshot& snapshot) {
  ipc::WorkerConfig config;
  config.mode = ipc::WorkerMode::kNbdServe;
  config.uid = getuid();
  config.gid = getgid();
  HEXZ_RETURN_IF_ERROR(AttachOverlay(overlay_, a_.snapshot, snapshot, &config));
  HEXZ_ASSIGN_OR_RETURN(config.chain_fds, snapshot.DupChainFds());
  config.chain_names = snapshot.ChainNames();
  HEXZ_RETURN_IF_ERROR(ApplyWorkerOptions(WorkerOptions(), snapshot, &config));
  HEXZ_ASSIGN_OR_RETURN(std::string program, FindProgram("hexz-fused", "HEXZ_FUSED", "hexz-fused"));
  HEXZ_ASSIGN_OR_RETURN(config.nbd_listen_fd, ListenUnix(nbd_socket_));
  auto session = WorkerSession::Launch(program, config, -1);
  config = ipc::WorkerConfig();  // the worker holds the overlay's lock and the socket now
  if (!session.ok()) return session.status();
  session_.emplace(std::move(*session));
  return Status::Ok();
}

Status Resume::AwaitServer() {
  auto ready = session_->AwaitReady();
  if (!ready.ok()) session_.reset();  // AwaitReady reaped it
  return ready.status();
}

std::string Resume::QemuProgram(const Recorded& r) const {
  return !a_.qemu.empty()     ? a_.qemu
         : !r.program.empty() ? r.program
                              : std::string("qemu-system-x86_64");
}

Status Resume::StartQemu(const Recorded& r) {
  HEXZ_ASSIGN_OR_RETURN(std::vector<std::string> args, ReplaceDisk(r, nbd_socket_, a_.snapshot));
  PinMachine(r.machine, &args);
  std::string program = QemuProgram(r);
  args.insert(args.begin(), program);
  // The memory stream comes from this process (Incoming), on fd 3.
  HEXZ_ASSIGN_OR_RETURN(UniqueFd incoming, feed_.Prepare());
  args.insert(args.end(),
              {"-qmp", "unix:" + qmp_socket_ + ",server=on,wait=off", "-incoming", "fd:3"});
  args.insert(args.end(), a_.extra.begin(), a_.extra.end());
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  UniqueFd rd(p[0]), wr(p[1]);
  qemu_ = ::fork();
  if (qemu_ < 0) return Status::FromErrno(errno, "fork");
  if (qemu_ == 0) {
    sigprocmask(SIG_SETMASK, &session_->old_mask(), nullptr);
    ::dup2(wr.get(), 2);
    if (incoming.get() == 3) {
      ::fcntl(3, F_SETFD, 0);  // QEMU keeps it across exec
    } else {
      ::dup2(incoming.get(), 3);
    }
    std::vector<char*> argv;
    for (std::string& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "hexz vm resume: cannot run %s: %s\n", argv[0], std::strerror(errno));
    _exit(127);
  }
  wr.reset();
  tee_ = std::make_unique<StderrTee>(std::move(rd));
  return Status::Ok();
}

std::string Resume::QemuSaid() {
  if (qemu_ > 0) {  // QEMU's last words are written by the time it has exited
    for (int i = 0; i < 50 && ::waitpid(qemu_, nullptr, WNOHANG) == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::kill(qemu_, SIGKILL);
    ::waitpid(qemu_, nullptr, 0);
    qemu_ = -1;
  }
  std::string said = tee_ ? tee_->Finish() : "";
  tee_.reset();
  return said;
}

// Connects to QEMU's QMP, waits for the incoming migration, then `cont`.
Status Resume::Incoming(const Recorded& r) {
  std::unique_ptr<QmpClient> qmp;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (qmp == nullptr && std::chrono::steady_clock::now() < deadline) {
    int status;
    if (::waitpid(qemu_, &status, WNOHANG) == qemu_) {
      qemu_ = -1;
      return Status::Unavailable("QEMU exited (" + DescribeWaitStatus(status) + ")");
    }
    struct stat st;
    if (::stat(qmp_socket_.c_str(), &st) == 0) {
      auto c = QmpClient::Connect(qmp_socket_);
      if (c.ok()) {
        qmp = std::move(*c);
        continue;
      }
      // Between QEMU's bind and listen (or an old socket file it is about
      // to replace), a connection is refused: try again.
      if (c.status().sys_errno() != ECONNREFUSED) return c.status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // QEMU is starting
  }
  if (qmp == nullptr) return Status::Unavailable(qmp_socket_ + ": QEMU did not start within 30 s");
  // A QEMU too old is refused before it gets a byte of the stream (the
  // caller stops QEMU and the server).
  HEXZ_RETURN_IF_ERROR(CheckQemuVersion(qmp->qemu_version(), QemuProgram(r), r, a_.snapshot));
  feed_.Start(snapshot_, a_.snapshot);
  Status migrated = WaitForMigration(*qmp, /*incoming=*/true, [this] { return feed_.sent(); });
  Status fed = feed_.Finish(/*abort=*/!migrated.ok());
  HEXZ_RETURN_IF_ERROR(fed);  // a damaged block is the cause of a failed load
  HEXZ_RETURN_IF_ERROR(migrated);
  HEXZ_ASSIGN_OR_RETURN(base::JsonValue status, qmp->Execute("query-status"));
  const base::JsonValue* s = status.Find("status");
  if (s == nullptr || s->AsString() != "running")
    HEXZ_RETURN_IF_ERROR(qmp->Execute("cont").status());
  return Status::Ok();  // disconnects: the QMP socket is free for the user
}

Status Resume::Start() {
  HEXZ_ASSIGN_OR_RETURN(std::shared_ptr<format::Snapshot> snapshot,
                        OpenSnapshotAsUser(a_.snapshot));
  HEXZ_ASSIGN_OR_RETURN(Recorded r, ReadRecorded(a_.snapshot, *snapshot));
  HEXZ_RETURN_IF_ERROR(CheckProgram(QemuProgram(r)));
  HEXZ_ASSIGN_OR_RETURN(std::string base, PrivateRuntimeDir("the guest's NBD socket"));
  std::string tmpl = base + "/resume-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return Status::FromErrno(errno, "mkdtemp " + tmpl);
  dir_ = tmpl;
  nbd_socket_ = dir_ + "/nbd.sock";
  qmp_socket_ = a_.qmp.empty() ? dir_ + "/qmp.sock" : a_.qmp;
  HEXZ_ASSIGN_OR_RETURN(qmp_socket_, Absolute(qmp_socket_));
  ephemeral_ = a_.overlay.empty();
  overlay_ = ephemeral_ ? dir_ + "/overlay" : a_.overlay;
  HEXZ_RETURN_IF_ERROR(Serve(*snapshot));
  disk_size_ = snapshot->StreamSize(format::StreamId::kDisk);
  snapshot_ = std::move(snapshot);  // feeds the memory stream (Incoming)
  HEXZ_ASSIGN_OR_RETURN(served_, Absolute(a_.snapshot));
  HEXZ_ASSIGN_OR_RETURN(overlay_abs_, Absolute(overlay_));
  HEXZ_RETURN_IF_ERROR(WriteServedDisk(dir_, {served_, overlay_abs_, nbd_socket_}));
  HEXZ_RETURN_IF_ERROR(StartQemu(r));  // QEMU starts while the server gets ready
  Status st = AwaitServer();
  if (st.ok()) {
    // Requests to the server go through its control channel: only once it
    // is ready.
    auto control =
        VmControlServer::Start(ControlSocketFor(nbd_socket_),
                               {[this](const std::string& output, const format::SnapshotId& id) {
                                  return SwitchOverlay(output, id);
                                },
                                [this] { return Captured(); }, [this] { return FoldBack(); }});
    if (control.ok()) {
      control_ = std::move(*control);
    } else {
      st = control.status();
    }
  }
  if (st.ok()) st = Incoming(r);
  snapshot_.reset();
  if (st.code() == base::Code::kUnsupported) return st;  // a QEMU too old: QEMU said nothing
  if (!st.ok()) {
    std::string said = QemuSaid();
    if (said.empty()) said = st.message();
    for (size_t nl; (nl = said.find('\n')) != std::string::npos;) said.replace(nl, 1, "; ");
    return Status::Unavailable("QEMU could not resume the guest of " + a_.snapshot + ": " + said +
                               " (" + st.message() + ")");
  }
  std::printf("hexz: resumed %s (QEMU pid %d, QMP at %s); disk writes go to %s%s\n",
              a_.snapshot.c_str(), static_cast<int>(qemu_), qmp_socket_.c_str(), overlay_.c_str(),
              ephemeral_ ? " (ephemeral: removed when QEMU exits; --overlay keeps them)" : "");
  std::fflush(stdout);
  return Status::Ok();
}

// Until QEMU exits; signals are passed on to it. Returns QEMU's exit code.
int Resume::Foreground() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&set, s);
  int rc = 0;
  for (;;) {
    struct timespec tick = {1, 0};
    int signo = sigtimedwait(&set, nullptr, &tick);
    if (signo == SIGINT || signo == SIGTERM || signo == SIGHUP) ::kill(qemu_, SIGTERM);
    int status;
    if (::waitpid(qemu_, &status, WNOHANG) == qemu_) {
      qemu_ = -1;
      rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (::waitpid(session_->pid(), &status, WNOHANG) == session_->pid()) {
      control_.reset();
      session_.reset();
      std::fprintf(stderr, "hexz vm resume: the disk server died (%s); stopping QEMU\n",
                   DescribeWaitStatus(status).c_str());
      rc = 1;
      break;
    }
  }
  Cleanup();
  std::fprintf(stderr, "hexz: the guest resumed from %s has exited%s\n", a_.snapshot.c_str(),
               ephemeral_
                   ? ""
                   : ("; its disk writes are in " + overlay_ + " (over " + served_ + ")").c_str());
  return rc;
}

void Resume::Cleanup() {
  control_.reset();  // undoes a switch under way (the server still runs)
  if (qemu_ > 0) {
    ::kill(qemu_, SIGTERM);
    ReapWorker(qemu_, 10000);
    qemu_ = -1;
  }
  tee_.reset();
  if (session_) {
    int status = session_->Stop(SIGTERM, 60000);  // the worker flushes the overlay
    if (!ExitedCleanly(status)) {
      std::fprintf(stderr, "hexz vm resume: the disk server did not stop cleanly (%s)\n",
                   DescribeWaitStatus(status).c_str());
    }
    session_.reset();
  }
  if (dir_.empty()) return;
  ::unlink(nbd_socket_.c_str());
  ::unlink((dir_ + "/disk.json").c_str());
  if (a_.qmp.empty()) ::unlink(qmp_socket_.c_str());
  if (ephemeral_) {
    ::unlink(overlay_.c_str());
    ::unlink(overlay::MetaPathFor(overlay_).c_str());
  }
  ::rmdir(dir_.c_str());
  dir_.clear();
}

Result<std::string> Resume::SwitchOverlay(const std::string& output, const format::SnapshotId& id) {
  if (!session_) return Status::Unavailable("the disk server is gone");
  // O becomes O.frozen-XXXXXX beside it (the same file system: a rename);
  // the server keeps its descriptors of it.
  std::string frozen = overlay_ + ".frozen-XXXXXX";
  UniqueFd placeholder(::mkostemp(frozen.data(), O_CLOEXEC));
  if (!placeholder) return Status::FromErrno(errno, "cannot create " + frozen);
  placeholder.reset();
  const std::string meta = overlay::MetaPathFor(overlay_);
  if (::rename(overlay_.c_str(), frozen.c_str()) != 0 ||
      ::rename(meta.c_str(), overlay::MetaPathFor(frozen).c_str()) != 0) {
    const int err = errno;
    (void)!::rename(frozen.c_str(), overlay_.c_str());
    ::unlink(frozen.c_str());
    return Status::FromErrno(err, "cannot rename " + overlay_ + " to " + frozen);
  }
  frozen_ = frozen;
  // A fresh O whose base is the output (its id chosen up front), made as
  // the user and initialized here; the server opens it from the descriptors.
  Status st = [&]() -> Status {
    HEXZ_ASSIGN_OR_RETURN(overlay::OverlayFiles files,
                          overlay::OpenOverlayFiles(overlay_, overlay::LockMode::kExclusive,
                                                    /*create=*/true));
    files.names.base = output;
    {
      UniqueFd data(::fcntl(files.data.get(), F_DUPFD_CLOEXEC, 0));
      UniqueFd meta_fd(::fcntl(files.meta.get(), F_DUPFD_CLOEXEC, 0));
      if (!data || !meta_fd) return Status::FromErrno(errno, "dup");
      overlay::OverlayOptions options;
      options.durable = !ephemeral_;
      HEXZ_RETURN_IF_ERROR(overlay::Overlay::Create(std::move(data), std::move(meta_fd),
                                                    files.names, id, disk_size_, options)
                               .status());
    }
    ipc::WorkerControl c;
    c.type = ipc::kSwitchOverlay;
    c.overlay_name = overlay_abs_;
    c.base_id = id.bytes;
    c.overlay_data_fd = std::move(files.data);
    c.overlay_meta_fd = std::move(files.meta);
    return session_->Control(c);
  }();
  if (!st.ok()) {
    RestoreFrozen();
    return st;
  }
  next_served_ = output;
  return frozen;
}

void Resume::RestoreFrozen() {
  const std::string meta = overlay::MetaPathFor(overlay_);
  ::unlink(overlay_.c_str());
  ::unlink(meta.c_str());
  (void)!::rename(overlay::MetaPathFor(frozen_).c_str(), meta.c_str());
  (void)!::rename(frozen_.c_str(), overlay_.c_str());
  frozen_.clear();
}

Status Resume::Captured() {
  HEXZ_RETURN_IF_ERROR(WriteServedDisk(dir_, {next_served_, overlay_abs_, nbd_socket_}));
  served_ = next_served_;
  ::unlink(frozen_.c_str());
  ::unlink(overlay::MetaPathFor(frozen_).c_str());
  frozen_.clear();
  return Status::Ok();
}

Status Resume::FoldBack() {
  if (!session_) return Status::Unavailable("the disk server is gone");
  ipc::WorkerControl c;
  c.type = ipc::kFoldOverlay;
  // On an error both files stay as they are: the guest's writes are in them.
  HEXZ_RETURN_IF_ERROR(session_->Control(c));
  RestoreFrozen();
  return Status::Ok();
}

}  // namespace

void AddVmResumeCommand(CLI::App& parent, int* rc) {
  auto args = std::make_shared<ResumeArgs>();
  CLI::App* cmd = parent.add_subcommand(
      "resume", "Run a guest captured by vm snapshot again, from where it was paused");
  cmd->add_option("snapshot", args->snapshot, "Snapshot file written by hexz vm snapshot (*.st)")
      ->required();
  cmd->add_option("--overlay", args->overlay,
                  "Overlay file for the guest's disk writes, kept (created when missing; "
                  "default: an ephemeral one)");
  cmd->add_option("--qmp", args->qmp,
                  "QMP socket to create for the resumed QEMU (default: a private one)");
  cmd->add_option("--qemu", args->qemu,
                  "QEMU program (default: the recorded qemu.program, from PATH)");
  cmd->add_option("extra", args->extra, "Extra QEMU arguments, after --");
  cmd->callback([rc, args] {
    Resume resume(*args);
    Status st = resume.Start();
    *rc = st.ok() ? resume.Foreground() : Fail(st.WithContext("hexz vm resume"));
  });
}

}  // namespace hexz::cli
