#!/usr/bin/env bash
# Real NBD clients (libnbd's nbdinfo and nbdcopy, qemu-img) against the hexz
# NBD server: export listing and flags, structured replies, base:allocation,
# zero regions in --map, byte-exact copies with 1 and 4 connections.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
require_cmd nbdinfo nbdcopy qemu-img

make_zero_image "$T/disk.img"
head -c 1M /dev/urandom >"$T/mem.img"
start_nbd_server srv --image "$T/disk.img" --memory "$T/mem.img"

assert_readonly_exports
pass "nbdinfo --list shows disk and memory"

map=$(nbdinfo --map "$(nbd_uri)") || fail "nbdinfo --map: $map"
echo "$map"
awk '$1==0 && $3==0' <<<"$map" | grep -q data || fail "first 4M should be data: $map"
assert_zero_map "$map"
pass "nbdinfo --map reports zero regions as zero/hole"

nbdcopy "$(nbd_uri)" "$T/copy1.img" || fail "nbdcopy"
cmp "$T/disk.img" "$T/copy1.img" || fail "nbdcopy output differs"
pass "nbdcopy equals the source"
nbdcopy --connections=4 "$(nbd_uri)" "$T/copy4.img" || fail "nbdcopy --connections=4"
cmp "$T/disk.img" "$T/copy4.img" || fail "nbdcopy --connections=4 output differs"
pass "nbdcopy --connections=4 equals the source"

out=$(qemu-img compare -f raw "$T/disk.img" -F raw "$(nbd_uri disk)" 2>&1) || fail "qemu-img compare: $out"
grep -q 'Images are identical' <<<"$out" || fail "qemu-img compare: $out"
pass "qemu-img compare: identical"

# A missing export is refused with an error, and the server keeps serving.
expect_fail_msg . nbdinfo "$(nbd_uri nosuch)"
nbdinfo --size "$(nbd_uri)" >/dev/null || fail "server stopped serving after a bad client"
stop_nbd_server
pass "clean shutdown on SIGTERM"
