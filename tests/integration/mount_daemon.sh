#!/usr/bin/env bash
# --daemon returns only once the mount is usable (ls right after it works,
# without retrying); the worker is detached (own session, cwd /); its log is
# $XDG_RUNTIME_DIR/hexz/<mountpoint name>.log, else ~/.cache/hexz/<name>.log
# (private 0700 directories), or --log-file PATH; hexz prints the path.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse

head -c 1M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
user_dir "$T/data"
user_dir "$T/run"
chmod 0700 "$T/run"
home=$(getent passwd "$TEST_USER" | cut -d: -f6)

# 1. With XDG_RUNTIME_DIR.
export USER_RUNTIME_DIR="$T/run"
for i in 1 2 3; do
  out=$(as_user bash -c "'$HEXZ' mount --daemon '$T/snap.st' '$T/data' && ls '$T/data'") \
    || fail "daemon mount + ls: $out"
  grep -q '^disk$' <<<"$out" || fail "ls right after --daemon returned: $out"
  w=$(pid_from <(echo "$out"))
  [[ $i -lt 3 ]] && { as_user "$HEXZ" unmount "$T/data" >/dev/null || fail "unmount"; }
done
pass "ls works as soon as --daemon returns (3 times)"
log="$T/run/hexz/data.log"
grep -q "log $log" <<<"$out" || fail "printed log path: $out"
[[ -f "$log" ]] || fail "no log at $log"
[[ $(stat -c %a "$T/run/hexz") == 700 ]] || fail "log dir mode $(stat -c %a "$T/run/hexz")"
[[ $(stat -c %U "$log") == "$TEST_USER" ]] || fail "log owner"
grep -q "hexz-fused\[$w\]: info: serving $T/data" "$log" || fail "log content: $(cat "$log")"
pass "log at \$XDG_RUNTIME_DIR/hexz/data.log: $(tail -n1 "$log")"

[[ $(readlink "/proc/$w/cwd") == / ]] || fail "worker cwd is $(readlink "/proc/$w/cwd")"
[[ $(ps -o sid= -p "$w" | tr -d ' ') == "$w" ]] || fail "worker is not a session leader"
[[ $(ps -o tty= -p "$w" | tr -d ' ') == "?" ]] || fail "worker has a terminal"
[[ $(readlink "/proc/$w/fd/2") == "$log" ]] || fail "worker stderr is $(readlink "/proc/$w/fd/2")"
pass "worker detached: own session, no terminal, cwd /, stderr to the log"
as_user "$HEXZ" unmount "$T/data" >/dev/null || fail "unmount"
wait_for bash -c "! kill -0 $w" || fail "worker $w still runs after unmount"
grep -q "no longer mounted; exiting" "$log" || fail "log lacks the exit line"
pass "the worker exits when its mount goes away"

# 2. Without XDG_RUNTIME_DIR: ~/.cache/hexz.
export USER_RUNTIME_DIR=""
out=$(as_user "$HEXZ" mount -d "$T/snap.st" "$T/data") || fail "daemon mount: $out"
log="$home/.cache/hexz/data.log"
grep -q "log $log" <<<"$out" || fail "printed log path: $out"
[[ $(stat -c %a "$home/.cache/hexz") == 700 ]] || fail "fallback dir mode"
grep -q "serving $T/data" "$log" || fail "fallback log content"
as_user "$HEXZ" unmount "$T/data" >/dev/null || fail "unmount"
pass "without XDG_RUNTIME_DIR the log is $log"

# 3. --log-file.
out=$(as_user "$HEXZ" mount -d --log-file "$T/data/../mine.log" "$T/snap.st" "$T/data" 2>&1) && fail "log in a root-owned dir worked: $out"
grep -q "mine.log" <<<"$out" || fail "log-file error: $out"
assert_nothing_left "unwritable --log-file"
user_dir "$T/logs"
out=$(as_user "$HEXZ" mount -d --log-file "$T/logs/x.log" "$T/snap.st" "$T/data") || fail "--log-file mount: $out"
grep -q "serving $T/data" "$T/logs/x.log" || fail "--log-file content"
as_user "$HEXZ" unmount "$T/data" >/dev/null || fail "unmount"
assert_nothing_left "--log-file"
pass "--log-file PATH is used, and an unusable one is refused before mounting"
