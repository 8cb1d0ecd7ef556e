#!/usr/bin/env bash
# Thin snapshots from the command line: a child made by the library writer is
# read through its parent; the pair moves together; a missing parent, a wrong
# parent (different id) and a broken parent each give their own error, which
# names the chain (child -> parent).
source "$(dirname "$0")/../lib/common.sh"
require_cmd cmp
GOLDEN="$HEXZ_SOURCE_DIR/tests/data"
[[ -f "$GOLDEN/v1_thin_child.st" ]] || skip "golden thin pair missing"

cd "$T"
mkdir a b
cp "$GOLDEN/v1_thin_child.st" a/child.st
cp "$GOLDEN/v1_thin_base.st" a/v1_thin_base.st
"$HEXZ" verify a/child.st | grep -q "ok (with 1 parent)" || fail "verify thin chain"
"$HEXZ" info a/child.st | grep -qE "parent: +v1_thin_base.st \(id [0-9a-f]{32}\)" || fail "info parent"
"$HEXZ" info --json a/child.st | grep -q '"parent": {"path": "v1_thin_base.st"' || fail "json parent"
"$HEXZ" cat a/child.st > child.raw
# Blocks 2.. come from the parent.
cmp <(tail -c +8193 child.raw) <("$HEXZ" cat a/v1_thin_base.st | tail -c +8193) ||
  fail "inherited blocks differ from the parent"
pass "thin child reads through its parent"

mv a/child.st a/v1_thin_base.st b/
(cd / && "$HEXZ" cat "$T/b/child.st" | cmp - "$T/child.raw") || fail "moved pair"
pass "the pair moves together (parent resolved relative to the child)"

cp b/child.st a/child.st
expect_fail_msg "a/child.st: parent v1_thin_base.st.*not found" "$HEXZ" cat a/child.st
# info still describes the child (it names the parent it needs), then fails.
expect_fail_msg "parent: +v1_thin_base.st \(id 4" "$HEXZ" info a/child.st
"$HEXZ" pack --disk child.raw --output a/v1_thin_base.st --block-size 4K --quiet
expect_fail_msg "a/child.st: parent .*v1_thin_base.st has id [0-9a-f]+ but .* expects" "$HEXZ" verify a/child.st
"$HEXZ" pack --disk child.raw --output a/v1_thin_base.st --block-size 64K --quiet
expect_fail_msg "has id" "$HEXZ" info a/child.st
echo garbage > a/v1_thin_base.st
# A parent that fails to parse is named with the snapshot that needs it.
for cmd in verify info "cat -o /dev/null"; do
  # shellcheck disable=SC2086
  expect_fail_msg "a/child.st -> a/v1_thin_base.st: not a hexz snapshot" "$HEXZ" $cmd a/child.st
done
rm a/v1_thin_base.st
mkdir a/v1_thin_base.st
expect_fail_msg "a/child.st -> a/v1_thin_base.st: is a directory" "$HEXZ" verify a/child.st
pass "missing, wrong and broken parents"
