#!/usr/bin/env bash
# hexz pack / info / verify / cat from the command line: round trips with each
# codec and several block sizes, a thin pair, and every user-facing error
# (missing file, not a snapshot, newer version, truncated, checksum mismatch,
# bad usage), each with its own message naming the path.
source "$(dirname "$0")/../lib/common.sh"
require_cmd python3 cmp

cd "$T"
python3 - <<'PY'
import os, random
random.seed(7)
words = [b"hexz ", b"snapshot ", b"block ", b"disk\n", b"memory ", b"index "]
text = b"".join(random.choice(words) for _ in range(60000))
rnd = os.urandom(300000)
with open("disk.img", "wb") as f:
    f.write(text); f.write(bytes(200000)); f.write(rnd); f.write(text[:65536]); f.write(text[:65536])
    f.write(b"tail" * 333)  # not a multiple of any block size
with open("mem.img", "wb") as f:
    f.write(text[:123457])
PY
: > empty.img

for c in lz4 zstd none; do
  for bs in 4K 64K 1M; do
    "$HEXZ" pack --disk disk.img --memory mem.img --output "rt-$c-$bs.st" --compression "$c" \
      --block-size "$bs" --threads 2 --quiet
    "$HEXZ" cat "rt-$c-$bs.st" | cmp - disk.img || fail "disk round trip $c $bs"
    "$HEXZ" cat "rt-$c-$bs.st" --stream memory --output mem.out
    cmp mem.out mem.img || fail "memory round trip $c $bs"
    "$HEXZ" verify "rt-$c-$bs.st" | grep -q ": ok" || fail "verify $c $bs"
  done
done
pass "pack/cat round trip: lz4, zstd, none x 4K, 64K, 1M"

"$HEXZ" pack --disk disk.img --memory empty.img -o empty-mem.st --quiet
[[ $("$HEXZ" cat empty-mem.st --stream memory | wc -c) -eq 0 ]] || fail "empty memory stream"
"$HEXZ" cat empty-mem.st | cmp - disk.img || fail "disk with empty memory"
pass "empty memory stream"

"$HEXZ" pack --disk disk.img -o zl.st --compression zstd --level 19 --quiet
"$HEXZ" cat zl.st | cmp - disk.img || fail "zstd level 19"
out=$("$HEXZ" pack --disk disk.img -o plain.st)
grep -q "plain.st: packed" <<<"$out" || fail "summary line: $out"
[[ $("$HEXZ" pack --disk disk.img -o quiet.st --quiet 2>&1) == "" ]] || fail "--quiet prints nothing"
pass "levels, summary and --quiet"

# The progress bar appears on a terminal only (script(1) provides one).
if command -v script >/dev/null; then
  tty_out=$(script -qec "$HEXZ pack --disk disk.img -o tty.st" /dev/null)
  grep -q "100%" <<<"$tty_out" || fail "no progress bar on a terminal: $tty_out"
  "$HEXZ" pack --disk disk.img -o notty.st 2>notty.err >/dev/null
  [[ ! -s notty.err ]] || fail "progress output without a terminal: $(cat notty.err)"
  pass "progress bar on a terminal only"
fi

info=$("$HEXZ" info rt-lz4-64K.st)
for want in "format:.*version 1" "id: +[0-9a-f]{32}" "parent: +none" "block size: +64 KiB" \
            "codecs:.*lz4" "disk: .*ratio" "zero [1-9]" "dedup [1-9]" "memory: "; do
  grep -qE "$want" <<<"$info" || fail "info lacks '$want': $info"
done
json=$("$HEXZ" info --json rt-zstd-4K.st)
python3 -c '
import json, sys
d = json.loads(sys.argv[1])
assert d["format_version"] == 1 and d["block_size"] == 4096 and d["parent"] is None, d
assert "zstd" in d["codecs"], d
s = d["streams"]["disk"]
assert s["logical_size"] == '"$(stat -c %s disk.img)"' and s["zero_blocks"] > 0 and s["dedup_blocks"] > 0, s
assert d["streams"]["memory"]["logical_size"] == '"$(stat -c %s mem.img)"', d
' "$json" || fail "info --json: $json"
pass "info and info --json"

# --- errors: each its own message, naming the path ---
expect_fail_msg "nope.st: No such file" "$HEXZ" info nope.st
echo "just some text, not a snapshot" > text.st
expect_fail_msg "text.st: not a hexz snapshot" "$HEXZ" verify text.st
head -c -100 rt-lz4-64K.st > trunc.st
expect_fail_msg "trunc.st: no footer.*truncated" "$HEXZ" cat trunc.st --output /dev/null
cp "$HEXZ_SOURCE_DIR/tests/data/future_version.st" newer.st
expect_fail_msg "newer.st: format version 2 is newer than this hexz supports" "$HEXZ" info newer.st
# A flipped data byte: verify names the block and its offset; cat refuses.
python3 - rt-none-4K.st bad.st <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[64 + 5000] ^= 0x40
open(sys.argv[2], "wb").write(b)
PY
expect_fail_msg "bad.st: disk block [0-9]+ checksum mismatch at offset [0-9]+" "$HEXZ" verify bad.st
expect_fail_msg "bad.st: disk block [0-9]+ checksum mismatch" "$HEXZ" cat bad.st --output bad.out
python3 - rt-lz4-64K.st badidx.st <<'PY'
import sys, struct
b = bytearray(open(sys.argv[1], "rb").read())
off = struct.unpack_from("<Q", b, len(b) - 64 + 8)[0]
b[off + 70] ^= 1
open(sys.argv[2], "wb").write(b)
PY
expect_fail_msg "badidx.st: index checksum mismatch at offset" "$HEXZ" verify badidx.st
expect_fail_msg "no-such.img: No such file" "$HEXZ" pack --disk no-such.img -o x.st
[[ ! -e x.st ]] || fail "failed pack left x.st"
rc=0; "$HEXZ" pack --disk disk.img -o x.st --block-size 3K 2>/dev/null || rc=$?
[[ $rc -eq 2 ]] || fail "bad --block-size should exit 2, got $rc"
rc=0; "$HEXZ" pack --disk disk.img -o x.st --compression zstd --level 99 2>/dev/null || rc=$?
[[ $rc -eq 2 ]] || fail "bad --level should exit 2, got $rc"
rc=0; "$HEXZ" pack --disk disk.img -o x.st --compression lzma 2>/dev/null || rc=$?
[[ $rc -eq 2 ]] || fail "bad --compression should exit 2, got $rc"
rc=0; "$HEXZ" cat rt-lz4-64K.st --stream swap 2>/dev/null || rc=$?
[[ $rc -eq 2 ]] || fail "bad --stream should exit 2, got $rc"
"$HEXZ" pack --disk disk.img -o nomem.st --quiet
expect_fail_msg "nomem.st: has no memory stream" "$HEXZ" cat nomem.st --stream memory
mkfifo fifo
expect_fail_msg "fifo: not a regular file or block device" timeout 10 "$HEXZ" info fifo
expect_fail_msg "fifo: not a regular file or block device" timeout 10 "$HEXZ" pack --disk fifo -o f.st
expect_fail_msg "is a directory" "$HEXZ" verify .
ls -a | grep -q '\.tmp-' && fail "a temp file was left behind: $(ls -a)"
pass "error messages"
