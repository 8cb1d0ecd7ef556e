// Typed, length-prefixed messages over a connected AF_UNIX stream socket
// (a socketpair between `hexz` and its worker), with descriptors passed
// alongside as SCM_RIGHTS.
//
// Wire format of one message (little-endian):
//   u32 magic 'HXZM' | u32 type | u32 payload length | u32 fd count | payload
// The descriptors travel with the first byte of the header. A message larger
// than kMaxPayload, with more than kMaxFds descriptors, of a type the receiver
// did not list, or cut short by end-of-file is a fatal error for the receiver
// (the Status says which); it never guesses.
//
// Encoder/Decoder build and parse payloads: u8/u32/u64 little-endian, and
// strings/blobs as u32 length + bytes. The Decoder checks every length against
// what is left and reports kCorruption on any overrun or trailing bytes.
//
// Ownership: a Message owns its descriptors (UniqueFd). Thread safety: none;
// one thread sends and one thread receives on a socket at a time.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/fd.h"
#include "common/base/status.h"

namespace hexz::ipc {

using base::Result;
using base::Status;
using base::UniqueFd;

inline constexpr uint32_t kMagic = 0x4d5a5848;  // "HXZM"
inline constexpr size_t kHeaderSize = 16;
inline constexpr uint32_t kMaxPayload = 64 * 1024;
inline constexpr uint32_t kMaxFds = 64;

struct Message {
  uint32_t type = 0;
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;
};

// Sends one message (the descriptors are duplicated by the kernel; the caller
// keeps its own).
Status Send(int sock, uint32_t type, const std::vector<uint8_t>& payload,
            const std::vector<int>& fds = {});

// Receives one message whose type must be one of `allowed`. End-of-file before
// the first header byte is kNotFound ("peer closed the channel"); anything else
// unexpected is kCorruption.
Result<Message> Receive(int sock, std::initializer_list<uint32_t> allowed);

class Encoder {
 public:
  void U8(uint8_t v) { bytes_.push_back(v); }
  void Bool(bool v) { U8(v ? 1 : 0); }
  void U32(uint32_t v);
  void U64(uint64_t v);
  void Str(std::string_view s);
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

class Decoder {
 public:
  explicit Decoder(const std::vector<uint8_t>& bytes) : bytes_(bytes) {}
  Result<uint8_t> U8();
  Result<bool> Bool();
  Result<uint32_t> U32();
  Result<uint64_t> U64();
  Result<std::string> Str(uint32_t max_len = kMaxPayload);
  // kCorruption unless every byte was consumed.
  Status Finish() const;

 private:
  Status Need(size_t n) const;
  const std::vector<uint8_t>& bytes_;
  size_t pos_ = 0;
};

}  // namespace hexz::ipc
