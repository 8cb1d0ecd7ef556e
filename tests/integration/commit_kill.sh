#!/usr/bin/env bash
# While a commit runs, a writer of its overlay is refused with a message
# that names the commit and its pid. A `hexz commit` killed with SIGKILL
# leaves no temporary output
# (.NAME.tmp-XXXXXX): its watchdog removes the file it had open, and only
# that file (another file of the same name pattern stays). The overlay and
# the base stay byte-identical.
source "$(dirname "$0")/../lib/common.sh"
TOOL="$HEXZ_BUILD_DIR/tests/hexz_overlay_write"
[[ -x "$TOOL" ]] || skip "test tool $TOOL is not built"
cd "$T"
mkdir out

# A slow commit: 48 MiB of changed, barely compressible blocks at zstd -19.
seq 1 2000000 >disk.img && truncate -s 48M disk.img
"$HEXZ" pack --disk disk.img -o base.st -q || fail "pack"
head -c 48M /dev/urandom | base64 -w 0 | head -c 48M >new.img
"$TOOL" base.st o.ovl diff:new.img || fail "writing the overlay"
sums=$(sha256sum base.st o.ovl o.ovl.meta)
echo "not ours" >out/.new.st.tmp-Zzzzzz   # a foreign file of the same pattern

"$HEXZ" commit --base base.st --overlay o.ovl -o out/new.st --compression zstd --level 19 \
  --threads 1 -q &
pid=$!
on_exit "kill -9 $pid"
wait_for bash -c 'ls -A out | grep -v Zzzzzz | grep -q "^\.new\.st\.tmp-"' ||
  fail "the commit did not create its temporary file"
# A writer refused meanwhile names the commit, not "another read-write mount".
expect_fail_msg "overlay o.ovl is in use by a reader \(hexz commit, overlay info or overlay verify\), pid $pid \(.*hexz commit --base base.st --overlay o.ovl" \
  "$TOOL" base.st o.ovl
pass "a writer refused during a commit names the commit and its pid"
kill -9 "$pid"
wait "$pid" 2>/dev/null
wait_for bash -c '! ls -A out | grep -v Zzzzzz | grep -q "^\.new\.st\.tmp-"' ||
  fail "SIGKILL left the temporary output: $(ls -A out)"
[[ -e out/.new.st.tmp-Zzzzzz ]] || fail "a file the commit did not create was removed"
[[ ! -e out/new.st ]] || fail "a killed commit left out/new.st"
[[ "$(sha256sum base.st o.ovl o.ovl.meta)" == "$sums" ]] || fail "the base or the overlay changed"
pass "commit killed with SIGKILL: its temporary output is removed, nothing else"
