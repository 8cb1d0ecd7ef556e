// Test tool for the durability of read-write mounts: writes and checks
// 4 KiB blocks whose content names the block and a generation number.
//
//   hexz_block_pattern loop DISK LOG BLOCKS STRIDE
//       For generation 1, 2, ...: writes every block i * STRIDE (i <
//       BLOCKS) with pwrite + fsync, and after each fsync returns appends
//       "BLOCK GEN" to LOG. Runs until a write or fsync fails (the worker
//       was killed), then exits 0 with the number of acknowledged writes.
//   hexz_block_pattern check DISK LOG BASE BLOCKS STRIDE
//       Every block must hold either its content in BASE (never written),
//       or the pattern of generation g where g is the last generation LOG
//       acknowledged for it or the one after it (in flight when the worker
//       died). Anything else (a torn mix, a lost acknowledged write) fails.
//
// A pattern is 512 64-bit words, word w = (block << 32 | gen) ^ (w * K), so
// that two generations, or two blocks, never share a 4 KiB image or a part
// of one at the same position.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

constexpr size_t kBlock = 4096;

void Pattern(uint64_t block, uint64_t gen, uint8_t* out) {
  for (size_t w = 0; w < kBlock / 8; ++w) {
    uint64_t v = ((block << 32) | gen) ^ (w * 0x9E3779B97F4A7C15ULL);
    std::memcpy(out + w * 8, &v, 8);
  }
}

bool ReadBlock(int fd, uint64_t block, uint8_t* out) {
  size_t done = 0;
  while (done < kBlock) {
    ssize_t n = pread(fd, out + done, kBlock - done, static_cast<off_t>(block * kBlock + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

int Loop(const char* disk, const char* log, uint64_t blocks, uint64_t stride) {
  int fd = open(disk, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "open %s: %s\n", disk, std::strerror(errno));
    return 1;
  }
  int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (lfd < 0) {
    std::fprintf(stderr, "open %s: %s\n", log, std::strerror(errno));
    return 1;
  }
  uint8_t buf[kBlock];
  uint64_t acked = 0;
  for (uint64_t gen = 1;; ++gen) {
    for (uint64_t i = 0; i < blocks; ++i) {
      uint64_t block = i * stride;
      Pattern(block, gen, buf);
      if (pwrite(fd, buf, kBlock, static_cast<off_t>(block * kBlock)) != kBlock || fsync(fd) != 0) {
        std::printf("%" PRIu64 " acknowledged writes, stopped at generation %" PRIu64 ": %s\n",
                    acked, gen, std::strerror(errno));
        return 0;
      }
      char line[64];
      int n = std::snprintf(line, sizeof line, "%" PRIu64 " %" PRIu64 "\n", block, gen);
      if (write(lfd, line, static_cast<size_t>(n)) != n) return 1;
      ++acked;
    }
  }
}

int Check(const char* disk, const char* log, const char* base, uint64_t blocks, uint64_t stride) {
  std::map<uint64_t, uint64_t> last;  // block -> last acknowledged generation
  FILE* lf = std::fopen(log, "r");
  if (lf == nullptr) {
    std::fprintf(stderr, "open %s: %s\n", log, std::strerror(errno));
    return 1;
  }
  uint64_t b, g;
  while (std::fscanf(lf, "%" SCNu64 " %" SCNu64, &b, &g) == 2) last[b] = g;
  std::fclose(lf);
  int fd = open(disk, O_RDONLY | O_CLOEXEC);
  int bfd = open(base, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || bfd < 0) {
    std::fprintf(stderr, "open %s or %s: %s\n", disk, base, std::strerror(errno));
    return 1;
  }
  uint8_t got[kBlock], want[kBlock];
  uint64_t base_blocks = 0, acked_blocks = 0, in_flight = 0;
  for (uint64_t i = 0; i < blocks; ++i) {
    uint64_t block = i * stride;
    if (!ReadBlock(fd, block, got) || !ReadBlock(bfd, block, want)) {
      std::fprintf(stderr, "block %" PRIu64 ": read failed: %s\n", block, std::strerror(errno));
      return 1;
    }
    uint64_t acked = last.count(block) ? last[block] : 0;
    if (acked == 0 && std::memcmp(got, want, kBlock) == 0) {
      ++base_blocks;
      continue;
    }
    bool ok = false;
    for (uint64_t gen : {acked, acked + 1}) {
      if (gen == 0) continue;
      Pattern(block, gen, want);
      if (std::memcmp(got, want, kBlock) == 0) {
        ok = true;
        (gen == acked ? acked_blocks : in_flight)++;
        break;
      }
    }
    if (!ok) {
      std::fprintf(stderr,
                   "block %" PRIu64 ": neither generation %" PRIu64 " (acknowledged) nor %" PRIu64
                   " (in flight)%s\n",
                   block, acked, acked + 1, acked == 0 ? " nor the base content" : "");
      return 1;
    }
  }
  std::printf("%" PRIu64 " blocks ok: %" PRIu64 " at the acknowledged generation, %" PRIu64
              " one newer (in flight), %" PRIu64 " never written\n",
              blocks, acked_blocks, in_flight, base_blocks);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 6 && std::strcmp(argv[1], "loop") == 0) {
    return Loop(argv[2], argv[3], std::strtoull(argv[4], nullptr, 10),
                std::strtoull(argv[5], nullptr, 10));
  }
  if (argc == 7 && std::strcmp(argv[1], "check") == 0) {
    return Check(argv[2], argv[3], argv[4], std::strtoull(argv[5], nullptr, 10),
                 std::strtoull(argv[6], nullptr, 10));
  }
  std::fprintf(stderr,
               "usage: hexz_block_pattern loop DISK LOG BLOCKS STRIDE\n"
               "       hexz_block_pattern check DISK LOG BASE BLOCKS STRIDE\n");
  return 2;
}
