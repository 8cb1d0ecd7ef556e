#!/usr/bin/env bash
# hexz vm snapshot of a guest whose disk hexz serves (one started by
# hexz vm resume): the disk as of the pause comes from the server's base
# and overlay (flushed at the pause), not through QEMU's NBD export. The
# guest is the counting guest (tests/lib/counting_guest.sh).
# - With --continue: the snapshot is thin against the base the guest was
#   resumed from (the overlay's changed blocks compressed, the rest
#   references), holds the tick of the pause, and the guest counts on into
#   its overlay (a fresh one over the new snapshot, see vm_continue.sh)
#   without touching the capture.
# - --parent is refused for such a guest (the base is the parent), and so
#   is the guest's own overlay as the output.
# - That snapshot resumes (a chain of two), and its guest is snapshotted
#   with --standalone: every block, the base's copied without
#   recompression; it opens and resumes with the base gone.
# - The first resumed guest, stopped: its overlay (switched to a fresh one
#   over s1.st at the --continue capture) committed over s1.st holds its
#   last tick.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/qmp.sh"
source "$(dirname "$0")/../lib/qemu.sh"
source "$(dirname "$0")/../lib/counting_guest.sh"
require_cmd qemu-system-x86_64 python3

cd "$T"
export XDG_RUNTIME_DIR="$T/run"
mkdir -m 700 run
counting_guest_build "$T/g"
# streams SNAPSHOT: "disk PARENT_BLOCKS BLOCKS ZERO_BLOCKS memory PARENT_BLOCKS BLOCKS".
streams() {
  "$HEXZ" info --json "$1" | python3 -c '
import json, sys
s = json.load(sys.stdin)["streams"]; d, m = s["disk"], s["memory"]
print("disk", d["parent_blocks"], d["blocks"], d["zero_blocks"], "memory", m["parent_blocks"], m["blocks"])'
}

start_counting_guest a
wait_tick a.serial 5
"$HEXZ" vm snapshot --qmp "$T/a.qmp" -o base.st -q || fail "vm snapshot of the booted guest"
base_tick=$(last_tick a.serial)

resume_vm base.st "$T/r.qmp" --overlay ov
r_pid=$resume_pid  # (resume_vm and resume_at set resume_pid for each guest)
wait_tick r.qmp.out $((base_tick + 3)) 120
from=$(last_tick r.qmp.out)
out=$("$HEXZ" vm snapshot --qmp "$T/r.qmp" -o s1.st --continue) || fail "vm snapshot --continue: $out"
to=$(last_tick r.qmp.out)  # the guest may tick before the disk is written
echo "# $out"
grep -q "^s1.st: the disk as of the pause from hexz vm resume's overlay $T/ov over $T/base.st: [0-9]* of [0-9]* blocks rewritten, the rest referenced in it (thin)" <<<"$out" \
  || fail "the summary does not name the served disk: $out"
read -r _ dpar dblk dzero _ mpar mblk < <(streams s1.st)
echo "# s1.st: disk blocks in base.st $dpar of $dblk ($dzero zero); memory $mpar of $mblk"
(( dpar > 0 && dpar + 8 >= dblk - dzero )) || fail "s1.st is not thin against base.st: $("$HEXZ" info s1.st)"
"$HEXZ" info s1.st | grep -q "^parent: *base.st " || fail "s1.st does not name base.st: $("$HEXZ" info s1.st)"
"$HEXZ" cat s1.st >s1.raw
k1=$(disk_count s1.raw)
(( from <= k1 && k1 <= to )) || fail "s1.st's /count is $k1, not a tick of the pause ($from..$to)"
wait_tick r.qmp.out $((k1 + 3)) 60
consecutive r.qmp.out $((base_tick + 1))
"$HEXZ" verify s1.st >/dev/null || fail "verify s1.st"
"$HEXZ" cat s1.st | cmp - s1.raw || fail "the guest's later writes changed s1.st"
pass "vm snapshot --continue of a hexz-served guest: thin against its base, /count = $k1, the guest counts on"

expect_fail_msg "--parent base.st: the guest's disk is served by hexz vm resume from $T/s1.st.*leave out --parent" \
  "$HEXZ" vm snapshot --qmp "$T/r.qmp" -o err.st --parent base.st
expect_fail_msg "ov: is the overlay of the guest's disk \($T/ov\); choose another --output" \
  "$HEXZ" vm snapshot --qmp "$T/r.qmp" -o ov
[[ $(status "$T/r.qmp") == running && ! -e err.st ]] || fail "a refused snapshot changed something"

# The chain s1.st -> base.st resumes; its guest is snapshotted standalone.
resume_at s1.st "$T/r2.qmp" $((k1 + 1))
r2_pid=$resume_pid
[[ -z $(boot_lines r2.qmp.out) ]] || fail "the resumed s1.st booted: $(boot_lines r2.qmp.out)"
out=$("$HEXZ" vm snapshot --qmp "$T/r2.qmp" -o s2.st --standalone) || fail "vm snapshot --standalone: $out"
k2=$(last_tick r2.qmp.out)
echo "# $out"
grep -q "^s2.st: the disk as of the pause .*: \([0-9]*\) of [0-9]* blocks rewritten, the rest copied without recompression (standalone)" <<<"$out" \
  || fail "summary: $out"
wait "$r2_pid" || fail "vm resume of s1.st exited with $?"
read -r _ dpar dblk dzero _ mpar mblk < <(streams s2.st)
(( dpar == 0 && mpar == 0 )) || fail "s2.st is not standalone: $("$HEXZ" info s2.st)"
"$HEXZ" info s2.st | grep -q "^parent: *none" || fail "s2.st names a parent: $("$HEXZ" info s2.st)"
pass "the chain s1.st -> base.st resumes at $((k1 + 1)); vm snapshot --standalone of its guest at $k2"

# The first resumed guest, stopped; its overlay holds its last tick.
stop_and_commit "$T/r.qmp" r.qmp.out "$r_pid" s1.st ov c.st
r=$stopped_at
pass "the guest that ran on after the capture: its overlay, committed, holds its last tick $r"

# With the base gone, the standalone snapshot opens, verifies and resumes.
mkdir away && mv base.st s1.st away/
"$HEXZ" verify s2.st >/dev/null || fail "verify s2.st without its base"
"$HEXZ" cat s2.st >s2.raw
[[ $(disk_count s2.raw) == "$k2" ]] || fail "s2.st's /count is $(disk_count s2.raw), not $k2"
resume_at s2.st "$T/r3.qmp" $((k2 + 1))
kill -TERM "$resume_pid"
wait "$resume_pid" || true
[[ -z $(ls run/hexz) ]] || fail "vm resume left files: $(ls -R run/hexz)"
pass "the standalone snapshot verifies and resumes (from $((k2 + 1))) with its base gone"
