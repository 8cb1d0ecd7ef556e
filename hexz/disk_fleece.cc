#include "hexz/disk_fleece.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <thread>

#include "common/base/fd.h"

namespace hexz::cli {

using base::JsonValue;
using base::Result;
using base::Status;

namespace {

constexpr char kFileNode[] = "hexz-fleece-file";
constexpr char kViewNode[] = "hexz-fleece";
constexpr char kCreateJob[] = "hexz-fleece-create";
constexpr char kBackupJob[] = "hexz-fleece";

JsonValue Str(const std::string& s) { return JsonValue::String(s); }

// The virtual size of block node `node`.
Result<uint64_t> NodeSize(QmpClient& qmp, const std::string& node) {
  HEXZ_ASSIGN_OR_RETURN(
      JsonValue nodes,
      qmp.Execute("query-named-block-nodes", JsonValue::Object({{"flat", JsonValue::Bool(true)}})));
  for (const JsonValue& n : nodes.items()) {
    const JsonValue* name = n.Find("node-name");
    const JsonValue* image = n.Find("image");
    const JsonValue* size = image ? image->Find("virtual-size") : nullptr;
    if (name == nullptr || !name->is_string() || name->AsString() != node || size == nullptr)
      continue;
    const int64_t bytes = size->AsInt().value_or(-1);
    if (bytes >= 0) return static_cast<uint64_t>(bytes);
  }
  return Status::NotFound(qmp.path() + ": QEMU does not list the size of block node " + node);
}

}  // namespace

Result<std::unique_ptr<DiskFleece>> DiskFleece::Start(QmpClient& qmp, const std::string& node) {
  std::unique_ptr<DiskFleece> f(new DiskFleece(qmp));
  Status st = f->Create(node);
  if (!st.ok()) {
    (void)f->Stop();
    return st.WithContext(
        "cannot keep the guest's disk as of the pause (blockdev-backup "
        "sync=none to a temporary image)");
  }
  return f;
}

Status DiskFleece::Create(const std::string& node) {
  HEXZ_ASSIGN_OR_RETURN(uint64_t size, NodeSize(qmp_, node));
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp != nullptr && *tmp == '/' ? tmp : "/tmp") + "/hexz-vm.XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) return Status::FromErrno(errno, "mkdtemp " + tmpl);
  dir_ = tmpl;
  file_ = dir_ + "/fleece.qcow2";
  {
    base::UniqueFd fd(::open(file_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid()) return Status::FromErrno(errno, file_);
  }
  HEXZ_RETURN_IF_ERROR(
      qmp_.Execute("blockdev-add", JsonValue::Object({{"driver", Str("file")},
                                                      {"node-name", Str(kFileNode)},
                                                      {"filename", Str(file_)}}))
          .status());
  file_node_ = true;
  JsonValue options = JsonValue::Object({{"driver", Str("qcow2")},
                                         {"file", Str(kFileNode)},
                                         {"size", JsonValue::Number(std::to_string(size))}});
  HEXZ_RETURN_IF_ERROR(
      qmp_.Execute("blockdev-create",
                   JsonValue::Object({{"job-id", Str(kCreateJob)}, {"options", options}}))
          .status());
  HEXZ_RETURN_IF_ERROR(WaitJob(kCreateJob, /*dismiss=*/true));
  HEXZ_RETURN_IF_ERROR(
      qmp_.Execute("blockdev-add", JsonValue::Object({{"driver", Str("qcow2")},
                                                      {"node-name", Str(kViewNode)},
                                                      {"file", Str(kFileNode)},
                                                      {"backing", Str(node)}}))
          .status());
  view_added_ = true;
  view_node_ = kViewNode;
  HEXZ_RETURN_IF_ERROR(
      qmp_.Execute("blockdev-backup", JsonValue::Object({{"job-id", Str(kBackupJob)},
                                                         {"device", Str(node)},
                                                         {"target", Str(kViewNode)},
                                                         {"sync", Str("none")}}))
          .status());
  job_started_ = true;
  return Status::Ok();
}

Status DiskFleece::WaitJob(const std::string& id, bool dismiss) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    HEXZ_ASSIGN_OR_RETURN(JsonValue jobs, qmp_.Execute("query-jobs"));
    const JsonValue* job = nullptr;
    for (const JsonValue& j : jobs.items()) {
      const JsonValue* jid = j.Find("id");
      if (jid && jid->is_string() && jid->AsString() == id) job = &j;
    }
    if (job == nullptr) return Status::Ok();  // gone (dismissed on its own)
    const JsonValue* status = job->Find("status");
    if (status && status->is_string() && status->AsString() == "concluded") {
      const JsonValue* error = job->Find("error");
      if (dismiss)
        HEXZ_RETURN_IF_ERROR(
            qmp_.Execute("job-dismiss", JsonValue::Object({{"id", Str(id)}})).status());
      if (error != nullptr && error->is_string())
        return Status::Unavailable(qmp_.path() + ": QEMU's job " + id +
                                   " failed: " + error->AsString());
      return Status::Ok();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return Status::Unavailable(qmp_.path() + ": QEMU's job " + id + " did not finish within 60 s");
}

Status DiskFleece::Stop() {
  Status st;
  if (job_started_) {
    job_started_ = false;
    st =
        qmp_.Execute("block-job-cancel", JsonValue::Object({{"device", Str(kBackupJob)}})).status();
    if (st.ok()) st = WaitJob(kBackupJob, /*dismiss=*/false);
  }
  if (view_added_) {
    view_added_ = false;
    Status del =
        qmp_.Execute("blockdev-del", JsonValue::Object({{"node-name", Str(kViewNode)}})).status();
    if (st.ok()) st = del;
  }
  if (file_node_) {
    file_node_ = false;
    Status del =
        qmp_.Execute("blockdev-del", JsonValue::Object({{"node-name", Str(kFileNode)}})).status();
    if (st.ok()) st = del;
  }
  if (!file_.empty()) ::unlink(file_.c_str());
  if (!dir_.empty()) ::rmdir(dir_.c_str());
  file_.clear();
  dir_.clear();
  return st;
}

}  // namespace hexz::cli
