#!/usr/bin/env bash
# `hexz pack` stays under 64 MiB of peak RSS (/usr/bin/time) whatever the
# input: a 192 GiB sparse disk (3 Mi blocks: its index alone is 72 MiB, which
# pack used to hold in memory), 1 GiB of unique 4 KiB blocks (the dedup table
# at its bound), and a duplicate-heavy 1 GiB disk. Each round trip is checked.
# A bound on memory, not a timing test.
source "$(dirname "$0")/../lib/common.sh"
[[ -x /usr/bin/time ]] || skip "/usr/bin/time is not installed (package 'time')"
require_cmd cmp

limit_kib=$((64 * 1024))
cd "$T"
# pack_under_limit WHAT INPUT PACK-OPTION...: packs INPUT into out.st and
# checks the peak RSS.
pack_under_limit() {
  local what=$1 input=$2 rss
  shift 2
  /usr/bin/time -f %M -o rss.txt "$HEXZ" pack --disk "$input" --output out.st --quiet "$@" ||
    fail "pack of $what failed"
  rss=$(tail -n1 rss.txt)
  echo "pack of $what: peak RSS $rss KiB (limit $limit_kib KiB)"
  [[ $rss -lt $limit_kib ]] || fail "pack of $what peaked at $rss KiB, over 64 MiB"
}

truncate -s 192G sparse.img
head -c 4M /dev/urandom | dd of=sparse.img bs=1M seek=1000 conv=notrunc status=none
printf 'end' | dd of=sparse.img bs=1 seek=$((192 * 1024 * 1024 * 1024 - 3)) conv=notrunc status=none
pack_under_limit "a 192 GiB sparse disk" sparse.img
"$HEXZ" info out.st | grep -qE "zero 31456[0-9]{2}" || fail "zero blocks not counted: $("$HEXZ" info out.st)"
"$HEXZ" verify out.st >/dev/null || fail "verify of the sparse pack"
"$HEXZ" cat out.st | cmp - sparse.img -n $((1100 * 1024 * 1024)) ||
  fail "the first 1100 MiB of the sparse disk differ after the round trip"
rm -f sparse.img
pass "a 192 GiB sparse disk packs under 64 MiB"

head -c 1G /dev/urandom >unique.img
pack_under_limit "1 GiB of unique 4 KiB blocks" unique.img --block-size 4K
"$HEXZ" cat out.st | cmp - unique.img || fail "round trip of the unique blocks"
rm -f unique.img
pass "a full dedup table stays under 64 MiB"

head -c 64M /dev/urandom >chunk
for _ in $(seq 16); do cat chunk; done >dup.img
pack_under_limit "1 GiB of 16 copies of 64 MiB" dup.img --compression zstd
"$HEXZ" info out.st | grep -q dedup || fail "no dedup blocks: $("$HEXZ" info out.st)"
"$HEXZ" cat out.st | cmp - dup.img || fail "round trip of the duplicate-heavy disk"
pass "a duplicate-heavy disk packs under 64 MiB"
