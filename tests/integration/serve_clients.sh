#!/usr/bin/env bash
# `hexz serve` (the sandboxed worker) against real NBD clients, run as the
# unprivileged test user: nbdinfo (size, structured replies, base:allocation,
# flags, export list), nbdcopy (1 and 4 connections) equal to `hexz cat`,
# nbdinfo --map zero regions, qemu-img compare against the raw source, the
# worker's sandbox (Seccomp 2, NoNewPrivs 1), hostile clients, clean stop.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
require_test_user
require_cmd nbdinfo nbdcopy qemu-img

make_zero_image "$T/disk.img"
head -c 1M /dev/urandom >"$T/mem.img"
"$HEXZ" pack --disk "$T/disk.img" --memory "$T/mem.img" -o "$T/snap.st" -q || fail "pack"
"$HEXZ" cat "$T/snap.st" -o "$T/cat.img" || fail "hexz cat"
start_hexz_serve srv "$T/snap.st"
grep -q "nbd+unix:///disk?socket=$NBD_SOCK" "$T/srv.out" || fail "URI not printed: $(cat "$T/srv.out")"
[[ $(stat -c '%a %U' "$NBD_SOCK") == "600 $TEST_USER" ]] || fail "socket mode: $(stat -c '%a %U' "$NBD_SOCK")"
pass "hexz serve runs as $TEST_USER; socket 0600; URI printed"

status=$(cat "/proc/$WORKER_PID/status")
grep -qP '^Seccomp:\t2' <<<"$status" || fail "worker not in seccomp filter mode: $(grep Seccomp <<<"$status")"
grep -qP '^NoNewPrivs:\t1' <<<"$status" || fail "worker lacks no_new_privs"
[[ $(stat -c %U "/proc/$WORKER_PID") == "$TEST_USER" ]] || fail "worker is not $TEST_USER"
grep -qP '^CapEff:\t0+$' <<<"$status" || fail "worker has capabilities"
pass "the serving worker: Seccomp 2, NoNewPrivs 1, no capabilities, user $TEST_USER"

assert_readonly_exports
nbdcopy "$(nbd_uri memory)" "$T/mem.copy" && cmp "$T/mem.img" "$T/mem.copy" || fail "memory export content"
pass "exports disk and memory; memory equals its source"

map=$(nbdinfo --map "$(nbd_uri)") || fail "nbdinfo --map: $map"
echo "$map"
awk '$1==0' <<<"$map" | grep -q data || fail "first extent should be data: $map"
assert_zero_map "$map"
pass "nbdinfo --map reports the snapshot's zero regions as zero/hole"

nbdcopy "$(nbd_uri)" "$T/copy1.img" || fail "nbdcopy"
cmp "$T/cat.img" "$T/copy1.img" || fail "nbdcopy output differs from hexz cat"
nbdcopy --connections=4 "$(nbd_uri)" "$T/copy4.img" || fail "nbdcopy --connections=4"
cmp "$T/cat.img" "$T/copy4.img" || fail "nbdcopy --connections=4 output differs from hexz cat"
pass "nbdcopy (1 and 4 connections) equals hexz cat"

out=$(qemu-img compare -f raw "$T/disk.img" -F raw "$(nbd_uri disk)" 2>&1) || fail "qemu-img compare: $out"
grep -q 'Images are identical' <<<"$out" || fail "qemu-img compare: $out"
pass "qemu-img compare against the raw source: identical"

# Hostile clients: garbage, a truncated handshake, a READ cut off mid-request.
python3 - "$NBD_SOCK" <<'PY' || fail "hostile client script"
import socket, struct, sys
path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5); s.connect(path); return s
s = conn(); s.sendall(b"\xff" * 4096); s.close()                    # garbage
s = conn(); s.recv(18); s.sendall(b"\x00\x00"); s.close()           # half the client flags
s = conn(); hello = s.recv(18)                                      # a READ cut off mid-header
s.sendall(struct.pack(">I", 3) + b"IHAVEOPT" + struct.pack(">II", 1, 4) + b"disk")
s.recv(10)                                                          # size + flags (NO_ZEROES)
s.sendall(struct.pack(">IHHQQ", 0x25609513, 0, 0, 1, 0)[:13]); s.close()
s = conn(); s.recv(18)                                              # a request that vanishes
s.sendall(struct.pack(">I", 3) + b"IHAVEOPT" + struct.pack(">II", 1, 4) + b"disk"); s.recv(10)
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 2, 0, 1 << 20) + b"x" * 100); s.close()
PY
nbdcopy "$(nbd_uri)" "$T/copy5.img" && cmp "$T/cat.img" "$T/copy5.img" || fail "server broken after hostile clients"
kill -0 "$WORKER_PID" || fail "worker died"
pass "hostile clients (garbage, truncated handshake, cut-off requests); the server goes on serving"

stop_hexz_serve
pass "SIGTERM: clean stop, no worker and no socket left"
! grep -h 'refused syscall' "$T"/*.log || fail "the sandbox refused a system call (see above)"
