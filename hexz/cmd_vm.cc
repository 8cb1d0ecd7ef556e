// hexz vm snapshot: captures a running QEMU guest (disk and memory) into one
// snapshot, over QMP.
//
// The order matters, and is the one QEMU's own tools use: `stop` (QEMU
// drains and flushes the guest's I/O), export the paused drive read-only
// over QEMU's NBD server and pack it through libnbd (the disk as of the
// pause), `migrate` to a pipe handed over with `getfd`, whose read end is
// packed as the memory stream while QEMU writes it (no temporary copy),
// record the metadata, write the snapshot atomically, then `quit` the guest
// or, with --continue, `cont` it. On any failure the output is not written
// and a guest that was running runs again.
//
// A guest started by `hexz vm resume` (its disk an NBD export of hexz, with
// the overlay and base named in disk.json beside the socket; vm_session.h)
// needs no export from QEMU: after `stop`, the disk server flushes (an NBD
// flush), and the disk is committed from the base and the overlay, whose
// changed blocks are copied while the guest is paused: thin against the
// base (its unchanged blocks are references) or, with --standalone,
// holding copies of the base's compressed blocks.
//
// With --continue, a guest on its own disk file is paused only for its
// memory too: at the pause its writes are redirected into a temporary qcow2
// (RedirectedWrites), the memory is migrated, the guest continued, and the
// file, as of the pause, is read through the export while the guest runs
// on; the temporary qcow2 is then merged back (block-commit) and removed.
//
// With --continue, a guest served by hexz is paused only for its memory: after the
// flush, vm resume switches its disk server to a fresh overlay (vm_control.h)
// and the overlay as of the pause is frozen; the memory is migrated, the
// guest continued, and only then the disk written from the base and the
// frozen overlay (the writer takes the memory stream first). The guest's
// later writes go to the fresh overlay, whose base is the new snapshot, so a
// second capture is thin against the first. A failure after the switch
// pauses the guest while vm resume folds the fresh overlay back.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/base/json.h"
#include "common/base/size.h"
#include "common/format/writer.h"
#include "common/overlay/commit.h"
#include "common/overlay/overlay_files.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"
#include "hexz/disk_source.h"
#include "hexz/nbd_api.h"
#include "hexz/qmp.h"
#include "hexz/temp_file_watchdog.h"
#include "hexz/vm_control.h"
#include "hexz/vm_session.h"

namespace hexz::cli {
namespace {

using base::JsonValue;
using base::Result;
using base::Status;
using format::StreamId;

std::atomic<bool> g_cancel{false};
extern "C" void OnVmSignal(int) { g_cancel.store(true); }

struct SnapshotArgs {
  std::string qmp, output, parent;
  std::string max_bandwidth;  // --max-bandwidth; empty: unlimited
  CompressionFlags compression;
  bool keep_running = false, quiet = false, standalone = false;
};

JsonValue Str(const std::string& s) { return JsonValue::String(s); }

// The one writable disk of the guest, from query-block.
struct DiskNode {
  std::string node;    // its block node name (for block-export-add)
  std::string device;  // its -drive id (empty for -blockdev), recorded as qemu.disk
};
Result<DiskNode> FindDiskNode(QmpClient& qmp) {
  HEXZ_ASSIGN_OR_RETURN(JsonValue devices, qmp.Execute("query-block"));
  std::vector<DiskNode> nodes;
  for (const JsonValue& d : devices.items()) {
    const JsonValue* inserted = d.Find("inserted");
    if (inserted == nullptr || inserted->Find("ro") == nullptr || inserted->Find("ro")->AsBool())
      continue;
    const JsonValue* node = inserted->Find("node-name");
    const JsonValue* device = d.Find("device");
    if (node != nullptr && node->is_string()) {
      nodes.push_back({node->AsString(), device && device->is_string() ? device->AsString() : ""});
    }
  }
  if (nodes.size() != 1) {
    return Status::Unsupported(qmp.path() + ": the guest has " + std::to_string(nodes.size()) +
                               " writable disks; hexz vm snapshot takes a guest with exactly one");
  }
  return nodes[0];
}

// The guest's QEMU command line (from /proc, by the QMP peer's pid).
Result<std::vector<std::string>> QemuCmdline(QmpClient& qmp) {
  HEXZ_ASSIGN_OR_RETURN(int pid, qmp.PeerPid());
  const std::string proc = "/proc/" + std::to_string(pid) + "/cmdline";
  std::ifstream f(proc, std::ios::binary);
  std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (cmdline.empty()) return Status::PermissionDenied(proc + ": cannot read QEMU's command line");
  std::vector<std::string> args;
  for (size_t s = 0, e; s < cmdline.size(); s = e + 1) {
    e = cmdline.find('\0', s);
    if (e == std::string::npos) e = cmdline.size();
    args.push_back(cmdline.substr(s, e - s));
  }
  return args;
}

// The arguments recorded for a resume: the command line without the
// program and the options that belong to one run (-qmp, -incoming,
// -daemonize, -pidfile), NUL-separated.
std::string RecordedArgs(const std::vector<std::string>& argv) {
  std::string out;
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "-qmp" || a == "-incoming" || a == "-pidfile") {
      ++i;
      continue;
    }
    if (a == "-daemonize") continue;
    out += a;
    out.push_back('\0');
  }
  return out;
}

