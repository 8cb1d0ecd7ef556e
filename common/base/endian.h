// Fixed-width integer encoding, the one copy in hexz: little-endian for the
// hexz file formats and the worker protocol, big-endian for the NBD wire.
//
// Put* writes sizeof(T) bytes at p, Get* reads them; p need not be aligned.
// Header-only, stateless, thread-safe.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace hexz::base {

namespace endian_internal {

inline constexpr bool kLittleHost = std::endian::native == std::endian::little;

inline uint16_t Swap(uint16_t v) { return __builtin_bswap16(v); }
inline uint32_t Swap(uint32_t v) { return __builtin_bswap32(v); }
inline uint64_t Swap(uint64_t v) { return __builtin_bswap64(v); }

template <typename T>
inline void Put(uint8_t* p, T v, bool little) {
  if (little != kLittleHost) v = Swap(v);
  std::memcpy(p, &v, sizeof v);
}

template <typename T>
inline T Get(const uint8_t* p, bool little) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return little == kLittleHost ? v : Swap(v);
}

}  // namespace endian_internal

inline void PutLe16(uint8_t* p, uint16_t v) { endian_internal::Put(p, v, true); }
inline void PutLe32(uint8_t* p, uint32_t v) { endian_internal::Put(p, v, true); }
inline void PutLe64(uint8_t* p, uint64_t v) { endian_internal::Put(p, v, true); }
inline uint16_t GetLe16(const uint8_t* p) { return endian_internal::Get<uint16_t>(p, true); }
inline uint32_t GetLe32(const uint8_t* p) { return endian_internal::Get<uint32_t>(p, true); }
inline uint64_t GetLe64(const uint8_t* p) { return endian_internal::Get<uint64_t>(p, true); }

inline void PutBe16(uint8_t* p, uint16_t v) { endian_internal::Put(p, v, false); }
inline void PutBe32(uint8_t* p, uint32_t v) { endian_internal::Put(p, v, false); }
inline void PutBe64(uint8_t* p, uint64_t v) { endian_internal::Put(p, v, false); }
inline uint16_t GetBe16(const uint8_t* p) { return endian_internal::Get<uint16_t>(p, false); }
inline uint32_t GetBe32(const uint8_t* p) { return endian_internal::Get<uint32_t>(p, false); }
inline uint64_t GetBe64(const uint8_t* p) { return endian_internal::Get<uint64_t>(p, false); }

}  // namespace hexz::base
