#include "common/base/copy_hash.h"

#include <algorithm>
#include <cstring>

#include "common/base/xxh3.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// XXH3-64's long-input hash (inputs over 240 bytes), as in xxhash.h 0.8.1
// (XXH3_hashLong_64b_internal with the default secret): 8 accumulators, a
// 64-byte stripe per step, a scramble after each 1024-byte block, then the
// partial last block, the input's last 64 bytes and a merge. The unit tests
// compare every path with libxxhash's own XXH3_64bits.

namespace hexz::base {
namespace {

constexpr uint64_t kPrime32_1 = 0x9E3779B1U;
constexpr uint64_t kPrime32_2 = 0x85EBCA77U;
constexpr uint64_t kPrime32_3 = 0xC2B2AE3DU;
constexpr uint64_t kPrime64_1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime64_2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime64_3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime64_4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime64_5 = 0x27D4EB2F165667C5ULL;

constexpr size_t kStripe = 64;
constexpr size_t kSecretSize = 192;
constexpr size_t kStripesPerBlock = (kSecretSize - kStripe) / 8;  // 16
constexpr size_t kMidsizeMax = 240;  // longer inputs take the long hash
constexpr size_t kLastAccStart = 7;
constexpr size_t kMergeAccsStart = 11;

static_assert(kStripe * kStripesPerBlock == CopyHasher::kBlock);

// XXH3's default secret: libxxhash derives it for seed 0 unchanged.
const uint8_t* Secret() {
  struct Holder {
    alignas(64) uint8_t bytes[kSecretSize];
    Holder() { XXH3_generateSecret_fromSeed(bytes, 0); }
  };
  static const Holder holder;
  return holder.bytes;
}

uint64_t Read64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // x86-64 and aarch64 are little-endian, as XXH3 reads
}

void AccumulateStripe(uint64_t* acc, const uint8_t* in, const uint8_t* secret) {
  for (int i = 0; i < 8; ++i) {
    uint64_t data = Read64(in + 8 * i);
    uint64_t key = data ^ Read64(secret + 8 * i);
    acc[i ^ 1] += data;
    acc[i] += (key & 0xFFFFFFFFU) * (key >> 32);
  }
}

void Scramble(uint64_t* acc, const uint8_t* secret) {
  for (int i = 0; i < 8; ++i) {
    uint64_t a = acc[i];
    a ^= a >> 47;
    a ^= Read64(secret + 8 * i);
    acc[i] = a * kPrime32_1;
  }
}

// Where the kernels ask for the source bytes that follow: the copy from
// memory then overlaps the hashing instead of waiting for each line.
constexpr size_t kPrefetchAhead = 2048;

// The address kPrefetchAhead bytes after offset `off` of a piece of `len`
// bytes at src, continuing at `next` (or nothing) past its end.
const uint8_t* Ahead(const uint8_t* src, size_t len, const uint8_t* next, size_t off) {
  size_t ahead = off + kPrefetchAhead;
  if (ahead < len) return src + ahead;
  return next != nullptr ? next + (ahead - len) : nullptr;
}

// Copies and hashes `blocks` whole blocks from a piece of `len` bytes at src
// (followed by `next`), portable form.
void CopyBlocksPortable(uint64_t* acc, uint8_t* dst, const uint8_t* src, size_t blocks, size_t len,
                        const uint8_t* next) {
  const uint8_t* piece = src;
  const uint8_t* secret = Secret();
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t s = 0; s < kStripesPerBlock; ++s) {
      const uint8_t* ahead =
          Ahead(piece, len, next, static_cast<size_t>(src - piece) + s * kStripe);
      if (ahead != nullptr) __builtin_prefetch(ahead);
    }
    std::memcpy(dst, src, CopyHasher::kBlock);
    for (size_t s = 0; s < kStripesPerBlock; ++s) {
      AccumulateStripe(acc, dst + s * kStripe, secret + s * 8);
    }
    Scramble(acc, secret + kSecretSize - kStripe);
    dst += CopyHasher::kBlock;
    src += CopyHasher::kBlock;
  }
}