// What the capture works from: the guest's disk, its command line, and,
// for a disk served by hexz vm resume, that server's base and overlay.
struct Guest {
  DiskNode disk;
  std::vector<std::string> argv;
  std::optional<ServedDisk> served;
  std::shared_ptr<const format::Snapshot> base;  // the served snapshot
};

Result<Guest> InspectGuest(QmpClient& qmp, const SnapshotArgs& a) {
  Guest g;
  HEXZ_ASSIGN_OR_RETURN(g.disk, FindDiskNode(qmp));
  HEXZ_ASSIGN_OR_RETURN(g.argv, QemuCmdline(qmp));
  HEXZ_ASSIGN_OR_RETURN(
      g.served,
      FindServedDisk(std::vector<std::string>(g.argv.begin() + 1, g.argv.end()), g.disk.device));
  if (!g.served) return g;
  if (!a.parent.empty()) {
    return Status::InvalidArgument(
        "--parent " + a.parent + ": the guest's disk is served by hexz vm resume from " +
        g.served->snapshot +
        ", and the snapshot is thin against that (or standalone with --standalone); leave out "
        "--parent");
  }
  for (const std::string& f : {g.served->overlay, overlay::MetaPathFor(g.served->overlay)}) {
    struct stat out, ov;
    if (stat(a.output.c_str(), &out) == 0 && stat(f.c_str(), &ov) == 0 && out.st_dev == ov.st_dev &&
        out.st_ino == ov.st_ino) {
      return Status::InvalidArgument(a.output + ": is the overlay of the guest's disk (" + f +
                                     "); choose another --output");
    }
  }
  HEXZ_ASSIGN_OR_RETURN(auto base, OpenSnapshotAsUser(g.served->snapshot));
  HEXZ_RETURN_IF_ERROR(CheckOutputNotInChain(a.output, *base, "the snapshot the guest runs from",
                                             "the snapshot the guest runs from"));
  g.base = std::move(base);
  return g;
}

// Packs the paused guest's disk, exported read-only by QEMU's NBD server on
// a socket in a private directory.
Status PackDisk(QmpClient& qmp, const std::string& node, format::SnapshotWriter* writer,
                const format::Snapshot* parent) {
  char dir[] = "/tmp/hexz-vm.XXXXXX";
  if (mkdtemp(dir) == nullptr) return Status::FromErrno(errno, "mkdtemp /tmp/hexz-vm.XXXXXX");
  const std::string sock = std::string(dir) + "/nbd.sock";
  // A capture killed while it read the disk left its export and QEMU's NBD
  // server behind: both are ours to stop.
  if (auto exports = qmp.Execute("query-block-exports"); exports.ok()) {
    for (const JsonValue& e : exports->items()) {
      const JsonValue* id = e.Find("id");
      if (id == nullptr || id->AsString() != "hexz-disk") continue;
      (void)qmp.Execute("block-export-del",
                        JsonValue::Object({{"id", Str("hexz-disk")}, {"mode", Str("hard")}}));
      (void)qmp.Execute("nbd-server-stop");
    }
  }
  // nbd-server-start takes the legacy address form: {type, data: {path}}.
  JsonValue addr = JsonValue::Object(
      {{"type", Str("unix")}, {"data", JsonValue::Object({{"path", Str(sock)}})}});
  Status st = qmp.Execute("nbd-server-start", JsonValue::Object({{"addr", addr}})).status();
  if (st.ok()) {
    st = qmp.Execute("block-export-add", JsonValue::Object({{"type", Str("nbd")},
                                                            {"id", Str("hexz-disk")},
                                                            {"node-name", Str(node)},
                                                            {"name", Str("disk")},
                                                            {"writable", JsonValue::Bool(false)}}))
             .status();
    if (st.ok()) {
      {
        auto src = OpenDiskSource("nbd+unix:///disk?socket=" + sock, "");
        st = src.ok() ? PackSource(writer, src->get(), "the guest's disk (" + node + ")",
                                   StreamId::kDisk, parent)
                            .status()
                      : src.status();
      }  // disconnected: an export with a client would stay (QEMU: "still in use")
      (void)qmp.Execute("block-export-del", JsonValue::Object({{"id", Str("hexz-disk")}}));
    }
    (void)qmp.Execute("nbd-server-stop");
  }
  unlink(sock.c_str());
  rmdir(dir);
  return st;
}

