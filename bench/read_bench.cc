// read_bench: the snapshot read API's throughput, in one process, against the
// physical limit of a cache miss: decompressing the same stored blocks with
// the raw codec calls.
//
// For each snapshot given, on its disk stream (memory when there is no disk):
//   - sequential: Snapshot::Read of the stream (up to --limit bytes) in 1 MiB
//     requests, against a loop over the same blocks that decompresses each
//     stored block from memory (LZ4_decompress_safe / ZSTD_decompressDCtx
//     with one reused context; memcpy
//     for blocks stored raw, memset for zero blocks) straight into the output;
//   - random: 4 KiB Snapshot::Read calls at random 4 KiB-aligned offsets of
//     that range, against decompressing the block that holds each one and
//     copying the 4 KiB out.
// The stored blocks come from Snapshot::ReadStoredBlock and are held in
// memory, so the peer does no I/O and no checksum: the gap is what the read
// path adds (pread from the page cache, index lookup, XXH3 check, copies).
// No cache is used. Each figure is the median of --runs runs; noise is
// (max - min) / median.
//
// Usage: read_bench [--json] [--runs 5] [--limit 256M] [--random-reads 4000] SNAPSHOT...
// (bench/run.py runs `read_bench --json SNAP_LZ4 SNAP_ZSTD`).
#include <lz4.h>
#include <zstd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_report.h"
#include "common/base/size.h"
#include "common/format/snapshot.h"

