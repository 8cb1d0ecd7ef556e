#include "hexz/progress.h"

#include <time.h>

#include <cstdio>
#include <string>

#include "common/base/size.h"

namespace hexz::cli {
namespace {

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

ProgressBar::ProgressBar() : start_(Now()) {}

void ProgressBar::Update(uint64_t done, uint64_t total, bool final) {
  double now = Now();
  if (!final && now - last_ < 0.1) return;
  last_ = now;
  double elapsed = now - start_;
  double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
  if (total == 0 && !final) {  // a stream of unknown length
    std::fprintf(stderr, "\r%s  %s/s   ", base::FormatSize(done).c_str(),
                 base::FormatSize(static_cast<uint64_t>(rate)).c_str());
    return;
  }
  int pct = total == 0 ? 100 : static_cast<int>(done * 100 / total);
  std::string bar(static_cast<size_t>(pct / 4), '#');
  bar.resize(25, '.');
  std::fprintf(stderr, "\r[%s] %3d%%  %s / %s  %s/s   ", bar.c_str(), pct,
               base::FormatSize(done).c_str(), base::FormatSize(total).c_str(),
               base::FormatSize(static_cast<uint64_t>(rate)).c_str());
  if (final) std::fprintf(stderr, "\n");
}

}  // namespace hexz::cli