// Commits the served base and the overlay at `overlay_path` (read-only)
// into `writer`'s disk stream: unchanged blocks referenced in the base, or
// copied in stored form with --standalone; changed ones compressed.
Result<overlay::CommitStats> CommitServedDisk(const Guest& g, const std::string& overlay_path,
                                              format::SnapshotWriter* writer,
                                              const SnapshotArgs& a) {
  HEXZ_ASSIGN_OR_RETURN(overlay::OverlayFiles files,
                        overlay::OpenOverlayFiles(overlay_path, overlay::LockMode::kNone,
                                                  /*create=*/false));
  files.names.base = g.base->path();
  overlay::OverlayOptions ro;
  ro.read_only = true;
  HEXZ_ASSIGN_OR_RETURN(
      std::shared_ptr<overlay::Overlay> ov,
      overlay::Overlay::Open(std::move(files.data), std::move(files.meta), files.names,
                             g.base->id(), g.base->StreamSize(StreamId::kDisk), ro));
  const std::string parent_path =
      a.standalone ? "" : overlay::RelativeParentPath(g.served->snapshot, a.output);
  return overlay::WriteCommit(g.base, ov, writer, parent_path, /*carry_memory=*/false);
}

// Takes the disk of a paused guest served by hexz vm resume: the server
// flushes (NBD_CMD_FLUSH), then its base and overlay are committed.
Result<overlay::CommitStats> PackServedDisk(const Guest& g, format::SnapshotWriter* writer,
                                            const SnapshotArgs& a) {
  HEXZ_RETURN_IF_ERROR(FlushServedDisk(g.served->socket));
  return CommitServedDisk(g, g.served->overlay, writer, a);
}

// QEMU's migration rate limit (max-bandwidth, bytes/s) set for the capture
// and put back as it was when this goes. QEMU's default, 32 MiB/s, is meant
// for a live migration over a network; the captured guest is paused, and
// the limit would only make its pause longer (a guest with 1 GiB of
// non-zero memory: 32 s).
class MigrationRate {
 public:
  static Result<std::unique_ptr<MigrationRate>> Set(QmpClient& qmp, uint64_t bytes_per_s) {
    HEXZ_ASSIGN_OR_RETURN(JsonValue params, qmp.Execute("query-migrate-parameters"));
    const JsonValue* old = params.Find("max-bandwidth");
    if (old == nullptr || !old->AsInt()) {
      return Status::Unsupported(qmp.path() + ": QEMU reports no migration max-bandwidth");
    }
    auto rate = std::unique_ptr<MigrationRate>(new MigrationRate(qmp, *old->AsInt()));
    HEXZ_RETURN_IF_ERROR(rate->Apply(static_cast<int64_t>(bytes_per_s)));
    return rate;
  }
  ~MigrationRate() { (void)Apply(old_); }

 private:
  MigrationRate(QmpClient& qmp, int64_t old) : qmp_(qmp), old_(old) {}
  Status Apply(int64_t v) {
    return qmp_
        .Execute("migrate-set-parameters",
                 JsonValue::Object({{"max-bandwidth", JsonValue::Number(std::to_string(v))}}))
        .status();
  }
  QmpClient& qmp_;
  int64_t old_;
};

// --max-bandwidth, or "unlimited" (1 TiB/s: QEMU takes at most SIZE_MAX / 1000).
uint64_t MigrationBytesPerSecond(const SnapshotArgs& a) {
  constexpr uint64_t kUnlimited = uint64_t{1} << 40;
  if (a.max_bandwidth.empty()) return kUnlimited;
  auto n = base::ParseSize(a.max_bandwidth);  // checked by the flag
  return n.ok() ? *n : kUnlimited;
}

// Migrates the paused guest into the memory stream through a pipe, at the
// rate of --max-bandwidth (QEMU's own limit is put back after).
Status PackMemory(QmpClient& qmp, format::SnapshotWriter* writer, const format::Snapshot* parent,
                  const SnapshotArgs& a) {
  HEXZ_ASSIGN_OR_RETURN(std::unique_ptr<MigrationRate> rate,
                        MigrationRate::Set(qmp, MigrationBytesPerSecond(a)));
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  base::UniqueFd rd(p[0]);
  {
    base::UniqueFd wr(p[1]);
    HEXZ_RETURN_IF_ERROR(qmp.SendFd("hexz-migration", wr.get()));
  }  // only QEMU holds the write end now: its close is our end of stream
  Status st =
      qmp.Execute("migrate", JsonValue::Object({{"uri", Str("fd:hexz-migration")}})).status();
  if (!st.ok()) {
    (void)qmp.Execute("closefd", JsonValue::Object({{"fdname", Str("hexz-migration")}}));
    return st;
  }
  auto src = OpenStreamSource(std::move(rd), "the guest's migration stream");
  Status packed =
      PackSource(writer, src.get(), "the guest's memory", StreamId::kMemory, parent).status();
  src.reset();  // a failed pack closes the pipe: QEMU's migration fails and ends
  Status migrated =
      WaitForMigration(qmp, /*incoming=*/false);  // also after a failed pack: QEMU must be done
  return packed.ok() ? migrated : packed;
}

