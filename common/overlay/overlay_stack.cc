// OverlayStack: see overlay_stack.h.
#include "common/overlay/overlay_stack.h"

#include <utility>

namespace hexz::overlay {

OverlayStack::OverlayStack(std::shared_ptr<io::SwitchableVolume> served,
                           std::shared_ptr<OverlayVolume> top)
    : served_(std::move(served)) {
  layers_.push_back(std::move(top));
}

size_t OverlayStack::depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return layers_.size();
}

Status OverlayStack::Push(std::shared_ptr<Overlay> fresh) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fresh->read_only()) return Status::InvalidArgument(fresh->names().data + " is read-only");
  std::shared_ptr<OverlayVolume> next;
  HEXZ_RETURN_IF_ERROR(served_->Switch(
      [&](const std::shared_ptr<io::Volume>&) -> Result<std::shared_ptr<io::Volume>> {
        HEXZ_RETURN_IF_ERROR(layers_.back()->Flush());
        HEXZ_ASSIGN_OR_RETURN(next, OverlayVolume::Create(layers_.back(), fresh));
        return std::shared_ptr<io::Volume>(next);
      }));
  layers_.push_back(std::move(next));
  return Status::Ok();
}

Status OverlayStack::FoldTop() {
  std::lock_guard<std::mutex> lock(mu_);
  if (layers_.size() < 2) return Status::InvalidArgument("no switched overlay to fold back");
  const std::shared_ptr<OverlayVolume>& top = layers_.back();
  const std::shared_ptr<OverlayVolume>& below = layers_[layers_.size() - 2];
  HEXZ_RETURN_IF_ERROR(served_->Switch(
      [&](const std::shared_ptr<io::Volume>&) -> Result<std::shared_ptr<io::Volume>> {
        HEXZ_RETURN_IF_ERROR(FoldOverlay(top->overlay(), &below->overlay()));
        return std::shared_ptr<io::Volume>(below);
      }));
  layers_.pop_back();
  return Status::Ok();
}

}  // namespace hexz::overlay
