#!/usr/bin/env bash
# --log-file in a directory another user can write to: hexz appends only to a
# regular file the caller owns (or creates it 0600). Another user's file, FIFO
# or symlink there is refused at once, with a message naming the path; it is
# never appended to, and a FIFO nobody reads never blocks the command.
source "$(dirname "$0")/../lib/common.sh"
require_test_user
id "$TEST_USER2" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$TEST_USER2"
as_user2() { setpriv --reuid="$TEST_USER2" --regid="$TEST_USER2" --init-groups --reset-env -- "$@"; }

head -c 1M /dev/urandom >"$T/disk.img"
"$HEXZ" pack --disk "$T/disk.img" -o "$T/snap.st" -q || fail "pack"
chmod 0644 "$T/snap.st"
user_dir "$T/run"
chmod 0700 "$T/run"
export USER_RUNTIME_DIR="$T/run"
# A shared directory owned by the second user, writable by all, not sticky:
# the kernel's protected_regular/protected_fifos do not apply here.
mkdir "$T/shared"
chown "$TEST_USER2:$TEST_USER2" "$T/shared"
chmod 0777 "$T/shared"
as_user2 sh -c "echo theirs > '$T/shared/file.log'; chmod 0666 '$T/shared/file.log'"
as_user2 mkfifo -m 0666 "$T/shared/fifo.log"
as_user2 ln -s "$T/shared/file.log" "$T/shared/link.log"

serve_with_log() {
  timeout -k 1 10 setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups --reset-env -- \
    env PATH="$T/bin:/usr/bin:/bin" HEXZ_FUSED="$HEXZ_FUSED" XDG_RUNTIME_DIR="$T/run" \
    "$HEXZ" serve "$T/snap.st" --daemon --log-file "$1"
}

start=$SECONDS
expect_fail_msg "file.log is owned by uid $(id -u "$TEST_USER2"), not by you" serve_with_log "$T/shared/file.log"
[[ $(cat "$T/shared/file.log") == theirs ]] || fail "the other user's log file was written to"
expect_fail_msg 'fifo.log is not a regular file' serve_with_log "$T/shared/fifo.log"
expect_fail_msg 'link.log is a symbolic link' serve_with_log "$T/shared/link.log"
((SECONDS - start < 8)) || fail "refusals took $((SECONDS - start)) s"
pass "another user's file, FIFO and symlink are refused without blocking"

out=$(serve_with_log "$T/shared/mine.log" 2>&1) || fail "own new log file: $out"
wpid=$(grep -o 'worker pid [0-9]*' <<<"$out" | awk '{print $3}')
[[ -n $wpid ]] || fail "no worker pid in: $out"
on_exit "kill $wpid"
[[ $(stat -c '%a %U %F' "$T/shared/mine.log") == "600 $TEST_USER regular file" ]] ||
  fail "new log: $(stat -c '%a %U %F' "$T/shared/mine.log")"
wait_for grep -q 'serving' "$T/shared/mine.log" || fail "log: $(cat "$T/shared/mine.log")"
kill -TERM "$wpid"
wait_for bash -c "! kill -0 $wpid" || fail "worker did not stop"
pass "a new log file is created 0600 and owned by the caller"
