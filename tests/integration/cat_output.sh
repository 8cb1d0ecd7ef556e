#!/usr/bin/env bash
# hexz cat --output: never a file of the snapshot's chain (the snapshot, a
# parent; also through a symlink or a hard link; commit and pack refuse their
# inputs as outputs too), and a regular output file is replaced atomically: a
# cat that fails leaves the old file and no temp file; a symlink keeps
# pointing at the replaced file; devices work.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_test_user
require_cmd cmp sha256sum
GOLDEN="$HEXZ_SOURCE_DIR/tests/data"
[[ -f "$GOLDEN/v1_thin_child.st" ]] || skip "golden thin pair missing"

cd "$T"
mkdir a
cp "$GOLDEN/v1_thin_child.st" a/child.st
cp "$GOLDEN/v1_thin_base.st" a/v1_thin_base.st
sums=$(sha256sum a/child.st a/v1_thin_base.st)
ln a/v1_thin_base.st hard.st
ln -s a/v1_thin_base.st sym.st
expect_fail_msg "a/v1_thin_base.st: is a parent of the snapshot \(a/v1_thin_base.st\)" \
  "$HEXZ" cat a/child.st -o a/v1_thin_base.st
expect_fail_msg "hard.st: is a parent of the snapshot" "$HEXZ" cat a/child.st -o hard.st
expect_fail_msg "sym.st: is a parent of the snapshot" "$HEXZ" cat a/child.st -o sym.st
expect_fail_msg "a/child.st: is the snapshot itself" "$HEXZ" cat a/child.st -o a/child.st
[[ "$(sha256sum a/child.st a/v1_thin_base.st)" == "$sums" ]] || fail "a file of the chain changed"
"$HEXZ" verify a/child.st >/dev/null || fail "the chain no longer verifies"
# commit checks its output against the base's chain the same way, before it
# opens the overlay.
expect_fail_msg "a/v1_thin_base.st: is a parent of the base \(a/v1_thin_base.st\)" \
  "$HEXZ" commit --base a/child.st --overlay none.ovl -o a/v1_thin_base.st
expect_fail_msg "hard.st: is a parent of the base" \
  "$HEXZ" commit --base a/child.st --overlay none.ovl -o hard.st
[[ "$(sha256sum a/child.st a/v1_thin_base.st)" == "$sums" ]] || fail "a file of the chain changed"
"$HEXZ" verify a/child.st >/dev/null || fail "the chain no longer verifies"
ls -A a | grep -q tmp && fail "temp files left: $(ls -A a)"
pass "no output may be a file of the chain; the chain stays intact"

# A snapshot whose block 40 (of 64) is damaged: cat fails after writing.
head -c 4M /dev/urandom >disk.img
"$HEXZ" pack --disk disk.img -o bad.st --compression none --quiet || fail "pack"
printf 'X' | dd of=bad.st bs=1 seek=$((64 + 40 * 65536 + 5)) conv=notrunc status=none
echo "old contents" >out.raw
expect_fail_msg "bad.st.*checksum" "$HEXZ" cat bad.st -o out.raw
[[ "$(cat out.raw)" == "old contents" ]] || fail "a failed cat changed its output file"
ls -A | grep -q '\.tmp-' && fail "a failed cat left a temp file: $(ls -A)"
pass "a failed cat leaves the old output and no temp file"

# pack: the output may not be an input either.
ln disk.img disk.link
disk_sum=$(sha256sum <disk.img)
expect_fail_msg "disk.img: is also an input" "$HEXZ" pack --disk disk.img -o disk.img --quiet
expect_fail_msg "disk.link: is also an input" "$HEXZ" pack --disk disk.img -o disk.link --quiet
[[ "$(sha256sum <disk.img)" == "$disk_sum" ]] || fail "pack changed its input"
rm disk.link

"$HEXZ" pack --disk disk.img -o good.st --quiet || fail "pack"
(umask 022 && "$HEXZ" cat good.st -o out.raw) || fail "cat over an existing file"
cmp out.raw disk.img || fail "cat output differs"
[[ $(stat -c %a out.raw) == 644 ]] || fail "output mode $(stat -c %a out.raw), expected 644"
ln -s out.raw link.raw
echo "old" >out.raw
"$HEXZ" cat good.st -o link.raw || fail "cat through a symlink"
[[ -L link.raw ]] || fail "the symlink was replaced"
cmp out.raw disk.img || fail "the symlink's target was not written"
"$HEXZ" cat good.st -o /dev/null || fail "cat to /dev/null"
# A file you may not write is not replaced either (the directory is yours).
user_dir "$T/ro"
as_user sh -c 'echo keep >ro/file && chmod 0444 ro/file'
expect_fail_msg "ro/file: Permission denied" as_user "$HEXZ" cat good.st -o ro/file
[[ "$(cat "$T/ro/file")" == keep ]] || fail "a read-only output file was replaced"
"$HEXZ" cat good.st -o new/out.raw 2>/dev/null && fail "cat into a missing directory succeeded"
ls -A | grep -q '\.tmp-' && fail "temp files left: $(ls -A)"
pass "regular outputs are replaced atomically; symlinks and devices work"

