#!/usr/bin/env bash
# hexz-nbd-helper refuses, with a clear message and without mounting anything,
# everything a real unprivileged user should not be able to do: mountpoints the
# user may not use (someone else's, symlinks, sticky dirs, /proc, /sys, /dev),
# detaching another user's attachment or a mount the helper did not make,
# malformed arguments, a bad fd 3, and running a copy that is not setuid.
# Also: a helper stuck writing to a full stderr pipe blocks no other user's
# detach; hard rlimits the helper cannot raise do not stop it; detach checks
# the mount's device number, not its source text.
#
# This machine's kernel may lack NBD: a request that passes every check then
# stops at "no NBD support ... modprobe nbd", which also shows that all user
# input is checked before any device work. The real attach/mount/detach path
# is tested in a QEMU guest by nbd_kernel.sh.
source "$(dirname "$0")/../lib/common.sh"

require_test_user
require_cmd findmnt nbdkit
id "$TEST_USER2" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$TEST_USER2"

src_helper=$HEXZ_BUILD_DIR/hexz-nbd-helper/hexz-nbd-helper
negotiate=$HEXZ_BUILD_DIR/tests/hexz-nbd-negotiate-test
[[ -x $src_helper ]] || skip "hexz-nbd-helper is not built"
[[ -x $negotiate ]] || skip "hexz-nbd-negotiate-test is not built (HEXZ_BUILD_TESTS=OFF?)"

# A setuid bit only works on a filesystem mounted without nosuid.
if [[ ",$(findmnt -no OPTIONS -T "$T")," == *,nosuid,* ]]; then
  skip "$T is on a nosuid filesystem, so a setuid test helper cannot run there"
fi
HELPER=$T/bin/hexz-nbd-helper
install -m 0755 "$src_helper" "$T/bin/hexz-nbd-helper-plain"
install -m 0755 "$negotiate" "$T/bin/nbd-negotiate"
chown root:root "$HELPER" && chmod 4755 "$HELPER"
[[ $(stat -c %A "$HELPER") == -rwsr-xr-x ]] || fail "could not make $HELPER setuid root"
uid1=$(id -u "$TEST_USER")

as_user2() {
  setpriv --reuid="$TEST_USER2" --regid="$TEST_USER2" --init-groups --reset-env -- \
    env PATH="$T/bin:/usr/bin:/bin" bash -c 'cd / && exec "$@"' _ "$@"
}

records() { ls /run/hexz-nbd 2>/dev/null | grep -v '\.\?lock$' | sort | tr '\n' ' '; }
# The mounts this test could cause (other tests may mount elsewhere meanwhile).
our_mounts() { grep -E "^/dev/nbd| $T[ /]| /proc | /sys/kernel " /proc/mounts | sort | tr '\n' ' '; }
mounts_before=$(our_mounts)
records_before=$(records)
# refused PATTERN CMD...: refused with PATTERN, and nothing got mounted or recorded.
refused() {
  expect_fail_msg "$@"
  [[ "$(our_mounts)" == "$mounts_before" ]] || fail "mount table changed after: ${*:2}"
  [[ "$(records)" == "$records_before" ]] || fail "attachment records changed after: ${*:2}"
}
# usage PATTERN ARGS...: the helper (as the user) rejects ARGS with exit code 2.
usage() {
  local pattern=$1 out rc
  shift
  out=$(as_user "$HELPER" "$@" 2>&1) && rc=0 || rc=$?
  [[ $rc -eq 2 ]] || fail "expected exit 2 for: $* (got $rc: $out)"
  grep -qE -- "$pattern" <<<"$out" || fail "expected '$pattern' for: $* (got: $out)"
  echo "ok - usage error for '$*': $(head -n1 <<<"$out")"
}

echo "# privilege"
refused 'must be installed setuid root for group .*chmod 4750' as_user "$T/bin/hexz-nbd-helper-plain" --version
out=$(as_user "$HELPER" --version) || fail "--version failed: $out"
[[ $out == "hexz-nbd-helper "* ]] || fail "unexpected --version output: $out"
pass "setuid copy runs: $out"

