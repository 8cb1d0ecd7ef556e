#include "common/format/codec.h"

#include <lz4.h>
#include <lz4hc.h>
#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_getFrameHeader (exported by libzstd 1.5)
#include <zstd.h>

#include <cstring>
#include <memory>
#include <string>

#include "common/format/layout.h"

namespace hexz::format {

using base::Status;

const char* CodecName(Codec codec) {
  switch (codec) {
    case Codec::kRaw:
      return "none";
    case Codec::kLz4:
      return "lz4";
    case Codec::kZstd:
      return "zstd";
  }
  return "unknown";
}

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
  thread_local std::unique_ptr<ZSTD_DCtx, DctxDeleter> ctx(ZSTD_createDCtx());
  return ctx.get();
}

Status NoDecode(Codec codec) {
  return Status::Corruption(std::string("does not decompress (") + CodecName(codec) + ")");
}

// FORMAT.md limits the window of every Zstd frame of a block. One-shot
// decompression ignores ZSTD_d_windowLogMax, so the frame headers are
// checked here, one frame after the other.
Status CheckZstdWindows(const uint8_t* src, size_t len) {
  size_t pos = 0;
  while (pos < len) {
    ZSTD_frameHeader fh;
    if (ZSTD_getFrameHeader(&fh, src + pos, len - pos) != 0) return NoDecode(Codec::kZstd);
    if (fh.frameType == ZSTD_frame && fh.windowSize > layout::kMaxZstdWindow) {
      return Status::Corruption("is a zstd frame with a " + std::to_string(fh.windowSize >> 10) +
                                " KiB window (the format allows at most " +
                                std::to_string(layout::kMaxZstdWindow >> 10) + " KiB)");
    }
    size_t n = ZSTD_findFrameCompressedSize(src + pos, len - pos);
    if (ZSTD_isError(n) || n == 0) return NoDecode(Codec::kZstd);
    pos += n;
  }
  return Status::Ok();
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

Status DecompressBlock(Codec codec, const void* src, size_t src_len, void* dst, size_t dst_len) {
  switch (codec) {
    case Codec::kRaw:
      if (src_len != dst_len) return NoDecode(codec);
      std::memcpy(dst, src, dst_len);
      return Status::Ok();
    case Codec::kLz4: {
      if (src_len > (1u << 30) || dst_len > (1u << 30)) return NoDecode(codec);
      int n = LZ4_decompress_safe(static_cast<const char*>(src), static_cast<char*>(dst),
                                  static_cast<int>(src_len), static_cast<int>(dst_len));
      if (n < 0 || static_cast<size_t>(n) != dst_len) return NoDecode(codec);
      return Status::Ok();
    }
    case Codec::kZstd: {
      HEXZ_RETURN_IF_ERROR(CheckZstdWindows(static_cast<const uint8_t*>(src), src_len));
      ZSTD_DCtx* ctx = ThreadDctx();
      if (ctx == nullptr) return Status::Internal("zstd: cannot create a decompression context");
      size_t n = ZSTD_decompressDCtx(ctx, dst, dst_len, src, src_len);
      if (ZSTD_isError(n) || n != dst_len) return NoDecode(codec);
      return Status::Ok();
    }
  }
  return Status::Corruption("has an unknown codec");
}

}  // namespace hexz::format