Result<format::Metadata> VmMetadata(QmpClient& qmp, const Guest& g) {
  format::Metadata m;
  m[format::kMetaMemoryKind] = format::kMemoryKindQemu;
  m[format::kMetaQemuVersion] = qmp.qemu_version();
  HEXZ_ASSIGN_OR_RETURN(JsonValue type,
                        qmp.Execute("qom-get", JsonValue::Object({{"path", Str("/machine")},
                                                                  {"property", Str("type")}})));
  std::string machine = type.AsString();
  const std::string suffix = "-machine";
  if (machine.size() > suffix.size() && machine.ends_with(suffix))
    machine.resize(machine.size() - suffix.size());
  m[format::kMetaQemuMachine] = machine;
  m[format::kMetaQemuProgram] = g.argv[0].substr(g.argv[0].rfind('/') + 1);
  m[format::kMetaQemuArgs] = RecordedArgs(g.argv);
  if (!g.disk.device.empty()) m[format::kMetaQemuDisk] = g.disk.device;
  return m;
}

// The guest must be running (a paused or finished guest is not captured:
// resuming it afterwards would change what the user left).
Status CheckRunning(QmpClient& qmp) {
  HEXZ_ASSIGN_OR_RETURN(JsonValue status, qmp.Execute("query-status"));
  const JsonValue* s = status.Find("status");
  const std::string state = s ? s->AsString() : "unknown";
  if (state != "running") {
    return Status::Unavailable(qmp.path() + ": the guest is not running (QEMU status: " + state +
                               "); hexz vm snapshot captures a running guest");
  }
  return Status::Ok();
}

// Captures disk and memory into `writer` (the guest is stopped).
Status Capture(QmpClient& qmp, const Guest& g, format::SnapshotWriter* writer,
               const SnapshotArgs& a, const format::Snapshot* parent,
               std::optional<overlay::CommitStats>* served_stats) {
  if (g.served) {
    HEXZ_ASSIGN_OR_RETURN(*served_stats, PackServedDisk(g, writer, a));
    if (!a.standalone) parent = g.base.get();
  } else {
    if (parent != nullptr) {
      HEXZ_RETURN_IF_ERROR(
          writer->SetParent(overlay::RelativeParentPath(a.parent, a.output), parent->id()));
    }
    HEXZ_RETURN_IF_ERROR(PackDisk(qmp, g.disk.node, writer, parent));
  }
  HEXZ_RETURN_IF_ERROR(PackMemory(qmp, writer, parent, a));
  HEXZ_ASSIGN_OR_RETURN(format::Metadata m, VmMetadata(qmp, g));
  return writer->SetMetadata(m);
}

using Clock = std::chrono::steady_clock;

// The capture of a served guest with --continue, after `stop` and the
// switch to a fresh overlay: memory, `cont` (sets *resumed), then the disk
// from the base and the frozen overlay, the metadata, Finish.
Result<format::SnapshotId> CaptureContinued(QmpClient& qmp, const Guest& g,
                                            format::SnapshotWriter* writer, const SnapshotArgs& a,
                                            const std::string& frozen, Clock::time_point* resumed,
                                            std::optional<overlay::CommitStats>* stats) {
  const std::string parent_path =
      a.standalone ? "" : overlay::RelativeParentPath(g.served->snapshot, a.output);
  if (!a.standalone) HEXZ_RETURN_IF_ERROR(writer->SetParent(parent_path, g.base->id()));
  HEXZ_RETURN_IF_ERROR(PackMemory(qmp, writer, a.standalone ? nullptr : g.base.get(), a));
  HEXZ_RETURN_IF_ERROR(qmp.Execute("cont").status());
  *resumed = Clock::now();
  HEXZ_ASSIGN_OR_RETURN(*stats, CommitServedDisk(g, frozen, writer, a));
  HEXZ_ASSIGN_OR_RETURN(format::Metadata m, VmMetadata(qmp, g));
  HEXZ_RETURN_IF_ERROR(writer->SetMetadata(m));
  return writer->Finish();
}

