// hexz serve: exports a snapshot over NBD through the sandboxed worker. The
// front-end opens the snapshot chain (and the --rw overlay) as the user,
// creates and binds the listening socket itself (a unix socket, mode 0600, by
// default in a fresh private 0700 directory; or TCP with --listen), reads the
// TLS files (serve_tls.h), passes all of it to hexz-fused in NBD mode and
// waits for "ready". In the foreground it
// stays until SIGINT/SIGTERM/SIGHUP, then stops the worker (which flushes the
// overlay) and removes the socket; with --daemon it returns once serving.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "common/base/fd.h"
#include "common/base/log.h"
#include "common/base/size.h"
#include "common/cache/worker_cache.h"
#include "common/format/snapshot.h"
#include "common/ipc/worker_protocol.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"
#include "hexz/fetcher.h"
#include "hexz/remote_cli.h"
#include "hexz/serve_tls.h"
#include "hexz/worker_session.h"

namespace hexz::cli {

namespace {

using base::Result;
using base::Status;
using base::UniqueFd;

constexpr int kDefaultPort = 10809;

struct ServeArgs {
  std::string snapshot;
  std::string socket;
  std::string listen;
  bool rw = false;
  std::string overlay;
  ServeTlsArgs tls;      // --tls, --tls-certificates, --tls-psk, ...
  WorkerOptions worker;  // --cache-size, --daemon, --log-file, --verbose
  std::shared_ptr<RemoteFlags> remote = std::make_shared<RemoteFlags>();
};

struct Endpoint {
  UniqueFd fd;
  std::string uri;          // printed for the user (export "disk")
  std::string socket_path;  // unix: removed when we stop
  std::string private_dir;  // default socket: its directory, removed too
  dev_t socket_dev = 0;     // the socket file we bound (removed only while it is still that)
  ino_t socket_ino = 0;
};

// A unix socket at `path`, mode 0600. An existing socket nobody listens on
// (left by a killed server) is replaced; anything else there is an error.
Result<UniqueFd> BindUnix(const std::string& path) {
  struct sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path) {
    return Status::InvalidArgument("socket path " + path + " is too long (at most " +
                                   std::to_string(sizeof sa.sun_path - 1) + " bytes)");
  }
  std::memcpy(sa.sun_path, path.c_str(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::FromErrno(errno, "socket");
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::InvalidArgument("socket path " + path + " exists and is not a socket");
    }
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
      return Status::Busy("socket " + path + " is in use by a running server");
    }
    if (errno != ECONNREFUSED) return Status::FromErrno(errno, "socket " + path);
    if (::unlink(path.c_str()) != 0) return Status::FromErrno(errno, "removing stale " + path);
  }
  mode_t old = ::umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  int err = errno;
  ::umask(old);
  if (rc != 0) return Status::FromErrno(err, "binding " + path);
  if (::listen(fd.get(), 64) != 0) {  // already 0600 (umask above)
    err = errno;
    ::unlink(path.c_str());
    return Status::FromErrno(err, "socket " + path);
  }
  return fd;
}

// HOST:PORT, [V6HOST]:PORT, HOST, :PORT or PORT; HOST defaults to 127.0.0.1
// and PORT to 10809.
Status SplitHostPort(const std::string& spec, std::string* host, std::string* port) {
  *host = "127.0.0.1";
  *port = std::to_string(kDefaultPort);
  std::string h = spec, p;
  if (!spec.empty() && spec[0] == '[') {
    size_t close = spec.find(']');
    if (close == std::string::npos) return Status::InvalidArgument("--listen " + spec + ": no ]");
    h = spec.substr(1, close - 1);
    std::string rest = spec.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return Status::InvalidArgument("--listen " + spec + ": expected :PORT");
      p = rest.substr(1);
    }
  } else if (spec.find_first_not_of("0123456789") == std::string::npos) {
    h.clear();
    p = spec;
  } else if (size_t colon = spec.rfind(':'); colon != std::string::npos) {
    h = spec.substr(0, colon);
    p = spec.substr(colon + 1);
  }
  if (!h.empty()) *host = h;
  if (!p.empty()) {
    char* end = nullptr;
    long n = std::strtol(p.c_str(), &end, 10);
    if (*end != '\0' || n < 1 || n > 65535) {
      return Status::InvalidArgument("--listen " + spec + ": bad port '" + p + "'");
    }
    *port = p;
  }
  return Status::Ok();
}

Result<Endpoint> BindTcp(const std::string& spec, const ServeTlsArgs& tls) {
  std::string host, port;
  HEXZ_RETURN_IF_ERROR(SplitHostPort(spec, &host, &port));
  HEXZ_RETURN_IF_ERROR(CheckListenExposure(spec, host, tls));
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  struct addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return Status::InvalidArgument("--listen " + spec + ": " + ::gai_strerror(rc));
  }
  std::unique_ptr<struct addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
  Status last = Status::Unavailable("--listen " + spec + ": no address");
  for (struct addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd) {
      last = Status::FromErrno(errno, "socket");
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd.get(), 64) != 0) {
      last = Status::FromErrno(errno, "listening on " + host + ":" + port);
      continue;
    }
    Endpoint e;
    e.fd = std::move(fd);
    std::string shown = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    e.uri = (TlsEnabled(tls) ? "nbds://" : "nbd://") + shown + ":" + port + "/disk";
    return e;
  }
  return last;
}

