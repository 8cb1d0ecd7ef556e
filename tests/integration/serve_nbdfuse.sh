#!/usr/bin/env bash
# An ext4 snapshot served by `hexz serve` (as the test user), exposed as a
# file by nbdfuse and loop-mounted (root): diff -r against the source tree.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
require_test_user
require_fuse
require_cmd nbdfuse mkfs.ext4 losetup
grep -qw ext4 /proc/filesystems || modprobe ext4 2>/dev/null || true
grep -qw ext4 /proc/filesystems || skip "no ext4 in this kernel"

make_ext4_tree "$T/src" "$T/fs.img"
"$HEXZ" pack --disk "$T/fs.img" -o "$T/fs.st" -q || fail "pack"

start_hexz_serve fs "$T/fs.st"
check_ext4_via_nbdfuse "$(nbd_uri disk)" "$T/fs.img" "$T/src"
stop_hexz_serve
pass "clean stop"
