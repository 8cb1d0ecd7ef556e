// The conversation between the sandboxed worker (hexz-fused) and the fetcher,
// the process that reads a remote snapshot chain over HTTP(S) or S3 for it
// (hexz/fetcher.h). The worker asks for bytes; the fetcher answers with them
// or with an error. The fetcher is not trusted for integrity: the worker
// checks every block's checksum as for a local file, so a wrong answer can
// only fail a read.
//
// One request at a time per channel (a connected AF_UNIX stream socket); the
// worker holds several channels to read in parallel. Little-endian:
//   request (24 bytes): u32 magic 'HXZF' | u32 file (index in the chain,
//                       child first) | u64 offset | u32 length | u32 flags
//                       (0, or kFetchFresh: read past the disk cache)
//   reply header (16):  u32 magic 'HXZR' | u32 code (base::Code, 0 = ok) |
//                       u32 errno | u32 length
//   then `length` bytes: exactly the bytes asked for when code is 0, else the
//                       error message (at most kMaxFetchMessage bytes).
// A request must lie within its file (the sizes the fetcher found at open)
// and ask for 1..kMaxFetchLength bytes. Anything else (bad magic, unknown
// flags, an answer of another length) is fatal for the channel: the reader
// closes it and never guesses.
//
// FetchClient is the worker's side: a pool of channels, and an io::Source per
// chain file that reads through it. Ownership: a FetchClient owns its
// channels; each FetchSource shares the client. Thread safety: ReadAt may be
// called from many threads at once; each call takes a channel of its own and
// waits while all are busy.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/io/source.h"

namespace hexz::ipc {

inline constexpr uint32_t kFetchRequestMagic = 0x465a5848;  // "HXZF"
inline constexpr uint32_t kFetchReplyMagic = 0x525a5848;    // "HXZR"
inline constexpr size_t kFetchRequestSize = 24;
inline constexpr size_t kFetchReplyHeaderSize = 16;
inline constexpr uint32_t kMaxFetchLength = 8u << 20;
inline constexpr uint32_t kMaxFetchMessage = 4096;
inline constexpr uint32_t kMaxFetchChannels = 16;
// Request flag: answer from the server, not from the disk cache, and replace
// the cache's copy of the range (the worker found the cached bytes damaged).
inline constexpr uint32_t kFetchFresh = 1;

struct FetchRequest {
  uint32_t file = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t flags = 0;  // 0 or kFetchFresh
};

struct FetchReplyHeader {
  uint32_t code = 0;  // base::Code
  uint32_t sys_errno = 0;
  uint32_t length = 0;
};

void EncodeFetchRequest(const FetchRequest& request, uint8_t out[kFetchRequestSize]);
// Checks a request against the chain's file sizes (kCorruption says what is wrong).
base::Result<FetchRequest> DecodeFetchRequest(const uint8_t in[kFetchRequestSize],
                                              const std::vector<uint64_t>& sizes);

void EncodeFetchReplyHeader(const FetchReplyHeader& header, uint8_t out[kFetchReplyHeaderSize]);
// Checks a reply header against the request it answers.
base::Result<FetchReplyHeader> DecodeFetchReplyHeader(const uint8_t in[kFetchReplyHeaderSize],
                                                      const FetchRequest& request);

// The Status a non-ok reply stands for: its code, errno (EIO unless 1..133)
// and message (control characters replaced, so a log line stays one line).
base::Status FetchReplyStatus(const FetchReplyHeader& header, const std::string& message);

class FetchClient {
 public:
  // `channels` are the worker's ends; `timeout_seconds` bounds each answer
  // (the fetcher's own bound plus a margin), after which the channel is
  // given up and the read fails with EIO.
  FetchClient(std::vector<base::UniqueFd> channels, uint32_t timeout_seconds);

  // Reads [offset, offset + len) of chain file `file` (split into requests
  // of at most kMaxFetchLength). A channel that fails (the fetcher exited,
  // a malformed answer, no answer in time) is closed and logged once;
  // when none is left, every read fails with EIO naming `name`. `flags`
  // go into every request (0 or kFetchFresh).
  base::Status Read(uint32_t file, const std::string& name, void* buf, size_t len, uint64_t offset,
                    uint32_t flags = 0);

 private:
  int Take();  // a free channel's index, or -1 when all are gone
  void Give(int index, bool broken, const std::string& why);
  base::Status ReadOne(int fd, const FetchRequest& request, const std::string& name, void* buf,
                       bool* broken);

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<base::UniqueFd> channels_;
  std::vector<int> free_;  // indexes of idle channels
  size_t alive_;
  uint32_t timeout_seconds_;
};

// An io::Source for chain file `file` of the remote chain behind `client`;
// `size` is what the front-end learned from the fetcher at start. Its
// ReadFreshAt asks the fetcher with kFetchFresh.
std::unique_ptr<io::Source> FetchSource(std::shared_ptr<FetchClient> client, uint32_t file,
                                        uint64_t size, std::string name);

}  // namespace hexz::ipc
