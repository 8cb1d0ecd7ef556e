#!/usr/bin/env bash
# hexz vm snapshot and vm resume of a real Linux guest that counts
# (tests/lib/counting_guest.sh: "tick N" on its serial console each second,
# N in /count on its ext4 root disk, synced before the tick is printed).
# - A snapshot at tick 20 with --continue: the original counts on.
# - Its resume goes on from tick 21, with no kernel boot lines, while the
#   original counts on independently (two serial logs, two disks).
# - A second snapshot of the original, thin against the first, shuts it
#   down; its disk holds the last tick; it resumes from the next tick.
# - The resumed copy, stopped and its overlay committed: the committed
#   disk's /count is the last tick it printed.
# - A paused guest is refused (and left paused).
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/qmp.sh"
source "$(dirname "$0")/../lib/qemu.sh"
source "$(dirname "$0")/../lib/counting_guest.sh"
require_cmd qemu-system-x86_64 python3

cd "$T"
export XDG_RUNTIME_DIR="$T/run"
mkdir -m 700 run
counting_guest_build "$T/g"

start_counting_guest a
a_pid=$guest_pid
wait_tick a.serial 20
"$HEXZ" vm snapshot --qmp "$T/a.qmp" -o vm1.st --continue -q || fail "vm snapshot at tick 20"
[[ $(last_tick a.serial) == 20 ]] || fail "the snapshot was not taken at tick 20: $(ticks a.serial | paste -sd' ')"
"$HEXZ" cat vm1.st >vm1.raw
[[ $(disk_count vm1.raw) == 20 ]] || fail "vm1.st's /count is '$(disk_count vm1.raw)', not 20"
wait_tick a.serial 23 60
consecutive a.serial 1
[[ -n $(boot_lines a.serial) ]] || fail "the original's log shows no boot lines (the check below would prove nothing)"
pass "vm snapshot --continue at tick 20: the disk holds 20, the original counts on (ticks 1..$(last_tick a.serial))"

resume_vm vm1.st "$T/r1.qmp" --overlay ov1
wait_tick r1.qmp.out 24 120
[[ $(ticks r1.qmp.out | head -n1) == 21 ]] || fail "the resumed guest's first tick is not 21: $(tr -d '\r' <r1.qmp.out | head -n 20)"
consecutive r1.qmp.out 21
[[ -z $(boot_lines r1.qmp.out) ]] || fail "the resumed guest booted: $(boot_lines r1.qmp.out)"
consecutive a.serial 1
(( $(last_tick a.serial) > $(last_tick r1.qmp.out) )) || fail "the original does not count on independently"
pass "vm resume: the count goes on from 21 with no boot lines, while the original counts on (at $(last_tick a.serial))"

# A paused guest is refused (and left paused). The second snapshot of the
# original: the guest is shut down afterwards.
stop_at_next_tick "$T/a.qmp" a.serial
expect_fail_msg "the guest is not running \(QEMU status: paused\)" \
  "$HEXZ" vm snapshot --qmp "$T/a.qmp" -o vm2.st --parent vm1.st
[[ $(status "$T/a.qmp") == paused ]] || fail "a refused snapshot changed the guest"
qmp "$T/a.qmp" cont >/dev/null
wait_tick a.serial $((stopped_at + 1)) 60
"$HEXZ" vm snapshot --qmp "$T/a.qmp" -o vm2.st --parent vm1.st -q || fail "vm snapshot 2"
m=$(last_tick a.serial)
for _ in $(seq 100); do kill -0 "$a_pid" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$a_pid" 2>/dev/null || fail "the original still runs after vm snapshot without --continue"
[[ $(disk_count g.raw) == "$m" ]] || fail "the original's disk holds $(disk_count g.raw), not its last tick $m"
"$HEXZ" cat vm2.st >vm2.raw
[[ $(disk_count vm2.raw) == "$m" ]] || fail "vm2.st's /count is $(disk_count vm2.raw), not $m"
"$HEXZ" info --json vm2.st | python3 -c '
import json, sys
s = json.load(sys.stdin)["streams"]
d, m = s["disk"], s["memory"]
print("# vm2.st: disk blocks from vm1.st: %d of %d; memory: %d of %d" % (
    d["parent_blocks"], d["blocks"], m["parent_blocks"], m["blocks"]))
sys.exit(0 if d["parent_blocks"] > 0 and d["parent_blocks"] + 4 >= d["blocks"] - d["zero_blocks"] else 1)
' || fail "vm2.st is not thin against vm1.st: $("$HEXZ" info vm2.st)"
pass "a second snapshot (tick $m) is thin against the first, its disk holds $m, the guest is shut down"

# The resumed copy, stopped; its overlay committed holds its last tick.
stop_and_commit "$T/r1.qmp" r1.qmp.out "$resume_pid" vm1.st ov1 c1.st
r=$stopped_at
pass "the resumed copy stopped at tick $r; hexz commit of its overlay: /count is $r (the original's disk: $m)"

# Both snapshots of the chain resume: vm2.st from m+1.
resume_vm vm2.st "$T/r2.qmp"
wait_tick r2.qmp.out $((m + 2)) 120
[[ $(ticks r2.qmp.out | head -n1) == $((m + 1)) ]] || fail "vm2.st resumed at $(ticks r2.qmp.out | head -n1), not $((m + 1))"
[[ -z $(boot_lines r2.qmp.out) ]] || fail "the resumed vm2 booted: $(boot_lines r2.qmp.out)"
kill -TERM "$resume_pid"
wait "$resume_pid" || true
[[ -z $(ls run/hexz) ]] || fail "vm resume left files: $(ls -R run/hexz)"
pass "the thin second snapshot resumes too, from tick $((m + 1))"
