#include "common/cache/worker_cache.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/base/log.h"
#include "common/base/size.h"

namespace hexz::cache {

namespace {

// Waits until `parent` has exited (it is a zombie or gone), however it exits.
void WaitForExit(pid_t parent) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, parent, 0));
  if (pidfd >= 0 && ::getppid() == parent) {
    struct pollfd pfd = {pidfd, POLLIN, 0};
    while (::poll(&pfd, 1, -1) < 0 && errno == EINTR) {
    }
    ::close(pidfd);
    return;
  }
  if (pidfd >= 0) ::close(pidfd);
  // No pidfd (kernel before 5.3), or the parent is already gone: we are
  // reparented once it has exited; give it a moment to become a zombie.
  while (::getppid() == parent) ::usleep(100 * 1000);
  ::usleep(100 * 1000);
}

// The cleanup process (see the header). Never returns.
[[noreturn]] void RunCleanup(pid_t parent, const std::string& name) {
  ::prctl(PR_SET_NAME, "hexz-cache-gc", 0, 0, 0);
  // Keep only stdin/stdout (/dev/null) and stderr (the worker's log): no
  // snapshot, FUSE or IPC descriptor may stay open here, or the front-end
  // would not see the worker's end of the channel close.
  ::close_range(3, ~0U, 0);
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  WaitForExit(parent);
  DropInfo info;
  Status s = ShmCache::Drop(name, /*force=*/false, &info);
  if (s.ok()) {
    HEXZ_LOG_DEBUG("removed the shared cache /%s (its last user exited)", name.c_str());
  } else if (s.code() != base::Code::kBusy && s.code() != base::Code::kNotFound) {
    HEXZ_LOG_WARN("could not remove the shared cache /%s: %s", name.c_str(), s.ToString().c_str());
  }
  _exit(0);
}

}  // namespace

Result<uint64_t> ParseCacheSize(const std::string& text, uint64_t block_size) {
  auto size = base::ParseSize(text);
  if (!size.ok()) return size.status().WithContext("--cache-size");
  Status fits = ShmCache::CheckSizeForBlock(*size, block_size);
  if (!fits.ok()) return fits.WithContext("--cache-size " + text);
  return *size;
}

Result<std::unique_ptr<ShmCache>> AttachForWorker(uint64_t size, std::string* note) {
  if (note != nullptr) note->clear();
  if (size == 0) return std::unique_ptr<ShmCache>();
  // Refuse a bad size before starting anything.
  HEXZ_RETURN_IF_ERROR(ShmCache::CheckSizeForBlock(size, 0));
  const std::string name = ShmCache::SegmentName();
  const pid_t parent = ::getpid();
  pid_t child = ::fork();
  if (child < 0) return Status::FromErrno(errno, "shared cache /" + name + ": fork of the cleanup");
  if (child == 0) RunCleanup(parent, name);

  AttachInfo info;
  auto shm = ShmCache::Attach(size, &info);
  if (!shm.ok()) {
    // Nothing to clean up: stop the cleanup process right away.
    ::kill(child, SIGKILL);
    while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
    }
    return shm.status();
  }
  if (note != nullptr) *note = info.Describe();
  return std::move(*shm);
}

Status CheckWorkerBlockSize(const ShmCache* shm, uint64_t block_size) {
  if (shm == nullptr) return Status::Ok();
  return shm->CheckBlockSize(block_size);
}

}  // namespace hexz::cache