// With --continue, a guest on its own disk file (qcow2, raw) is paused only
// for its memory: at the pause its writes are redirected into a temporary
// qcow2 beside the output (blockdev-snapshot-sync; the file becomes its
// read-only backing), so the file keeps the disk as of the pause while the
// guest runs on, and is packed then. Merge() commits the temporary qcow2
// back into the file (block-commit: QEMU's active commit, which ends by
// moving the guest back onto its file) and removes it.
class RedirectedWrites {
 public:
  static Result<std::unique_ptr<RedirectedWrites>> Start(QmpClient& qmp, const DiskNode& disk,
                                                         const std::string& output) {
    std::string dir, name = output;  // QEMU needs an absolute path
    if (size_t slash = output.rfind('/'); slash != std::string::npos) {
      dir = output.substr(0, slash);
      name = output.substr(slash + 1);
    }
    if (output[0] != '/') {
      char cwd[4096];
      if (::getcwd(cwd, sizeof cwd) == nullptr) return Status::FromErrno(errno, "getcwd");
      dir = dir.empty() ? std::string(cwd) : std::string(cwd) + "/" + dir;
    }
    std::string path = dir + "/." + name + ".writes-XXXXXX";
    // The name is ours; QEMU writes the image into the same file. Our
    // flock on it tells another hexz that this capture is alive (the lock
    // goes with our process).
    base::UniqueFd fd(::mkstemp(path.data()));
    if (!fd.valid()) return Status::FromErrno(errno, "creating " + path);
    ::flock(fd.get(), LOCK_EX);
    auto r = std::unique_ptr<RedirectedWrites>(new RedirectedWrites(qmp, disk.node, path));
    r->lock_ = std::move(fd);
    Status st =
        qmp.Execute("blockdev-snapshot-sync", JsonValue::Object({{"node-name", Str(disk.node)},
                                                                 {"snapshot-file", Str(path)},
                                                                 {"snapshot-node-name", Str(kNode)},
                                                                 {"format", Str("qcow2")}}))
            .status();
    if (!st.ok()) {
      ::unlink(path.c_str());
      return st.WithContext("redirecting the guest's writes into " + path);
    }
    return r;
  }

