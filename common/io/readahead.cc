#include "common/io/readahead.h"

#include <cstring>
#include <new>

namespace hexz::io {

using base::Status;

struct Readahead::Slot {
  enum class State { kFree, kQueued, kReading, kReady, kCopying };
  State state = State::kFree;  // guarded by Readahead::mu_, like the rest
  Volume* volume = nullptr;
  uint64_t offset = 0;
  size_t len = 0;
  std::unique_ptr<uint8_t[]> bytes;  // kMaxRange bytes, allocated on first use
};

struct Readahead::Stream {
  uint64_t next = UINT64_MAX;  // where a sequential request starts
  Slot slots[kSlots];
};

Readahead::Readahead() {
  thread_ = std::thread([this] { Loop(); });
}

Readahead::~Readahead() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

uint64_t Readahead::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}

uint64_t Readahead::ahead_reads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ahead_reads_;
}

Readahead::Slot* Readahead::Claim(size_t stream, Volume* volume, uint64_t offset, size_t len) {
  if (len == 0 || len > kMaxRange) return nullptr;
  std::unique_lock<std::mutex> lock(mu_);
  while (streams_.size() <= stream) streams_.push_back(std::make_unique<Stream>());
  Stream& s = *streams_[stream];
  const bool sequential = offset == s.next;
  s.next = offset + len;
  Slot* hit = nullptr;
  for (Slot& slot : s.slots) {
    if (slot.state != Slot::State::kFree && slot.state != Slot::State::kCopying &&
        slot.volume == volume && slot.offset <= offset && offset + len <= slot.offset + slot.len) {
      hit = &slot;
    }
  }
  // Claimed before Schedule, which may reuse a ready slot.
  if (hit != nullptr && hit->state == Slot::State::kReady) hit->state = Slot::State::kCopying;
  if (sequential) Schedule(s, volume, offset + len, len);
  if (hit == nullptr) return nullptr;
  if (hit->state != Slot::State::kCopying) {
    done_cv_.wait(lock, [&] {
      return hit->state != Slot::State::kQueued && hit->state != Slot::State::kReading;
    });
    // A failed read ahead is freed by Loop (the request reads and reports
    // it), and a ready range may have been reused meanwhile.
    if (hit->state != Slot::State::kReady || hit->volume != volume || hit->offset > offset ||
        offset + len > hit->offset + hit->len) {
      return nullptr;
    }
  }
  hit->state = Slot::State::kCopying;
  return hit;
}

const uint8_t* Readahead::SlotBytes(const Slot* slot, uint64_t offset) {
  return slot->bytes.get() + (offset - slot->offset);
}

void Readahead::Release(Slot* slot) {
  std::lock_guard<std::mutex> lock(mu_);
  slot->state = Slot::State::kFree;
  ++hits_;
}

void Readahead::Schedule(Stream& s, Volume* volume, uint64_t offset, size_t len) {
  const uint64_t size = volume->Size();
  if (offset >= size) return;  // the end of the volume: nothing ahead
  if (len > size - offset) len = static_cast<size_t>(size - offset);
  Slot* free_slot = nullptr;
  for (Slot& slot : s.slots) {
    if (slot.state == Slot::State::kFree) {
      free_slot = &slot;
    } else if (slot.state != Slot::State::kCopying && slot.volume == volume &&
               slot.offset == offset) {
      return;  // already there or on its way
    }
  }
  if (free_slot == nullptr) {
    // A ready range nobody asked for yet makes room (the reader moved on).
    for (Slot& slot : s.slots) {
      if (slot.state == Slot::State::kReady && slot.offset < offset) free_slot = &slot;
    }
    if (free_slot == nullptr) return;
  }
  if (!free_slot->bytes) {
    free_slot->bytes.reset(new (std::nothrow) uint8_t[kMaxRange]);
    if (!free_slot->bytes) return;  // no memory: the requests read themselves
  }
  free_slot->state = Slot::State::kQueued;
  free_slot->volume = volume;
  free_slot->offset = offset;
  free_slot->len = len;
  queue_.push_back(free_slot);
  work_cv_.notify_one();
}

void Readahead::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    Slot* slot = queue_.front();
    queue_.pop_front();
    slot->state = Slot::State::kReading;
    Volume* volume = slot->volume;
    const uint64_t offset = slot->offset;
    const size_t len = slot->len;
    lock.unlock();
    Status st = volume->Read(offset, slot->bytes.get(), len);
    lock.lock();
    slot->state = st.ok() ? Slot::State::kReady : Slot::State::kFree;
    ++ahead_reads_;
    done_cv_.notify_all();
  }
}

}  // namespace hexz::io
