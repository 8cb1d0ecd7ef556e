#!/usr/bin/env bash
# hexz vm snapshot --continue of a guest hexz vm resume serves: its disk
# server switches to a fresh overlay at the pause, so the guest is paused
# only for its memory, and the disk is written after it runs again. The
# guest is the counting guest (tests/lib/counting_guest.sh), which writes
# 192 MiB of random data into its root before the first capture.
# - The snapshot holds the count of the pause (it resumes from there); the
#   original counts on with no gap; its later ticks go to the fresh overlay,
#   whose base is the new snapshot (no frozen files are left, the snapshot
#   does not change).
# - The pause does not grow with what the guest changed: the printed pause is
#   well below the printed capture time.
# - A second capture is thin against the first (its parent), and resumes.
# - A capture that fails after the switch (its output on a full tmpfs)
#   leaves no output and no frozen files, the guest running, disk.json as it
#   was, and the guest's ticks in its overlay.
# - The control socket refuses another user.
# - At the guest's end, its overlay committed over the last snapshot holds
#   its last tick.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/qmp.sh"
source "$(dirname "$0")/../lib/qemu.sh"
source "$(dirname "$0")/../lib/counting_guest.sh"
require_cmd qemu-system-x86_64 python3
require_test_user

cd "$T"
export XDG_RUNTIME_DIR="$T/run"
mkdir -m 700 run
COUNT_CHURN_AT=9 COUNT_CHURN_MIB=192 counting_guest_build "$T/g"

start_counting_guest a
wait_tick a.serial 5
"$HEXZ" vm snapshot --qmp "$T/a.qmp" -o base.st -q || fail "vm snapshot of the booted guest"
base_tick=$(last_tick a.serial)
(( base_tick < 9 )) || fail "the booted guest was captured at tick $base_tick, after its churn"

resume_vm base.st "$T/r.qmp" --overlay ov
r_pid=$resume_pid  # (resume_vm and resume_at set resume_pid for each guest)
wait_tick r.qmp.out 10 300  # the 192 MiB were written in tick 9
disk_json() { cat run/hexz/resume-*/disk.json; }
# The guest may tick again before the command returns (the disk is written
# after it runs on): the pause fell between the ticks seen before and after.
# in_window N FROM TO: fail unless FROM <= N <= TO.
in_window() { (( $2 <= $1 && $1 <= $3 )) || fail "the snapshot's /count $1 is not a tick of the pause ($2..$3)"; }
from=$(last_tick r.qmp.out)
out=$("$HEXZ" vm snapshot --qmp "$T/r.qmp" -o s1.st --continue) || fail "vm snapshot --continue: $out"
to=$(last_tick r.qmp.out)
echo "# $out"
re='captured the guest in ([0-9.]+) s into .* the guest was paused for ([0-9.]+) s and runs on'
[[ $out =~ $re ]] || fail "no capture and pause times in: $out"
captured=${BASH_REMATCH[1]} paused=${BASH_REMATCH[2]}
python3 -c "import sys; sys.exit(0 if 2 * $paused < $captured else 1)" \
  || fail "the guest was paused for $paused s of the $captured s capture"
grep -q "^s1.st: the guest's later writes go to a fresh $T/ov, over this snapshot" <<<"$out" \
  || fail "the summary does not name the fresh overlay: $out"
"$HEXZ" info s1.st | grep -q "^parent: *base.st " || fail "s1.st is not thin against base.st"
grep -q "\"snapshot\": *\"$T/s1.st\"" <<<"$(disk_json)" || fail "disk.json does not name s1.st: $(disk_json)"
[[ -z $(ls | grep frozen) ]] || fail "frozen files left: $(ls)"
"$HEXZ" cat s1.st >s1.raw
k1=$(disk_count s1.raw)
in_window "$k1" "$from" "$to"
"$HEXZ" verify s1.st >/dev/null || fail "verify s1.st"
wait_tick r.qmp.out $((k1 + 3)) 60
consecutive r.qmp.out $((base_tick + 1))
"$HEXZ" cat s1.st | cmp - s1.raw || fail "the guest's later writes changed s1.st"
pass "vm snapshot --continue: paused $paused s of $captured s, /count = $k1, the guest counts on"

# s1.st resumes from the tick of the pause.
resume_at s1.st "$T/q.qmp" $((k1 + 1))
kill -TERM "$resume_pid"
wait "$resume_pid" || true
pass "s1.st resumes at $((k1 + 1))"

# A second capture: thin against the first, holding only what changed since.
from=$(last_tick r.qmp.out)
out=$("$HEXZ" vm snapshot --qmp "$T/r.qmp" -o s2.st --continue) || fail "second vm snapshot --continue: $out"
to=$(last_tick r.qmp.out)
"$HEXZ" info s2.st | grep -q "^parent: *s1.st " || fail "s2.st is not thin against s1.st: $("$HEXZ" info s2.st)"
(( $(stat -c %s s2.st) < $(stat -c %s s1.st) / 2 )) || fail "s2.st is not much smaller than s1.st"
"$HEXZ" cat s2.st >s2.raw
k2=$(disk_count s2.raw)
in_window "$k2" "$from" "$to"
resume_at s2.st "$T/q2.qmp" $((k2 + 1))
kill -TERM "$resume_pid"
wait "$resume_pid" || true
pass "a second --continue capture is thin against the first (/count = $k2) and resumes"

# A capture that fails after the switch: its output on a full small tmpfs.
mkdir full
mount -t tmpfs -o size=1M tmpfs full || skip "cannot mount a tmpfs"
on_exit "umount $T/full"
before=$(disk_json)
expect_fail_msg "full/s3.st" "$HEXZ" vm snapshot --qmp "$T/r.qmp" -o full/s3.st --continue
[[ ! -e full/s3.st && -z $(ls full) ]] || fail "the failed capture left: $(ls -a full)"
[[ -z $(ls | grep frozen) ]] || fail "frozen files left: $(ls)"
[[ $(disk_json) == "$before" ]] || fail "disk.json changed: $(disk_json)"
[[ $(status "$T/r.qmp") == running ]] || fail "the guest is not running after the failed capture"
k3=$(last_tick r.qmp.out)
wait_tick r.qmp.out $((k3 + 2)) 60
consecutive r.qmp.out $((base_tick + 1))
pass "a capture that failed after the switch: no output, no frozen files, the guest runs on"

# The control socket refuses another user (SO_PEERCRED; the socket and its
# directories opened for the test only).
ctl=$(ls -d run/hexz/resume-*/ | head -n1)control
chmod 711 run run/hexz "$(dirname "$ctl")"
chmod 666 "$ctl"
said=$(as_user python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print(s.recv(4096).decode("latin-1"))' "$T/$ctl" 2>&1)
chmod 600 "$ctl"
chmod 700 run run/hexz "$(dirname "$ctl")"
grep -q "refused a connection from uid $(id -u "$TEST_USER"); only the owner of the resumed guest (uid 0) may control it" <<<"$said" \
  || fail "the control socket did not refuse $TEST_USER: $said"
pass "the control socket refuses $TEST_USER"

# The guest's end: its overlay over the last snapshot holds its last tick.
stop_and_commit "$T/r.qmp" r.qmp.out "$r_pid" s2.st ov c.st
pass "the guest's overlay, committed over s2.st, holds its last tick $stopped_at"
