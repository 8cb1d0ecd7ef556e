#!/usr/bin/env bash
# An ext4 snapshot served by `hexz serve` (as the test user), exposed as a
# file by nbdfuse and loop-mounted (root): diff -r against the source tree.
source "$(dirname "$0")/lib.sh"
source "$HEXZ_SOURCE_DIR/tests/tools/nbd_lib.sh"
require_test_user
require_fuse
require_cmd nbdfuse mkfs.ext4 losetup
grep -qw ext4 /proc/filesystems || modprobe ext4 2>/dev/null || true
grep -qw ext4 /proc/filesystems || skip "no ext4 in this kernel"

mkdir -p "$T/src/dir/sub" "$T/fuse" "$T/mnt"
head -c 3M /dev/urandom >"$T/src/big.bin"
echo hello >"$T/src/dir/hello.txt"
for i in $(seq 1 50); do echo "file $i" >"$T/src/dir/sub/f$i"; done
ln -s hello.txt "$T/src/dir/link"
mkfs.ext4 -q -F -d "$T/src" "$T/fs.img" 32M || fail "mkfs.ext4 -d"
"$HEXZ" pack --disk "$T/fs.img" -o "$T/fs.st" -q || fail "pack"

start_hexz_serve fs "$T/fs.st"
nbdfuse -r "$T/fuse" "$(nbd_uri disk)" &
fpid=$!
on_exit "fusermount3 -u -z '$T/fuse'; kill $fpid"
wait_for test -f "$T/fuse/nbd" || fail "nbdfuse did not mount"
cmp "$T/fuse/nbd" "$T/fs.img" || fail "nbdfuse file differs from the image"
pass "nbdfuse file of the hexz serve export equals the image"

mount -o ro,loop -t ext4 "$T/fuse/nbd" "$T/mnt" 2>"$T/mount.err" || skip "loop mount failed: $(cat "$T/mount.err")"
on_exit "umount '$T/mnt'"
diff -r --exclude=lost+found "$T/src" "$T/mnt" || fail "diff -r"
pass "ext4 snapshot through hexz serve + nbdfuse + loop mount: diff -r clean"
umount "$T/mnt"
fusermount3 -u "$T/fuse"
wait $fpid || true
stop_hexz_serve
pass "clean stop"
