#!/usr/bin/env bash
# hexz mount's errors, each with a clear message naming the path, a non-zero
# exit and nothing left mounted or running: missing snapshot, corrupt
# snapshot, missing mountpoint, mountpoint that is a file, non-empty
# mountpoint, already-mounted mountpoint, /dev/fuse unavailable (hidden in a
# private mount namespace), and
# the reserved flags that are not implemented yet (--rw has rw_basic.sh).
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_cmd unshare

head -c 2M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
user_dir "$T/mnt"
user_dir "$T/u"

expect_fail_msg "$T/missing.st" as_user "$HEXZ" mount "$T/missing.st" "$T/mnt"
assert_nothing_left "missing snapshot"

# Corrupt: flip bytes in the file's trailer (footer/index).
cp "$T/snap.st" "$T/u/corrupt.st"
size=$(stat -c %s "$T/u/corrupt.st")
printf '\xff\xfe\xfd\xfc' | dd of="$T/u/corrupt.st" bs=1 seek=$((size - 20)) conv=notrunc status=none
expect_fail_msg "$T/u/corrupt.st.*(checksum|corrupt|mismatch)" as_user "$HEXZ" mount "$T/u/corrupt.st" "$T/mnt"
assert_nothing_left "corrupt snapshot"
# Not a snapshot at all.
expect_fail_msg "$T/disk.img" as_user "$HEXZ" mount "$T/disk.img" "$T/mnt"
assert_nothing_left "not a snapshot"

expect_fail_msg "mountpoint $T/nomnt does not exist" as_user "$HEXZ" mount "$T/snap.st" "$T/nomnt"
assert_nothing_left "missing mountpoint"
touch "$T/u/file"
expect_fail_msg "mountpoint $T/u/file is not a directory" as_user "$HEXZ" mount "$T/snap.st" "$T/u/file"
assert_nothing_left "file as mountpoint"

# A directory that holds files: the mount would hide them, so it is refused.
user_dir "$T/full"
as_user touch "$T/full/keep-me"
expect_fail_msg "mountpoint $T/full is not empty \(it holds keep-me\)" \
  as_user "$HEXZ" mount -d --log-file "$T/u/log" "$T/snap.st" "$T/full"
expect_fail_msg "mountpoint $T/full is not empty \(it holds keep-me\)" \
  as_user "$HEXZ" mount --nbd "$T/snap.st" "$T/full"
is_mounted "$T/full" && fail "mounted over a non-empty directory"
[[ -e "$T/full/keep-me" ]] || fail "the file in the mountpoint is gone"
assert_nothing_left "non-empty mountpoint"
pass "non-empty mountpoint refused"

# Already mounted (by this user, through hexz).
as_user "$HEXZ" mount -d --log-file "$T/u/log" "$T/snap.st" "$T/mnt" >/dev/null || fail "first mount"
expect_fail_msg "mountpoint $T/mnt is already a hexz mount" as_user "$HEXZ" mount "$T/snap.st" "$T/mnt"
[[ $(grep -c " $T/mnt fuse.hexz " /proc/mounts) -eq 1 ]] || fail "second mount stacked on the first"
as_user cmp "$T/mnt/disk" "$T/disk.img" || fail "first mount damaged by the refused second one"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"
assert_nothing_left "already mounted"
pass "already-mounted mountpoint refused, the first mount untouched"

# /dev/fuse unavailable: a private mount namespace whose /dev lacks it.
out=$(unshare --mount --propagation private bash -c '
  mount -t tmpfs -o mode=0755 hexz-nodev /dev || exit 99
  mknod -m 0666 /dev/null c 1 3
  setpriv --reuid="$1" --regid="$1" --init-groups --reset-env -- \
    env PATH=/usr/bin:/bin HEXZ_FUSED="$2" "$3" mount "$4" "$5"' _ \
  "$TEST_USER" "$HEXZ_FUSED" "$HEXZ" "$T/snap.st" "$T/mnt" 2>&1) && rc=0 || rc=$?
[[ $rc -ne 99 ]] || skip "cannot make a private /dev (unshare/mount refused)"
[[ $rc -ne 0 ]] || fail "mount without /dev/fuse succeeded: $out"
grep -q "/dev/fuse: No such file or directory" <<<"$out" || fail "no /dev/fuse message: $out"
echo "ok - without /dev/fuse: $out"
assert_nothing_left "no /dev/fuse"

# --nbd reads the filesystem type first; this disk has none.
expect_fail_msg "no ext2/3/4, xfs, btrfs or vfat filesystem" \
  as_user "$HEXZ" mount --nbd "$T/snap.st" "$T/mnt"
assert_nothing_left "--nbd without a filesystem"

# Usage errors exit 2.
rc=0; as_user "$HEXZ" mount "$T/snap.st" >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "missing mountpoint argument should exit 2, got $rc"
pass "usage error exits 2"

# unmount: nothing mounted is a success with a note; not a hexz mount is refused.
out=$(as_user "$HEXZ" unmount "$T/mnt") || fail "unmount of an unmounted dir failed: $out"
grep -q "nothing is mounted on" <<<"$out" || fail "unmount note: $out"
pass "unmount with nothing mounted: $out"
expect_fail_msg "is not a hexz mount" as_user "$HEXZ" unmount /proc

# No worker to be found: hexz says where it looked.
mkdir -p "$T/lonely" && install -m 0755 "$HEXZ" "$T/lonely/hexz"
out=$(setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups --reset-env -- \
  env HEXZ_FUSED=/nonexistent/hexz-fused "$T/lonely/hexz" mount "$T/snap.st" "$T/mnt" 2>&1) \
  && fail "mount without a worker succeeded"
grep -q "cannot find hexz-fused; tried" <<<"$out" || fail "no-worker message: $out"
grep -q "/nonexistent/hexz-fused (from \$HEXZ_FUSED)" <<<"$out" || fail "tried list lacks HEXZ_FUSED: $out"
grep -q "$T/lonely/../libexec/hexz/hexz-fused" <<<"$out" || fail "tried list lacks libexec: $out"
assert_nothing_left "no worker"
pass "missing worker: hexz lists where it looked"