#if defined(__x86_64__)
#define HEXZ_AVX2 __attribute__((target("avx2"), always_inline)) inline

// XXH3_accumulate_512_avx2 for one half of a stripe.
HEXZ_AVX2 __m256i Avx2Step(__m256i acc, __m256i data, __m256i key) {
  __m256i dk = _mm256_xor_si256(data, key);
  __m256i product = _mm256_mul_epu32(dk, _mm256_shuffle_epi32(dk, _MM_SHUFFLE(0, 3, 0, 1)));
  __m256i sum = _mm256_add_epi64(acc, _mm256_shuffle_epi32(data, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm256_add_epi64(product, sum);
}

// XXH3_scrambleAcc_avx2 for four accumulators.
HEXZ_AVX2 __m256i Avx2Scramble(__m256i acc, __m256i key, __m256i prime32) {
  __m256i dk = _mm256_xor_si256(_mm256_xor_si256(acc, _mm256_srli_epi64(acc, 47)), key);
  __m256i lo = _mm256_mul_epu32(dk, prime32);
  __m256i hi = _mm256_mul_epu32(_mm256_shuffle_epi32(dk, _MM_SHUFFLE(0, 3, 0, 1)), prime32);
  return _mm256_add_epi64(lo, _mm256_slli_epi64(hi, 32));
}

// The same with AVX2: each 32-byte half of a stripe is loaded once, stored,
// and accumulated from the register.
__attribute__((target("avx2"))) void CopyBlocksAvx2(uint64_t* acc, uint8_t* dst, const uint8_t* src,
                                                    size_t blocks, size_t len,
                                                    const uint8_t* next) {
  const uint8_t* piece = src;
  const uint8_t* secret = Secret();
  __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc));
  __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + 4));
  const __m256i prime32 = _mm256_set1_epi32(static_cast<int>(kPrime32_1));
  const uint8_t* scramble_secret = secret + kSecretSize - kStripe;
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t s = 0; s < kStripesPerBlock; ++s) {
      const auto* in = reinterpret_cast<const __m256i*>(src + s * kStripe);
      auto* out = reinterpret_cast<__m256i*>(dst + s * kStripe);
      const auto* key = reinterpret_cast<const __m256i*>(secret + s * 8);
      const uint8_t* ahead =
          Ahead(piece, len, next, static_cast<size_t>(src - piece) + s * kStripe);
      if (ahead != nullptr) _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
      __m256i d0 = _mm256_loadu_si256(in);
      __m256i d1 = _mm256_loadu_si256(in + 1);
      _mm256_storeu_si256(out, d0);
      _mm256_storeu_si256(out + 1, d1);
      a0 = Avx2Step(a0, d0, _mm256_loadu_si256(key));
      a1 = Avx2Step(a1, d1, _mm256_loadu_si256(key + 1));
    }
    const auto* key = reinterpret_cast<const __m256i*>(scramble_secret);
    a0 = Avx2Scramble(a0, _mm256_loadu_si256(key), prime32);
    a1 = Avx2Scramble(a1, _mm256_loadu_si256(key + 1), prime32);
    dst += CopyHasher::kBlock;
    src += CopyHasher::kBlock;
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc), a0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + 4), a1);
}

// Accumulates `stripes` stripes at in (no scramble) with AVX2, for the
// partial last block, which Copy has already put into the destination.
__attribute__((target("avx2"))) void AccumulateAvx2(uint64_t* acc, const uint8_t* in,
                                                    size_t stripes, const uint8_t* secret) {
  __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc));
  __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + 4));
  for (size_t s = 0; s < stripes; ++s) {
    const auto* data = reinterpret_cast<const __m256i*>(in + s * kStripe);
    const auto* key = reinterpret_cast<const __m256i*>(secret + s * 8);
    a0 = Avx2Step(a0, _mm256_loadu_si256(data), _mm256_loadu_si256(key));
    a1 = Avx2Step(a1, _mm256_loadu_si256(data + 1), _mm256_loadu_si256(key + 1));
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc), a0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + 4), a1);
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

