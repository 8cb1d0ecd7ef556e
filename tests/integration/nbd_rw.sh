#!/usr/bin/env bash
# qemu-io writes patterns through a read-write export (plain, FUA, zeroes,
# discard, unaligned), then reads them back and verifies them on a new
# connection; a read-only export refuses writes.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
require_cmd qemu-io nbdinfo

make_zero_image "$T/disk.img"
start_nbd_server rw --image "$T/disk.img" --rw
U=$(nbd_uri disk)

out=$(qemu-io -f raw \
  -c 'write -P 0xab 0 64k' \
  -c 'write -P 0x5c 65537 3001' \
  -c 'write -f -P 0x77 5M 1M' \
  -c 'write -z 1M 1M' \
  -c 'write -P 0x11 15M 1M' \
  -c 'discard 2M 64k' \
  -c 'write -z -n 3M 64k' \
  -c 'write -P 0x22 14M 32M' \
  -c 'flush' "$U" 2>&1) && true
grep -q 'wrote 65536/65536 bytes at offset 0' <<<"$out" || fail "write: $out"
grep -q 'wrote 1048576/1048576 bytes at offset 15728640' <<<"$out" || fail "write at end: $out"
grep -qiE 'write failed|Input/output|No space|Invalid' <<<"$out" || fail "write past the end must fail: $out"
pass "qemu-io writes (plain, unaligned, FUA, zeroes, discard; past-the-end refused)"

out=$(qemu-io -f raw \
  -c 'read -P 0xab 0 64k' \
  -c 'read -P 0x5c 65537 3001' \
  -c 'read -P 0x77 5M 1M' \
  -c 'read -P 0 1M 1M' \
  -c 'read -P 0 2M 64k' \
  -c 'read -P 0 3M 64k' \
  -c 'read -P 0x11 15M 1M' "$U" 2>&1) || fail "verify: $out"
grep -q 'Pattern verification failed' <<<"$out" && fail "pattern mismatch: $out"
[[ $(grep -c '^read ' <<<"$out") -eq 7 ]] || fail "verify: $out"
pass "qemu-io read-back verifies every pattern"

map=$(nbdinfo --map "$U")
grep -qE '^ +1048576 +.*zero' <<<"$map" || fail "written zeroes not reported as zero: $map"
pass "zeroed range reported as zero"

# Four connections writing at once (MULTI_CONN), then read back.
if command -v nbdcopy >/dev/null; then
  head -c 16M /dev/urandom >"$T/new.img"
  dd if=/dev/zero of="$T/new.img" bs=1M count=3 seek=5 conv=notrunc status=none
  nbdcopy --connections=4 --flush "$T/new.img" "$U" || fail "nbdcopy into the export"
  nbdcopy "$U" "$T/back.img" || fail "nbdcopy out of the export"
  cmp "$T/new.img" "$T/back.img" || fail "data written over 4 connections differs"
  pass "nbdcopy --connections=4 writes read back byte-exact"
fi
stop_nbd_server

start_nbd_server ro --image "$T/disk.img"
out=$(qemu-io -r -f raw -c 'read -P 0 4M 1M' "$(nbd_uri disk)" 2>&1) || fail "ro read: $out"
out=$(qemu-io -f raw -c 'write -P 1 0 4k' "$(nbd_uri disk)" 2>&1) && fail "write to read-only export succeeded: $out"
pass "read-only export refuses writes"
stop_nbd_server
