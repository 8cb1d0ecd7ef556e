#!/usr/bin/env bash
# hexz mount as a real unprivileged user: disk and memory read back exactly as
# `hexz cat` gives them, owner defaults to the user (or --uid/--gid), writes
# get EROFS, /proc/mounts shows hexz, the worker is sandboxed (Seccomp: 2,
# NoNewPrivs: 1), Ctrl+C unmounts and exits 0, two mounts of one snapshot at
# once, and a snapshot without memory shows only disk.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_user_allow_other  # root reads the test user's mounts (-o allow_root)
require_cmd cmp stat dd

# Sample data: random blocks, a zero run, a tail that is not block-aligned.
head -c 3M /dev/urandom >"$T/disk.img"
head -c 2M /dev/zero >>"$T/disk.img"
head -c 123457 /dev/urandom >>"$T/disk.img"
head -c 1M /dev/urandom >"$T/mem.img"
make_snapshot "$T/snap.st" "$T/disk.img" "$T/mem.img"
cat_stream "$T/snap.st" disk "$T/ref.disk"
cat_stream "$T/snap.st" memory "$T/ref.mem"
cmp "$T/ref.disk" "$T/disk.img" || fail "hexz cat disk differs from the packed image"
user_dir "$T/mnt"; user_dir "$T/u"
uid=$(id -u "$TEST_USER"); gid=$(id -g "$TEST_USER")

# --- foreground mount, as the user ---
as_user "$HEXZ" mount -o allow_root "$T/snap.st" "$T/mnt" 2>"$T/fg.err" &
job=$!
wait_mounted "$T/mnt"
pass "foreground mount is usable"
wait_for grep -q "worker pid" "$T/fg.err" || fail "no worker pid in: $(cat "$T/fg.err")"
worker=$(pid_from "$T/fg.err")
fg=$(ps -o ppid= -p "$worker" | tr -d ' ')  # the hexz front-end
[[ $(cat "/proc/$fg/comm") == hexz ]] || fail "front-end of worker $worker not found"
on_exit "kill -INT $fg"

as_user cmp "$T/mnt/disk" "$T/ref.disk" || fail "disk differs from hexz cat"
as_user cmp "$T/mnt/memory" "$T/ref.mem" || fail "memory differs from hexz cat"
pass "cmp disk and memory against hexz cat"
as_user dd if="$T/mnt/disk" of="$T/u/dd.out" bs=1M status=none
cmp "$T/u/dd.out" "$T/ref.disk" || fail "dd bs=1M copy differs"
as_user cp "$T/mnt/memory" "$T/u/cp.out" && cmp "$T/u/cp.out" "$T/ref.mem" || fail "cp copy differs"
as_user dd if="$T/mnt/disk" of="$T/u/direct.out" bs=1M iflag=direct status=none
cmp "$T/u/direct.out" "$T/ref.disk" || fail "dd iflag=direct bs=1M (1 MiB FUSE reads) differs"
pass "dd bs=1M (also O_DIRECT: 1 MiB requests) and cp copies are exact"

[[ $(stat -c %s "$T/mnt/disk") == $(stat -c %s "$T/ref.disk") ]] || fail "disk size"
[[ $(stat -c %s "$T/mnt/memory") == $(stat -c %s "$T/ref.mem") ]] || fail "memory size"
[[ $(as_user stat -c %u:%g "$T/mnt/disk") == "$uid:$gid" ]] || fail "owner is $(as_user stat -c %u:%g "$T/mnt/disk"), expected $uid:$gid"
[[ $(as_user stat -c %u:%g "$T/mnt") == "$uid:$gid" ]] || fail "root dir owner"
[[ $(as_user ls "$T/mnt" | tr '\n' ' ') == "disk memory " ]] || fail "listing: $(as_user ls "$T/mnt")"
pass "exact sizes, owner $uid:$gid by default, listing disk memory"

out=$(as_user bash -c "echo x >> '$T/mnt/disk'" 2>&1) && fail "append to disk succeeded"
grep -q "Read-only file system" <<<"$out" || fail "write error: $out"
out=$(as_user touch "$T/mnt/new" 2>&1) && fail "create succeeded"
grep -q "Read-only file system" <<<"$out" || fail "create error: $out"
out=$(as_user truncate -s 0 "$T/mnt/disk" 2>&1) && fail "truncate succeeded"
grep -q "Read-only file system" <<<"$out" || fail "truncate error: $out"
out=$(as_user chmod 600 "$T/mnt/disk" 2>&1) && fail "chmod succeeded"
grep -q "Read-only file system" <<<"$out" || fail "chmod error: $out"
pass "write, create, truncate, chmod get EROFS"

