#!/usr/bin/env bash
# Crashes and stuck mounts: after kill -9 of the worker, `hexz unmount` leaves
# the mountpoint clean and reusable, both when the front-end's companion
# (hexz-watch, which unmounts a dead worker's mount) got there first and when
# it is gone too (a dead mount: "Transport endpoint is not connected"); and
# the companion alone takes a dead worker's mount away. A busy mount is
# reported as busy. The foreground front-end notices a dead worker and cleans
# up.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse

head -c 2M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
user_dir "$T/mnt"
user_dir "$T/u"

mount_daemon() {
  as_user "$HEXZ" mount -d --log-file "$T/u/log" "$T/snap.st" "$T/mnt" >"$T/d.out" 2>&1 \
    || fail "mount: $(cat "$T/d.out")"
  pid_from "$T/d.out"
}
check_reusable() {
  is_mounted "$T/mnt" && fail "$1: still mounted: $(grep " $T/mnt " /proc/mounts)"
  [[ -z "$(ls -A "$T/mnt")" ]] || fail "$1: mountpoint not empty"
  local w
  w=$(mount_daemon)
  as_user cmp "$T/mnt/disk" "$T/disk.img" || fail "$1: remount reads wrong data"
  as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "$1: unmount after remount"
  assert_nothing_left "$1"
}

# 1. kill -9 of the worker; its companion may or may not be quicker.
w=$(mount_daemon)
kill -KILL "$w"
out=$(as_user "$HEXZ" unmount "$T/mnt" 2>&1) || fail "unmount after kill -9: $out"
echo "ok - after kill -9: $out"
check_reusable "kill -9"
pass "kill -9 of the worker, then hexz unmount: clean and reusable"

# 1b. kill -9 of the worker alone: the companion unmounts the dead mount.
w=$(mount_daemon)
kill -KILL "$w"
wait_for bash -c "! grep -q ' $T/mnt ' /proc/mounts" || fail "the dead worker's mount stayed"
check_reusable "companion cleanup"
pass "kill -9 of the worker: its mount goes away by itself"

# 2. A dead mount: the worker and its companion are both gone.
w=$(mount_daemon)
helper=$(pgrep -u "$TEST_USER" -x hexz-watch -n)
if [[ -n "$helper" ]]; then
  kill -KILL "$helper"
  kill -KILL "$w"
  wait_for bash -c "! kill -0 $w" || fail "worker $w survived SIGKILL"
  is_mounted "$T/mnt" || fail "the dead mount vanished by itself"
  err=$(as_user ls "$T/mnt" 2>&1) && fail "ls on a dead mount worked"
  grep -q "Transport endpoint is not connected" <<<"$err" || fail "dead mount: $err"
  out=$(as_user "$HEXZ" unmount "$T/mnt" 2>&1) || fail "unmount of a dead mount: $out"
  grep -q "Transport endpoint is not connected" <<<"$out" || fail "dead mount note: $out"
  echo "ok - $out"
  check_reusable "dead mount"
  pass "dead mount (ENOTCONN) cleaned up by hexz unmount"
else
  fail "no hexz-watch companion found for worker $w"
fi

# 3. Busy: a process has its working directory inside.
w=$(mount_daemon)
# exec all the way, so that $! is the sleeping process itself.
(exec setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups -- \
  bash -c "cd '$T/mnt' && exec sleep 60") &
sleeper=$!
on_exit "kill $sleeper"
wait_for bash -c "readlink /proc/$sleeper/cwd | grep -q '$T/mnt'" || true
expect_fail_msg "busy" as_user "$HEXZ" unmount "$T/mnt"
is_mounted "$T/mnt" || fail "busy mount was unmounted anyway"
kill "$sleeper"; wait "$sleeper" 2>/dev/null
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount once no longer busy"
assert_nothing_left "busy"
pass "busy reported clearly; unmount works once it is free"

# 4. Foreground front-end, worker killed: it notices, cleans up, exits 1.
as_user "$HEXZ" mount "$T/snap.st" "$T/mnt" 2>"$T/fg.err" &
job=$!
wait_mounted "$T/mnt"
wait_for grep -q "worker pid" "$T/fg.err"
kill -KILL "$(pid_from "$T/fg.err")"
rc=0; wait "$job" || rc=$?
[[ $rc -eq 1 ]] || fail "front-end exit $rc after its worker died: $(cat "$T/fg.err")"
grep -q "died" "$T/fg.err" || fail "front-end message: $(cat "$T/fg.err")"
assert_nothing_left "foreground worker killed"
check_reusable "foreground worker killed"
pass "foreground front-end reports its dead worker and leaves nothing behind"

# 5. Foreground front-end killed with SIGKILL: its worker follows, the mount goes.
as_user "$HEXZ" mount "$T/snap.st" "$T/mnt" 2>"$T/fg3.err" &
job=$!
wait_mounted "$T/mnt"
wait_for grep -q "worker pid" "$T/fg3.err"
w=$(pid_from "$T/fg3.err")
fe=$(ps -o ppid= -p "$w" | tr -d ' ')
[[ $(cat "/proc/$fe/comm") == hexz ]] || fail "front-end of worker $w not found"
kill -KILL "$fe"
wait "$job" 2>/dev/null
wait_for bash -c "! kill -0 $w 2>/dev/null" || fail "worker $w outlived its killed front-end"
wait_for bash -c "! grep -q ' $T/mnt ' /proc/mounts" || fail "mount outlived its killed front-end"
assert_nothing_left "front-end killed"
check_reusable "front-end killed"
pass "SIGKILL of the foreground hexz mount: the worker exits and the mount goes away"
