#!/usr/bin/env bash
# The memory stream's building blocks, from the command line: `pack --memory -`
# reads a pipe; `commit --memory FILE|-` adds or replaces the memory stream of
# a snapshot while its disk's stored blocks are copied as they are (never
# recompressed), standalone or thin; the metadata section records the memory
# stream's kind (`--memory-kind`), `hexz info` shows it (text and JSON), commit
# carries it with the memory stream it describes, and a damaged section is an
# error that names it.
source "$(dirname "$0")/../lib/common.sh"
require_cmd python3 cmp

cd "$T"
{ seq 1 300000; head -c 400000 /dev/urandom; seq 1 100000; } > disk.img
{ seq 1 100000; head -c 600000 /dev/urandom; } | head -c $((1024 * 1024 + 123)) > mem1.img
# mem2: mem1 with one 64 KiB block changed, and longer.
cp mem1.img mem2.img
head -c 65536 /dev/urandom | dd of=mem2.img bs=65536 seek=3 conv=notrunc status=none
head -c 5000 /dev/urandom >> mem2.img

json() { "$HEXZ" info --json "$1" | python3 -c "import json,sys; j=json.load(sys.stdin); print($2)"; }

# pack --memory - reads a pipe of unknown length, also one of odd length.
cat mem1.img | "$HEXZ" pack --disk disk.img --memory - -o piped.st --compression zstd -q \
  || fail "pack --memory -"
"$HEXZ" cat --stream memory piped.st | cmp - mem1.img || fail "pack --memory -: memory differs"
"$HEXZ" cat piped.st | cmp - disk.img || fail "pack --memory -: disk differs"
"$HEXZ" verify piped.st >/dev/null || fail "verify piped.st"
"$HEXZ" info piped.st | grep -q '^metadata: *none$' || fail "no metadata by default: $("$HEXZ" info piped.st)"
pass "pack --memory - reads a pipe"

# --memory-kind records the kind in the metadata section; info shows it.
"$HEXZ" pack --disk disk.img --memory mem1.img --memory-kind qemu-migration -o kind.st -q \
  || fail "pack --memory-kind"
"$HEXZ" info kind.st | grep -q '^metadata: *memory.kind = qemu-migration$' \
  || fail "info text: $("$HEXZ" info kind.st)"
[[ $(json kind.st 'j["metadata"]') == "{'memory.kind': 'qemu-migration'}" ]] \
  || fail "info --json: $("$HEXZ" info --json kind.st)"
[[ $(json piped.st 'j["metadata"]') == "{}" ]] || fail "info --json without metadata"
expect_fail_msg "memory-kind.*(requires|needs).*memory" "$HEXZ" pack --disk disk.img --memory-kind raw -o x.st
expect_fail_msg "memory-kind" "$HEXZ" pack --disk disk.img --memory mem1.img --memory-kind elf -o x.st
[[ ! -e x.st ]] || fail "a refused pack left x.st"
pass "pack --memory-kind records the kind; info and info --json show it"

# commit --memory: the disk's stored blocks are copied as stored. The base is
# zstd; commit's default codec is lz4, so a recompressed disk would differ in size.
out=$("$HEXZ" commit --base piped.st --memory mem2.img --memory-kind raw -o new.st) \
  || fail "commit --memory: $out"
grep -q "memory stream from mem2.img" <<<"$out" || fail "commit summary: $out"
"$HEXZ" cat new.st | cmp - disk.img || fail "commit --memory: disk differs"
"$HEXZ" cat --stream memory new.st | cmp - mem2.img || fail "commit --memory: memory differs"
[[ $(json new.st 'j["streams"]["disk"]["stored_size"]') == $(json piped.st 'j["streams"]["disk"]["stored_size"]') ]] \
  || fail "the disk's blocks were not copied as stored"
[[ $(json new.st 'j["metadata"]') == "{'memory.kind': 'raw'}" ]] || fail "commit --memory-kind"
"$HEXZ" verify new.st >/dev/null || fail "verify new.st"
pass "commit --memory replaces the memory stream; the disk's blocks are copied as stored"

# Adds a memory stream to a snapshot that has none, from a pipe.
"$HEXZ" pack --disk disk.img -o nomem.st -q
"$HEXZ" info nomem.st | grep -q '^memory: *absent' || fail "nomem.st has memory"
cat mem1.img | "$HEXZ" commit --base nomem.st --memory - -o added.st -q || fail "commit --memory -"
"$HEXZ" cat --stream memory added.st | cmp - mem1.img || fail "commit --memory -: memory differs"
"$HEXZ" cat added.st | cmp - disk.img || fail "commit --memory -: disk differs"
pass "commit --memory - adds a memory stream from a pipe"

