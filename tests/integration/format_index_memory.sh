#!/usr/bin/env bash
# Opening a snapshot costs the memory FORMAT.md promises: 24 bytes per block
# of index, not a second copy of the raw index beside the decoded entries. A
# legal snapshot with a 256 MiB index (11 million zero blocks; a sparse file of
# a few KiB on disk) is opened by `hexz info` and `hexz verify`, and their
# peak RSS (/usr/bin/time) must stay under the index size plus 48 MiB for the
# program itself. Before the fix they peaked at twice the index size.
source "$(dirname "$0")/../lib/common.sh"
[[ -x /usr/bin/time ]] || skip "/usr/bin/time is not installed (package 'time')"
tool="$HEXZ_BUILD_DIR/tests/hexz_sparse_index"
[[ -x "$tool" ]] || fail "$tool is not built"

cd "$T"
index_mib=256
blocks=$("$tool" huge.st "$index_mib") || fail "hexz_sparse_index failed"
echo "huge.st: $blocks blocks, $(du -k huge.st | cut -f1) KiB on disk"
[[ $(du -k huge.st | cut -f1) -lt 1024 ]] || skip "the filesystem under $T does not keep holes"

limit_kib=$(( (index_mib + 48) * 1024 ))
for cmd in info verify; do
  /usr/bin/time -f %M -o "rss-$cmd" "$HEXZ" "$cmd" huge.st > "out-$cmd" 2>&1 ||
    fail "hexz $cmd of a legal sparse index failed: $(cat "out-$cmd")"
  rss=$(tail -n1 "rss-$cmd")
  echo "hexz $cmd: peak RSS $rss KiB (limit $limit_kib KiB)"
  [[ $rss -le $limit_kib ]] || fail "hexz $cmd peaked at $rss KiB for a $index_mib MiB index"
done
grep -q "$blocks" out-info || fail "info does not show the $blocks blocks: $(cat out-info)"
pass "a $index_mib MiB index opens within 24 bytes per block"
