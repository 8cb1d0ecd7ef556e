#!/usr/bin/env bash
# Clients that never read their replies must not delay other clients of
# `hexz serve`: five raw NBD clients each pipeline eight 32 MiB reads and then
# read nothing (together they hold more than the server's 256 MiB budget),
# while qemu-io reads 64 KiB, and nbdinfo asks for the size; both must answer
# at once, not after the stuck clients' 60 s send timeout.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
require_test_user
require_cmd python3 qemu-io nbdinfo

head -c 32M /dev/urandom >"$T/disk.img"
"$HEXZ" pack --disk "$T/disk.img" -o "$T/snap.st" -q || fail "pack"
start_hexz_serve srv "$T/snap.st"

# The stuck clients: fixed newstyle, NBD_OPT_EXPORT_NAME "disk" (simple
# replies), 8 reads of 32 MiB each, then they hold the sockets and sleep.
python3 - "$NBD_SOCK" "$T/stuck.ready" <<'PY' &
import socket, struct, sys, time
path, ready = sys.argv[1], sys.argv[2]
socks = []
for i in range(5):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    hello = b""
    while len(hello) < 18:
        hello += s.recv(18 - len(hello))
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 4) + b"disk")
    info = b""
    while len(info) < 10:
        info += s.recv(10 - len(info))
    for h in range(8):
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, h, 0, 32 << 20))
    socks.append(s)
open(ready, "w").close()
time.sleep(120)
PY
stuck=$!
on_exit "kill $stuck"
wait_for test -e "$T/stuck.ready" || fail "the stuck clients did not connect"
sleep 2   # let them fill their budgets and block in sending

start=$(date +%s%N)
out=$(timeout 50 qemu-io -f raw -r -c 'read -v 0 16' "$(nbd_uri disk)" 2>&1) ||
  fail "qemu-io next to stuck clients: $out"
took=$((($(date +%s%N) - start) / 1000000))
want=$(head -c 16 "$T/disk.img" | od -An -tx1 | tr -s ' ' | sed 's/^ //')
grep -q "$want" <<<"$(tr -s ' ' <<<"$out")" || fail "qemu-io read wrong data: $out (want $want)"
((took < 10000)) || fail "a good client waited $took ms behind clients that do not read"
echo "qemu-io answered in $took ms"
start=$(date +%s%N)
timeout 50 nbdinfo --size "$(nbd_uri disk)" | grep -qx 33554432 || fail "nbdinfo --size"
took=$((($(date +%s%N) - start) / 1000000))
((took < 10000)) || fail "nbdinfo waited $took ms behind clients that do not read"
pass "clients that never read their replies do not delay others"
