#!/usr/bin/env bash
# A worker that never reports ready: `hexz mount -d` (and `hexz serve`) wait
# HEXZ_READY_TIMEOUT seconds (30 by default), then stop the worker, leave
# nothing behind and say why, instead of waiting forever.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse

head -c 1M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
user_dir "$T/mnt"
user_dir "$T/u"
# Reads its configuration and then hangs, as a worker stuck before "ready".
cat >"$T/bin/hang-fused" <<'HANG'
#!/bin/sh
echo $$ >"$HANG_PID_FILE"
exec sleep 300
HANG
sed -i "s|\$HANG_PID_FILE|$T/u/hang.pid|" "$T/bin/hang-fused"
chmod 0755 "$T/bin/hang-fused"

check_stopped() {
  local what=$1 pid
  pid=$(cat "$T/u/hang.pid" 2>/dev/null) || fail "$what: the fake worker did not start"
  [[ -e /proc/$pid ]] && fail "$what: the hung worker $pid is still there"
  is_mounted "$T/mnt" && fail "$what: something is mounted"
  rm -f "$T/u/hang.pid"
}

for cmd in "mount -d --log-file $T/u/log $T/snap.st $T/mnt" "mount $T/snap.st $T/mnt" \
  "serve --socket $T/u/s.sock $T/snap.st"; do
  start=$(date +%s)
  # shellcheck disable=SC2086
  out=$(timeout 60 setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups --reset-env -- \
    env PATH=/usr/bin:/bin HEXZ_FUSED="$T/bin/hang-fused" HEXZ_READY_TIMEOUT=2 "$HEXZ" $cmd 2>&1) \
    && rc=0 || rc=$?
  took=$(($(date +%s) - start))
  [[ $rc -eq 1 ]] || fail "$cmd with a hung worker: exit $rc (expected 1): $out"
  grep -q "the worker did not report ready within 2 s" <<<"$out" || fail "$cmd: message: $out"
  ((took <= 15)) || fail "$cmd took $took s with HEXZ_READY_TIMEOUT=2"
  check_stopped "$cmd"
  echo "ok - $cmd: $out"
done
[[ -e "$T/u/s.sock" ]] && fail "serve left its socket"
pass "a worker that never reports ready is stopped after HEXZ_READY_TIMEOUT"

# A bad value is reported and the default applies; a real worker still mounts.
out=$(as_user env HEXZ_READY_TIMEOUT=abc "$HEXZ" mount -d --log-file "$T/u/log" "$T/snap.st" \
  "$T/mnt" 2>&1) || fail "mount with HEXZ_READY_TIMEOUT=abc: $out"
grep -q "ignoring HEXZ_READY_TIMEOUT=abc" <<<"$out" || fail "no note about the bad value: $out"
as_user cmp "$T/mnt/disk" "$T/disk.img" || fail "content"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"
assert_nothing_left "real worker"
pass "a bad HEXZ_READY_TIMEOUT is reported; real workers are unaffected"
