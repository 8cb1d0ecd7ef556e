// Overflow-checked unsigned arithmetic for sizes and offsets.
//
// Every size or offset computed from untrusted bytes (a snapshot header, an
// NBD request) goes through these helpers. They return std::nullopt instead of
// wrapping. Header-only, stateless, thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>

namespace hexz::base {

template <typename T>
concept Unsigned = std::is_unsigned_v<T>;

template <Unsigned T>
constexpr std::optional<T> CheckedAdd(T a, T b) {
  T r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

template <Unsigned T>
constexpr std::optional<T> CheckedSub(T a, T b) {
  if (b > a) return std::nullopt;
  return static_cast<T>(a - b);
}

template <Unsigned T>
constexpr std::optional<T> CheckedMul(T a, T b) {
  T r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// ceil(a / b); b must be non-zero.
template <Unsigned T>
constexpr std::optional<T> CeilDiv(T a, T b) {
  if (b == 0) return std::nullopt;
  return static_cast<T>(a / b + (a % b != 0 ? 1 : 0));
}

// True when [offset, offset + length) lies within [0, limit).
template <Unsigned T>
constexpr bool RangeWithin(T offset, T length, T limit) {
  auto end = CheckedAdd(offset, length);
  return end.has_value() && *end <= limit;
}

// Narrowing that refuses values which do not fit.
template <typename To, typename From>
constexpr std::optional<To> CheckedCast(From v) {
  static_assert(std::is_integral_v<To> && std::is_integral_v<From>);
  if (std::in_range<To>(v)) return static_cast<To>(v);
  return std::nullopt;
}

}  // namespace hexz::base
