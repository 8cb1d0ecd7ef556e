#!/usr/bin/env bash
# hexz vm resume: a guest captured by hexz vm snapshot runs again. The disk
# is served read-write by hexz (copy-on-write into --overlay, or an
# ephemeral overlay), QEMU starts from the recorded arguments with the
# recorded -drive on the NBD export and -incoming from the memory stream,
# and hexz continues it once the migration has completed. The guest is the
# firmware alone (as in vm_snapshot_qcow2), and its disk writes are made
# through QEMU's block layer (the monitor's qemu-io): they land in the
# overlay, which hexz commit turns into a snapshot. A resumed guest is
# snapshotted again, thin against the first, and resumes too. Clear
# errors: a snapshot without a QEMU memory stream or metadata, and a QEMU
# that cannot load the stream (stopped, with the server, nothing left).
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/qmp.sh"
require_cmd qemu-system-x86_64 qemu-img qemu-io python3 cmp

cd "$T"
export XDG_RUNTIME_DIR="$T/run"
mkdir -m 700 run
qemu-img create -q -f qcow2 disk.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x5a 1M 3M' disk.qcow2 >/dev/null
qemu-img convert -O raw disk.qcow2 disk.raw


qemu-system-x86_64 -machine pc -accel tcg -m 32 -nodefaults -display none -no-user-config \
  -drive file=disk.qcow2,if=none,id=d0,format=qcow2 -device virtio-blk-pci,drive=d0 \
  -qmp "unix:$T/a.qmp,server=on,wait=off" >a.log 2>&1 &
vm_pid=$!
on_exit "kill -9 $vm_pid"
wait_for test -S "$T/a.qmp" || fail "QEMU did not start: $(cat a.log)"
"$HEXZ" vm snapshot --qmp "$T/a.qmp" -o vm.st -q || fail "vm snapshot"
info=$("$HEXZ" info vm.st)
grep -q "qemu.disk = d0" <<<"$info" || fail "qemu.disk: $info"
grep -q "qemu.program = qemu-system-x86_64" <<<"$info" || fail "qemu.program: $info"

# Resume into a kept overlay; the guest runs; its disk writes land there.
resume_vm vm.st "$T/r.qmp" --overlay ov
[[ $(status "$T/r.qmp") == running ]] || fail "the resumed guest is $(status "$T/r.qmp")"
hmp "$T/r.qmp" "qemu-io d0 \\\"write -P 0x77 8M 64k\\\"" >/dev/null || fail "guest write"
# The recorded machine type, not the alias (-machine pc would be the newest
# type of whichever QEMU runs).
qpid=$(sed -n 's/^hexz: resumed .*(QEMU pid \([0-9]*\),.*/\1/p' "$T/r.qmp.out")
tr '\0' ' ' <"/proc/$qpid/cmdline" | grep -q -- "-machine type=pc-i440fx-[0-9.]* " \
  || fail "the resumed QEMU's -machine is not the recorded type: $(tr '\0' ' ' <"/proc/$qpid/cmdline")"
pass "vm resume: QEMU loads the memory stream and the guest runs (QMP query-status: running), on the recorded machine type"

# Snapshot the resumed guest again: its disk is served by hexz, so the
# snapshot is thin against the one it was resumed from, without --parent.
"$HEXZ" vm snapshot --qmp "$T/r.qmp" -o vm2.st --continue -q || fail "vm snapshot 2"
cp disk.raw expected.raw
qemu-io -f raw -c 'write -P 0x77 8M 64k' expected.raw >/dev/null
"$HEXZ" cat vm2.st | cmp - expected.raw || fail "vm2.st's disk lacks the resumed guest's write"
[[ $("$HEXZ" info --json vm2.st | python3 -c 'import json,sys; d=json.load(sys.stdin)["streams"]["disk"]; print(d["parent_blocks"] > 0)') == True ]] \
  || fail "vm2.st is not thin against vm.st: $("$HEXZ" info vm2.st)"
pass "a resumed guest is snapshotted again, thin against the snapshot it was resumed from"

# QEMU's exit ends vm resume, which stops the server (flushing the overlay).
qmp "$T/r.qmp" quit >/dev/null 2>&1 || true
wait "$resume_pid" || fail "vm resume exited with $?: $(cat "$T/r.qmp.out")"
# The --continue capture switched the guest to a fresh overlay over vm2.st.
grep -q "its disk writes are in ov (over $T/vm2.st)" "$T/r.qmp.out" || fail "exit message: $(cat "$T/r.qmp.out")"
"$HEXZ" commit --base vm2.st --overlay ov -o committed.st >/dev/null || fail "commit of the overlay"
"$HEXZ" cat committed.st | cmp - expected.raw || fail "the committed disk lacks the guest's write"
[[ -z $(ls run/hexz) ]] || fail "vm resume left files: $(ls -R run/hexz)"
pass "the guest's disk writes land in the overlay; hexz commit of it works; nothing left behind"

# The second snapshot of the chain resumes too, into an ephemeral overlay.
resume_vm vm2.st "$T/r2.qmp"
grep -q "ephemeral: removed when QEMU exits" "$T/r2.qmp.out" || fail "$(cat "$T/r2.qmp.out")"
[[ $(status "$T/r2.qmp") == running ]] || fail "the resumed vm2 is $(status "$T/r2.qmp")"
kill -TERM "$resume_pid"
wait "$resume_pid"
[[ -z $(ls run/hexz) ]] || fail "the ephemeral overlay was left: $(ls -R run/hexz)"
pass "the thin second snapshot resumes; SIGTERM stops QEMU and the server; the ephemeral overlay goes"