namespace hexz::bench {
namespace {

using format::BlockKind;
using format::Codec;
using format::Snapshot;
using format::StoredBlock;
using format::StreamId;

constexpr size_t kMiB = 1 << 20;
constexpr size_t kSmallRead = 4096;

void Clobber(void* p) { asm volatile("" : : "r"(p) : "memory"); }

double Seconds(const std::function<bool()>& fn, bool* ok) {
  auto start = std::chrono::steady_clock::now();
  *ok = fn() && *ok;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Options {
  bool json = false;
  int runs = 5;
  uint64_t limit = 256 * kMiB;
  size_t random_reads = 4000;
  std::vector<std::string> snapshots;
};

// One reused Zstd context, as a real reader keeps one per thread
// (ZSTD_decompress would allocate one per call).
ZSTD_DCtx* Dctx() {
  static ZSTD_DCtx* ctx = ZSTD_createDCtx();
  return ctx;
}

// Decompresses one stored block into dst (logical_length bytes).
bool Decompress(const StoredBlock& b, uint8_t* dst) {
  switch (b.kind) {
    case BlockKind::kZero:
      std::memset(dst, 0, b.logical_length);
      return true;
    case BlockKind::kStored:
    case BlockKind::kDedup:
      break;
    case BlockKind::kParent:
      return false;
  }
  switch (b.codec) {
    case Codec::kRaw:
      if (b.bytes.size() != b.logical_length) return false;
      std::memcpy(dst, b.bytes.data(), b.logical_length);
      return true;
    case Codec::kLz4:
      return LZ4_decompress_safe(reinterpret_cast<const char*>(b.bytes.data()),
                                 reinterpret_cast<char*>(dst), static_cast<int>(b.bytes.size()),
                                 static_cast<int>(b.logical_length)) ==
             static_cast<int>(b.logical_length);
    case Codec::kZstd:
      return ZSTD_decompressDCtx(Dctx(), dst, b.logical_length, b.bytes.data(), b.bytes.size()) ==
             b.logical_length;
  }
  return false;
}

// Benchmarks one snapshot; appends its rows. Returns false on an error
// (printed to stderr).
bool BenchSnapshot(const std::string& path, const Options& o, std::vector<Row>* rows) {
  auto opened = Snapshot::Open(path);
  if (!opened.ok()) {
    std::fprintf(stderr, "read_bench: %s\n", opened.status().ToString().c_str());
    return false;
  }
  const Snapshot& snap = **opened;
  StreamId stream = snap.HasStream(StreamId::kDisk) ? StreamId::kDisk : StreamId::kMemory;
  if (!snap.HasStream(stream) || snap.StreamSize(stream) < kSmallRead) {
    std::fprintf(stderr, "read_bench: %s: no stream of at least 4 KiB\n", path.c_str());
    return false;
  }
  const uint64_t bs = snap.block_size();
  const uint64_t len = std::min<uint64_t>(snap.StreamSize(stream), o.limit);
  const uint64_t nblocks = (len + bs - 1) / bs;

  // The stored form of every block of the range, and what the codecs are.
  std::vector<StoredBlock> stored(nblocks);
  uint64_t stored_bytes = 0, counts[3] = {0, 0, 0}, zero = 0;
  for (uint64_t b = 0; b < nblocks; ++b) {
    auto sb = snap.ReadStoredBlock(stream, b);
    if (!sb.ok()) {
      std::fprintf(stderr, "read_bench: %s\n", sb.status().ToString().c_str());
      return false;
    }
    if (sb->kind == BlockKind::kParent) {
      std::fprintf(stderr, "read_bench: %s: thin snapshots are not benchmarked\n", path.c_str());
      return false;
    }
    sb->logical_length = snap.BlockLength(stream, b);
    if (sb->kind == BlockKind::kZero) {
      ++zero;
    } else {
      ++counts[static_cast<int>(sb->codec)];
      stored_bytes += sb->bytes.size();
    }
    stored[b] = std::move(*sb);
  }
  const char* codec = counts[2] > counts[1] ? "zstd" : counts[1] > 0 ? "lz4" : "raw";
  const char* peer_call = counts[2] > counts[1] ? "ZSTD_decompressDCtx"
                          : counts[1] > 0       ? "LZ4_decompress_safe"
                                                : "memcpy";
  char data_note[200];
  std::snprintf(data_note, sizeof data_note,
                "%s of %s, %llu blocks of %s (%.0f%% zero; stored %llu lz4, %llu zstd, %llu raw, "
                "%.2f:1), file in the page cache",
                base::FormatSize(len).c_str(), format::StreamName(stream),
                static_cast<unsigned long long>(nblocks), base::FormatSize(bs).c_str(),
                100.0 * static_cast<double>(zero) / static_cast<double>(nblocks),
                static_cast<unsigned long long>(counts[1]),
                static_cast<unsigned long long>(counts[2]),
                static_cast<unsigned long long>(counts[0]),
                stored_bytes > 0 ? static_cast<double>(len - zero * bs) / stored_bytes : 0.0);

  // Sequential: 1 MiB reads through the API; the same blocks decompressed
  // from memory into the same kind of buffer.
  std::vector<uint8_t> out(kMiB + bs);
  bool ok = true;
  std::vector<double> api_seq, raw_seq;
  for (int run = 0; run < o.runs; ++run) {
    api_seq.push_back(Seconds(
        [&] {
          for (uint64_t off = 0; off < len; off += kMiB) {
            size_t n = static_cast<size_t>(std::min<uint64_t>(kMiB, len - off));
            if (!snap.Read(stream, off, out.data(), n).ok()) return false;
            Clobber(out.data());
          }
          return true;
        },
        &ok));
    raw_seq.push_back(Seconds(
        [&] {
          for (uint64_t b = 0; b < nblocks; ++b) {
            uint8_t* dst = out.data() + (b * bs) % kMiB;
            if (!Decompress(stored[b], dst)) return false;
            Clobber(dst);
          }
          return true;
        },
        &ok));
  }
  // Random 4 KiB reads at the same offsets both ways.
  std::mt19937_64 rng(42);
  std::vector<uint64_t> offsets(o.random_reads);
  for (auto& off : offsets) off = (rng() % (len / kSmallRead)) * kSmallRead;
  std::vector<uint8_t> small(kSmallRead), block(bs);
  std::vector<double> api_rnd, raw_rnd;
  for (int run = 0; run < o.runs; ++run) {
    api_rnd.push_back(Seconds(
        [&] {
          for (uint64_t off : offsets) {
            if (!snap.Read(stream, off, small.data(), kSmallRead).ok()) return false;
            Clobber(small.data());
          }
          return true;
        },
        &ok));
    raw_rnd.push_back(Seconds(
        [&] {
          for (uint64_t off : offsets) {
            const StoredBlock& sb = stored[off / bs];
            if (!Decompress(sb, block.data())) return false;
            std::memcpy(small.data(), block.data() + off % bs, kSmallRead);
            Clobber(small.data());
          }
          return true;
        },
        &ok));
  }
  if (!ok) {
    std::fprintf(stderr, "read_bench: %s: a read or a decompression failed\n", path.c_str());
    return false;
  }

  auto rate = [](double amount, const std::vector<double>& secs) {
    std::vector<double> rates;
    for (double s : secs) rates.push_back(s > 0 ? amount / s : 0);
    return Summarize(rates);
  };
  const double mib = static_cast<double>(len) / kMiB;
  Summary a = rate(mib, api_seq), r = rate(mib, raw_seq);
  rows->push_back(Row{
      std::string("Snapshot::Read sequential 1 MiB (") + codec + ")", a.median, "MiB/s", a.noise,
      std::string("raw ") + peer_call + " of the same blocks",
      r.median > 0 ? a.median / r.median : NAN,
      std::string(data_note) + "; raw: " + std::to_string(static_cast<long>(r.median)) + " MiB/s"});
  const double reads = static_cast<double>(offsets.size());
  a = rate(reads, api_rnd);
  r = rate(reads, raw_rnd);
  rows->push_back(Row{std::string("Snapshot::Read random 4 KiB (") + codec + ")", a.median,
                      "reads/s", a.noise,
                      std::string("raw ") + peer_call + " of the block + 4 KiB copy",
                      r.median > 0 ? a.median / r.median : NAN,
                      std::to_string(offsets.size()) +
                          " reads per run, no cache (each decompresses " + base::FormatSize(bs) +
                          "); raw: " + std::to_string(static_cast<long>(r.median)) + " reads/s"});
  return true;
}

int Usage() {
  std::fprintf(stderr,
               "usage: read_bench [--json] [--runs N] [--limit SIZE] [--random-reads N] "
               "SNAPSHOT...\n");
  return 2;
}

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--json") {
      o.json = true;
    } else if (a == "--runs") {
      const char* v = value();
      if (v == nullptr || (o.runs = std::atoi(v)) < 1) return Usage();
    } else if (a == "--random-reads") {
      const char* v = value();
      if (v == nullptr || std::atol(v) < 1) return Usage();
      o.random_reads = static_cast<size_t>(std::atol(v));
    } else if (a == "--limit") {
      const char* v = value();
      if (v == nullptr) return Usage();
      auto size = base::ParseSize(v);
      if (!size.ok() || *size < kSmallRead) return Usage();
      o.limit = *size;
    } else if (!a.empty() && a[0] == '-') {
      return Usage();
    } else if (!a.empty()) {  // bench/run.py passes "" for a snapshot it could not make
      o.snapshots.push_back(a);
    }
  }
  if (o.snapshots.empty()) return Usage();
  std::vector<Row> rows;
  bool all_ok = true;
  for (const std::string& path : o.snapshots) all_ok = BenchSnapshot(path, o, &rows) && all_ok;
  if (o.json) {
    PrintJson(rows);
  } else {
    std::printf("%-42s %12s %-8s %6s %7s  %s\n", "measure", "value", "unit", "noise", "ratio",
                "peer");
    for (const Row& r : rows) {
      std::printf("%-42s %12.1f %-8s %5.0f%% %6.2fx  %s\n    %s\n", r.name.c_str(), r.value,
                  r.unit.c_str(), 100 * r.noise, r.ratio, r.peer.c_str(), r.note.c_str());
    }
  }
  return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace hexz::bench

int main(int argc, char** argv) { return hexz::bench::Main(argc, argv); }