Result<Endpoint> MakeEndpoint(const ServeArgs& a) {
  if (!a.listen.empty()) return BindTcp(a.listen, a.tls);
  Endpoint e;
  if (!a.socket.empty()) {
    e.socket_path = a.socket;
    if (e.socket_path[0] != '/') {  // the printed URI must work from any directory
      char cwd[4096];
      if (::getcwd(cwd, sizeof cwd) == nullptr) return Status::FromErrno(errno, "getcwd");
      e.socket_path = std::string(cwd) + "/" + e.socket_path;
    }
  } else {
    HEXZ_ASSIGN_OR_RETURN(std::string dir, PrivateRuntimeDir("the NBD socket"));
    std::string tmpl = dir + "/serve-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return Status::FromErrno(errno, "mkdtemp " + tmpl);
    e.private_dir = tmpl;
    e.socket_path = tmpl + "/nbd.sock";
  }
  auto fd = BindUnix(e.socket_path);
  if (!fd.ok()) {
    if (!e.private_dir.empty()) ::rmdir(e.private_dir.c_str());
    return fd.status();
  }
  e.fd = std::move(*fd);
  struct stat st;
  if (::lstat(e.socket_path.c_str(), &st) == 0) {
    e.socket_dev = st.st_dev;
    e.socket_ino = st.st_ino;
  }
  e.uri = (TlsEnabled(a.tls) ? "nbds+unix:///disk?socket=" : "nbd+unix:///disk?socket=") +
          e.socket_path;
  return e;
}

void RemoveEndpoint(const Endpoint& e) {
  RemoveSocketIfSame(e.socket_path, e.socket_dev, e.socket_ino, e.private_dir);
}

// The worker cannot remove its socket (its sandbox forbids unlink): a
// companion does once the worker exits, however it exits, also when this
// front-end is gone (--daemon, or killed in the foreground).
void WatchEndpoint(const Endpoint& e, pid_t worker, const sigset_t& old_mask) {
  if (e.socket_path.empty()) return;
  Status watched = WatchWorker(worker, old_mask,
                               [path = e.socket_path, dev = e.socket_dev, ino = e.socket_ino,
                                dir = e.private_dir] { RemoveSocketIfSame(path, dev, ino, dir); });
  if (!watched.ok()) {
    std::fprintf(stderr, "hexz serve: warning: %s; %s may stay after the server exits\n",
                 watched.ToString().c_str(), e.socket_path.c_str());
  }
}

int Usage(const char* msg) {
  std::fprintf(stderr, "hexz serve: %s\n", msg);
  return 2;
}

// The worker's settings (NBD mode), with, with --rw, the overlay opened and
// locked as the user (the chain is attached once the log is open).
Status FillServeConfig(const ServeArgs& a, const format::Snapshot& snapshot,
                       ipc::WorkerConfig* config) {
  if (!snapshot.HasStream(format::StreamId::kDisk)) {
    return Status::InvalidArgument(a.snapshot + " has no disk stream to serve");
  }
  config->mode = ipc::WorkerMode::kNbdServe;
  config->uid = getuid();
  config->gid = getgid();
  if (a.rw) HEXZ_RETURN_IF_ERROR(AttachOverlay(a.overlay, a.snapshot, snapshot, config));
  return FillServeTls(a.tls, config);
}

// Foreground: a signal makes the worker disconnect its clients, flush the
// overlay and exit; the socket goes with it.
int SuperviseServe(WorkerSession& session, const ServeArgs& a, const Endpoint& endpoint) {
  WorkerSession::Handlers handlers;
  handlers.on_signal = [&](int) -> std::optional<int> {
    int status = session.Stop(SIGTERM, 60000);
    RemoveEndpoint(endpoint);
    if (!ExitedCleanly(status)) {
      std::fprintf(stderr, "hexz serve: the worker for %s did not stop cleanly (%s)\n",
                   ShownLocation(a.snapshot).c_str(), DescribeWaitStatus(status).c_str());
      return 1;
    }
    std::fprintf(stderr, "hexz: stopped serving %s\n", ShownLocation(a.snapshot).c_str());
    return 0;
  };
  handlers.on_child_exit = [&](int status) {
    RemoveEndpoint(endpoint);
    if (ExitedCleanly(status)) {
      std::fprintf(stderr, "hexz: the NBD server for %s exited\n",
                   ShownLocation(a.snapshot).c_str());
      return 0;
    }
    std::fprintf(stderr, "hexz serve: the worker for %s died (%s)\n",
                 ShownLocation(a.snapshot).c_str(), DescribeWaitStatus(status).c_str());
    return 1;
  };
  return session.Supervise(handlers);
}

