#!/usr/bin/env bash
# hexz commit end to end, without FUSE: an overlay is changed with the test
# tool hexz_overlay_write (the library a --rw mount uses), then committed
# standalone and --thin; `hexz cat` of each result must equal the expected
# modified image, the memory stream must be carried over, the base must not
# change by a single byte, and the errors (wrong base, locked overlay, output
# that is the base) must be clear.
source "$(dirname "$0")/../lib/common.sh"

TOOL="$HEXZ_BUILD_DIR/tests/hexz_overlay_write"
[[ -x "$TOOL" ]] || skip "test tool $TOOL is not built"
cd "$T"

# An 8 MiB + 1000 byte disk (compressible text and random parts) and a memory dump.
{ seq 1 700000; head -c 3000000 /dev/urandom; seq 1 200000; } | head -c $((8*1024*1024 + 1000)) > disk.img
head -c $((1024*1024 + 123)) /dev/urandom > mem.img
"$HEXZ" pack --disk disk.img --memory mem.img -o base.st -q || fail "pack"
base_sum=$(sha256sum < base.st)

head -c 10 /dev/urandom > p1
head -c 65536 /dev/urandom > p2
head -c 700 /dev/urandom > p3
"$TOOL" base.st o.ovl 100:p1 327680:p2 $((8*1024*1024 + 300)):p3 zero:1048576:8192 \
  || fail "writing the overlay"
cp disk.img expected.img
dd if=p1 of=expected.img bs=1 seek=100 conv=notrunc status=none
dd if=p2 of=expected.img bs=1 seek=327680 conv=notrunc status=none
dd if=p3 of=expected.img bs=1 seek=$((8*1024*1024 + 300)) conv=notrunc status=none
dd if=/dev/zero of=expected.img bs=1 seek=1048576 count=8192 conv=notrunc status=none
[[ -f o.ovl && -f o.ovl.meta ]] || fail "overlay files were not created"
pass "overlay written (o.ovl + o.ovl.meta)"

info=$("$HEXZ" overlay info o.ovl) || fail "overlay info: $info"
grep -q "changed blocks:  20 of 2049 (4 KiB): 18 stored, 2 zeroed" <<<"$info" \
  || fail "overlay info counts: $info"
grep -q "$("$HEXZ" info base.st | awk '/^id:/{print $2}')" <<<"$info" || fail "overlay info base id: $info"
"$HEXZ" overlay info --json o.ovl | grep -q '"changed_bytes": 78824' \
  || fail "overlay info --json: $("$HEXZ" overlay info --json o.ovl)"
pass "hexz overlay info reports 20 blocks / 78824 bytes changed"

# Standalone.
out=$("$HEXZ" commit --base base.st --overlay o.ovl --output new.st) || fail "commit: $out"
grep -q "standalone" <<<"$out" || fail "commit summary: $out"
"$HEXZ" cat new.st | cmp - expected.img || fail "standalone: disk differs from the expected image"
"$HEXZ" cat --stream memory new.st | cmp - mem.img || fail "standalone: memory not carried over"
"$HEXZ" info new.st | grep -q "^parent: *none" || fail "standalone output has a parent"
"$HEXZ" verify new.st >/dev/null || fail "verify new.st"
[[ -f o.ovl && -f o.ovl.meta ]] || fail "the overlay must be kept without --remove-overlay"
[[ "$(sha256sum < base.st)" == "$base_sum" ]] || fail "the base changed"
pass "standalone commit: cat == expected image, memory carried, base unchanged, overlay kept"

# Thin, into another directory: the parent is named relative to the output.
mkdir sub
"$HEXZ" vm commit --base base.st --overlay o.ovl --output sub/thin.st --thin --compression zstd -q \
  || fail "vm commit --thin"
"$HEXZ" info sub/thin.st | grep -q "^parent: *\.\./base\.st (id " || fail "thin parent: $("$HEXZ" info sub/thin.st)"
"$HEXZ" cat sub/thin.st | cmp - expected.img || fail "thin: disk differs from the expected image"
"$HEXZ" cat --stream memory sub/thin.st | cmp - mem.img || fail "thin: memory not carried over"
(( $(stat -c %s sub/thin.st) < $(stat -c %s new.st) / 4 )) || fail "thin output is not small"
[[ "$(sha256sum < base.st)" == "$base_sum" ]] || fail "the base changed"
pass "thin commit (vm commit): parent ../base.st, cat == expected, $(stat -c %s sub/thin.st) bytes"

# Errors.
head -c 65536 /dev/urandom > other.img
"$HEXZ" pack --disk other.img -o other.st -q
expect_fail_msg "o.ovl belongs to snapshot id [0-9a-f]{32}, but the base other.st has id [0-9a-f]{32}" \
  "$HEXZ" commit --base other.st --overlay o.ovl --output bad.st
[[ ! -e bad.st ]] || fail "a failed commit left its output"
expect_fail_msg "new.st: is the base snapshot" "$HEXZ" commit --base new.st --overlay o.ovl --output new.st
expect_fail_msg "does not exist" "$HEXZ" commit --base base.st --overlay nope.ovl --output x.st
rc=0; "$HEXZ" commit --base base.st --output x.st >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "missing --overlay should exit 2, got $rc"
rc=0; "$HEXZ" commit --base base.st --overlay o.ovl --output x.st --compression brotli >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "bad --compression should exit 2, got $rc"
pass "usage errors exit 2"

# A read-write user holds the overlay: commit and a second writer are refused.
coproc HOLDER { "$TOOL" base.st o.ovl --hold; }
holder_pid=$HOLDER_PID   # bash unsets HOLDER_PID as soon as the coproc exits
read -r line <&"${HOLDER[0]}" || fail "holder did not start"
[[ $line == ready ]] || fail "holder: $line"
expect_fail_msg "overlay o.ovl is in use by a read-write mount or serve, pid [0-9]+ \(.*hexz_overlay_write base.st o.ovl --hold\); unmount it first" \
  "$HEXZ" commit --base base.st --overlay o.ovl --output y.st
expect_fail_msg "overlay o.ovl is in use by a read-write mount or serve, pid [0-9]+ \(.*hexz_overlay_write" "$TOOL" base.st o.ovl
eval "exec ${HOLDER[1]}>&-"
wait "$holder_pid" || fail "holder failed"
pass "locked overlay refused"

# --remove-overlay: the overlay goes only once the output is written.
"$HEXZ" commit --base base.st --overlay o.ovl --output final.st --remove-overlay -q || fail "commit --remove-overlay"
[[ ! -e o.ovl && ! -e o.ovl.meta ]] || fail "--remove-overlay left the overlay"
"$HEXZ" cat final.st | cmp - expected.img || fail "final.st differs"
[[ "$(sha256sum < base.st)" == "$base_sum" ]] || fail "the base changed"
pass "--remove-overlay removes o.ovl and o.ovl.meta after a good commit"

# A damaged base: the disk's stored blocks are copied in large extents, and
# every copied block is checked, so a flipped byte in the first block fails
# the commit (naming the file and the block's offset) and leaves no output.
cp base.st dmg.st
printf '\x5a' | dd of=dmg.st bs=1 seek=164 conv=notrunc status=none
expect_fail_msg "dmg.st: stored block checksum mismatch at offset 64" \
  "$HEXZ" commit --base dmg.st --memory mem.img --output dmg-new.st
[[ ! -e dmg-new.st ]] || fail "a failed commit left dmg-new.st"
ls -A | grep -q '^\.dmg-new\.st\.tmp' && fail "a failed commit left its temp file"
pass "a flipped byte inside a copied extent of the base fails the commit clearly"
