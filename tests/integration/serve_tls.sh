#!/usr/bin/env bash
# `hexz serve` over TLS (NBD_OPT_STARTTLS), the server run as the test user,
# against real clients: nbdinfo and nbdcopy with nbds:// URIs
# (tls-certificates=, tls-psk-file=), qemu-img and qemu-io with
# tls-creds-x509 and tls-creds-psk, writes through --rw --overlay, then
# hexz commit. Refusals, each clean while a client stalled inside its TLS
# handshake holds a connection and other clients keep being served: a
# plaintext client against --tls=require (NBD_REP_ERR_TLS_REQD for every
# option but STARTTLS and ABORT), a client trusting another CA, an expired
# client certificate, a certificate of another CA, a certificate whose DN
# the access file does not list, a wrong PSK, an unknown PSK identity. Also
# the usage errors: --listen beyond loopback without TLS, bad TLS inputs.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
source "$(dirname "$0")/../lib/tls.sh"
require_test_user
require_cmd nbdinfo nbdcopy qemu-img qemu-io python3
PORT_X509=21101
PORT_PSK=21102
PKI="$T/pki"
make_tls_pki "$PKI"

head -c 8M /dev/urandom >"$T/disk.img"
"$HEXZ" pack --disk "$T/disk.img" -o "$T/base.st" -q || fail "pack"

# --- usage errors ----------------------------------------------------------
expect_fail_msg 'reaches other machines.*--tls=off' "$HEXZ" serve "$T/base.st" --listen 0.0.0.0:21110
expect_fail_msg 'needs --tls-certificates DIR or --tls-psk' \
  "$HEXZ" serve "$T/base.st" --tls=require --listen 127.0.0.1:21110
expect_fail_msg 'exclude each other' "$HEXZ" serve "$T/base.st" --listen 127.0.0.1:21110 \
  --tls-certificates "$PKI/server" --tls-psk "$PKI/psk/keys.psk"
expect_fail_msg "server-cert.pem: No such file" "$HEXZ" serve "$T/base.st" \
  --listen 127.0.0.1:21110 --tls-certificates "$PKI/client"
expect_fail_msg '--tls=off does not go with' "$HEXZ" serve "$T/base.st" --tls=off \
  --tls-psk "$PKI/psk/keys.psk"
printf 'dn disk %s\n' "$CLIENT_DN" >"$T/authz"
printf 'dn\n' >"$T/authz.bad"
expect_fail_msg "'dn' rules need verified client certificates" "$HEXZ" serve "$T/base.st" \
  --listen 127.0.0.1:21110 --tls-certificates "$PKI/server" --tls-authz "$T/authz"
expect_fail_msg "authz.bad:1: no exports" "$HEXZ" serve "$T/base.st" --listen 127.0.0.1:21110 \
  --tls-certificates "$PKI/server" --tls-verify-peer --tls-authz "$T/authz.bad"
printf 'alice:xyz\n' >"$T/bad.psk"
expect_fail_msg "bad.psk:1: the key" "$HEXZ" serve "$T/base.st" --listen 127.0.0.1:21110 \
  --tls-psk "$T/bad.psk"
# An explicit --tls=off may listen anywhere (the old behaviour, on request).
start_hexz_serve open "$T/base.st" --listen 0.0.0.0:21111 --tls=off
grep -q 'nbd://0.0.0.0:21111/disk' "$T/open.out" || fail "URI: $(cat "$T/open.out")"
stop_hexz_serve

# --- X.509, client certificates, access file, --rw ---------------------------
user_dir "$T/u"
start_hexz_serve x509 "$T/base.st" --listen "127.0.0.1:$PORT_X509" --tls=require \
  --tls-certificates "$PKI/server" --tls-verify-peer --tls-authz "$T/authz" \
  --rw --overlay "$T/u/x509.ovl"
grep -q "nbds://127.0.0.1:$PORT_X509/disk" "$T/x509.out" || fail "URI: $(cat "$T/x509.out")"
X509_URI="nbds://127.0.0.1:$PORT_X509/disk?tls-certificates=$PKI/client"
QX509="tls-creds-x509,id=tls0,dir=$PKI/client,endpoint=client"
QNBD="driver=nbd,host=127.0.0.1,export=disk,tls-creds=tls0"

# A client that stops in the middle of its TLS handshake holds a connection
# through all that follows; the server must not wait for it.
python3 - "$PORT_X509" >"$T/stalled.out" 2>&1 <<'PY' &
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.recv(18)
s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 5, 0))
s.recv(20)  # the ACK of STARTTLS; then silence instead of a ClientHello
print("stalled", flush=True)
time.sleep(20)
PY
STALLED=$!
on_exit "kill $STALLED 2>/dev/null"
wait_for grep -q stalled "$T/stalled.out" || fail "the stalled client did not get its ACK"

