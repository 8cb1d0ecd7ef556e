/* TEST-ONLY: a minimal NBD negotiation client for the helper tests.
 *
 * Stands in for the front-end (`hexz mount --nbd`, whose client is
 * common/nbd/client.h) so that the helper is tested on its own, against any
 * server, dead and relayed ones included, and inside the QEMU guest, where
 * this dependency-free C program is copied beside the helper. It connects to
 * an NBD server, negotiates NBD_OPT_GO in fixed newstyle, then executes the
 * helper with the connected socket on fd 3 and the numbers it learned
 * inserted after the subcommand:
 *
 *   nbd_negotiate unix:/path/sock|tcp:HOST:PORT EXPORT HELPER attach ARGS...
 *   -> HELPER attach --size N --block-size B --flags 0xF ARGS...   (fd 3 = socket)
 *
 * Not installed and not for production: it trusts the server more than the
 * real client must (it only bounds what it reads).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define NBD_MAGIC 0x4e42444d41474943ULL
#define IHAVEOPT 0x49484156454F5054ULL
#define OPT_REPLY_MAGIC 0x0003e889045565a9ULL
#define OPT_GO 7
#define REP_ACK 1
#define REP_INFO 3
#define INFO_EXPORT 0
#define INFO_BLOCK_SIZE 3
#define FLAG_FIXED_NEWSTYLE 1
#define FLAG_NO_ZEROES 2

static void Fail(const char* what) {
  fprintf(stderr, "nbd_negotiate: %s\n", what);
  exit(1);
}

static void ReadAll(int fd, void* buf, size_t n) {
  for (size_t done = 0; done < n;) {
    ssize_t r = read(fd, (char*)buf + done, n - done);
    if (r <= 0) Fail("server closed the connection during negotiation");
    done += (size_t)r;
  }
}

static void WriteAll(int fd, const void* buf, size_t n) {
  if (write(fd, buf, n) != (ssize_t)n) Fail("write to the server failed");
}

static int Connect(const char* spec) {
  if (strncmp(spec, "unix:", 5) == 0) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(spec + 5) >= sizeof sa.sun_path) Fail("unix socket path too long");
    strcpy(sa.sun_path, spec + 5);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr*)&sa, sizeof sa) != 0) Fail("cannot connect");
    return fd;
  }
  if (strncmp(spec, "tcp:", 4) != 0) Fail("endpoint must be unix:PATH or tcp:HOST:PORT");
  char host[256];
  snprintf(host, sizeof host, "%s", spec + 4);
  char* colon = strrchr(host, ':');
  if (colon == NULL) Fail("tcp endpoint needs :PORT");
  *colon = '\0';
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
  if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) Fail("cannot resolve host");
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) Fail("cannot connect");
  freeaddrinfo(ai);
  return fd;
}

int main(int argc, char** argv) {
  if (argc < 5) Fail("usage: nbd_negotiate ENDPOINT EXPORT HELPER SUBCOMMAND ARGS...");
  int fd = Connect(argv[1]);
  const char* name = argv[2];

  uint64_t magic, opt;
  uint16_t hflags;
  ReadAll(fd, &magic, 8);
  ReadAll(fd, &opt, 8);
  ReadAll(fd, &hflags, 2);
  hflags = be16toh(hflags);
  if (be64toh(magic) != NBD_MAGIC || be64toh(opt) != IHAVEOPT) Fail("not a newstyle NBD server");
  if (!(hflags & FLAG_FIXED_NEWSTYLE)) Fail("server is not fixed newstyle");
  uint32_t cflags = htobe32(FLAG_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES));
  WriteAll(fd, &cflags, 4);

  /* NBD_OPT_GO: u32 name length, name, u16 count of info requests, u16 each. */
  uint32_t nlen = (uint32_t)strlen(name);
  uint8_t req[16 + 4 + 4096 + 4];
  if (nlen > 4096) Fail("export name too long");
  uint64_t m = htobe64(IHAVEOPT);
  uint32_t o = htobe32(OPT_GO), len = htobe32(4 + nlen + 2 + 2), nl = htobe32(nlen);
  uint16_t nreq = htobe16(1), info = htobe16(INFO_BLOCK_SIZE);
  size_t p = 0;
  memcpy(req + p, &m, 8), p += 8;
  memcpy(req + p, &o, 4), p += 4;
  memcpy(req + p, &len, 4), p += 4;
  memcpy(req + p, &nl, 4), p += 4;
  memcpy(req + p, name, nlen), p += nlen;
  memcpy(req + p, &nreq, 2), p += 2;
  memcpy(req + p, &info, 2), p += 2;
  WriteAll(fd, req, p);

  uint64_t size = 0;
  uint16_t tflags = 0;
  uint32_t min_block = 1;
  for (;;) {
    uint8_t hdr[20], data[1024];
    ReadAll(fd, hdr, 20);
    uint64_t rmagic;
    uint32_t rtype, rlen;
    memcpy(&rmagic, hdr, 8);
    memcpy(&rtype, hdr + 12, 4);
    memcpy(&rlen, hdr + 16, 4);
    rtype = be32toh(rtype);
    rlen = be32toh(rlen);
    if (be64toh(rmagic) != OPT_REPLY_MAGIC || rlen > sizeof data) Fail("bad option reply");
    ReadAll(fd, data, rlen);
    if (rtype == REP_ACK) break;
    if (rtype & 0x80000000u) Fail("server refused NBD_OPT_GO (no such export?)");
    if (rtype != REP_INFO || rlen < 2) continue;
    uint16_t itype = (uint16_t)(data[0] << 8 | data[1]);
    if (itype == INFO_EXPORT && rlen == 12) {
      memcpy(&size, data + 2, 8);
      size = be64toh(size);
      tflags = (uint16_t)(data[10] << 8 | data[11]);
    } else if (itype == INFO_BLOCK_SIZE && rlen == 14) {
      memcpy(&min_block, data + 2, 4);
      min_block = be32toh(min_block);
    }
  }
  if (size == 0) Fail("server sent no export size");
  /* 512 unless the server needs more: the kernel reads partition tables in
   * units of the device's logical block size, and VM disks use 512. */
  unsigned block = 512;
  while (block < min_block && block < 4096) block *= 2;

  if (fd == 3 ? fcntl(fd, F_SETFD, 0) != 0 : dup2(fd, 3) != 3)
    Fail("cannot put the socket on fd 3");
  char s_size[32], s_block[16], s_flags[16];
  snprintf(s_size, sizeof s_size, "%llu", (unsigned long long)size);
  snprintf(s_block, sizeof s_block, "%u", block);
  snprintf(s_flags, sizeof s_flags, "0x%x", tflags);
  char** args = calloc((size_t)argc + 8, sizeof *args);
  int n = 0;
  args[n++] = argv[3];
  args[n++] = argv[4];
  args[n++] = "--size";
  args[n++] = s_size;
  args[n++] = "--block-size";
  args[n++] = s_block;
  args[n++] = "--flags";
  args[n++] = s_flags;
  for (int i = 5; i < argc; i++) args[n++] = argv[i];
  args[n] = NULL;
  execv(argv[3], args);
  perror("nbd_negotiate: exec helper");
  return 1;
}