echo "# arguments"
usage 'missing subcommand'
usage "unknown subcommand 'mount'" mount --mountpoint /x
usage "unknown subcommand '--help'" --help
usage 'needs --size' attach --mountpoint /x
usage '--mountpoint is required' detach
usage "unknown argument '--size'" detach --mountpoint /x --size 1
usage "unknown argument 'extra'" detach --mountpoint /x extra
usage '--mountpoint needs a value' detach --mountpoint
usage '--mountpoint given twice' detach --mountpoint /x --mountpoint /y
usage 'must be an absolute path' detach --mountpoint relative/dir
usage 'must be an absolute path' detach --mountpoint /a/../b
usage 'must be an absolute path' detach --mountpoint /a/
ok_args=(--block-size 4096 --flags 0x1 --fstype ext4 --mountpoint /x)
usage "--size '12x'" attach --size 12x "${ok_args[@]}"
usage "--size '-4096'" attach --size -4096 "${ok_args[@]}"
usage "--size '04096'" attach --size 04096 "${ok_args[@]}"
usage "--size '0'" attach --size 0 "${ok_args[@]}"
usage "--size '99999999999999999999999'" attach --size 99999999999999999999999 "${ok_args[@]}"
usage "--size '2305843009213697024'" attach --size 2305843009213697024 "${ok_args[@]}"  # 2^61
usage "--size '5000'" attach --size 5000 "${ok_args[@]}"  # not a multiple of 4096
usage "--block-size '3000'" attach --size 4096 --block-size 3000 --flags 0x1 --fstype ext4 --mountpoint /x
usage "--flags '1'" attach --size 4096 --block-size 4096 --flags 1 --fstype ext4 --mountpoint /x
usage "--flags '0x10000'" attach --size 4096 --block-size 4096 --flags 0x10000 --fstype ext4 --mountpoint /x
usage 'bit 0 .has flags. must be set' attach --size 4096 --block-size 4096 --flags 0x2 --fstype ext4 --mountpoint /x
usage "--fstype 'proc' is not allowed" attach --size 4096 --block-size 4096 --flags 0x1 --fstype proc --mountpoint /x
usage "--fstype 'ext4,nosuid' is not allowed" attach --size 4096 --block-size 4096 --flags 0x1 --fstype ext4,nosuid --mountpoint /x
usage "--partition '0' must be a number from 1 to 128" attach --partition 0 --size 4096 "${ok_args[@]}"
usage "--partition '129'" attach --partition 129 --size 4096 "${ok_args[@]}"
usage "--partition 'p1'" attach --partition p1 --size 4096 "${ok_args[@]}"
usage '--rw given twice' attach --rw --rw --size 4096 "${ok_args[@]}"

echo "# fd 3"
attach_args=(attach --size 1048576 --block-size 4096 --flags 0x1 --fstype ext4)
user_dir "$T/u"
user_dir "$T/u/mnt"
refused 'fd 3 is not open' as_user bash -c 'exec 3<&-; exec "$@"' _ \
  "$HELPER" "${attach_args[@]}" --mountpoint "$T/u/mnt"
refused 'fd 3 is not a socket' as_user bash -c 'exec 3</dev/null; exec "$@"' _ \
  "$HELPER" "${attach_args[@]}" --mountpoint "$T/u/mnt"

