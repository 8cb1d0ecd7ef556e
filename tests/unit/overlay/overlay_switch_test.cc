// The switch to a fresh overlay under a served disk (hexz vm snapshot
// --continue): io::SwitchableVolume, the stack OverlayVolume(fresh, base =
// OverlayVolume(frozen, base)), and FoldOverlay, its undo.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "common/io/switchable_volume.h"
#include "common/overlay/overlay_stack.h"
#include "common/overlay/overlay_volume.h"
#include "tests/unit/overlay/overlay_test_util.h"

namespace hexz::overlay {
namespace {

using testing::MakeId;
using testing::MemVolume;
using testing::OpenPath;
using testing::RandomBytes;
using testing::Slurp;
using testing::TempDir;

constexpr uint64_t kDiskSize = 256 * 1024 + 1000;  // not a multiple of 4 KiB

std::vector<uint8_t> ReadAll(io::Volume& v) {
  std::vector<uint8_t> out(v.Size());
  Status st = v.Read(0, out.data(), out.size());
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out;
}

std::shared_ptr<MemVolume> Mem(uint32_t seed, uint64_t size = kDiskSize) {
  return std::make_shared<MemVolume>(RandomBytes(size, seed));
}

TEST(SwitchableVolumeTest, ServesTheNewVolumeAfterASwitch) {
  auto a = Mem(1), b = Mem(2);
  io::SwitchableVolume v(a);
  EXPECT_EQ(ReadAll(v), a->Contents());
  ASSERT_TRUE(
      v.Switch([&](const std::shared_ptr<io::Volume>& old) -> Result<std::shared_ptr<io::Volume>> {
         EXPECT_EQ(old.get(), a.get());
         return std::shared_ptr<io::Volume>(b);
       }).ok());
  EXPECT_EQ(v.current().get(), b.get());
  EXPECT_EQ(ReadAll(v), b->Contents());
}

TEST(SwitchableVolumeTest, RefusedSwitchKeepsTheCurrentVolume) {
  auto a = Mem(1);
  io::SwitchableVolume v(a);
  Status st =
      v.Switch([](const std::shared_ptr<io::Volume>&) -> Result<std::shared_ptr<io::Volume>> {
        return std::shared_ptr<io::Volume>(Mem(3, kDiskSize + 4096));
      });
  EXPECT_EQ(st.code(), base::Code::kInvalidArgument) << st.ToString();
  st = v.Switch([](const std::shared_ptr<io::Volume>&) -> Result<std::shared_ptr<io::Volume>> {
    return Status::IoError("cannot");
  });
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(v.current().get(), a.get());
  EXPECT_EQ(ReadAll(v), a->Contents());
}

TEST(SwitchableVolumeTest, EveryReadSeesOneVolumeWhole) {
  auto a = std::make_shared<MemVolume>(std::vector<uint8_t>(kDiskSize, 0xaa));
  auto b = std::make_shared<MemVolume>(std::vector<uint8_t>(kDiskSize, 0xbb));
  io::SwitchableVolume v(a);
  std::atomic<bool> stop{false};
  std::atomic<int> mixed{0};
  std::atomic<int> reads{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; ++i) {
    readers.emplace_back([&] {
      std::vector<uint8_t> buf(kDiskSize);
      while (!stop) {
        if (!v.Read(0, buf.data(), buf.size()).ok()) ++mixed;
        ++reads;
        for (uint8_t c : buf) {
          if (c != buf[0]) {
            ++mixed;
            break;
          }
        }
      }
    });
  }
  for (int i = 0; i < 2000; ++i) {
    std::this_thread::yield();
    std::shared_ptr<io::Volume> next = (i % 2 == 0) ? b : a;
    ASSERT_TRUE(
        v.Switch([&](const std::shared_ptr<io::Volume>&) -> Result<std::shared_ptr<io::Volume>> {
           return next;
         }).ok());
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(mixed, 0);
  EXPECT_GT(reads, 0);
}

struct Stack {
  TempDir dir;
  std::shared_ptr<MemVolume> base = Mem(7);
  std::shared_ptr<Overlay> frozen_overlay;
  std::shared_ptr<OverlayVolume> frozen;
  std::shared_ptr<Overlay> fresh_overlay;
  std::shared_ptr<OverlayVolume> top;

  // The frozen overlay gets a few writes and a flush, then the fresh one
  // (recording another base id, the snapshot that will hold the frozen
  // state) goes on top.
  void Build() {
    auto ov = OpenPath(dir.File("disk.ovl"), MakeId(1), kDiskSize);
    ASSERT_TRUE(ov.ok()) << ov.status().ToString();
    frozen_overlay = std::move(*ov);
    auto vol = OverlayVolume::Create(base, frozen_overlay);
    ASSERT_TRUE(vol.ok());
    frozen = std::move(*vol);
    std::vector<uint8_t> w = RandomBytes(3 * 4096 + 100, 11);
    ASSERT_TRUE(frozen->Write(5000, w.data(), w.size(), false).ok());
    ASSERT_TRUE(frozen->WriteZeroes(64 * 1024, 8192, false).ok());
    ASSERT_TRUE(frozen->Flush().ok());
    auto fresh = OpenPath(dir.File("fresh.ovl"), MakeId(2), kDiskSize);
    ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
    fresh_overlay = std::move(*fresh);
    auto stacked = OverlayVolume::Create(frozen, fresh_overlay);
    ASSERT_TRUE(stacked.ok()) << stacked.status().ToString();
    top = std::move(*stacked);
  }
};

// Writes to the stack (and a model of the disk) that touch the frozen
// overlay's blocks, base blocks, zeroes and the short last block.
void WriteSome(io::Volume* v, std::vector<uint8_t>* model) {
  std::vector<uint8_t> w = RandomBytes(10000, 21);
  ASSERT_TRUE(v->Write(3000, w.data(), w.size(), false).ok());
  std::memcpy(model->data() + 3000, w.data(), w.size());
  ASSERT_TRUE(v->WriteZeroes(100 * 1024, 4096, false).ok());
  std::memset(model->data() + 100 * 1024, 0, 4096);
  ASSERT_TRUE(v->Write(kDiskSize - 10, w.data(), 10, false).ok());
  std::memcpy(model->data() + kDiskSize - 10, w.data(), 10);
  std::vector<uint8_t> z = RandomBytes(4096, 22);
  ASSERT_TRUE(v->Write(64 * 1024, z.data(), 100, false).ok());  // into a frozen zero block
  std::memcpy(model->data() + 64 * 1024, z.data(), 100);
}

TEST(OverlayStackTest, WritesGoToTheFreshOverlayOnly) {
  Stack s;
  ASSERT_NO_FATAL_FAILURE(s.Build());
  std::vector<uint8_t> at_freeze = ReadAll(*s.frozen);
  EXPECT_EQ(ReadAll(*s.top), at_freeze);
  const auto data_before = Slurp(s.dir.File("disk.ovl"));
  const auto meta_before = Slurp(s.dir.File("disk.ovl.meta"));
  std::vector<uint8_t> model = at_freeze;
  ASSERT_NO_FATAL_FAILURE(WriteSome(s.top.get(), &model));
  ASSERT_TRUE(s.top->Flush().ok());
  EXPECT_EQ(ReadAll(*s.top), model);
  EXPECT_EQ(ReadAll(*s.frozen), at_freeze);
  EXPECT_EQ(Slurp(s.dir.File("disk.ovl")), data_before);
  EXPECT_EQ(Slurp(s.dir.File("disk.ovl.meta")), meta_before);
  // The fresh overlay reopens against its own base id.
  s.top.reset();
  s.fresh_overlay.reset();
  auto again = OpenPath(s.dir.File("fresh.ovl"), MakeId(2), kDiskSize);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  auto vol = OverlayVolume::Create(s.frozen, std::shared_ptr<Overlay>(std::move(*again)));
  ASSERT_TRUE(vol.ok());
  EXPECT_EQ(ReadAll(**vol), model);
}

TEST(OverlayStackTest, FoldBackKeepsEveryWrite) {
  Stack s;
  ASSERT_NO_FATAL_FAILURE(s.Build());
  std::vector<uint8_t> model = ReadAll(*s.frozen);
  ASSERT_NO_FATAL_FAILURE(WriteSome(s.top.get(), &model));
  ASSERT_TRUE(FoldOverlay(*s.fresh_overlay, s.frozen_overlay.get()).ok());
  EXPECT_EQ(ReadAll(*s.frozen), model);
  // Durable: the frozen overlay alone, reopened, reads the same.
  s.top.reset();
  s.fresh_overlay.reset();
  s.frozen.reset();
  s.frozen_overlay.reset();
  auto ov = OpenPath(s.dir.File("disk.ovl"), MakeId(1), kDiskSize);
  ASSERT_TRUE(ov.ok()) << ov.status().ToString();
  auto vol = OverlayVolume::Create(s.base, std::shared_ptr<Overlay>(std::move(*ov)));
  ASSERT_TRUE(vol.ok());
  EXPECT_EQ(ReadAll(**vol), model);
}

TEST(OverlayStackTest, SwitchUnderTheServerAndBack) {
  Stack s;
  ASSERT_NO_FATAL_FAILURE(s.Build());
  io::SwitchableVolume served(s.frozen);
  std::vector<uint8_t> model = ReadAll(served);
  ASSERT_TRUE(
      served
          .Switch(
              [&](const std::shared_ptr<io::Volume>& old) -> Result<std::shared_ptr<io::Volume>> {
                HEXZ_RETURN_IF_ERROR(old->Flush());
                return std::shared_ptr<io::Volume>(s.top);
              })
          .ok());
  ASSERT_NO_FATAL_FAILURE(WriteSome(&served, &model));
  EXPECT_EQ(ReadAll(served), model);
  ASSERT_TRUE(
      served
          .Switch([&](const std::shared_ptr<io::Volume>&) -> Result<std::shared_ptr<io::Volume>> {
            HEXZ_RETURN_IF_ERROR(FoldOverlay(*s.fresh_overlay, s.frozen_overlay.get()));
            return std::shared_ptr<io::Volume>(s.frozen);
          })
          .ok());
  EXPECT_EQ(ReadAll(served), model);
}

TEST(OverlayStackTest, FoldRefusesAnotherDiskSize) {
  TempDir dir;
  auto a = OpenPath(dir.File("a.ovl"), MakeId(1), kDiskSize);
  auto b = OpenPath(dir.File("b.ovl"), MakeId(1), kDiskSize + 4096);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(FoldOverlay(**a, b->get()).code(), base::Code::kInvalidArgument);
}

TEST(OverlayStackTest, PushTwiceThenFoldBackTheLast) {
  TempDir dir;
  auto base = Mem(9);
  auto open = [&](const char* name, uint8_t id) {
    auto ov = OpenPath(dir.File(name), MakeId(id), kDiskSize);
    EXPECT_TRUE(ov.ok()) << ov.status().ToString();
    return std::shared_ptr<Overlay>(std::move(*ov));
  };
  auto first = OverlayVolume::Create(base, open("o1.ovl", 1));
  ASSERT_TRUE(first.ok());
  std::shared_ptr<OverlayVolume> bottom = std::move(*first);
  auto served = std::make_shared<io::SwitchableVolume>(bottom);
  OverlayStack stack(served, bottom);
  EXPECT_EQ(stack.FoldTop().code(), base::Code::kInvalidArgument);
  std::vector<uint8_t> model = base->Contents();
  ASSERT_NO_FATAL_FAILURE(WriteSome(served.get(), &model));
  ASSERT_TRUE(stack.Push(open("o2.ovl", 2)).ok());
  const auto o1 = Slurp(dir.File("o1.ovl"));
  std::vector<uint8_t> at_second = model;
  std::vector<uint8_t> w = RandomBytes(20000, 31);
  ASSERT_TRUE(served->Write(40000, w.data(), w.size(), false).ok());
  std::memcpy(model.data() + 40000, w.data(), w.size());
  ASSERT_TRUE(stack.Push(open("o3.ovl", 3)).ok());
  EXPECT_EQ(stack.depth(), 3u);
  ASSERT_TRUE(served->Write(1000, w.data(), 9000, false).ok());
  std::memcpy(model.data() + 1000, w.data(), 9000);
  EXPECT_EQ(ReadAll(*served), model);
  EXPECT_EQ(Slurp(dir.File("o1.ovl")), o1);  // frozen: no write reached it
  ASSERT_TRUE(stack.FoldTop().ok());
  EXPECT_EQ(stack.depth(), 2u);
  EXPECT_EQ(ReadAll(*served), model);
  EXPECT_EQ(ReadAll(*bottom), at_second);
  // A fresh overlay of another size is refused; the stack serves on.
  auto other = OpenPath(dir.File("o4.ovl"), MakeId(4), kDiskSize + 4096);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(stack.Push(std::shared_ptr<Overlay>(std::move(*other))).ok());
  EXPECT_EQ(stack.depth(), 2u);
  EXPECT_EQ(ReadAll(*served), model);
}

}  // namespace
}  // namespace hexz::overlay
