// The codecs treat stored bytes as untrusted: exact lengths, and the Zstd
// window limit of FORMAT.md, which one-shot decompression alone does not
// enforce.
#include "common/format/codec.h"

#include <gtest/gtest.h>
#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_getFrameHeader, to check the test frames
#include <zstd.h>

#include "tests/unit/format/format_test_util.h"

namespace hexz::format {
namespace {

using namespace testing;  // NOLINT

// One Zstd frame of data with a window of 2^window_log bytes, written the
// way `zstd --long=27` writes a stream of unknown size: the frame header
// asks for the whole window although the content is small.
Bytes ZstdFrame(const Bytes& data, int window_log) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  EXPECT_FALSE(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, window_log)));
  EXPECT_FALSE(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0)));
  Bytes out(ZSTD_compressBound(data.size()) + 64);
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  ZSTD_inBuffer ib{data.data(), data.size(), 0};
  size_t r = ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_continue);  // size not known yet
  EXPECT_FALSE(ZSTD_isError(r));
  ZSTD_inBuffer none{nullptr, 0, 0};
  do {
    r = ZSTD_compressStream2(c, &ob, &none, ZSTD_e_end);
    EXPECT_FALSE(ZSTD_isError(r));
  } while (r != 0 && !ZSTD_isError(r));
  ZSTD_freeCCtx(c);
  out.resize(ob.pos);
  return out;
}

// The window the frame header asks for.
uint64_t WindowOf(const Bytes& frame) {
  ZSTD_frameHeader fh;
  EXPECT_EQ(ZSTD_getFrameHeader(&fh, frame.data(), frame.size()), 0u);
  return fh.windowSize;
}

TEST(CodecTest, ZstdFramesOverTheFormatWindowAreCorruption) {
  Bytes data = TextBytes(65536, 1);
  Bytes out(data.size());
  Bytes big = ZstdFrame(data, 27);  // 128 MiB
  ASSERT_LT(big.size(), data.size());
  ASSERT_EQ(WindowOf(big), 128u << 20);
  Status st = DecompressBlock(Codec::kZstd, big.data(), big.size(), out.data(), out.size());
  EXPECT_EQ(st.code(), base::Code::kCorruption) << st.ToString();
  EXPECT_NE(st.message().find("131072 KiB window"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("at most 2048 KiB"), std::string::npos) << st.ToString();

  // The limit itself is allowed, and so is a frame that knows its size.
  Bytes limit = ZstdFrame(data, 21);
  ASSERT_EQ(WindowOf(limit), 2u << 20);
  ASSERT_TRUE(
      DecompressBlock(Codec::kZstd, limit.data(), limit.size(), out.data(), out.size()).ok());
  EXPECT_EQ(out, data);
  Bytes plain(ZSTD_compressBound(data.size()));
  plain.resize(ZSTD_compress(plain.data(), plain.size(), data.data(), data.size(), 19));
  EXPECT_TRUE(
      DecompressBlock(Codec::kZstd, plain.data(), plain.size(), out.data(), out.size()).ok());

  // Several frames: a big window in the second one is found too.
  Bytes half(data.begin(), data.begin() + data.size() / 2);
  Bytes two = ZstdFrame(half, 20);
  Bytes second = ZstdFrame(half, 24);
  two.insert(two.end(), second.begin(), second.end());
  st = DecompressBlock(Codec::kZstd, two.data(), two.size(), out.data(), out.size());
  EXPECT_EQ(st.code(), base::Code::kCorruption) << st.ToString();
  EXPECT_NE(st.message().find("window"), std::string::npos) << st.ToString();
}

TEST(CodecTest, MalformedInputIsCorruptionNamingTheCodec) {
  Bytes data = TextBytes(4096, 2);
  Bytes out(data.size());
  Bytes packed;
  ASSERT_TRUE(CompressBlock(Codec::kLz4, 1, data.data(), data.size(), &packed));
  Status st = DecompressBlock(Codec::kLz4, packed.data(), packed.size(), out.data(), 4000);
  EXPECT_EQ(st.code(), base::Code::kCorruption);
  EXPECT_EQ(st.message(), "does not decompress (lz4)");
  Bytes junk(100, 0x5a);
  st = DecompressBlock(Codec::kZstd, junk.data(), junk.size(), out.data(), out.size());
  EXPECT_EQ(st.message(), "does not decompress (zstd)");
  st = DecompressBlock(Codec::kRaw, junk.data(), junk.size(), out.data(), out.size());
  EXPECT_EQ(st.message(), "does not decompress (none)");
  ASSERT_TRUE(
      DecompressBlock(Codec::kLz4, packed.data(), packed.size(), out.data(), out.size()).ok());
  EXPECT_EQ(out, data);
}

// The same frame stored in a snapshot (its checksum is right: only the
// window is wrong) is refused on read and by Verify, naming the block.
TEST(CodecTest, SnapshotBlockWithAnOversizedZstdWindowIsCorruption) {
  TempDir dir;
  const uint32_t bs = 65536;
  Bytes good = TextBytes(bs, 3);
  Bytes frame = ZstdFrame(good, 27);
  WriterOptions o;
  o.block_size = bs;
  auto w = SnapshotWriter::Create(dir / "w.st", o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->BeginStream(StreamId::kDisk, 2 * bs).ok());
  ASSERT_TRUE((*w)->AddData(good.data(), bs).ok());
  StoredBlock sb;
  sb.kind = BlockKind::kStored;
  sb.codec = Codec::kZstd;
  sb.logical_length = bs;
  sb.bytes = frame;
  sb.checksum = layout::Checksum(frame.data(), frame.size());
  ASSERT_TRUE((*w)->AddStored(sb).ok());
  ASSERT_TRUE((*w)->EndStream().ok());
  ASSERT_TRUE((*w)->Finish().ok());

  auto s = Snapshot::Open(dir / "w.st");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  Bytes buf(bs);
  ASSERT_TRUE((*s)->Read(StreamId::kDisk, 0, buf.data(), bs).ok());
  for (Status st : {(*s)->Read(StreamId::kDisk, bs + 10, buf.data(), 100),
                    (*s)->ReadBlock(StreamId::kDisk, 1, buf.data()), (*s)->Verify()}) {
    EXPECT_EQ(st.code(), base::Code::kCorruption) << st.ToString();
    EXPECT_NE(st.message().find("w.st: disk block 1 is a zstd frame with a 131072 KiB window"),
              std::string::npos)
        << st.ToString();
    auto e = (*s)->GetBlockEntry(StreamId::kDisk, 1);
    ASSERT_TRUE(e.ok());
    EXPECT_NE(st.message().find("at offset " + std::to_string(e->offset)), std::string::npos)
        << st.ToString();
  }
}

}  // namespace
}  // namespace hexz::format
