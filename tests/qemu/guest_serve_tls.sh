# Runs inside the QEMU guest as root (busybox sh), for
# tests/integration/serve_tls_kernel.sh: nbd-client attaches the host's
# `hexz serve` export over TLS with a client certificate.
. /hexz/guest_lib.sh
. /hexz/env

die() { echo "FAIL: $*"; dmesg | tail -n 20; exit 1; }
tls_args() { echo "-certfile /hexz/$1/client-cert.pem -keyfile /hexz/$1/client-key.pem -cacertfile /hexz/$1/ca-cert.pem -tlshostname localhost"; }

[ -e /dev/nbd0 ] || die "nbd.ko did not load: no /dev/nbd0"
# A certificate of the right CA whose DN the access file does not name.
if nbd-client $SERVER $PORT /dev/nbd1 -N disk $(tls_args intruder) >/tmp/intruder 2>&1; then
  bad "nbd-client attached with the intruder's certificate"
  nbd-client -d /dev/nbd1 >/dev/null 2>&1
else
  ok "nbd-client with a certificate the access file does not name is refused: $(tail -n1 /tmp/intruder)"
fi

out=$(nbd-client $SERVER $PORT /dev/nbd0 -N disk $(tls_args client) 2>&1) ||
  die "nbd-client over TLS failed: $out"
ok "nbd-client attached /dev/nbd0 over TLS"
[ "$(cat /sys/block/nbd0/size)" = 8192 ] && ok "/dev/nbd0 has 4 MiB" ||
  bad "size of /dev/nbd0: $(cat /sys/block/nbd0/size) sectors"
sum=$(sha256sum </dev/nbd0 | cut -d' ' -f1)
[ "$sum" = "$SHA" ] && ok "the whole device reads back with the image's sha256" ||
  bad "sha256 of /dev/nbd0 is $sum, expected $SHA"
dd if=/dev/zero bs=4096 count=1 2>/dev/null | tr '\000' '\245' >/tmp/block
dd if=/tmp/block of=/dev/nbd0 bs=4096 seek=256 count=1 conv=fsync 2>/dev/null &&
  ok "wrote a block through /dev/nbd0 (fsync)" || bad "write through /dev/nbd0 failed"
nbd-client -d /dev/nbd0 >/dev/null 2>&1 || bad "nbd-client -d failed"
i=0
while [ $i -lt 50 ] && [ -e /sys/block/nbd0/pid ]; do sleep 0.1; i=$((i + 1)); done
no_device_connected && ok "no /dev/nbdN left connected" || bad "a device is still connected"

echo "# guest checks done, $fails failed"
[ $fails -eq 0 ]
