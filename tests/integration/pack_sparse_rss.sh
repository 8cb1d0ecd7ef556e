#!/usr/bin/env bash
# Packing a 4 GiB sparse image (with 200 MiB of data in it) stays within a memory bound: peak RSS under
# 256 MiB (measured with /usr/bin/time), and the round trip is exact. This is
# a bound on memory, not a timing test.
source "$(dirname "$0")/../lib/common.sh"
[[ -x /usr/bin/time ]] || skip "/usr/bin/time is not installed (package 'time')"
require_cmd cmp

cd "$T"
truncate -s 4G big.img
head -c 8M /dev/urandom | dd of=big.img bs=1M seek=1000 conv=notrunc status=none
yes "hexz sparse test" | head -c 200M | dd of=big.img bs=1M seek=4000 conv=notrunc status=none
printf 'end' | dd of=big.img bs=1 seek=$((4*1024*1024*1024 - 3)) conv=notrunc status=none

/usr/bin/time -f %M -o rss.txt "$HEXZ" pack --disk big.img --output big.st --quiet
rss=$(tail -n1 rss.txt)
echo "peak RSS of pack: ${rss} KiB"
[[ $rss -lt 262144 ]] || fail "pack peak RSS ${rss} KiB >= 256 MiB"
pass "4 GiB sparse pack peaks at ${rss} KiB"

/usr/bin/time -f %M -o rss2.txt "$HEXZ" cat big.st --output big.out
echo "peak RSS of cat: $(tail -n1 rss2.txt) KiB"
[[ $(tail -n1 rss2.txt) -lt 262144 ]] || fail "cat peak RSS too high"
# Compare where either file has data (SEEK_DATA); elsewhere both are holes.
# Reading 8 GiB of holes with cmp would take far longer than this test needs.
python3 - big.img big.out <<'PY' || fail "round trip of the sparse image"
import os, sys
a, b = (open(p, "rb") for p in sys.argv[1:3])
size = os.fstat(a.fileno()).st_size
assert os.fstat(b.fileno()).st_size == size, "sizes differ"
def extents(f):
    out, pos = [], 0
    while pos < size:
        try:
            d = os.lseek(f.fileno(), pos, os.SEEK_DATA)
        except OSError:
            break
        h = os.lseek(f.fileno(), d, os.SEEK_HOLE)
        out.append((d, h)); pos = h
    return out
for d, h in extents(a) + extents(b):
    for off in range(d, h, 1 << 20):
        n = min(1 << 20, h - off)
        a.seek(off); b.seek(off)
        if a.read(n) != b.read(n):
            sys.exit(f"differ near offset {off}")
PY
"$HEXZ" info big.st | grep -qE "zero [0-9]{4,}" || fail "zero blocks not counted"
pass "sparse round trip exact"
