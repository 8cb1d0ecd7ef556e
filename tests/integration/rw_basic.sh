#!/usr/bin/env bash
# Read-write mounts as the unprivileged test user: what works and what is
# refused, with which message.
# - --rw --overlay PATH (relative): the overlay is created (0600, + .meta),
#   writes read back, survive a remount, `hexz overlay info` counts them;
#   the foreground mount's Ctrl+C keeps them too;
# - memory stays read-only; truncate of disk to another size, O_TRUNC,
#   chmod, touch, new files get EPERM; truncate to the same size passes;
#   a write past the end gets ENOSPC and writes nothing; fallocate
#   --punch-hole zeroes;
# - errors: --overlay without --rw (exit 2, says to add --rw), a wrong base
#   (names both), a locked overlay (second rw mount, and commit meanwhile);
# - ephemeral --rw: no file left in the runtime dir while mounted, after
#   unmount and after kill -9; a stale ephemeral directory from a crash is
#   reclaimed at the next start, a live (locked) one is not.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_user_allow_other  # root reads the test user's mounts (-o allow_root)
require_cmd dd cmp truncate fallocate flock

head -c 4M /dev/urandom >"$T/disk.img"
head -c 5000 /dev/urandom >>"$T/disk.img"   # a size that is not a multiple of 4 KiB
head -c 1M /dev/urandom >"$T/mem.img"
make_snapshot "$T/snap.st" "$T/disk.img" "$T/mem.img"
head -c 4M /dev/urandom >"$T/other.img"
make_snapshot "$T/other.st" "$T/other.img"
size=$(stat -c %s "$T/disk.img")
user_dir "$T/mnt"; user_dir "$T/mnt2"; user_dir "$T/u"; user_dir "$T/run"
chmod 0700 "$T/run"
export USER_RUNTIME_DIR="$T/run"   # as_user's XDG_RUNTIME_DIR: ephemeral overlays go here

