// A copy that computes the XXH3-64 hash of the bytes it copies in the same
// pass: each 64-byte stripe is loaded once, stored to the destination and
// folded into XXH3's accumulators from the same registers. A check of a copy
// (a shared-cache hit) then reads its source once instead of copying it and
// hashing the copy again. The digest equals XXH3_64bits() (seed 0, the
// default secret) of the destination bytes, so values stored by one agree
// with values checked by the other.
//
// x86-64 CPUs with AVX2 (checked at run time) run the vector kernel, others a
// portable one; either gives the same hash.
//
// Ownership: the caller owns both buffers; the destination must stay valid
// until Digest(). Thread safety: one CopyHasher belongs to one thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hexz::base {

class CopyHasher {
 public:
  // Bytes are copied into dst[0..total) by the calls to Copy.
  CopyHasher(void* dst, size_t total);

  // Copies n bytes from src to the next n bytes of the destination. Every call
  // but the last should copy a multiple of kBlock bytes: any other size is
  // still correct, but Digest() then hashes the destination in a second pass.
  // `next`, when known, is where the next call's source starts (a chained
  // chunk elsewhere): it is prefetched (a hint, never read) while this piece
  // is copied.
  void Copy(const void* src, size_t n, const void* next = nullptr);

  // XXH3_64bits(dst, total), once all `total` bytes have been copied.
  uint64_t Digest() const;

  static constexpr size_t kBlock = 1024;  // XXH3's block with the default secret

  // Tests only: run the portable kernel even where the CPU has AVX2 (not
  // thread-safe against concurrent copies).
  static void UsePortableKernelForTest(bool portable);

 private:
  uint8_t* dst_;
  size_t total_;
  size_t done_ = 0;       // bytes copied
  size_t fused_end_ = 0;  // bytes hashed while copying when all goes well
  size_t hashed_ = 0;     // bytes hashed while copying so far
  uint64_t acc_[8];
};

}  // namespace hexz::base