echo "# mountpoints (with a real, negotiated NBD socket from nbdkit, run as the user)"
as_user nbdkit -U "$T/u/nbd.sock" -P "$T/u/nbd.pid" memory 1M || fail "nbdkit did not start"
on_exit 'kill $(cat '"$T/u/nbd.pid"')'
wait_for test -S "$T/u/nbd.sock" || fail "nbdkit socket did not appear"
# attach_as USER MOUNTPOINT [ARGS]: negotiate as USER, then exec the helper.
attach_as() {
  local who=$1 mp=$2
  shift 2
  local run=as_user
  [[ $who == 2 ]] && run=as_user2
  $run nbd-negotiate "unix:$T/u/nbd.sock" "" "$HELPER" attach --fstype ext4 --mountpoint "$mp" "$@"
}
chmod 0777 "$T/u/nbd.sock" "$T/u"  # hexz-test2 connects to it in one test below

mkdir -p "$T/other" && chown "$TEST_USER2:$TEST_USER2" "$T/other" && chmod 0755 "$T/other"
refused "mountpoint $T/other is owned by uid [0-9]+, not by you" attach_as 1 "$T/other"
ln -s "$T/u/mnt" "$T/u/link"
refused "mountpoint $T/u/link is a symbolic link" attach_as 1 "$T/u/link"
refused 'mountpoint /proc is on a filesystem of type 0x9fa0, which is not allowed' attach_as 1 /proc
# The user owns its own /proc/PID directory: the filesystem check must still refuse it.
refused 'on a filesystem of type 0x9fa0, which is not allowed' \
  as_user bash -c 'exec nbd-negotiate "unix:$1" "" "$2" attach --fstype ext4 --mountpoint /proc/$$' _ \
  "$T/u/nbd.sock" "$HELPER"
refused 'mountpoint /sys/kernel is on a filesystem of type 0x62656572' attach_as 1 /sys/kernel
mkdir -p "$T/sticky" && chmod 1777 "$T/sticky"
mkdir -p "$T/sticky/d" && chown "$TEST_USER2:$TEST_USER2" "$T/sticky/d" && chmod 0777 "$T/sticky/d"
refused "mountpoint $T/sticky/d is owned by uid [0-9]+, not by you" attach_as 1 "$T/sticky/d"
refused "cannot open mountpoint $T/u/missing as uid $uid1" attach_as 1 "$T/u/missing"
touch "$T/u/file" && chown "$TEST_USER:$TEST_USER" "$T/u/file"
refused "mountpoint $T/u/file is not a directory" attach_as 1 "$T/u/file"

# Requests that pass every check reach the kernel: without NBD support that is
# a precise message; with it, the empty memory disk holds no ext4 filesystem.
if [[ -e /dev/nbd0 ]]; then
  expect_kernel='does not hold a valid filesystem'
else
  expect_kernel='this kernel has no NBD support loaded .*modprobe nbd'
fi
refused "$expect_kernel" attach_as 1 "$T/u/mnt"
# Someone else's directory that is writable by all, outside sticky dirs: refused
# too (a mount there would hide the owner's files behind the caller's image).
mkdir -p "$T/open" && chown "$TEST_USER2:$TEST_USER2" "$T/open" && chmod 0777 "$T/open"
refused "mountpoint $T/open is owned by uid [0-9]+, not by you" attach_as 1 "$T/open"

echo "# detach"
mkdir -p -m 0700 /run/hexz-nbd
# A mount that looks like hexz-test's attachment: a root-made tmpfs on a
# directory writable by everybody, with a record naming hexz-test.
mkdir -p "$T/att" && chown "$TEST_USER:$TEST_USER" "$T/att"
mount -t tmpfs -o size=1m,mode=0777 hexz-test-tmpfs "$T/att"
on_exit umount "$T/att"
mnt_id=$(awk -v m="$T/att" '$5 == m { print $1 }' /proc/self/mountinfo | tail -n1)
[[ -n $mnt_id ]] || fail "cannot find the mount id of $T/att"
dev=1023
while [[ -e /run/hexz-nbd/nbd$dev ]]; do dev=$((dev - 1)); done
on_exit rm -f "/run/hexz-nbd/nbd$dev" "/run/hexz-nbd/nbd$dev.lock"
printf 'hexz-nbd-helper record 1\ndevice %u\npartition 0\nuid %u\nmnt_id %u\npid 1\nmountpoint %s\n' \
  "$dev" "$uid1" "$mnt_id" "$T/att" >"/run/hexz-nbd/nbd$dev"