  // A capture killed while the guest's writes were redirected leaves the
  // guest on the temporary qcow2 (its top node is kNode). When `disk` is
  // that node, merges it back into the file under it and removes it; sets
  // *path to it. Else does nothing and leaves *path empty.
  static Status RecoverInterrupted(QmpClient& qmp, const DiskNode& disk, std::string* path) {
    path->clear();
    if (disk.node != kNode) return Status::Ok();
    HEXZ_ASSIGN_OR_RETURN(JsonValue nodes,
                          qmp.Execute("query-named-block-nodes",
                                      JsonValue::Object({{"flat", JsonValue::Bool(true)}})));
    // The base: the format node (not the protocol node, which has the same
    // file name) of the file the temporary qcow2 is over.
    std::string top_file, backing_file, base_node;
    for (const JsonValue& n : nodes.items()) {
      const JsonValue* name = n.Find("node-name");
      if (name == nullptr || name->AsString() != kNode) continue;
      const JsonValue* file = n.Find("file");
      const JsonValue* backing = n.Find("backing_file");  // as QEMU named it when redirecting
      top_file = file ? file->AsString() : "";
      backing_file = backing ? backing->AsString() : "";
    }
    for (const JsonValue& n : nodes.items()) {
      const JsonValue* name = n.Find("node-name");
      const JsonValue* drv = n.Find("drv");
      const JsonValue* file = n.Find("file");
      if (name == nullptr || drv == nullptr || file == nullptr || name->AsString() == kNode ||
          drv->AsString() == "file" || drv->AsString() == "host_device")
        continue;
      if (!backing_file.empty() && file->AsString() == backing_file) base_node = name->AsString();
    }
    // What QEMU reports is the QMP peer's word (another user's QEMU, or a
    // program that speaks QMP): a file is merged and removed only if it is
    // one this command makes.
    if (!IsOurs(top_file)) {
      return Status::Unsupported(qmp.path() + ": the guest runs on a node named " + kNode +
                                 " whose file " + top_file +
                                 " is not one hexz vm snapshot makes (.NAME.writes-XXXXXX, a "
                                 "qcow2); merge it with QMP block-commit");
    }
    if (base::UniqueFd f(::open(top_file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        f.valid() && ::flock(f.get(), LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
      return Status::Busy(qmp.path() + ": another hexz vm snapshot is capturing this guest (its " +
                          "writes go to " + top_file + " meanwhile)");
    }
    if (top_file.empty() || base_node.empty()) {
      return Status::Unsupported(qmp.path() + ": the guest runs on " + kNode + " (" + top_file +
                                 "), left by an interrupted hexz vm snapshot, and the file under "
                                 "it cannot be found; merge it with QMP block-commit");
    }
    RedirectedWrites r(qmp, base_node, top_file);
    HEXZ_RETURN_IF_ERROR(r.Merge());
    *path = top_file;
    return Status::Ok();
  }

  Status Merge() {
    Status st = Commit();
    if (!st.ok()) {
      return st.WithContext(
          "merging the guest's writes since the pause back into its disk; "
          "the guest runs on with them in " +
          path_ + ", over its disk file (merge them with QMP block-commit)");
    }
    ::unlink(path_.c_str());
    return Status::Ok();
  }

 private:
  static constexpr const char* kNode = "hexz-writes";
  static constexpr const char* kJob = "hexz-merge";

  // `path` as Start names it (an absolute .NAME.writes-XXXXXX) and a
  // regular file (not a symlink) that holds a qcow2.
  static bool IsOurs(const std::string& path) {
    const std::string name = path.substr(path.rfind('/') + 1);
    const std::string tag = ".writes-";
    const size_t at = name.rfind(tag);
    if (path.empty() || path[0] != '/' || name.size() < 2 || name[0] != '.' ||
        at == std::string::npos || at < 2 || name.size() != at + tag.size() + 6)
      return false;
    base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    struct stat st;
    uint8_t magic[4];
    return fd.valid() && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) &&
           ::pread(fd.get(), magic, sizeof magic, 0) == 4 && magic[0] == 'Q' && magic[1] == 'F' &&
           magic[2] == 'I' && magic[3] == 0xfb;
  }

  RedirectedWrites(QmpClient& qmp, std::string base, std::string path)
      : qmp_(qmp), base_(std::move(base)), path_(std::move(path)) {}

  // The job's status ("ready", "concluded", ...) and error, from query-jobs.
  Status JobState(std::string* status, std::string* error) {
    HEXZ_ASSIGN_OR_RETURN(JsonValue jobs, qmp_.Execute("query-jobs"));
    for (const JsonValue& j : jobs.items()) {
      const JsonValue* id = j.Find("id");
      if (id == nullptr || id->AsString() != kJob) continue;
      const JsonValue* s = j.Find("status");
      const JsonValue* e = j.Find("error");
      *status = s ? s->AsString() : "";
      *error = e ? e->AsString() : "";
      return Status::Ok();
    }
    return Status::Internal(std::string("QEMU lost the job ") + kJob);
  }

  // Polls until the job's status is `until`, or "concluded" (where a job
  // ends, also after a failure).
  Status AwaitJob(const std::string& until, std::string* status, std::string* error) {
    for (;;) {
      HEXZ_RETURN_IF_ERROR(JobState(status, error));
      if (*status == until || *status == "concluded") return Status::Ok();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  Status Commit() {
    HEXZ_RETURN_IF_ERROR(
        qmp_.Execute("block-commit", JsonValue::Object({{"job-id", Str(kJob)},
                                                        {"device", Str(kNode)},
                                                        {"base-node", Str(base_)},
                                                        {"auto-dismiss", JsonValue::Bool(false)}}))
            .status());
    std::string status, error;
    Status st = AwaitJob("ready", &status, &error);
    if (st.ok() && status == "ready") {
      st = qmp_.Execute("job-complete", JsonValue::Object({{"id", Str(kJob)}})).status();
      if (st.ok()) st = AwaitJob("concluded", &status, &error);
    }
    (void)qmp_.Execute("job-dismiss", JsonValue::Object({{"id", Str(kJob)}}));
    HEXZ_RETURN_IF_ERROR(st);
    if (!error.empty()) return Status::IoError("QEMU's block-commit failed: " + error);
    return Status::Ok();
  }

  QmpClient& qmp_;
  std::string base_;  // the guest's disk node, the commit's base
  std::string path_;
  base::UniqueFd lock_;  // flock on path_ while this capture runs
};

// --continue of a guest on its own disk file (the guest is stopped): its
// writes redirected, the memory, `cont` (sets *resumed), then the disk as of
// the pause through QEMU's NBD export, the metadata, Finish; the redirected
// writes merged back in every case.
Result<format::SnapshotId> CaptureFileAndContinue(QmpClient& qmp, const Guest& g,
                                                  format::SnapshotWriter* writer,
                                                  const SnapshotArgs& a,
                                                  const format::Snapshot* parent,
                                                  Clock::time_point* resumed) {
  HEXZ_ASSIGN_OR_RETURN(std::unique_ptr<RedirectedWrites> redirect,
                        RedirectedWrites::Start(qmp, g.disk, a.output));
  auto capture = [&]() -> Result<format::SnapshotId> {
    if (parent != nullptr) {
      HEXZ_RETURN_IF_ERROR(
          writer->SetParent(overlay::RelativeParentPath(a.parent, a.output), parent->id()));
    }
    HEXZ_RETURN_IF_ERROR(PackMemory(qmp, writer, parent, a));
    HEXZ_RETURN_IF_ERROR(qmp.Execute("cont").status());
    *resumed = Clock::now();
    HEXZ_RETURN_IF_ERROR(PackDisk(qmp, g.disk.node, writer, parent));
    HEXZ_ASSIGN_OR_RETURN(format::Metadata m, VmMetadata(qmp, g));
    HEXZ_RETURN_IF_ERROR(writer->SetMetadata(m));
    return writer->Finish();
  };
  Result<format::SnapshotId> id = capture();
  if (!id.ok()) writer->Abort();
  if (*resumed == Clock::time_point()) (void)qmp.Execute("cont");  // merged while it runs
  Status merged = redirect->Merge();
  if (!merged.ok()) {
    return id.ok() ? merged : id.status().WithContext("and " + merged.ToString());
  }
  return id;
}

// --continue of a guest served by hexz vm resume (the guest is stopped):
// the switch, the capture, and "captured"; or, on a failure after the
// switch, the guest paused again while vm resume folds the overlays back.
Result<format::SnapshotId> CaptureServedAndContinue(QmpClient& qmp, const Guest& g,
                                                    format::SnapshotWriter* writer,
                                                    const SnapshotArgs& a,
                                                    Clock::time_point* resumed,
                                                    std::optional<overlay::CommitStats>* stats) {
  HEXZ_RETURN_IF_ERROR(FlushServedDisk(g.served->socket));
  HEXZ_ASSIGN_OR_RETURN(std::unique_ptr<VmControlClient> control,
                        VmControlClient::Connect(ControlSocketFor(g.served->socket)));
  std::string output = a.output;
  if (output.empty() || output[0] != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd) == nullptr) return Status::FromErrno(errno, "getcwd");
    output = std::string(cwd) + "/" + output;
  }
  HEXZ_ASSIGN_OR_RETURN(std::string frozen, control->Switch(output, writer->id()));
  Result<format::SnapshotId> id = CaptureContinued(qmp, g, writer, a, frozen, resumed, stats);
  if (id.ok()) {
    Status st = control->Captured();
    if (st.ok()) return id;
    ::unlink(a.output.c_str());  // vm resume did not take it as the guest's base
    return st;
  }
  writer->Abort();
  // The guest is paused while the fresh overlay is folded back, so that no
  // write lands in between; the caller continues it.
  if (*resumed != Clock::time_point()) (void)qmp.Execute("stop");
  Status undo = control->Failed();
  if (!undo.ok()) {
    return id.status().WithContext("and undoing the overlay switch failed too (" + undo.ToString() +
                                   ")");
  }
  return id;
}

Status VmSnapshot(const SnapshotArgs& a, format::WriterOptions o) {
  std::shared_ptr<format::Snapshot> parent;
  if (!a.parent.empty()) {
    HEXZ_ASSIGN_OR_RETURN(parent, OpenSnapshotAsUser(a.parent));
    o.block_size = parent->block_size();
    HEXZ_RETURN_IF_ERROR(
        CheckOutputNotInChain(a.output, *parent, "the --parent snapshot", "the --parent snapshot"));
  }
  HEXZ_ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, QmpClient::Connect(a.qmp));
  HEXZ_RETURN_IF_ERROR(CheckRunning(*qmp));
  {
    // A guest left on a temporary qcow2 by a killed capture is first put
    // back onto its file.
    HEXZ_ASSIGN_OR_RETURN(DiskNode disk, FindDiskNode(*qmp));
    std::string merged;
    HEXZ_RETURN_IF_ERROR(RedirectedWrites::RecoverInterrupted(*qmp, disk, &merged));
    if (!merged.empty() && !a.quiet) {
      std::printf(
          "%s: merged the guest's writes left in %s by an interrupted capture back into "
          "its disk\n",
          a.qmp.c_str(), merged.c_str());
    }
  }
  HEXZ_ASSIGN_OR_RETURN(Guest guest, InspectGuest(*qmp, a));
  if (guest.base) o.block_size = guest.base->block_size();
  // libnbd (the flush of a served disk, the read of QEMU's export) is
  // loaded now, not while the guest is paused.
  HEXZ_RETURN_IF_ERROR(LoadNbd().status());
  HEXZ_ASSIGN_OR_RETURN(auto writer, format::SnapshotWriter::Create(a.output, o));
  TempFileWatchdog watchdog;  // stopped (destroyed) before the writer
  watchdog.Start(a.output);
  const auto start = Clock::now();
  HEXZ_RETURN_IF_ERROR(qmp->Execute("stop").status());
  std::optional<overlay::CommitStats> served;
  Clock::time_point resumed;
  Result<format::SnapshotId> id = Status::Ok();
  const bool switched = guest.served && a.keep_running;
  const bool redirected = !guest.served && a.keep_running;
  if (switched) {
    id = CaptureServedAndContinue(*qmp, guest, writer.get(), a, &resumed, &served);
  } else if (redirected) {
    id = CaptureFileAndContinue(*qmp, guest, writer.get(), a, parent.get(), &resumed);
  } else {
    Status st = Capture(*qmp, guest, writer.get(), a, parent.get(), &served);
    id = st;
    if (st.ok()) {
      id = writer->Finish();
    } else {
      writer->Abort();
    }
  }
  const auto end = Clock::now();
  const double secs = std::chrono::duration<double>(end - start).count();
  if (resumed == Clock::time_point()) resumed = end;
  const double paused = std::chrono::duration<double>(resumed - start).count();
  if (switched || redirected) {
    if (!id.ok()) {
      (void)qmp->Execute("cont");  // the guest runs on as before
      return id.status();
    }
  } else if (!id.ok() || a.keep_running) {
    // The guest runs on as before (after a failure too).
    Status cont = qmp->Execute("cont").status();
    if (!id.ok()) return id.status();
    HEXZ_RETURN_IF_ERROR(cont);
  } else {
    (void)qmp->Execute("quit");
  }
  if (!a.quiet) {
    struct stat sb;
    const uint64_t size = stat(a.output.c_str(), &sb) == 0 ? static_cast<uint64_t>(sb.st_size) : 0;
    if (served) {
      std::printf(
          "%s: the disk as of the pause from hexz vm resume's overlay %s over %s: %llu of "
          "%llu blocks rewritten, %s\n",
          a.output.c_str(), guest.served->overlay.c_str(), guest.served->snapshot.c_str(),
          static_cast<unsigned long long>(served->rewritten_blocks),
          static_cast<unsigned long long>(served->disk_blocks),
          a.standalone ? "the rest copied without recompression (standalone)"
                       : "the rest referenced in it (thin)");
    }
    char pause[64];
    std::snprintf(pause, sizeof pause, "was paused for %.2f s and runs on", paused);
    std::printf("%s: captured the guest in %.2f s into %s (id %s); the guest %s\n",
                a.output.c_str(), secs, base::FormatSize(size).c_str(), id->ToHex().c_str(),
                a.keep_running ? pause : "was shut down");
    if (switched) {
      std::printf("%s: the guest's later writes go to a fresh %s, over this snapshot\n",
                  a.output.c_str(), guest.served->overlay.c_str());
    }
  }
  return Status::Ok();
}

}  // namespace

