#!/usr/bin/env bash
# The shared cache against another local user and a full /dev/shm, with real
# users and real workers:
# - a second user who plants /dev/shm/<prefix>-<uid> (mode 0666) and holds
#   flock on it gets the first user's `--cache-size` mount refused at once,
#   naming the owner, instead of hanging it for as long as the lock is held;
# - /dev/shm filling up after the segment exists (a 40 MiB tmpfs in a private
#   mount namespace) does not kill the worker with SIGBUS: the segment's
#   memory was reserved when it was created; a new cache that no longer fits
#   is refused with a message, never a signal.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_cmd flock unshare timeout cmp dd
id "$TEST_USER2" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$TEST_USER2"
as_user2() { setpriv --reuid="$TEST_USER2" --regid="$TEST_USER2" --init-groups --reset-env -- "$@"; }

P="hexz-cache-hostile-$$"
uid=$(id -u "$TEST_USER")
seg="/dev/shm/$P-$uid"
on_exit rm -f "$seg"

head -c 24M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
cat_stream "$T/snap.st" disk "$T/ref.disk"
chmod 0644 "$T/ref.disk"
for d in a b u; do user_dir "$T/$d"; done

# --- a planted, locked segment ---
as_user2 sh -c "umask 0; : > '$seg'"
# The holder is the sleeping process itself (it keeps the locked descriptor).
as_user2 bash -c 'exec 9<>"$1" && flock -x 9 && exec sleep 60' _ "$seg" >/dev/null 2>&1 &
holder=$!
on_exit "kill $holder"
wait_for grep -q "FLOCK.*:$(stat -c %i "$seg") " /proc/locks || fail "the second user's lock is not taken"
start=$SECONDS
expect_fail_msg "shared cache /$P-$uid is owned by uid $(id -u "$TEST_USER2"), not by you" \
  timeout -k 1 20 setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups --reset-env -- \
  env PATH="$T/bin:/usr/bin:/bin" HEXZ_FUSED="$HEXZ_FUSED" HEXZ_CACHE_NAME_PREFIX="$P" \
  "$HEXZ" mount -d --cache-size 8M "$T/snap.st" "$T/a"
((SECONDS - start <= 3)) || fail "the refusal took $((SECONDS - start)) s (waited for the other user's lock)"
is_mounted "$T/a" && fail "mounted on a planted segment"
kill "$holder"; wait "$holder" 2>/dev/null
rm -f "$seg"
pass "a planted segment locked by $TEST_USER2 is refused at once"

# --- /dev/shm fills up after the segment exists ---
cat >"$T/inner.sh" <<INNER
set -u
mount -t tmpfs -o size=40m,mode=1777 hexz-test-shm /dev/shm || { echo "SKIP: cannot mount a tmpfs on /dev/shm"; exit 77; }
u1() { setpriv --reuid=$TEST_USER --regid=$TEST_USER --init-groups --reset-env -- env PATH=$T/bin:/usr/bin:/bin HEXZ_FUSED=$HEXZ_FUSED HEXZ_CACHE_NAME_PREFIX=$P "\$@"; }
u2() { setpriv --reuid=$TEST_USER2 --regid=$TEST_USER2 --init-groups --reset-env -- "\$@"; }
trap 'fusermount3 -u -z $T/b 2>/dev/null; fusermount3 -u -z $T/a 2>/dev/null' EXIT
u1 $HEXZ mount -d --cache-size 32M $T/snap.st $T/a >$T/ns-a.out 2>&1 || { echo "FAIL: mount: \$(cat $T/ns-a.out)"; exit 1; }
wpid=\$(grep -o 'worker pid [0-9]*' $T/ns-a.out | awk '{print \$3}')
# The second user takes everything that is left.
u2 dd if=/dev/zero of=/dev/shm/filler bs=1M count=64 status=none 2>/dev/null
df -k /dev/shm | tail -n1 | awk '{exit !(\$4 == 0)}' || { echo "FAIL: /dev/shm is not full: \$(df -k /dev/shm | tail -n1)"; exit 1; }
u1 dd if=$T/a/disk of=$T/u/ns.out bs=1M iflag=direct status=none || { echo "FAIL: reading the mount with /dev/shm full failed"; exit 1; }
cmp $T/u/ns.out $T/ref.disk || { echo "FAIL: wrong bytes with /dev/shm full"; exit 1; }
kill -0 \$wpid || { echo "FAIL: the worker died"; exit 1; }
u1 dd if=$T/a/disk of=/dev/null bs=1M iflag=direct status=none || { echo "FAIL: second read"; exit 1; }
echo "ok - /dev/shm full after the segment was created: 24 MiB read twice, right bytes, worker alive"
# A second user's cache (their own segment) cannot be created now: a message, no signal.
out=\$(u2 env HEXZ_CACHE_NAME_PREFIX=$P HEXZ_FUSED=$HEXZ_FUSED $HEXZ mount -d --cache-size 16M $T/snap.st $T/b 2>&1) && { echo "FAIL: a 16M cache was created in a full /dev/shm"; exit 1; }
grep -q "does not fit in /dev/shm\|cannot reserve" <<<"\$out" || { echo "FAIL: no clear message: \$out"; exit 1; }
echo "ok - a new cache in a full /dev/shm is refused: \$(head -n1 <<<"\$out")"
u1 $HEXZ unmount $T/a >/dev/null || { echo "FAIL: unmount"; exit 1; }
exit 0
INNER
user_dir "$T/b"
chmod 0777 "$T/b"   # the second user mounts there
unshare -m --propagation private bash "$T/inner.sh"
rc=$?
[[ $rc -eq 77 ]] && skip "cannot mount a private tmpfs on /dev/shm"
[[ $rc -eq 0 ]] || fail "full /dev/shm (rc $rc)"
pass "a full /dev/shm never kills a worker"
