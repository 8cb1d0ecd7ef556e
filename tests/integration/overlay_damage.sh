#!/usr/bin/env bash
# Damaged overlays end to end (format 2): a flipped bit in a stored block is
# named by `hexz overlay verify` and `hexz commit`, reads of that block fail
# with EIO through a real FUSE mount and through NBD (qemu-io), and
# `hexz commit --salvage` commits the rest and lists the lost block. A damaged
# log record makes `mount --rw` and `commit` refuse, naming the offset, and
# leaves both files byte-identical; so does an emptied data file next to a
# meta file with a log, and an overlay of format 1. The unit test
# Damaged.EveryHeaderByteAndRandomBitFlips sweeps every header byte and
# hundreds of bit flips; this test checks the same rules through the real
# front-ends.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
require_user_fuse
require_cmd qemu-io
TOOL="$HEXZ_BUILD_DIR/tests/hexz_overlay_write"
[[ -x "$TOOL" ]] || skip "test tool $TOOL is not built"
cd "$T"
user_dir "$T/u"
user_dir "$T/mnt"

head -c 1M /dev/urandom >disk.img
"$HEXZ" pack --disk disk.img -o base.st -q || fail "pack"
head -c 16384 /dev/urandom >p
head -c 4096 /dev/urandom >q
"$TOOL" base.st u/o.ovl 0:p || fail "first write"    # record 1 at 8192: blocks 0-3
"$TOOL" base.st u/o.ovl 65536:q || fail "second write" # record 2 at 8704: block 16
chown "$TEST_USER:$TEST_USER" u/o.ovl u/o.ovl.meta
cp disk.img expected.img
dd if=p of=expected.img conv=notrunc status=none
dd if=q of=expected.img bs=4096 seek=16 conv=notrunc status=none
cp -p u/o.ovl clean.ovl
cp -p u/o.ovl.meta clean.meta
out=$("$HEXZ" overlay verify u/o.ovl) || fail "verify of a good overlay: $out"
grep -q "u/o.ovl: ok (generation 1, 2 log records, 5 stored and 0 zeroed blocks checked)" <<<"$out" ||
  fail "verify output: $out"
pass "hexz overlay verify passes a good overlay"

flip() { # FILE OFFSET: flips bit 2 of the byte at OFFSET
  python3 - "$1" "$2" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(1)[0]; f.seek(int(sys.argv[2])); f.write(bytes([b ^ 4]))
PY
}
restore() { cp -p clean.ovl u/o.ovl; cp -p clean.meta u/o.ovl.meta; }
sums() { sha256sum u/o.ovl u/o.ovl.meta; }

# 1. Data damage: one bit of block 1 (slot 1, data file offset 8192).
flip u/o.ovl $((8192 + 100))
before=$(sums)
expect_fail_msg "u/o.ovl: block 1 \(disk offset 4096\) is damaged: slot 1 at offset 8192 has checksum 0x[0-9a-f]+, but log record at offset 8192 of u/o.ovl.meta recorded" \
  "$HEXZ" overlay verify u/o.ovl
expect_fail_msg "block 1 \(disk offset 4096\) is damaged: slot 1 at offset 8192" \
  "$HEXZ" commit --base base.st --overlay u/o.ovl -o bad.st
[[ ! -e bad.st ]] || fail "a failed commit left bad.st"
ls -A | grep -q '^\.bad\.st\.tmp' && fail "a failed commit left its temp file"
pass "verify and commit name the damaged block, its slot and its record"

as_user "$HEXZ" mount -d base.st mnt --rw --overlay u/o.ovl || fail "rw mount with a damaged block"
on_exit "fusermount3 -u -z $T/mnt"
err=$(as_user dd if=mnt/disk of=/dev/null bs=4096 skip=1 count=1 2>&1) && fail "damaged block read: $err"
grep -q 'Input/output error' <<<"$err" || fail "FUSE read of the damaged block: $err"
as_user dd if=mnt/disk bs=4096 count=1 status=none | cmp - <(head -c 4096 expected.img) ||
  fail "block 0 reads wrong"
as_user dd if=mnt/disk bs=4096 skip=2 count=2 status=none |
  cmp - <(dd if=expected.img bs=4096 skip=2 count=2 status=none) || fail "blocks 2-3 read wrong"
