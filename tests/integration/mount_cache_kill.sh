#!/usr/bin/env bash
# The shared cache's kill test with real workers of the unprivileged test
# user: two mounts read in a loop, checking every read against `hexz cat`,
# while a third mount's worker is killed with SIGKILL at random moments of its
# own reads (and remounted) again and again. The survivors must keep serving
# correct bytes, no read may block (each runs under `timeout 10`), and once
# everything has exited no segment is left.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_user_allow_other  # root reads the test user's mounts (-o allow_root)
require_cmd cmp dd timeout
use_test_cache kill
KILLS=${HEXZ_KILLS:-25}

# 24 MiB of random data, 64 KiB blocks, in a 4 MiB cache: it keeps evicting
# and inserting, so the victim dies inside cache operations too.
head -c 24M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
cat_stream "$T/snap.st" disk "$T/ref.disk"
for d in a b c u; do user_dir "$T/$d"; done

hx mount -o allow_root -d --cache-size 4M "$T/snap.st" "$T/a" >"$T/a.out" || fail "mount a: $(cat "$T/a.out")"
hx mount -o allow_root -d --cache-size 4M "$T/snap.st" "$T/b" >"$T/b.out" || fail "mount b: $(cat "$T/b.out")"

# reader MNT SEED: random 256 KiB O_DIRECT reads until $T/stop exists.
reader() {
  local mnt=$1 n=0 off start took
  RANDOM=$2
  while [[ ! -e $T/stop ]]; do
    off=$((RANDOM % (24 * 1024 - 260)))
    start=$(date +%s%N)
    timeout 10 dd if="$mnt/disk" bs=256K iflag=direct,skip_bytes skip=$((off * 1024)) count=1 \
      status=none >"$T/r.$2" || { echo "read of $mnt at ${off}K failed or blocked (rc $?)"; return 1; }
    took=$((($(date +%s%N) - start) / 1000000))
    ((took < 5000)) || { echo "read of $mnt at ${off}K took $took ms"; return 1; }
    cmp -s "$T/r.$2" <(dd if="$T/ref.disk" bs=1K skip="$off" count=256 status=none) ||
      { echo "wrong bytes from $mnt at ${off}K"; return 1; }
    n=$((n + 1))
  done
  echo "$n reads"
}
reader "$T/a" 11 >"$T/reader.a" 2>&1 &
ra=$!
reader "$T/b" 22 >"$T/reader.b" 2>&1 &
rb=$!
on_exit "touch $T/stop"

# The victim: mount c, read in a loop, SIGKILL its worker at a random moment,
# detach the dead mount, again.
for ((k = 0; k < KILLS; k++)); do
  hx mount -o allow_root -d --cache-size 4M "$T/snap.st" "$T/c" >"$T/c.out" 2>&1 || fail "mount c (round $k): $(cat "$T/c.out")"
  victim=$(pid_from "$T/c.out")
  [[ -n $victim ]] || fail "no worker pid in: $(cat "$T/c.out")"
  (while :; do dd if="$T/c/disk" of=/dev/null bs=1M iflag=direct status=none 2>/dev/null || exit 0; done) &
  loop=$!
  sleep "0.$((RANDOM % 4))$((RANDOM % 10))"
  kill -KILL "$victim"
  timeout 10 bash -c "while kill -0 $loop 2>/dev/null; do sleep 0.05; done" || fail "the victim's reader hangs after kill -9"
  wait "$loop" 2>/dev/null || true
  hx unmount "$T/c" >/dev/null 2>&1 || fail "hexz unmount of the killed mount c (round $k)"
  kill -0 "$ra" 2>/dev/null || fail "reader a stopped: $(cat "$T/reader.a")"
  kill -0 "$rb" 2>/dev/null || fail "reader b stopped: $(cat "$T/reader.b")"
done
touch "$T/stop"
wait "$ra" || fail "reader a: $(cat "$T/reader.a")"
wait "$rb" || fail "reader b: $(cat "$T/reader.b")"
pass "$KILLS kill -9 of a third worker while it read; survivors: a $(cat "$T/reader.a"), b $(cat "$T/reader.b"), all correct, none over 5 s"

out=$(hx cache stats) || fail "cache stats: $out"
grep -q "processes      2 live" <<<"$out" || fail "after the kills the segment should list 2 live processes: $out"
grep -E "^(hits|misses|evictions|invalid|recoveries|lock timeouts) " <<<"$out" | tr -s ' ' | paste -sd ';'
cmp "$T/a/disk" "$T/ref.disk" || fail "a's whole disk differs after the kills"
cmp "$T/b/disk" "$T/ref.disk" || fail "b's whole disk differs after the kills"
pass "whole disks of the survivors still read back exactly"

hx unmount "$T/a" >/dev/null || fail "unmount a"
hx unmount "$T/b" >/dev/null || fail "unmount b"
wait_for segment_gone || fail "segment $seg left after every worker exited: $(hx cache stats)"
assert_nothing_left "after the kill test"
pass "no segment left behind"
