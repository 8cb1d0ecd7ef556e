#!/usr/bin/env bash
# hexz pack --parent: a second version of a real GPT disk with 1% of its
# blocks changed packs as a thin snapshot of the first that stores only the
# changed blocks (under 3% of the disk's size), reads back exactly, and
# verifies. The memory stream works the same way; a different --block-size
# is refused.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/vm_disk.sh"
require_disk_tools
require_cmd cmp

cd "$T"
make_gpt_disk v1.raw
head -c 8M /dev/urandom > mem1.raw
"$HEXZ" pack --disk v1.raw --memory mem1.raw -o v1.st --quiet

# Version 2: 15 of the 1536 blocks of 64 KiB (1%) rewritten, spread over the
# disk (inside the partitions), and one block of memory changed.
cp v1.raw v2.raw
cp mem1.raw mem2.raw
changed=0
for b in 20 100 300 333 540 600 700 701 900 1000 1100 1200 1300 1400 1450; do
  head -c 65536 /dev/urandom | dd of=v2.raw bs=65536 seek=$b conv=notrunc status=none
  changed=$((changed + 1))
done
head -c 65536 /dev/urandom | dd of=mem2.raw bs=65536 seek=7 conv=notrunc status=none

mkdir sub
out=$("$HEXZ" pack --disk v2.raw --memory mem2.raw --parent v1.st -o sub/v2.st)
echo "$out"
grep -q "from the parent v1.st" <<<"$out" || fail "summary: $out"
"$HEXZ" cat sub/v2.st | cmp - v2.raw || fail "disk of the thin snapshot"
"$HEXZ" cat --stream memory sub/v2.st | cmp - mem2.raw || fail "memory of the thin snapshot"
"$HEXZ" verify -q sub/v2.st || fail "verify"
"$HEXZ" info --json sub/v2.st | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["parent"]["path"] == "../v1.st", j["parent"]
d, m = j["streams"]["disk"], j["streams"]["memory"]
stored = d["blocks"] - d["zero_blocks"] - d["parent_blocks"] - d["dedup_blocks"]
assert stored == int(sys.argv[1]), (stored, d)
assert m["blocks"] - m["parent_blocks"] == 1, m
' "$changed" || fail "thin snapshot stores other blocks than the changed ones"
full=$(stat -c %s v2.raw)
thin=$(stat -c %s sub/v2.st)
echo "thin snapshot: $thin bytes for a disk of $full bytes"
[[ $((thin * 100)) -lt $((full * 3)) ]] || fail "thin snapshot is $thin bytes, over 3% of $full"
pass "pack --parent stores the 1% that changed ($thin of $full bytes)"

# The same disk again: everything comes from the parent.
"$HEXZ" pack --disk v2.raw --parent sub/v2.st -o v3.st --quiet
"$HEXZ" cat v3.st | cmp - v2.raw || fail "chain of two"
[[ $(stat -c %s v3.st) -lt 100000 ]] || fail "an unchanged disk stored data"
pass "an unchanged disk is all parent references, through a chain"

# A pipe into a thin snapshot, and a disk that grew past its parent.
cat v2.raw | "$HEXZ" pack --disk - --parent v1.st -o pipe.st --quiet
"$HEXZ" cat pipe.st | cmp - v2.raw || fail "pipe with --parent"
cp v2.raw big.raw
truncate -s 100M big.raw
"$HEXZ" pack --disk big.raw --parent v1.st -o big.st --quiet
"$HEXZ" cat big.st | cmp - big.raw || fail "a disk larger than its parent"
pass "--parent with a pipe and with a grown disk"

expect_fail_msg "differs from the block size of the parent v1.st" \
  "$HEXZ" pack --disk v2.raw --parent v1.st --block-size 128K -o x.st
expect_fail_msg "nope.st" "$HEXZ" pack --disk v2.raw --parent nope.st -o x.st
[[ ! -e x.st ]] || fail "a refused pack left x.st"

# The output may not replace a file of the parent chain.
expect_fail_msg "v1.st: is the --parent snapshot; choose another --output" \
  "$HEXZ" pack --disk v2.raw --parent v1.st -o v1.st
"$HEXZ" verify -q sub/v2.st || fail "the parent was replaced"
pass "clear errors for --parent"