# Thin: the disk is all references to the base, and memory blocks equal to
# the base's memory are references too (of 17 blocks, one changed and the last one grew).
"$HEXZ" commit --base kind.st --memory mem2.img --thin -o thin.st -q || fail "commit --memory --thin"
"$HEXZ" cat --stream memory thin.st | cmp - mem2.img || fail "thin: memory differs"
"$HEXZ" cat thin.st | cmp - disk.img || fail "thin: disk differs"
[[ $(json thin.st 'j["streams"]["disk"]["parent_blocks"] == j["streams"]["disk"]["blocks"]') == True ]] \
  || fail "thin: disk blocks are not all references"
[[ $(json thin.st 'j["streams"]["memory"]["parent_blocks"]') == 15 ]] \
  || fail "thin: memory parent blocks: $("$HEXZ" info --json thin.st)"
[[ $(json thin.st 'j["metadata"]') == "{}" ]] || fail "a replaced memory stream kept the old kind"
pass "commit --memory --thin references the base's equal blocks"

# Without --memory, commit carries the base's memory stream and its metadata.
user_overlay_tool="$HEXZ_BUILD_DIR/tests/hexz_overlay_write"
if [[ -x "$user_overlay_tool" ]]; then
  head -c 10 /dev/urandom > p1
  "$user_overlay_tool" kind.st o.ovl 100:p1 || fail "writing the overlay"
  "$HEXZ" commit --base kind.st --overlay o.ovl -o carried.st -q || fail "commit --overlay"
  [[ $(json carried.st 'j["metadata"]') == "{'memory.kind': 'qemu-migration'}" ]] \
    || fail "commit did not carry the metadata"
  "$HEXZ" cat --stream memory carried.st | cmp - mem1.img || fail "commit did not carry memory"
  # --overlay and --memory together: the changes and the new memory.
  "$HEXZ" commit --base kind.st --overlay o.ovl --memory mem2.img -o both.st -q || fail "both"
  "$HEXZ" cat both.st | cmp - <("$HEXZ" cat carried.st) || fail "both: disk differs"
  "$HEXZ" cat --stream memory both.st | cmp - mem2.img || fail "both: memory differs"
  pass "commit carries memory and metadata; --overlay with --memory does both"
fi

# Usage errors.
expect_fail_msg "give --overlay.*--memory" "$HEXZ" commit --base kind.st -o x.st
expect_fail_msg "remove-overlay.*(requires|needs).*overlay" \
  "$HEXZ" commit --base kind.st --memory mem1.img --remove-overlay -o x.st
expect_fail_msg "mem9.img" "$HEXZ" commit --base kind.st --memory mem9.img -o x.st
expect_fail_msg "is also the --memory input" "$HEXZ" commit --base kind.st --memory new.st -o new.st
[[ ! -e x.st ]] || fail "a refused commit left x.st"
pass "commit usage errors are clear"

# Damage to the metadata section is named (the section ends where the index begins).
cp kind.st bad.st
python3 - <<'PY'
import struct
b = bytearray(open("bad.st", "rb").read())
index = struct.unpack_from("<Q", b, len(b) - 64 + 8)[0]
mlen = struct.unpack_from("<I", b, index + 52)[0]
assert mlen >= 24, mlen
b[index - mlen + 20] ^= 1
open("bad.st", "wb").write(b)
PY
expect_fail_msg "bad.st: metadata section checksum mismatch at offset [0-9]+" "$HEXZ" info bad.st
expect_fail_msg "metadata section checksum mismatch" "$HEXZ" cat --stream memory bad.st
"$HEXZ" info "$HEXZ_SOURCE_DIR/tests/data/v1_lz4.st" | grep -q '^metadata: *none$' \
  || fail "an old snapshot shows no metadata"
"$HEXZ" info "$HEXZ_SOURCE_DIR/tests/data/v1_metadata.st" | grep -q 'qemu.args = -m 256 -device virtio-blk,drive=d0' \
  || fail "info of v1_metadata.st: $("$HEXZ" info "$HEXZ_SOURCE_DIR/tests/data/v1_metadata.st")"
pass "a damaged metadata section is named; old snapshots open"