info=$(nbdinfo "$X509_URI") || fail "nbdinfo over TLS: $info"
grep -q 'with TLS' <<<"$info" && grep -q 'export-size: 8388608' <<<"$info" &&
  grep -q 'is_read_only: false' <<<"$info" || fail "nbdinfo: $info"
pass "nbdinfo with nbds:// and tls-certificates: TLS, size, writable"
nbdcopy "$X509_URI" "$T/copy.img" && cmp "$T/disk.img" "$T/copy.img" || fail "nbdcopy over TLS"
nbdcopy --connections=4 "$X509_URI" "$T/copy4.img" && cmp "$T/disk.img" "$T/copy4.img" ||
  fail "nbdcopy over TLS, 4 connections"
pass "nbdcopy over TLS (1 and 4 connections) equals the image"
qemu-img info --object "$QX509" --image-opts "$QNBD,port=$PORT_X509" >"$T/qinfo" 2>&1 &&
  grep -q 'virtual size: 8 MiB' "$T/qinfo" || fail "qemu-img info x509: $(cat "$T/qinfo")"
qemu-io --object "$QX509" --image-opts "$QNBD,port=$PORT_X509" -c 'write -P 0x5a 1M 64k' \
  -c 'flush' >"$T/qio.out" 2>&1 || fail "qemu-io x509 write: $(cat "$T/qio.out")"
qemu-io --object "$QX509" --image-opts "$QNBD,port=$PORT_X509" -c 'read -P 0x5a 1M 64k' \
  >"$T/qio2.out" 2>&1 && ! grep -q 'verification failed' "$T/qio2.out" ||
  fail "qemu-io x509 read back: $(cat "$T/qio2.out")"
pass "qemu-img info and qemu-io write/read back with tls-creds-x509"

# Refusals. A plaintext client gets NBD_REP_ERR_TLS_REQD for everything but
# STARTTLS and ABORT (a raw client, to see the reply types themselves).
python3 - "$PORT_X509" >"$T/plain.out" 2>&1 <<'PY' || fail "plaintext client: $(cat "$T/plain.out")"
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
hello = s.recv(18, socket.MSG_WAITALL)
assert hello[:16] == b"NBDMAGICIHAVEOPT", hello
s.sendall(struct.pack(">I", 3))
def option(opt, data=b""):
    s.sendall(struct.pack(">QII", 0x49484156454F5054, opt, len(data)) + data)
    magic, o, typ, n = struct.unpack(">QIII", s.recv(20, socket.MSG_WAITALL))
    s.recv(n, socket.MSG_WAITALL) if n else b""
    return typ
go = struct.pack(">I", 4) + b"disk" + struct.pack(">H", 0)
for name, opt, data in (("LIST", 3, b""), ("STRUCTURED_REPLY", 8, b""), ("INFO", 6, go),
                        ("GO", 7, go), ("LIST_META_CONTEXT", 9, b"")):
    typ = option(opt, data)
    assert typ == 0x80000005, "%s got reply type %#x, not NBD_REP_ERR_TLS_REQD" % (name, typ)
assert option(2) == 1, "ABORT not acknowledged"
print("TLS_REQD for LIST, STRUCTURED_REPLY, INFO, GO, LIST_META_CONTEXT; ABORT acked")
PY
pass "plaintext client: $(cat "$T/plain.out")"
expect_fail_msg 'opt_go' nbdinfo "nbd://127.0.0.1:$PORT_X509/disk"
expect_fail_msg 'certificate|verif|trust|issuer' nbdinfo \
  "nbds://127.0.0.1:$PORT_X509/disk?tls-certificates=$PKI/otherca"
pass "a client that trusts another CA refuses the server"
expect_fail_msg '.' nbdinfo "nbds://127.0.0.1:$PORT_X509/disk?tls-certificates=$PKI/expired"
wait_for grep -q 'expired' "$T/x509.log" || fail "server did not log the expired certificate: $(cat "$T/x509.log")"
pass "an expired client certificate is refused (server log: expired)"
cp "$PKI/server/ca-cert.pem" "$T/foreign-ca.pem"
mkdir -p "$T/foreign" && cp "$PKI/otherca/client-"*.pem "$T/foreign/" &&
  cp "$PKI/ca/ca-cert.pem" "$T/foreign/" # trusts our CA, presents another CA's certificate
expect_fail_msg '.' nbdinfo "nbds://127.0.0.1:$PORT_X509/disk?tls-certificates=$T/foreign"
wait_for grep -q 'refusing a client certificate' "$T/x509.log" || fail "no refusal logged"
pass "a client certificate signed by another CA is refused"
expect_fail_msg 'opt_go' nbdinfo \
  "nbds://127.0.0.1:$PORT_X509/disk?tls-certificates=$PKI/intruder"