chmod 0600 "/run/hexz-nbd/nbd$dev"
records_before=$(records)
mounts_before=$(our_mounts)
refused "the mount on $T/att was attached by uid $uid1, not by you" \
  as_user2 "$HELPER" detach --mountpoint "$T/att"
is_mounted "$T/att" || fail "$T/att was unmounted by another user's detach"
# The owner gets past the uid check, but the record does not match the mount
# (its device number is not /dev/nbdN's): refused too, nothing unmounted.
refused "stale record /run/hexz-nbd/nbd$dev: the mount on $T/att .device [0-9]+:[0-9]+. is not /dev/nbd$dev" \
  as_user "$HELPER" detach --mountpoint "$T/att"
is_mounted "$T/att" || fail "$T/att was unmounted through a stale record"
# A mount the helper did not make.
mkdir -p "$T/u/plain"
mount -t tmpfs -o size=1m hexz-test-tmpfs "$T/u/plain"
on_exit umount "$T/u/plain"
mounts_before=$(our_mounts)
refused "the mount on $T/u/plain was not made by hexz-nbd-helper" \
  as_user "$HELPER" detach --mountpoint "$T/u/plain"
refused "nothing is mounted on $T/u/mnt" as_user "$HELPER" detach --mountpoint "$T/u/mnt"
refused "mountpoint $T/u/link is a symbolic link" as_user "$HELPER" detach --mountpoint "$T/u/link"
is_mounted "$T/u/plain" || fail "$T/u/plain was unmounted"

echo "# resource limits"
# Hard limits that only CAP_SYS_RESOURCE could raise again: the helper works
# within them instead of giving up.
refused "nothing is mounted on $T/u/mnt" \
  as_user bash -c 'ulimit -n 64 && ulimit -t 100 && exec "$@"' _ "$HELPER" detach --mountpoint "$T/u/mnt"

echo "# a helper stuck on its caller holds up nobody else"
# hexz-test's helper blocks writing its refusal to a full stderr pipe (filled
# through a second open file description, so the helper's stays blocking; a
# pipe may hold less than 64 KiB when root has many); hexz-test2's detach must
# still answer at once.
fill_pipe() { dd if=/dev/zero of=/dev/stdout bs=4096 count=100000 oflag=nonblock 2>/dev/null || true; }
(fill_pipe; as_user "$HELPER" detach --mountpoint /proc) 2>&1 | sleep 120 &
reader=$!
on_exit "kill $reader 2>/dev/null"
wait_for pgrep -U "$TEST_USER" -f "hexz-nbd-helper detach --mountpoint /proc" ||
  fail "the helper did not get stuck on its full stderr pipe"
stuck=$(pgrep -U "$TEST_USER" -f "hexz-nbd-helper detach --mountpoint /proc")
as_user kill -STOP "$stuck" || fail "hexz-test cannot stop its own helper"
echo "# hexz-test's helper $stuck is stuck writing to a full pipe, and stopped (SIGSTOP)"
start=$SECONDS
out=$(as_user2 timeout -k 2 10 "$HELPER" detach --mountpoint /proc 2>&1) && rc=0 || rc=$?
[[ $rc -ne 124 && $rc -ne 137 ]] || fail "hexz-test2's detach hung behind the stuck helper ($((SECONDS - start)) s)"
grep -q "not made by hexz-nbd-helper" <<<"$out" || fail "hexz-test2's detach: $out"
pass "hexz-test2's detach answered in $((SECONDS - start)) s: $out"
kill "$reader"
as_user kill -CONT "$stuck"
wait "$reader" 2>/dev/null || true
wait_for bash -c "! kill -0 $stuck 2>/dev/null" || fail "the stuck helper did not exit once its reader went away"
echo "all helper checks passed"