line=$(grep " $T/mnt " /proc/mounts) || fail "not in /proc/mounts"
[[ $line == "hexz $T/mnt fuse.hexz ro,"* ]] || fail "/proc/mounts line: $line"
pass "/proc/mounts: $line"

status=/proc/$worker/status
grep -qP '^Seccomp:\t2$' "$status" || fail "worker $(grep Seccomp "$status")"
grep -qP '^NoNewPrivs:\t1$' "$status" || fail "worker $(grep NoNewPrivs "$status")"
grep -qP '^CapEff:\t0+$' "$status" || fail "worker $(grep CapEff "$status")"
[[ $(stat -c %U "/proc/$worker") == "$TEST_USER" ]] || fail "worker does not run as $TEST_USER"
pass "worker $worker: Seccomp: 2, NoNewPrivs: 1, no capabilities, runs as $TEST_USER"

# --- a second mount of the same snapshot at the same time, --uid/--gid ---
user_dir "$T/mnt2"
as_user "$HEXZ" mount -o allow_root --daemon --log-file "$T/u/mnt2.log" --uid 4242 --gid 4343 \
  "$T/snap.st" "$T/mnt2" >"$T/d2.out" || fail "second mount: $(cat "$T/d2.out")"
[[ $(as_user stat -c %u:%g "$T/mnt2/disk") == 4242:4343 ]] || fail "--uid/--gid owner: $(as_user stat -c %u:%g "$T/mnt2/disk")"
as_user cmp "$T/mnt2/disk" "$T/ref.disk" || fail "second mount disk differs"
as_user cmp "$T/mnt/disk" "$T/ref.disk" || fail "first mount disk differs while the second is up"
pass "two mounts of one snapshot at once; --uid 4242 --gid 4343 shown"
as_user "$HEXZ" unmount "$T/mnt2" | grep -q "unmounted" || fail "unmount of mnt2"

# --- Ctrl+C: unmounts, exits 0, the worker goes away ---
kill -INT "$fg"
rc=0; wait "$job" || rc=$?
[[ $rc -eq 0 ]] || fail "hexz mount exited $rc after SIGINT: $(cat "$T/fg.err")"
is_mounted "$T/mnt" && fail "still mounted after SIGINT"
wait_for bash -c "! kill -0 $worker 2>/dev/null" || fail "worker $worker still runs"
assert_nothing_left "after SIGINT"
pass "SIGINT unmounts cleanly and exits 0"

# --- SIGTERM too ---
as_user "$HEXZ" mount -o allow_root "$T/snap.st" "$T/mnt" 2>"$T/fg2.err" &
job=$!
wait_mounted "$T/mnt"
wait_for grep -q "worker pid" "$T/fg2.err" || fail "no worker pid in: $(cat "$T/fg2.err")"
fg=$(ps -o ppid= -p "$(pid_from "$T/fg2.err")" | tr -d ' ')
kill -TERM "$fg"
rc=0; wait "$job" || rc=$?
[[ $rc -eq 0 ]] || fail "hexz mount exited $rc after SIGTERM"
assert_nothing_left "after SIGTERM"
pass "SIGTERM unmounts cleanly and exits 0"

# --- disk only ---
head -c 1M /dev/urandom >"$T/only.img"
make_snapshot "$T/only.st" "$T/only.img"
as_user "$HEXZ" vm mount -o allow_root -d --log-file "$T/u/only.log" "$T/only.st" "$T/mnt" >/dev/null || fail "vm mount"
[[ $(as_user ls "$T/mnt") == disk ]] || fail "disk-only listing: $(as_user ls "$T/mnt")"
as_user test -e "$T/mnt/memory" && fail "memory shown for a snapshot without one"
as_user "$HEXZ" vm unmount "$T/mnt" >/dev/null || fail "vm unmount"
assert_nothing_left "disk-only"
pass "a snapshot without memory shows only disk (hexz vm mount / vm unmount)"

# --- unmounted from elsewhere: the foreground hexz mount notices and exits 0 ---
as_user "$HEXZ" mount -o allow_root "$T/snap.st" "$T/mnt" 2>"$T/fg3.err" &
job=$!
wait_mounted "$T/mnt"
out=$(as_user "$HEXZ" unmount "$T/mnt") || fail "unmount from another command: $out"
rc=0; wait "$job" || rc=$?
[[ $rc -eq 0 ]] || fail "foreground hexz mount exited $rc when unmounted elsewhere: $(cat "$T/fg3.err")"
grep -q "was unmounted" "$T/fg3.err" || fail "message: $(cat "$T/fg3.err")"
assert_nothing_left "unmounted elsewhere"
pass "hexz unmount from another shell ends the foreground hexz mount with 0"
