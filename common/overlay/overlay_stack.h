// OverlayStack: the layers of a served read-write disk whose overlay
// `hexz vm snapshot --continue` switched at the pause. The served volume
// (an io::SwitchableVolume) starts as one OverlayVolume over the snapshot's
// disk; Push() freezes the top overlay (flushed, no more writes) and serves a
// fresh overlay over it; FoldTop() undoes the last Push (a capture that
// failed) without losing a write.
//
// Ownership: shares the served volume and every layer; the layers' overlays
// keep their descriptors, so a frozen overlay whose files the front-end has
// since unlinked still serves the blocks above the snapshot's.
// Thread safety: Push and FoldTop may be called from any thread, one at a
// time (a mutex); requests to the served volume run concurrently with them.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "common/io/switchable_volume.h"
#include "common/overlay/overlay_volume.h"

namespace hexz::overlay {

class OverlayStack {
 public:
  // `top` is what `served` serves now.
  OverlayStack(std::shared_ptr<io::SwitchableVolume> served, std::shared_ptr<OverlayVolume> top);

  // With no request in flight: flushes the top overlay, then serves
  // OverlayVolume(fresh, base = the old top). Refuses a fresh overlay of
  // another disk size or a read-only one; on any error the old top is served
  // as before.
  Status Push(std::shared_ptr<Overlay> fresh);

  // With no request in flight: writes the top overlay's blocks into the one
  // below (FoldOverlay, flushed) and serves that one again. kInvalidArgument
  // when nothing was pushed.
  Status FoldTop();

  size_t depth() const;

 private:
  const std::shared_ptr<io::SwitchableVolume> served_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<OverlayVolume>> layers_;  // bottom first; guarded by mu_
};

}  // namespace hexz::overlay