grep -q "certificate 'CN=intruder,O=hexz test' may not use export 'disk'" "$T/x509.log" ||
  fail "the DN refusal was not logged: $(cat "$T/x509.log")"
pass "a valid certificate whose DN the access file does not name gets no export"

kill -0 "$STALLED" 2>/dev/null || fail "the stalled client was dropped early"
info=$(nbdinfo "$X509_URI") || fail "nbdinfo after the refusals: $info"
pass "the server keeps serving while a client stalls in its handshake and after every refusal"
kill "$STALLED" 2>/dev/null; wait "$STALLED" 2>/dev/null
stop_hexz_serve

# --- pre-shared keys, --rw ----------------------------------------------------
start_hexz_serve psk "$T/base.st" --listen "127.0.0.1:$PORT_PSK" \
  --tls-psk "$PKI/psk/keys.psk" --rw --overlay "$T/u/psk.ovl"
PSK_URI="nbds://alice@127.0.0.1:$PORT_PSK/disk?tls-psk-file=$PKI/psk/keys.psk"
QPSK="tls-creds-psk,id=tls0,dir=$PKI/psk,username=alice,endpoint=client"
info=$(nbdinfo "$PSK_URI") || fail "nbdinfo PSK: $info"
grep -q 'with TLS' <<<"$info" || fail "nbdinfo PSK: $info"
nbdcopy "$PSK_URI" "$T/copyp.img" && cmp "$T/disk.img" "$T/copyp.img" || fail "nbdcopy PSK"
pass "nbdinfo and nbdcopy with tls-psk-file"
qemu-img info --object "$QPSK" --image-opts "$QNBD,port=$PORT_PSK" >"$T/qinfo" 2>&1 &&
  grep -q 'virtual size: 8 MiB' "$T/qinfo" || fail "qemu-img info psk: $(cat "$T/qinfo")"
qemu-io --object "$QPSK" --image-opts "$QNBD,port=$PORT_PSK" -c 'write -P 0xa5 0 64k' \
  -c 'write -z 2M 128k' -c 'flush' >"$T/qio.out" 2>&1 || fail "qemu-io psk: $(cat "$T/qio.out")"
qemu-io --object "$QPSK" --image-opts "$QNBD,port=$PORT_PSK" -c 'read -P 0xa5 0 64k' \
  -c 'read -P 0 2M 128k' >"$T/qio2.out" 2>&1 && ! grep -q 'verification failed' "$T/qio2.out" ||
  fail "qemu-io psk read back: $(cat "$T/qio2.out")"
pass "qemu-img info and qemu-io write/read back with tls-creds-psk"
expect_fail_msg '.' nbdinfo "nbds://alice@127.0.0.1:$PORT_PSK/disk?tls-psk-file=$PKI/wrongpsk/keys.psk"
sed 's/^alice:/bob:/' "$PKI/psk/keys.psk" >"$T/bob.psk"
expect_fail_msg '.' nbdinfo "nbds://bob@127.0.0.1:$PORT_PSK/disk?tls-psk-file=$T/bob.psk"
[[ $(grep -c 'refusing a client: .*(a wrong pre-shared key' "$T/psk.log") -eq 2 ]] ||
  fail "the PSK refusals were not logged: $(cat "$T/psk.log")"
nbdinfo "$PSK_URI" >/dev/null || fail "the PSK server stopped serving after the refusals"
pass "a wrong PSK and an unknown identity are refused; the server goes on"
stop_hexz_serve

# --- the writes, committed ---------------------------------------------------
"$HEXZ" commit --base "$T/base.st" --overlay "$T/u/x509.ovl" -o "$T/x509.st" >/dev/null &&
  "$HEXZ" cat "$T/x509.st" -o "$T/x509.img" || fail "commit x509 overlay"
"$HEXZ" commit --base "$T/base.st" --overlay "$T/u/psk.ovl" -o "$T/psk.st" >/dev/null &&
  "$HEXZ" cat "$T/psk.st" -o "$T/psk.img" || fail "commit psk overlay"
python3 - "$T/disk.img" "$T/x509.img" "$T/psk.img" <<'PY' || fail "committed contents differ"
import sys
base = open(sys.argv[1], "rb").read()
x = bytearray(base); x[1 << 20:(1 << 20) + 65536] = b"\x5a" * 65536
p = bytearray(base); p[0:65536] = b"\xa5" * 65536; p[2 << 20:(2 << 20) + 131072] = bytes(131072)
assert open(sys.argv[2], "rb").read() == x, "x509 overlay"
assert open(sys.argv[3], "rb").read() == p, "psk overlay"
PY
pass "hexz commit of each overlay holds exactly the writes made over TLS"
! grep -h 'refused syscall' "$T"/*.log || fail "the sandbox refused a system call (see above)"
