// DiskFleece: the disk of a paused QEMU guest as of the pause, readable
// while the guest runs on ("image fleecing", over QMP).
//
// Start() is called while the guest is paused. It creates a temporary qcow2
// (in a private 0700 directory, through QEMU's own blockdev-create) whose
// backing node is the guest's disk node, and starts a `blockdev-backup
// sync=none` job from the disk to it: from then on, before the guest
// overwrites a cluster, QEMU copies the old cluster into the temporary
// image. Reading node() (export it with block-export-add) gives the disk as
// it was at Start, whatever the guest writes after `cont`. The temporary
// image holds only the clusters the guest overwrites meanwhile.
//
// Stop() cancels the job and removes both nodes and the file; the
// destructor does the same if Stop was not called (errors ignored).
//
// Ownership: borrows the QmpClient, which must outlive it; owns the
// temporary directory. Thread safety: one thread, like QmpClient.
#pragma once

#include <memory>
#include <string>

#include "common/base/status.h"
#include "hexz/qmp.h"

namespace hexz::cli {

class DiskFleece {
 public:
  // `node`: the guest's disk node (query-block's node-name).
  static base::Result<std::unique_ptr<DiskFleece>> Start(QmpClient& qmp, const std::string& node);

  DiskFleece(const DiskFleece&) = delete;
  DiskFleece& operator=(const DiskFleece&) = delete;
  ~DiskFleece() { (void)Stop(); }

  // The node that reads as the disk did at Start.
  const std::string& node() const { return view_node_; }

  base::Status Stop();

 private:
  explicit DiskFleece(QmpClient& qmp) : qmp_(qmp) {}
  base::Status Create(const std::string& node);
  // Waits until job `id` has concluded (then dismisses it) or is gone.
  base::Status WaitJob(const std::string& id, bool dismiss);

  QmpClient& qmp_;
  std::string dir_, file_;
  bool file_node_ = false, view_added_ = false, job_started_ = false;
  std::string view_node_;
};

}  // namespace hexz::cli