mount_rw() {  # mount_rw [--overlay PATH] -> worker pid
  as_user "$HEXZ" mount -o allow_root -d --log-file "$T/u/log" "$T/snap.st" "$T/mnt" --rw "$@" \
    >"$T/d.out" 2>&1 || fail "mount --rw $*: $(cat "$T/d.out")"
  pid_from "$T/d.out"
}
ephemeral_left() { ls -A "$T/run" | grep hexz-overlay; }
unmount() { as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"; assert_nothing_left "$1"; }

# --- a persistent overlay ---
w=$(mount_rw --overlay u/work.ovl)
[[ -f "$T/u/work.ovl" && -f "$T/u/work.ovl.meta" ]] || fail "overlay files not created"
[[ $(stat -c %a "$T/u/work.ovl") == 600 && $(stat -c %U "$T/u/work.ovl") == "$TEST_USER" ]] \
  || fail "overlay mode/owner: $(stat -c '%a %U' "$T/u/work.ovl")"
grep -q " $T/mnt fuse.hexz rw," /proc/mounts || fail "not a rw mount: $(grep " $T/mnt " /proc/mounts)"
[[ $(as_user stat -c %a "$T/mnt/disk") == 644 && $(as_user stat -c %a "$T/mnt/memory") == 444 ]] \
  || fail "modes: disk $(stat -c %a "$T/mnt/disk") memory $(stat -c %a "$T/mnt/memory")"
head -c 10000 /dev/urandom >"$T/u/a"
as_user dd if=u/a of="$T/mnt/disk" bs=10000 seek=12345 oflag=seek_bytes conv=notrunc status=none \
  || fail "write"
# The last, short block of the disk.
head -c 100 /dev/urandom >"$T/u/tail"
as_user dd if=u/tail of="$T/mnt/disk" bs=100 seek=$((size - 100)) oflag=seek_bytes conv=notrunc \
  status=none || fail "write the last 100 bytes"
cp "$T/disk.img" "$T/expect"
dd if="$T/u/a" of="$T/expect" bs=10000 seek=12345 oflag=seek_bytes conv=notrunc status=none
dd if="$T/u/tail" of="$T/expect" bs=100 seek=$((size - 100)) oflag=seek_bytes conv=notrunc status=none
as_user cmp "$T/mnt/disk" "$T/expect" || fail "disk after writes"
pass "--rw --overlay u/work.ovl: created 0600 by the user, rw mount, writes read back"

# What is refused, and how.
expect_fail_msg "Permission denied" as_user bash -c "echo x > '$T/mnt/memory'"
expect_fail_msg "Permission denied" as_user dd if=u/a of="$T/mnt/memory" conv=notrunc status=none
expect_fail_msg "Operation not permitted" as_user truncate -s 0 "$T/mnt/disk"
expect_fail_msg "Operation not permitted" as_user truncate -s $((size + 4096)) "$T/mnt/disk"
expect_fail_msg "Operation not permitted" as_user dd if=u/a of="$T/mnt/disk" status=none   # O_TRUNC
expect_fail_msg "Operation not permitted" as_user chmod 600 "$T/mnt/disk"
expect_fail_msg "Operation not permitted" as_user touch "$T/mnt/disk"
expect_fail_msg "Operation not permitted|Permission denied" as_user touch "$T/mnt/new"
as_user truncate -s "$size" "$T/mnt/disk" || fail "truncate to the same size"
expect_fail_msg "No space left on device" as_user bash -c "echo x >> '$T/mnt/disk'"
expect_fail_msg "No space left on device" \
  as_user dd if=u/a of="$T/mnt/disk" bs=10000 seek=$((size - 5000)) oflag=seek_bytes conv=notrunc status=none
[[ $(stat -c %s "$T/mnt/disk") == "$size" ]] || fail "size changed: $(stat -c %s "$T/mnt/disk")"
as_user cmp "$T/mnt/disk" "$T/expect" || fail "a refused write changed the disk"
as_user fallocate --punch-hole --keep-size -o 8192 -l 20000 "$T/mnt/disk" || fail "punch hole"
dd if=/dev/zero of="$T/expect" bs=20000 count=1 seek=8192 oflag=seek_bytes conv=notrunc status=none
as_user cmp "$T/mnt/disk" "$T/expect" || fail "punched range does not read as zeros"
as_user cmp "$T/mnt/memory" "$T/mem.img" || fail "memory changed"
pass "memory read-only (EACCES); truncate/O_TRUNC/chmod/touch EPERM; past the end ENOSPC, nothing written; punch hole zeroes"

# Errors of a second mount.
expect_fail_msg "in use by a read-write mount or serve" \
  as_user "$HEXZ" mount -o allow_root -d "$T/snap.st" "$T/mnt2" --rw --overlay u/work.ovl
expect_fail_msg "in use by a read-write mount" \
  as_user "$HEXZ" commit --base "$T/snap.st" --overlay u/work.ovl --output u/x.st
grep -q " $T/mnt2 " /proc/mounts && fail "the refused mount is mounted"
unmount "persistent"

out=$(as_user "$HEXZ" mount -o allow_root "$T/snap.st" "$T/mnt" --overlay u/work.ovl 2>&1) && rc=0 || rc=$?
[[ $rc == 2 ]] || fail "--overlay without --rw: exit $rc ($out)"
grep -q "needs --rw" <<<"$out" && grep -q "add --rw" <<<"$out" || fail "--overlay without --rw: $out"
echo "ok - --overlay without --rw: exit 2: $out"
expect_fail_msg "belongs to snapshot id [0-9a-f]+, but the base .*other.st has id [0-9a-f]+" \
  as_user "$HEXZ" mount -o allow_root -d "$T/other.st" "$T/mnt" --rw --overlay u/work.ovl
assert_nothing_left "refused mounts"
pass "clear errors: locked overlay, commit of a mounted overlay, --overlay without --rw, wrong base"

# The changes survive the unmount; overlay info counts them.
w=$(mount_rw --overlay u/work.ovl)
as_user cmp "$T/mnt/disk" "$T/expect" || fail "changes lost across unmount/remount"
unmount "remount"
as_user "$HEXZ" overlay info u/work.ovl >"$T/info" || fail "overlay info"
grep -q "changed blocks:" "$T/info" || fail "overlay info: $(cat "$T/info")"
pass "changes persist across a remount: $(grep 'changed blocks:' "$T/info")"

# `hexz unmount` returns once the worker has flushed and closed the overlay:
# commit and a new rw mount right after it find the overlay unlocked.
for i in 1 2 3 4 5; do
  w=$(mount_rw --overlay u/work.ovl)
  as_user dd if=u/a of="$T/mnt/disk" bs=4096 count=1 seek=$((100 + i)) conv=notrunc status=none
  as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount $i"
  as_user "$HEXZ" commit --base "$T/snap.st" --overlay u/work.ovl --output "u/c$i.st" -q \
    || fail "commit right after hexz unmount (round $i)"
done
dd if="$T/u/a" of="$T/expect" bs=4096 count=1 seek=101 conv=notrunc status=none
for i in 2 3 4 5; do dd if="$T/u/a" of="$T/expect" bs=4096 count=1 seek=$((100 + i)) conv=notrunc status=none; done
"$HEXZ" cat "$T/u/c5.st" | cmp - "$T/expect" || fail "the last commit differs from what was written"
assert_nothing_left "unmount then commit"
pass "hexz unmount waits for the worker: commit right after it works (5 rounds)"

# Foreground rw mount, Ctrl+C: unmounts, the worker flushes, the data stays.
as_user "$HEXZ" mount -o allow_root "$T/snap.st" "$T/mnt" --rw --overlay u/work.ovl 2>"$T/fg.err" &
job=$!
wait_mounted "$T/mnt"
wait_for grep -q "worker pid" "$T/fg.err"
fe=$(ps -o ppid= -p "$(pid_from "$T/fg.err")" | tr -d ' ')
head -c 4096 /dev/urandom >"$T/u/fg"
as_user dd if=u/fg of="$T/mnt/disk" bs=4096 seek=7 oflag=direct conv=notrunc status=none || fail "dd"
kill -INT "$fe"
rc=0; wait "$job" || rc=$?
[[ $rc == 0 ]] || fail "foreground rw mount: exit $rc: $(cat "$T/fg.err")"
assert_nothing_left "foreground"
dd if="$T/u/fg" of="$T/expect" bs=4096 seek=7 conv=notrunc status=none
w=$(mount_rw --overlay u/work.ovl)
as_user cmp "$T/mnt/disk" "$T/expect" || fail "foreground mount lost a write"
unmount "foreground remount"
pass "foreground --rw mount: Ctrl+C unmounts and keeps every write"

# --- ephemeral overlays ---
w=$(mount_rw)
[[ -z "$(ephemeral_left)" ]] || fail "ephemeral overlay left files in the runtime dir: $(ls -A "$T/run")"
ls -l "/proc/$w/fd" | grep -q "$T/run/hexz-overlay.*(deleted)" \
  || fail "the worker holds no deleted overlay in $T/run: $(ls -l "/proc/$w/fd")"
as_user dd if=u/a of="$T/mnt/disk" bs=10000 conv=notrunc,fsync status=none || fail "ephemeral write"
as_user cmp -n 10000 "$T/mnt/disk" u/a || fail "ephemeral write reads back"
unmount "ephemeral"
[[ -z "$(ephemeral_left)" ]] || fail "left after unmount: $(ls -A "$T/run")"
w=$(mount_rw)
as_user cmp "$T/mnt/disk" "$T/disk.img" || fail "a new ephemeral mount shows old changes"
as_user dd if=u/a of="$T/mnt/disk" bs=10000 conv=notrunc status=none || fail "ephemeral write"
kill -KILL "$w"
wait_for bash -c "! kill -0 $w 2>/dev/null"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null 2>&1
assert_nothing_left "ephemeral kill -9"
[[ -z "$(ephemeral_left)" ]] || fail "left after kill -9: $(ls -A "$T/run")"
pass "ephemeral --rw: no files while mounted, after unmount, or after kill -9"

# A crash inside the creation window leaves a directory: the next start
# removes it, but not one whose overlay is locked by a live process.
for d in stale live; do
  as_user mkdir -m 0700 "$T/run/hexz-overlay.$d"
  as_user bash -c "head -c 8192 /dev/zero > '$T/run/hexz-overlay.$d/overlay' && : > '$T/run/hexz-overlay.$d/overlay.meta'"
done
# exec all the way, so that $! is flock itself (it holds the lock).
(exec setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups -- \
  flock -x "$T/run/hexz-overlay.live/overlay" sleep 60 >/dev/null 2>&1) &
holder=$!
on_exit "kill $holder"
wait_for bash -c "[[ -n \$(pgrep -P $holder -x sleep) ]]" || fail "the lock holder did not start"
sleeper=$(pgrep -P "$holder" -x sleep)   # inherits flock's descriptor, so holds the lock too
on_exit "kill $sleeper"
w=$(mount_rw)
[[ -e "$T/run/hexz-overlay.stale" ]] && fail "a stale ephemeral directory was not reclaimed"
[[ -e "$T/run/hexz-overlay.live/overlay" ]] || fail "a live (locked) ephemeral overlay was removed"
unmount "reclaim"
kill "$sleeper" "$holder"; wait "$holder" 2>/dev/null
[[ -e "$T/run/hexz-overlay.live" ]] || fail "the live directory vanished"
w=$(mount_rw)   # now nobody holds it: reclaimed
[[ -e "$T/run/hexz-overlay.live" ]] && fail "an unlocked stale directory was not reclaimed"
unmount "reclaim 2"
pass "the next --rw start reclaims a stale ephemeral directory and leaves a live one alone"