int RunServe(const ServeArgs& a) {
  if (!a.socket.empty() && !a.listen.empty())
    return Usage("--socket and --listen exclude each other");
  if (!a.overlay.empty() && !a.rw) {
    return Usage("--overlay goes with --rw (without --rw the export is read-only)");
  }
  if (a.rw && a.overlay.empty()) return Usage("--rw needs --overlay PATH (where writes go)");
  if (Status st = CheckWorkerOptions(a.worker); !st.ok()) return Usage(st.message().c_str());
  if (Status st = CheckServeTls(a.tls); !st.ok()) return Usage(st.message().c_str());

  // 1. The snapshot chain and the overlay, opened and checked as the user.
  auto snapshot = OpenSnapshotAsUser(a.snapshot, a.remote->OpenOptions());
  if (!snapshot.ok()) return Fail(snapshot.status());
  ipc::WorkerConfig config;
  Status filled = FillServeConfig(a, **snapshot, &config);
  if (!filled.ok()) return Fail(filled);
  Status applied = ApplyWorkerOptions(a.worker, **snapshot, &config);
  if (!applied.ok()) return UsageError(applied);

  // 2. The worker program, 3. the endpoint and the daemon's log.
  auto program = FindProgram("hexz-fused", "HEXZ_FUSED", "hexz-fused");
  if (!program.ok()) return Fail(program.status());
  auto endpoint = MakeEndpoint(a);
  if (!endpoint.ok()) return Fail(endpoint.status());
  DaemonLog log;
  if (a.worker.daemon) {
    auto opened = OpenDaemonLog(a.worker.log_file, "serve-" + std::to_string(getpid()) + ".log");
    if (!opened.ok()) {
      RemoveEndpoint(*endpoint);
      return Fail(opened.status());
    }
    log = std::move(*opened);
  }
  // The chain's descriptors, or a fetcher for a remote one.
  Status attached = AttachChain(a.snapshot, **snapshot, a.remote->options(), log.fd.get(),
                                a.worker.daemon, &config);
  snapshot->reset();
  if (!attached.ok()) {
    RemoveEndpoint(*endpoint);
    return Fail(attached);
  }
  config.nbd_listen_fd = std::move(endpoint->fd);

  auto session = WorkerSession::Launch(*program, config, log.fd.get());
  // The worker has its own copies now; ours would keep the overlay locked
  // and the socket accepting after it is gone.
  config = ipc::WorkerConfig();
  log.fd.reset();
  if (!session.ok()) {
    RemoveEndpoint(*endpoint);
    return Fail(session.status());
  }
  auto ready = session->AwaitReady();
  if (!ready.ok()) {
    RemoveEndpoint(*endpoint);
    std::string msg = ready.status().ToString();
    if (a.worker.daemon) msg += " (worker log: " + log.path + ")";
    std::fprintf(stderr, "hexz serve: %s\n", msg.c_str());
    return 1;
  }

  WatchEndpoint(*endpoint, session->pid(), session->old_mask());
  if (a.worker.daemon) {
    std::printf("hexz: serving %s at %s (worker pid %d, log %s)\n",
                ShownLocation(a.snapshot).c_str(), endpoint->uri.c_str(),
                static_cast<int>(session->pid()), log.path.c_str());
    return 0;
  }
  std::printf("hexz: serving %s at %s (worker pid %d); Ctrl+C or SIGTERM stops\n",
              ShownLocation(a.snapshot).c_str(), endpoint->uri.c_str(),
              static_cast<int>(session->pid()));
  std::fflush(stdout);
  return SuperviseServe(*session, a, *endpoint);
}

}  // namespace

void AddServeCommand(CLI::App& parent, int* rc) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = parent.add_subcommand("serve", "Export a snapshot's disk (and memory) over NBD");
  cmd->add_option("snapshot", args->snapshot, "Snapshot file (*.st) or URL")->required();
  cmd->add_option("--socket", args->socket,
                  "Unix socket to listen on, mode 0600 (default: a private directory under "
                  "$XDG_RUNTIME_DIR/hexz/)");
  cmd->add_option("--listen", args->listen,
                  "Listen on TCP HOST:PORT instead (HOST defaults to 127.0.0.1, PORT to 10809)")
      ->check(StatusValidator("--listen", "[HOST:]PORT", [](const std::string& spec) {
        std::string host, port;
        return SplitHostPort(spec, &host, &port);
      }));
  cmd->add_flag("--rw", args->rw, "Accept writes, into the overlay given by --overlay");
  cmd->add_option("--overlay", args->overlay, "Overlay file for --rw (created when missing)");
  AddServeTlsOptions(cmd, &args->tls);
  AddWorkerOptions(cmd, &args->worker, "Return once serving; the worker stays behind");
  args->remote->Add(cmd);
  args->remote->AddDiskCache(cmd);
  cmd->callback([rc, args] { *rc = RunServe(*args); });
}

}  // namespace hexz::cli