# Clear errors.
"$HEXZ" cat vm.st --stream memory >mem.bin
"$HEXZ" pack --disk disk.raw -o diskonly.st -q
"$HEXZ" pack --disk disk.raw --memory mem.bin -o nometa.st -q
"$HEXZ" pack --disk disk.raw --memory mem.bin --memory-kind raw -o raw.st -q
expect_fail_msg "diskonly.st has no memory stream \(it holds only a disk\)" "$HEXZ" vm resume diskonly.st
expect_fail_msg "nometa.st has no metadata section" "$HEXZ" vm resume nometa.st
expect_fail_msg "raw.st: its memory stream is raw \(memory.kind\), not a QEMU migration stream" \
  "$HEXZ" vm resume raw.st
cp vm.st badmeta.st
python3 - <<'PY'
d = bytearray(open("badmeta.st", "rb").read()); i = d.rindex(b"HEXZMETA") + 20; d[i] ^= 0xff
open("badmeta.st", "wb").write(d)
PY
expect_fail_msg "badmeta.st.*(metadata|checksum)" "$HEXZ" vm resume badmeta.st
[[ -z $(ls run/hexz 2>/dev/null) ]] || fail "a refused resume left files"
# A QEMU that cannot load the stream (different memory size): QEMU's own
# message, and QEMU and the server are gone.
expect_fail_msg "QEMU could not resume the guest of vm.st: .*qemu-system-x86_64: Size mismatch: pc.ram.*load of migration failed" \
  "$HEXZ" vm resume vm.st --overlay ov3 -- -m 64
! pgrep -f "qemu-system.*$T/run/" >/dev/null || fail "a QEMU was left running"
[[ -z $(ls run/hexz) ]] || fail "a failed resume left files: $(ls -R run/hexz)"
# A damaged block of the memory stream (hexz feeds the stream to QEMU and
# checks each block): the error names the block; nothing is left running.
python3 - vm.st badmem.st <<'PY'
import sys, struct
b = bytearray(open(sys.argv[1], "rb").read())
index = struct.unpack_from("<Q", b, len(b) - 64 + 8)[0]
b[(64 + index) // 2] ^= 0x40  # the memory's blocks fill most of the file
open(sys.argv[2], "wb").write(b)
PY
expect_fail_msg "badmem.st: memory block [0-9]+ checksum mismatch" "$HEXZ" verify badmem.st
expect_fail_msg "QEMU could not resume the guest of badmem.st: .*badmem.st: memory block [0-9]+ checksum mismatch" \
  "$HEXZ" vm resume badmem.st --overlay ov4
! pgrep -f "qemu-system.*$T/run/" >/dev/null || fail "a QEMU was left running after a damaged stream"
[[ -z $(ls run/hexz) ]] || fail "a failed resume left files: $(ls -R run/hexz)"
# A QEMU older than the one that wrote the stream is refused before the
# stream is fed; so is a QEMU program that cannot run. The old QEMU is a
# stand-in that greets over QMP as QEMU 1.0.0 (hexz reads the version from
# the greeting) and writes down every byte that reaches its fd 3.
cat >oldqemu <<'PY'
#!/usr/bin/env python3
import json, os, select, socket, sys
open("oldqemu.pid", "w").write(f"{os.getpid()}\n")
path = next(a for a in sys.argv if a.startswith("unix:")).split(",")[0][5:]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(1)
conn, _ = srv.accept()
conn.sendall(b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 1}, '
             b'"package": ""}, "capabilities": []}}\r\n')
got = 0
with open("oldqemu.fed", "w") as log:
    while True:
        r, _, _ = select.select([conn, 3], [], [], 30)
        if not r:
            break
        if conn in r:
            data = conn.recv(4096)
            if not data:
                break
            for line in data.splitlines():
                if b"qmp_capabilities" in line:
                    conn.sendall(b'{"return": {}}\r\n')
        if 3 in r:
            data = os.read(3, 65536)
            if not data:
                break
            got += len(data)
        log.seek(0)
        log.write(f"{got}\n")
        log.flush()
PY
chmod +x oldqemu
rm -f oldqemu.fed
expect_fail_msg "hexz vm resume: vm.st: its memory stream was written by QEMU [0-9]+\.[0-9]+\.[0-9]+, and ./oldqemu is QEMU 1.0.0, which cannot load the migration stream of a newer QEMU" \
  "$HEXZ" vm resume vm.st --qemu ./oldqemu
[[ -f oldqemu.fed ]] || fail "the stand-in QEMU was not started (hexz must check the version from its QMP greeting)"
[[ $(cat oldqemu.fed) == 0 ]] || fail "an older QEMU was fed $(cat oldqemu.fed) bytes of the stream"
! kill -0 "$(cat oldqemu.pid)" 2>/dev/null || fail "the refused QEMU was left running"
expect_fail_msg "cannot run the QEMU program $T/nosuch-qemu \(not found, or not executable\); name it with --qemu" \
  "$HEXZ" vm resume vm.st --qemu "$T/nosuch-qemu"
[[ -z $(ls run/hexz) ]] || fail "a refused resume left files: $(ls -R run/hexz)"
pass "no QEMU memory stream, no or a damaged metadata section, a failed load, a damaged memory block, an older QEMU and a missing one are clear errors"
