#include "hexz-fused/lifeline.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace hexz::fused {

using base::Result;
using base::Status;
using base::UniqueFd;

namespace {

int g_stop_write = -1;

void OnStopSignal(int) {
  int saved = errno;
  (void)!::write(g_stop_write, "x", 1);
  errno = saved;
}

Status MakePipe(UniqueFd* read_end, UniqueFd* write_end) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return Status::FromErrno(errno, "pipe");
  *read_end = UniqueFd(p[0]);
  *write_end = UniqueFd(p[1]);
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Lifeline>> Lifeline::Start(int channel, bool watch_frontend,
                                                  bool catch_signals,
                                                  std::function<void(Cause)> on_end,
                                                  std::function<Status(int)> on_message) {
  std::unique_ptr<Lifeline> l(new Lifeline());
  HEXZ_RETURN_IF_ERROR(MakePipe(&l->stop_read_, &l->stop_write_));
  HEXZ_RETURN_IF_ERROR(MakePipe(&l->quit_read_, &l->quit_write_));
  l->on_end_ = std::move(on_end);
  l->on_message_ = std::move(on_message);
  if (catch_signals) {
    g_stop_write = l->stop_write_.get();
    struct sigaction sa = {};
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
  }
  l->thread_ = std::thread(&Lifeline::Watch, l.get(), channel, watch_frontend);
  return l;
}

void Lifeline::Watch(int channel, bool watch_frontend) {
  struct pollfd pfd[3] = {
      {quit_read_.get(), POLLIN, 0}, {stop_read_.get(), POLLIN, 0}, {channel, POLLIN, 0}};
  for (;;) {
    int n = ::poll(pfd, watch_frontend ? 3 : 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (pfd[0].revents != 0) return;  // Stop()
    if (pfd[1].revents != 0) return on_end_(Cause::kSignal);
    if (pfd[2].revents != 0) {
      char c;
      if (::recv(channel, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
        // A request; or, unexpected or out of step, keep watching the rest only.
        if (!on_message_ || !on_message_(channel).ok()) pfd[2].events = 0;
        continue;
      }
      return on_end_(Cause::kFrontendGone);
    }
  }
}

void Lifeline::Stop() {
  if (!thread_.joinable()) return;
  (void)!::write(quit_write_.get(), "x", 1);
  thread_.join();
}

}  // namespace hexz::fused
