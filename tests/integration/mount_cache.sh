#!/usr/bin/env bash
# hexz mount --cache-size with real workers of the unprivileged test user:
# the size parser (256M, 1G, 4G, all reserved in /dev/shm at creation, too
# small, malformed), no
# segment without --cache-size, two mounts sharing blocks (hit counters of
# `hexz cache stats`), correct bytes under concurrent load from three workers,
# and the segment removed once the last worker exits.
# (The kill -9 test is mount_cache_kill.sh.)
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_user_allow_other  # root reads the test user's mounts (-o allow_root)
require_cmd cmp dd timeout
# A segment must fit in the free space of /dev/shm when it is created.
shm_free_kib=$(df --output=avail -k /dev/shm | tail -n1)
((shm_free_kib > 300 * 1024)) || skip "/dev/shm has only $shm_free_kib KiB free (256M caches are tried)"

use_test_cache it

head -c 16M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
cat_stream "$T/snap.st" disk "$T/ref.disk"
"$HEXZ" pack --disk "$T/disk.img" --output "$T/big.st" --block-size 1M --quiet || fail "pack 1M blocks"
chmod 0644 "$T/big.st"
for d in a b c u; do user_dir "$T/$d"; done

# --- sizes ---
expect_fail_msg "--cache-size.*1X" hx mount -o allow_root --cache-size 1X "$T/snap.st" "$T/a"
expect_fail_msg "1 MiB" hx mount -o allow_root --cache-size 512K "$T/snap.st" "$T/a"
expect_fail_msg "a cache of 1 MiB holds blocks of at most .*too small for blocks of 1 MiB; use --cache-size" \
  hx mount -o allow_root --cache-size 1M "$T/big.st" "$T/a"
is_mounted "$T/a" && fail "a refused mount is mounted"
segment_gone || fail "a refused mount left $seg"
pass "1X, 512K and a cache too small for 1 MiB blocks are refused, naming the sizes"

hx mount -o allow_root -d "$T/snap.st" "$T/a" >"$T/plain.out" || fail "mount without --cache-size: $(cat "$T/plain.out")"
cmp "$T/a/disk" "$T/ref.disk" || fail "disk differs without a cache"
ls /dev/shm | grep -q -- "$P" && fail "a segment exists without --cache-size: $(ls /dev/shm)"
grep -q "shared cache" "$T/plain.out" && fail "a mount without --cache-size mentions a cache"
hx unmount "$T/a" >/dev/null || fail "unmount"
pass "no --cache-size: no segment"

for size in 256M 1G 4G; do
  if ((shm_free_kib < $(numfmt --from=iec "$size") / 1024 + 65536)); then
    echo "note: /dev/shm has only $shm_free_kib KiB free; --cache-size $size is not tried"
    continue
  fi
  hx mount -o allow_root -d --cache-size "$size" "$T/snap.st" "$T/a" >"$T/m.out" || fail "--cache-size $size: $(cat "$T/m.out")"
  grep -q "created the shared cache /$P-$uid" "$T/m.out" || fail "no 'created' note: $(cat "$T/m.out")"
  want=$(numfmt --from=iec "$size")
  [[ $(stat -c %s "$seg") == "$want" ]] || fail "segment size $(stat -c %s "$seg"), expected $want"
  [[ $(stat -c %a:%U "$seg") == "600:$TEST_USER" ]] || fail "segment mode/owner $(stat -c %a:%U "$seg")"
  cmp "$T/a/disk" "$T/ref.disk" || fail "disk differs with --cache-size $size"
  used_kib=$(du -k "$seg" | cut -f1)
  ((used_kib >= want / 1024)) || fail "--cache-size $size reserved only $used_kib KiB of /dev/shm"
  hx unmount "$T/a" >/dev/null || fail "unmount"
  wait_for segment_gone || fail "segment $seg left after the only mount of a $size cache went away"
  pass "--cache-size $size: segment of $want bytes, mode 0600, $used_kib KiB reserved, removed at unmount"
done

# --- two mounts share the cache ---
hx mount -o allow_root -d --cache-size 256M "$T/snap.st" "$T/a" >"$T/a.out" || fail "mount a: $(cat "$T/a.out")"
dd if="$T/a/disk" of="$T/u/a.out" bs=1M iflag=direct status=none || fail "read a"
cmp "$T/u/a.out" "$T/ref.disk" || fail "mount a reads wrong bytes"
hits0=$(stat_field hits); misses0=$(stat_field misses)
((misses0 >= 256)) || fail "the first read of 256 blocks made $misses0 misses"
hx mount -o allow_root -d --cache-size 1G "$T/snap.st" "$T/b" >"$T/b.out" || fail "mount b: $(cat "$T/b.out")"
grep -q "joined the shared cache /$P-$uid (256 MiB, not the 1 GiB asked for; 2 processes use it)" "$T/b.out" ||
  fail "the second mount does not say it joined a different size: $(cat "$T/b.out")"
dd if="$T/b/disk" of="$T/u/b.out" bs=1M iflag=direct status=none || fail "read b"
cmp "$T/u/b.out" "$T/ref.disk" || fail "mount b reads wrong bytes"
hits1=$(stat_field hits); misses1=$(stat_field misses)
((hits1 - hits0 >= 256)) || fail "mount b's read made $((hits1 - hits0)) hits (expected 256)"
((misses1 == misses0)) || fail "mount b's read made $((misses1 - misses0)) misses (expected 0)"
pass "mount b read all 256 blocks from the cache filled by mount a ($((hits1 - hits0)) hits, 0 new misses)"

# --- concurrent load from three workers ---
hx mount -o allow_root -d --cache-size 4M "$T/snap.st" "$T/c" >"$T/c.out" || fail "mount c: $(cat "$T/c.out")"
reader() {  # MNT SEED: 40 random 192 KiB reads (not block-aligned), each checked
  local mnt=$1 i off
  RANDOM=$2
  for ((i = 0; i < 40; i++)); do
    off=$((RANDOM % (16 * 1024 - 200)))
    timeout 10 dd if="$mnt/disk" bs=192K iflag=direct,skip_bytes skip=$((off * 1024)) count=1 \
      status=none >"$T/r.$2" ||
      { echo "read of $mnt at ${off}K failed or blocked"; return 1; }
    cmp -s "$T/r.$2" <(dd if="$T/ref.disk" bs=1K skip="$off" count=192 status=none) ||
      { echo "wrong bytes from $mnt at ${off}K"; return 1; }
  done
}
# O_DIRECT: every read reaches a worker (the page cache would hide them).
pids=()
for s in 1 2 3 4 5 6; do
  mnt=$T/$(printf 'abc' | cut -c$(((s % 3) + 1)))
  reader "$mnt" "$s" >"$T/reader.$s" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "concurrent reader: $(cat "$T"/reader.* | head -n3)"; done
[[ $(stat_field invalid) == 0 ]] || fail "entries failed validation under load"
pass "6 readers on 3 workers sharing one cache: 240 random reads, all bytes as hexz cat gives them"

out=$(hx cache stats) || fail "cache stats"
grep -q "processes      3 live" <<<"$out" || fail "stats should show 3 live processes: $out"
for d in a b c; do hx unmount "$T/$d" >/dev/null || fail "unmount $d"; done
wait_for segment_gone || fail "segment $seg left after the last mount went away: $(hx cache stats)"
assert_nothing_left "after unmounting"
pass "the last worker's exit removes $seg"