as_user "$HEXZ" unmount mnt >/dev/null || fail "unmount"
[[ "$(sums)" == "$before" ]] || fail "the mount changed the overlay"
pass "FUSE: the damaged block fails with EIO, the others read right"

start_hexz_serve dmg "$T/base.st" --rw --overlay "$T/u/o.ovl"
qio=$(qemu-io -f raw "$(nbd_uri disk)" -c 'read 4096 4096' 2>&1) || true
grep -q 'Input/output error' <<<"$qio" || fail "NBD read of the damaged block: $qio"
qemu-io -f raw "$(nbd_uri disk)" -c 'read 0 4096' >/dev/null 2>&1 || fail "NBD read of block 0 failed"
stop_hexz_serve
[[ "$(sums)" == "$before" ]] || fail "serve changed the overlay"
pass "NBD: the damaged block fails with EIO, the others read"

out=$("$HEXZ" commit --salvage --base base.st --overlay u/o.ovl -o salvaged.st -q) ||
  fail "commit --salvage: $out"
grep -q "u/o.ovl: 1 damaged 4 KiB block(s) lost" <<<"$out" || fail "salvage summary: $out"
grep -qx "  1" <<<"$out" || fail "salvage list of lost blocks: $out"
"$HEXZ" cat salvaged.st -o salvaged.img || fail "cat salvaged"
dd if=disk.img of=expected.img bs=4096 skip=1 seek=1 count=1 conv=notrunc status=none
cmp salvaged.img expected.img || fail "salvaged snapshot: the intact changes plus the base's block 1"
[[ "$(sums)" == "$before" ]] || fail "salvage changed the overlay"
expect_fail_msg "excludes" "$HEXZ" commit --salvage --remove-overlay --base base.st --overlay u/o.ovl -o x.st
pass "commit --salvage keeps the intact blocks and lists block 1 as lost"

# 2. A damaged record followed by a valid one: refused, files untouched.
restore
flip u/o.ovl.meta $((8192 + 60))
before=$(sums)
expect_fail_msg "log record at offset 8192 of u/o.ovl.meta \(sequence 1 expected\) is damaged or missing, but record 2 of the same log follows at offset 8704" \
  as_user "$HEXZ" mount -d base.st mnt --rw --overlay u/o.ovl
is_mounted "$T/mnt" && fail "a damaged overlay was mounted"
expect_fail_msg "offset 8192 of u/o.ovl.meta" "$HEXZ" commit --base base.st --overlay u/o.ovl -o bad.st
expect_fail_msg "offset 8192 of u/o.ovl.meta" "$HEXZ" overlay info u/o.ovl
[[ "$(sums)" == "$before" ]] || fail "a refused mount changed the overlay"
out=$("$HEXZ" commit --salvage --base base.st --overlay u/o.ovl -o salvaged2.st -q) ||
  fail "salvage of a damaged log: $out"
grep -q "skipped the damaged log from offset 8192 to 8704" <<<"$out" || fail "salvage notes: $out"
[[ "$(sums)" == "$before" ]] || fail "salvage changed the overlay"
pass "a damaged mid-log record: mount, commit and info refuse; files byte-identical; salvage skips it"

# 3. The data file emptied while the meta holds a log.
restore
: >u/o.ovl
before=$(sums)
expect_fail_msg "u/o.ovl is empty, but u/o.ovl.meta holds a log" \
  as_user "$HEXZ" mount -d base.st mnt --rw --overlay u/o.ovl
[[ "$(sums)" == "$before" ]] || fail "the refused mount changed the files"
rm u/o.ovl
expect_fail_msg "overlay u/o.ovl does not exist, but u/o.ovl.meta holds a log" \
  as_user "$HEXZ" mount -d base.st mnt --rw --overlay u/o.ovl
[[ ! -e u/o.ovl ]] || fail "the refused mount created the data file"
pass "an emptied or missing data file next to a log is refused, nothing re-created"

# 4. Format 1.
restore
printf '\x01' | dd of=u/o.ovl bs=1 seek=8 conv=notrunc status=none
expect_fail_msg "overlay format 1 .* commit it into a snapshot with the hexz that wrote it" \
  as_user "$HEXZ" mount -d base.st mnt --rw --overlay u/o.ovl
pass "an overlay of format 1 is refused with what to do"
