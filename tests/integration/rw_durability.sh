#!/usr/bin/env bash
# Durability of a read-write mount, as the unprivileged test user:
# 1. patterns written with `dd conv=notrunc,fsync` at scattered (also
#    unaligned) offsets survive `kill -9` of the worker: after `hexz unmount`
#    and a remount with the same overlay, every pattern reads back, and the
#    bytes around them are the snapshot's;
# 2. a writer loops over 64 blocks (pwrite + fsync, a generation number in
#    every block) while the worker is killed: the overlay reopens, every
#    block is its old or its new content (never a mix), and every write
#    whose fsync had returned is there;
# 3. SIGTERM of the worker flushes writes that were never fsync'ed.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_user_allow_other  # root reads the test user's mounts (-o allow_root)
require_cmd dd cmp
TOOL="$HEXZ_BUILD_DIR/tests/hexz_block_pattern"
[[ -x "$TOOL" ]] || skip "test tool $TOOL is not built"
install -m 0755 "$TOOL" "$T/bin/"

head -c 16M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
snap_sum=$(sha256sum <"$T/snap.st")
user_dir "$T/mnt"; user_dir "$T/u"

mount_rw() {  # mount_rw OVERLAY -> worker pid
  as_user "$HEXZ" mount -o allow_root -d --log-file "$T/u/log" "$T/snap.st" "$T/mnt" --rw --overlay "$1" \
    >"$T/d.out" 2>&1 || fail "mount --rw: $(cat "$T/d.out")"
  pid_from "$T/d.out"
}
kill9_and_clean() {  # kill9_and_clean PID
  kill -KILL "$1"
  wait_for bash -c "! kill -0 $1 2>/dev/null" || fail "worker $1 survived SIGKILL"
  out=$(as_user "$HEXZ" unmount "$T/mnt" 2>&1) || fail "hexz unmount after kill -9: $out"
  assert_nothing_left "after kill -9"
}

# --- 1. scattered patterns, kill -9, remount ---
offsets=(0 4096 9000 65536 200001 1048576 3000000 8388608 12345678 16773120)
sizes=(4096 4096 300 65536 9000 131072 4096 1 70000 4096)
w=$(mount_rw u/p.ovl)
for i in "${!offsets[@]}"; do
  head -c "${sizes[$i]}" /dev/urandom >"$T/u/pat$i"
  as_user dd if="u/pat$i" of="$T/mnt/disk" bs="${sizes[$i]}" count=1 seek="${offsets[$i]}" \
    oflag=seek_bytes conv=notrunc,fsync status=none || fail "dd pattern $i"
done
pass "${#offsets[@]} patterns written with dd conv=notrunc,fsync"
kill9_and_clean "$w"
w=$(mount_rw u/p.ovl)
cp "$T/disk.img" "$T/expect.img"
for i in "${!offsets[@]}"; do
  as_user dd if="$T/mnt/disk" of="u/got$i" bs="${sizes[$i]}" count=1 skip="${offsets[$i]}" \
    iflag=skip_bytes status=none || fail "read back pattern $i"
  cmp "$T/u/pat$i" "$T/u/got$i" || fail "pattern $i at offset ${offsets[$i]} lost after kill -9"
  dd if="$T/u/pat$i" of="$T/expect.img" bs="${sizes[$i]}" count=1 seek="${offsets[$i]}" \
    oflag=seek_bytes conv=notrunc status=none
done
as_user cmp "$T/mnt/disk" "$T/expect.img" || fail "the whole disk differs from the expected image"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"
assert_nothing_left "patterns"
pass "after kill -9 and a remount every pattern reads back and nothing else changed"

# --- 2. kill -9 during a continuous fsync'ed write loop ---
blocks=64 stride=61   # blocks 0, 61, 122, ... spread over the 16 MiB disk
w=$(mount_rw u/loop.ovl)
as_user hexz_block_pattern loop "$T/mnt/disk" u/acked.log $blocks $stride >"$T/loop.out" 2>&1 &
writer=$!
on_exit "kill $writer"
# Let it run through a few generations, then kill the worker mid-loop.
wait_for bash -c "[[ \$(wc -l <'$T/u/acked.log' 2>/dev/null || echo 0) -ge 200 ]]" \
  || fail "the writer made no progress: $(cat "$T/loop.out")"
sleep 0.$((RANDOM % 5))
kill9_and_clean "$w"
wait "$writer" || fail "writer: $(cat "$T/loop.out")"
echo "writer: $(cat "$T/loop.out")"
w=$(mount_rw u/loop.ovl)
out=$(as_user hexz_block_pattern check "$T/mnt/disk" u/acked.log "$T/disk.img" $blocks $stride 2>&1) \
  || fail "after kill -9 mid-loop: $out"
echo "check: $out"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"
assert_nothing_left "write loop"
pass "kill -9 during the write loop: every block old or new, every fsync'ed write present"

# --- 3. SIGTERM flushes what was never fsync'ed ---
w=$(mount_rw u/term.ovl)
head -c 1M /dev/urandom >"$T/u/noflush"
# O_DIRECT: the write reaches the worker without fsync, flush or close first.
as_user dd if=u/noflush of="$T/mnt/disk" bs=1M seek=3 oflag=direct conv=notrunc status=none \
  || fail "dd"
kill -TERM "$w"
wait_for bash -c "! kill -0 $w 2>/dev/null" || fail "worker $w ignored SIGTERM"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null 2>&1
assert_nothing_left "SIGTERM"
w=$(mount_rw u/term.ovl)
as_user dd if="$T/mnt/disk" of=u/term.got bs=1M skip=3 count=1 status=none
cmp "$T/u/noflush" "$T/u/term.got" || fail "writes lost on SIGTERM"
grep -q "is no longer mounted; exiting" "$T/u/log" || fail "worker log: $(cat "$T/u/log")"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"
assert_nothing_left "SIGTERM remount"
pass "SIGTERM of the worker flushes the overlay before it exits"

[[ "$(sha256sum <"$T/snap.st")" == "$snap_sum" ]] || fail "the snapshot changed"
pass "the snapshot is unchanged"
