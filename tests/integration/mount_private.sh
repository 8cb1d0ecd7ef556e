#!/usr/bin/env bash
# A user's FUSE mount is private by default: no kernel allow_other, so root
# and other users get EACCES from the kernel itself (the sandboxed worker is
# not the one deciding), and a stopped worker cannot hang root's or another
# user's `stat -f` (statfs(2), what df uses). `-o allow_root` (root may read
# it, e.g. for a loop mount of disk) and `-o allow_other` are opt-in; anything
# else is a usage error.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_cmd timeout stat cmp
id "$TEST_USER2" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$TEST_USER2"
as_user2() { setpriv --reuid="$TEST_USER2" --regid="$TEST_USER2" --init-groups --reset-env -- "$@"; }

head -c 2M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
user_dir "$T/mnt"; user_dir "$T/u"
chmod 0755 "$T/mnt"
opts_of() { awk -v m="$1" '$5 == m {print $6 "," $NF}' /proc/self/mountinfo; }

out=$(as_user "$HEXZ" mount -d --log-file "$T/u/log" "$T/snap.st" "$T/mnt") || fail "mount: $out"
w=$(pid_from <(echo "$out"))
on_exit "kill -CONT $w"
opts=$(opts_of "$T/mnt")
[[ -n $opts ]] || fail "not mounted"
grep -q allow_other <<<"$opts" && fail "a default mount has allow_other: $opts"
as_user cmp "$T/mnt/disk" "$T/disk.img" || fail "the owner cannot read"
err=$(stat "$T/mnt/disk" 2>&1) && fail "root can read a private mount"
grep -q "Permission denied" <<<"$err" || fail "root: $err"
err=$(as_user2 stat "$T/mnt/disk" 2>&1) && fail "$TEST_USER2 can read a private mount"
grep -q "Permission denied" <<<"$err" || fail "$TEST_USER2: $err"
pass "default mount: no allow_other ($opts); root and $TEST_USER2 get EACCES"

kill -STOP "$w"
timeout 3 stat -f "$T/mnt" >/dev/null || fail "root's stat -f (df) hangs or fails on a stopped worker's mount"
timeout 3 setpriv --reuid="$TEST_USER2" --regid="$TEST_USER2" --init-groups --reset-env -- \
  stat -f "$T/mnt" >/dev/null || fail "$TEST_USER2's stat -f hangs on a stopped worker's mount"
kill -CONT "$w"
pass "a stopped worker hangs neither root's df nor $TEST_USER2's stat -f"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"

expect_fail_msg "unknown option -o bogus \(known: allow_root, allow_other\)" \
  as_user "$HEXZ" mount -o bogus "$T/snap.st" "$T/mnt"
rc=0; as_user "$HEXZ" mount -o allow_root,bogus "$T/snap.st" "$T/mnt" >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "-o bogus exit $rc, expected 2"
expect_fail_msg "not for --nbd" as_user "$HEXZ" mount --nbd -o allow_root "$T/snap.st" "$T/mnt"
assert_nothing_left "refused options"
pass "unknown -o options and -o with --nbd are usage errors"

if ! grep -qs '^[[:space:]]*user_allow_other' /etc/fuse.conf; then
  echo "note: /etc/fuse.conf lacks user_allow_other; -o allow_root/allow_other are not tried"
  exit 0
fi
as_user "$HEXZ" mount -d -o allow_root --log-file "$T/u/log" "$T/snap.st" "$T/mnt" >/dev/null ||
  fail "mount -o allow_root"
grep -q allow_other <<<"$(opts_of "$T/mnt")" || fail "-o allow_root: no kernel allow_other: $(opts_of "$T/mnt")"
cmp "$T/mnt/disk" "$T/disk.img" || fail "root cannot read an -o allow_root mount"
as_user2 cat "$T/mnt/disk" >/dev/null 2>&1 && fail "$TEST_USER2 can read an -o allow_root mount"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"
pass "-o allow_root: root reads it, $TEST_USER2 still cannot"

as_user "$HEXZ" mount -d -o allow_other --log-file "$T/u/log" "$T/snap.st" "$T/mnt" >/dev/null ||
  fail "mount -o allow_other"
as_user2 cmp "$T/mnt/disk" "$T/disk.img" || fail "$TEST_USER2 cannot read an -o allow_other mount"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"
assert_nothing_left "allow_other"
pass "-o allow_other: $TEST_USER2 reads it"
