#include "common/format/codec.h"

#include <lz4.h>
#include <lz4hc.h>
#include <zstd.h>

#include <cstring>
#include <memory>

namespace hexz::format {
namespace {

struct CctxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DctxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

ZSTD_CCtx* ThreadCctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CctxDeleter> ctx(ZSTD_createCCtx());
  return ctx.get();
}

ZSTD_DCtx* ThreadDctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DctxDeleter> ctx([] {
    ZSTD_DCtx* d = ZSTD_createDCtx();
    // Blocks are at most 1 MiB: refuse frames that ask for a bigger window.
    if (d != nullptr) ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 21);
    return d;
  }());
  return ctx.get();
}

}  // namespace

bool CompressBlock(Codec codec, int level, const void* src, size_t len, std::vector<uint8_t>* out) {
  if (len == 0 || len > (1u << 30)) return false;
  switch (codec) {
    case Codec::kRaw:
      return false;
    case Codec::kLz4: {
      int bound = LZ4_compressBound(static_cast<int>(len));
      out->resize(static_cast<size_t>(bound));
      int n;
      if (level <= 1) {
        n = LZ4_compress_default(static_cast<const char*>(src),
                                 reinterpret_cast<char*>(out->data()), static_cast<int>(len),
                                 bound);
      } else {
        n = LZ4_compress_HC(static_cast<const char*>(src), reinterpret_cast<char*>(out->data()),
                            static_cast<int>(len), bound, level);
      }
      if (n <= 0 || static_cast<size_t>(n) >= len) return false;
      out->resize(static_cast<size_t>(n));
      return true;
    }
    case Codec::kZstd: {
      size_t bound = ZSTD_compressBound(len);
      out->resize(bound);
      ZSTD_CCtx* ctx = ThreadCctx();
      if (ctx == nullptr) return false;
      size_t n = ZSTD_compressCCtx(ctx, out->data(), bound, src, len, level);
      if (ZSTD_isError(n) || n >= len) return false;
      out->resize(n);
      return true;
    }
  }
  return false;
}

bool DecompressBlock(Codec codec, const void* src, size_t src_len, void* dst, size_t dst_len) {
  switch (codec) {
    case Codec::kRaw:
      if (src_len != dst_len) return false;
      std::memcpy(dst, src, dst_len);
      return true;
    case Codec::kLz4: {
      if (src_len > (1u << 30) || dst_len > (1u << 30)) return false;
      int n = LZ4_decompress_safe(static_cast<const char*>(src), static_cast<char*>(dst),
                                  static_cast<int>(src_len), static_cast<int>(dst_len));
      return n >= 0 && static_cast<size_t>(n) == dst_len;
    }
    case Codec::kZstd: {
      ZSTD_DCtx* ctx = ThreadDctx();
      if (ctx == nullptr) return false;
      size_t n = ZSTD_decompressDCtx(ctx, dst, dst_len, src, src_len);
      return !ZSTD_isError(n) && n == dst_len;
    }
  }
  return false;
}

}  // namespace hexz::format
