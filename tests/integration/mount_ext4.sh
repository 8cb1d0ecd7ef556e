#!/usr/bin/env bash
# A real filesystem through hexz: an ext4 image built with mkfs.ext4 -d from a
# real directory tree (/usr/share/doc: thousands of files), packed, mounted by
# the unprivileged user, then loop-mounted read-only from the FUSE `disk` file
# as root (or through fuse2fs as the user when loop devices are unavailable).
# diff -r against the source finds nothing, and e2fsck -fn on `disk` is clean.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_user_allow_other  # root reads the test user's mounts (-o allow_root)
require_cmd mkfs.ext4 e2fsck diff

src=/usr/share/doc
[[ -d $src ]] || skip "$src is missing"
entries=$(find "$src" | wc -l)
[[ $entries -ge 1000 ]] || skip "$src has only $entries entries"
kib=$(du -sk "$src" | cut -f1)
size_mib=$(( (kib * 14 / 10) / 1024 + 64 ))
truncate -s "${size_mib}M" "$T/fs.img"
mkfs.ext4 -q -F -d "$src" "$T/fs.img" || fail "mkfs.ext4 -d $src"
make_snapshot "$T/fs.st" "$T/fs.img"
echo "ok - ext4 of $src ($entries entries) in a ${size_mib} MiB image, packed to $(du -h "$T/fs.st" | cut -f1)"

user_dir "$T/mnt"
user_dir "$T/u"
as_user "$HEXZ" mount -o allow_root -d --log-file "$T/u/log" "$T/fs.st" "$T/mnt" >/dev/null || fail "hexz mount"
on_exit "umount -l '$T/ext'"
mkdir -p "$T/ext"

as_user "$(command -v e2fsck)" -fn "$T/mnt/disk" >"$T/fsck.out" 2>&1 || fail "e2fsck -fn: $(cat "$T/fsck.out")"
pass "e2fsck -fn on the FUSE disk file is clean: $(tail -n1 "$T/fsck.out")"

how=
if mount -o loop,ro "$T/mnt/disk" "$T/ext" 2>"$T/loop.err"; then
  how="loop mount as root"
  diff_as=()
elif command -v fuse2fs >/dev/null; then
  user_dir "$T/ext"
  as_user "$(command -v fuse2fs)" -o ro,fakeroot "$T/mnt/disk" "$T/ext" >"$T/fuse2fs.out" 2>&1 \
    || fail "neither loop ($(cat "$T/loop.err")) nor fuse2fs ($(cat "$T/fuse2fs.out")) mounted it"
  how="fuse2fs as $TEST_USER"
  diff_as=(as_user)
else
  skip "no loop devices ($(cat "$T/loop.err")) and no fuse2fs"
fi
"${diff_as[@]}" diff -r --no-dereference "$src" "$T/ext" -x lost+found >"$T/diff.out" 2>&1 \
  || fail "diff -r found differences: $(head -n 20 "$T/diff.out")"
files=$(find "$T/ext" -type f | wc -l)
[[ $files -ge 500 ]] || fail "only $files files visible in the filesystem"
pass "diff -r $src against the filesystem in the snapshot ($how, $files files): no difference"
umount "$T/ext" 2>/dev/null || fusermount3 -u "$T/ext"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "hexz unmount"
assert_nothing_left "ext4"
