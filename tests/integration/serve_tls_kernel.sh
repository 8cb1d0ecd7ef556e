#!/usr/bin/env bash
# The kernel's NBD client over TLS, in a QEMU guest (this machine's kernel has
# no NBD driver): `hexz serve --rw --overlay --tls-certificates
# --tls-verify-peer --tls-authz` runs on the host as the test user, and the
# guest's nbd-client (Debian's, built with GnuTLS) attaches /dev/nbd0 with
# -certfile/-keyfile/-cacertfile/-tlshostname. The guest reads the whole
# device back (sha256 equal to the image), writes a block, and detaches; a
# client certificate whose DN the access file does not name cannot attach;
# then hexz commit of the overlay holds exactly that write.
# See tests/qemu/guest_serve_tls.sh.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
source "$(dirname "$0")/../lib/qemu.sh"
source "$(dirname "$0")/../lib/tls.sh"
require_test_user
require_cmd nbd-client sha256sum python3
qemu_require
ldd "$(command -v nbd-client)" | grep -q libgnutls || skip "nbd-client is built without GnuTLS"
qemu_fetch_kernel
PORT=21130
PKI=$T/pki
make_tls_pki "$PKI"

head -c 4M /dev/urandom >"$T/disk.img"
"$HEXZ" pack --disk "$T/disk.img" -o "$T/base.st" -q || fail "pack"
printf 'dn disk %s\n' "$CLIENT_DN" >"$T/authz"
user_dir "$T/u"
start_hexz_serve tls "$T/base.st" --listen "127.0.0.1:$PORT" --tls-certificates "$PKI/server" \
  --tls-verify-peer --tls-authz "$T/authz" --rw --overlay "$T/u/disk.ovl"

g=$T/guest
qemu_initramfs_new "$g"
qemu_add_modules "$g" "${QEMU_NET_MODULES[@]}" nbd
qemu_add_binary "$g" "$(command -v nbd-client)" /hexz/bin/nbd-client
mkdir -p "$g/hexz/client" "$g/hexz/intruder"
cp "$PKI"/client/*.pem "$g/hexz/client/"
cp "$PKI"/intruder/*.pem "$g/hexz/intruder/"
{
  echo "SERVER=10.0.2.2"
  echo "PORT=$PORT"
  echo "SHA=$(sha256sum <"$T/disk.img" | cut -d' ' -f1)"
} >"$g/hexz/env"
rc=0
qemu_run "$g" "$HEXZ_SOURCE_DIR/tests/qemu/guest_serve_tls.sh" "${HEXZ_QEMU_TIMEOUT:-240}" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 || rc=$?
[[ $rc -eq 0 ]] || fail "guest checks failed (status $rc); server log: $(cat "$T/tls.log")"
grep -q "certificate 'CN=intruder,O=hexz test' may not use export 'disk'" "$T/tls.log" ||
  fail "the server did not log the refused DN: $(cat "$T/tls.log")"
pass "the server refused the certificate the access file does not name"
stop_hexz_serve

"$HEXZ" commit --base "$T/base.st" --overlay "$T/u/disk.ovl" -o "$T/new.st" >/dev/null &&
  "$HEXZ" cat "$T/new.st" -o "$T/new.img" || fail "commit"
python3 - "$T/disk.img" "$T/new.img" <<'PY' || fail "the committed snapshot does not hold exactly the guest's write"
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[1 << 20:(1 << 20) + 4096] = b"\xa5" * 4096
assert open(sys.argv[2], "rb").read() == d
PY
pass "the block the guest wrote over TLS is in the committed snapshot, nothing else changed"
! grep -h 'refused syscall' "$T"/*.log || fail "the sandbox refused a system call (see above)"