void AddVmSnapshotCommand(CLI::App& parent, int* rc) {
  auto args = std::make_shared<SnapshotArgs>();
  CLI::App* cmd = parent.add_subcommand(
      "snapshot", "Capture a running QEMU guest (disk and memory) into a snapshot, over QMP");
  cmd->add_option("--qmp", args->qmp, "The guest's QMP socket (QEMU -qmp unix:PATH,server=on)")
      ->required();
  cmd->add_option("-o,--output", args->output, "Snapshot file to write (*.st)")->required();
  cmd->add_flag("--continue", args->keep_running,
                "Let the guest run on after the capture (default: shut it down)");
  CLI::Option* parent_opt =
      cmd->add_option("--parent", args->parent,
                      "Write a thin snapshot: store only blocks that differ from this snapshot");
  cmd->add_flag("--standalone", args->standalone,
                "For a guest resumed by hexz vm resume: hold every block (copied from the "
                "snapshot it runs from, not recompressed) instead of referencing that snapshot")
      ->excludes(parent_opt);
  cmd->add_option("--max-bandwidth", args->max_bandwidth,
                  "QEMU's migration rate during the capture, bytes/s with K, M or G (default: "
                  "unlimited; QEMU's own limit is put back after)")
      ->check([](const std::string& v) -> std::string {
        auto n = base::ParseSize(v);
        if (!n.ok()) return n.status().message();
        if (*n == 0 || *n > (uint64_t{1} << 40)) return "must be between 1 and 1T";
        return "";
      });
  AddCompressionFlags(cmd, &args->compression, "lz4 (default), zstd or none");
  cmd->add_flag("-q,--quiet", args->quiet, "No summary");
  cmd->callback([rc, args] {
    format::WriterOptions o;
    Status st = BuildWriterOptions(args->compression, &g_cancel, &o);
    if (!st.ok()) {
      Fail(st.WithContext("hexz vm snapshot"));
      *rc = 2;
      return;
    }
    struct sigaction sa = {};
    sa.sa_handler = OnVmSignal;
    sigemptyset(&sa.sa_mask);
    struct sigaction old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    st = VmSnapshot(*args, o);
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    *rc = st.ok() ? 0 : Fail(st);
  });
}

}  // namespace hexz::cli
