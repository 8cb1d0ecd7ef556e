#!/usr/bin/env bash
# A read-write mount whose overlay lives on a full filesystem (a 1 MiB tmpfs):
# the writer gets ENOSPC (never a silent loss); after an unmount and a
# remount (with room again) the overlay opens, every block is old or new and
# every write whose fsync returned is there; writes work again.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_user_allow_other  # root reads the test user's mounts (-o allow_root)
TOOL="$HEXZ_BUILD_DIR/tests/hexz_block_pattern"
[[ -x "$TOOL" ]] || skip "test tool $TOOL is not built"
install -m 0755 "$TOOL" "$T/bin/"

head -c 8M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
user_dir "$T/mnt"; user_dir "$T/u"
mkdir "$T/small"
mount -t tmpfs -o size=1M,mode=0755 hexz-test-small "$T/small" || skip "cannot mount a tmpfs"
on_exit "umount -l '$T/small'"
chown "$TEST_USER:$TEST_USER" "$T/small"

mount_rw() {
  as_user "$HEXZ" mount -o allow_root -d --log-file "$T/u/log" "$T/snap.st" "$T/mnt" --rw --overlay small/o.ovl \
    >"$T/d.out" 2>&1 || fail "mount --rw: $(cat "$T/d.out")"
}

mount_rw
out=$(as_user hexz_block_pattern loop "$T/mnt/disk" u/acked.log 2048 1 2>&1) || fail "writer: $out"
grep -q "No space left on device" <<<"$out" || fail "the writer did not get ENOSPC: $out"
echo "writer: $out"
grep -q "No space left on device" "$T/u/log" || fail "the worker did not log the ENOSPC"
# Readers are not writers: after the sticky ENOSPC a read-only open, read and
# close still succeed (close used to fail with ENOSPC).
out=$(as_user dd if="$T/mnt/disk" of=/dev/null bs=1M count=1 status=none 2>&1) \
  || fail "a read-only dd after the ENOSPC failed: $out"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null 2>&1
assert_nothing_left "ENOSPC"
pass "a full overlay filesystem gives the writer ENOSPC, and readers still close cleanly"

mount -o remount,size=32M "$T/small" || fail "growing the tmpfs"
mount_rw
out=$(as_user hexz_block_pattern check "$T/mnt/disk" u/acked.log "$T/disk.img" 2048 1 2>&1) \
  || fail "after ENOSPC: $out"
echo "check: $out"
head -c 4M /dev/urandom >"$T/u/more"
as_user dd if=u/more of="$T/mnt/disk" bs=1M seek=2 conv=notrunc,fsync status=none \
  || fail "writes with room again"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"
assert_nothing_left "after ENOSPC"
mount_rw
as_user dd if="$T/mnt/disk" of=u/more.got bs=1M skip=2 count=4 status=none
cmp "$T/u/more" "$T/u/more.got" || fail "data written after the ENOSPC episode lost"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"
assert_nothing_left "final"
pass "after ENOSPC the overlay reopens, blocks are old or new, acknowledged writes kept, writes work again"
