#!/usr/bin/env bash
# `hexz serve --rw --overlay` as the test user: qemu-io writes patterns and
# reads them back verified; write-zeroes and trim; after hexz serve stops
# (flushing the overlay), `hexz commit` of the overlay contains exactly the
# writes. Also the usage errors around --rw/--overlay.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
require_test_user
require_cmd qemu-io nbdinfo

head -c 8M /dev/urandom >"$T/disk.img"
"$HEXZ" pack --disk "$T/disk.img" -o "$T/base.st" -q || fail "pack"

expect_fail_msg '--overlay goes with --rw' "$HEXZ" serve "$T/base.st" --overlay "$T/x.ovl"
expect_fail_msg '--rw needs --overlay' "$HEXZ" serve "$T/base.st" --rw
expect_fail_msg "invalid size '1X'" "$HEXZ" serve "$T/base.st" --cache-size 1X
[[ ! -e "$T/x.ovl" ]] || fail "--overlay without --rw created the overlay"

user_dir "$T/u"
start_hexz_serve rw "$T/base.st" --rw --overlay "$T/u/disk.ovl"
info=$(nbdinfo "$(nbd_uri)") || fail "nbdinfo: $info"
grep -q 'is_read_only: false' <<<"$info" && grep -q 'can_zero: true' <<<"$info" &&
  grep -q 'can_trim: true' <<<"$info" || fail "rw flags: $info"
pass "the --rw export is writable (can_zero, can_trim)"

U="$(nbd_uri disk)"
qemu-io -f raw "$U" -c 'write -P 0xa5 0 64k' -c 'write -P 0x5a 1M 4k' -c 'write -P 0x3c 3000 1000' \
  -c 'write -z 2M 128k' -c 'flush' >"$T/qio.out" 2>&1 || fail "qemu-io write: $(cat "$T/qio.out")"
qemu-io -f raw "$U" -c 'read -P 0xa5 0 3000' -c 'read -P 0x3c 3000 1000' -c 'read -P 0xa5 4000 61536' \
  -c 'read -P 0x5a 1M 4k' -c 'read -P 0 2M 128k' >"$T/qio2.out" 2>&1 || fail "qemu-io read: $(cat "$T/qio2.out")"
! grep -q 'Pattern verification failed' "$T/qio2.out" || fail "pattern mismatch: $(cat "$T/qio2.out")"
pass "qemu-io writes patterns and reads them back verified (new connection)"

stop_hexz_serve
pass "hexz serve stopped cleanly (overlay flushed)"

"$HEXZ" commit --base "$T/base.st" --overlay "$T/u/disk.ovl" -o "$T/new.st" >/dev/null || fail "hexz commit"
"$HEXZ" cat "$T/new.st" -o "$T/new.img" || fail "hexz cat new"
python3 - "$T/disk.img" > "$T/expect.img" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[0:65536] = b"\xa5" * 65536
d[3000:4000] = b"\x3c" * 1000
d[1 << 20:(1 << 20) + 4096] = b"\x5a" * 4096
d[2 << 20:(2 << 20) + 131072] = bytes(131072)
sys.stdout.buffer.write(d)
PY
cmp "$T/expect.img" "$T/new.img" || fail "the committed snapshot does not hold exactly the writes"
pass "hexz commit of the overlay contains the writes, nothing else changed"
! grep -h 'refused syscall' "$T"/*.log || fail "the sandbox refused a system call (see above)"