bool force_portable = false;  // UsePortableKernelForTest

void Accumulate(uint64_t* acc, const uint8_t* in, size_t stripes, const uint8_t* secret) {
#if defined(__x86_64__)
  if (!force_portable && HasAvx2()) return AccumulateAvx2(acc, in, stripes, secret);
#endif
  for (size_t s = 0; s < stripes; ++s) AccumulateStripe(acc, in + s * kStripe, secret + s * 8);
}

void CopyBlocks(uint64_t* acc, uint8_t* dst, const uint8_t* src, size_t blocks, size_t len,
                const uint8_t* next) {
#if defined(__x86_64__)
  if (!force_portable && HasAvx2()) return CopyBlocksAvx2(acc, dst, src, blocks, len, next);
#endif
  CopyBlocksPortable(acc, dst, src, blocks, len, next);
}

uint64_t Mul128Fold64(uint64_t a, uint64_t b) {
  unsigned __int128 p = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
}

}  // namespace

void CopyHasher::UsePortableKernelForTest(bool portable) { force_portable = portable; }

CopyHasher::CopyHasher(void* dst, size_t total)
    : dst_(static_cast<uint8_t*>(dst)), total_(total), acc_{kPrime32_3, kPrime64_1, kPrime64_2,
                                                            kPrime64_3, kPrime64_4, kPrime32_2,
                                                            kPrime64_5, kPrime32_1} {
  // Whole blocks before the last byte; the rest is hashed by Digest().
  if (total > kMidsizeMax) fused_end_ = (total - 1) / kBlock * kBlock;
}

void CopyHasher::Copy(const void* src, size_t n, const void* next) {
  const auto* in = static_cast<const uint8_t*>(src);
  size_t fused = 0;
  if (hashed_ == done_ && done_ < fused_end_) {
    if (done_ == 0) {
      // The kernels prefetch kPrefetchAhead bytes ahead: start the first
      // piece's lines before them (later pieces were started as `next`).
      for (size_t i = 0; i < std::min(n, kPrefetchAhead); i += kStripe) __builtin_prefetch(in + i);
    }
    fused = std::min(n, fused_end_ - done_) / kBlock * kBlock;
    CopyBlocks(acc_, dst_ + done_, in, fused / kBlock, n, static_cast<const uint8_t*>(next));
    hashed_ += fused;
  }
  if (n > fused) std::memcpy(dst_ + done_ + fused, in + fused, n - fused);
  done_ += n;
}

uint64_t CopyHasher::Digest() const {
  if (total_ <= kMidsizeMax || hashed_ != fused_end_) return XXH3_64bits(dst_, total_);
  const uint8_t* secret = Secret();
  uint64_t acc[8];
  std::memcpy(acc, acc_, sizeof acc);
  // The partial last block (its stripes before the last byte) from the
  // destination, where Copy has just put it.
  size_t stripes = (total_ - 1 - fused_end_) / kStripe;
  Accumulate(acc, dst_ + fused_end_, stripes, secret);
  Accumulate(acc, dst_ + total_ - kStripe, 1, secret + kSecretSize - kStripe - kLastAccStart);
  uint64_t h = total_ * kPrime64_1;
  for (int i = 0; i < 4; ++i) {
    const uint8_t* key = secret + kMergeAccsStart + 16 * i;
    h += Mul128Fold64(acc[2 * i] ^ Read64(key), acc[2 * i + 1] ^ Read64(key + 8));
  }
  h ^= h >> 37;
  h *= 0x165667919E3779F9ULL;
  return h ^ (h >> 32);
}

}  // namespace hexz::base
