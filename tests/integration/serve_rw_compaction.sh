#!/usr/bin/env bash
# A writer that flushes often grows a --rw overlay's log until it is
# compacted, twice: the dead space is punched out (fallocate) and the old
# log cut (ftruncate). The sandboxed worker must be allowed both: it used to
# die of SIGSYS after about 16000 flushes, taking the disk away from its
# client (a VM that fsyncs often). Here 20000 write+flush pairs, as the test
# user, through `hexz serve --rw` (qemu-io) and through `hexz mount --rw`
# (pwrite+fsync on `disk`); then the data is read back, the worker is still
# up, the log stayed bounded, and the overlay commits with the writes.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_test_user
require_user_fuse
require_cmd qemu-io nbdinfo python3

head -c 8M /dev/urandom >"$T/disk.img"
"$HEXZ" pack --disk "$T/disk.img" -o "$T/base.st" -q || fail "pack"
user_dir "$T/u"
start_hexz_serve rw "$T/base.st" --rw --overlay "$T/u/disk.ovl"
U="$(nbd_uri disk)"
python3 - >"$T/cmds" <<'PY'
for i in range(20000):
    print(f"write -q -P {1 + i % 200} {(i % 64) * 4096} 4k")
    print("flush")
PY
qemu-io -f raw "$U" <"$T/cmds" >"$T/qio.out" 2>&1
! grep -q "failed" "$T/qio.out" || fail "$(grep -o "write failed: [^q]*" "$T/qio.out" | sort | uniq -c)"
# The last write to block k (k < 64) was i = (19999 - k) / 64 * 64 + k, its
# pattern 1 + i % 200.
last_pattern() { echo $(( 1 + ((19999 - $1) / 64 * 64 + $1) % 200 )); }
for k in 0 1 63; do
  p=$(last_pattern $k)
  qemu-io -f raw "$U" -c "read -P $p $((k * 4096)) 4k" >"$T/r.out" 2>&1 &&
    ! grep -q 'Pattern verification failed' "$T/r.out" || fail "block $k: $(cat "$T/r.out")"
done
nbdinfo "$U" >/dev/null || fail "the server is gone after the flushes"
meta=$(stat -c %s "$T/u/disk.ovl.meta")
(( meta < 8 * 1024 * 1024 )) || fail "the overlay's log was never cut: $meta bytes"
pass "20000 write+flush pairs: the log was compacted and cut ($meta bytes), the server serves on"
stop_hexz_serve
"$HEXZ" commit --base "$T/base.st" --overlay "$T/u/disk.ovl" -o "$T/new.st" >/dev/null || fail "commit"
"$HEXZ" cat "$T/new.st" | head -c 4096 |
  python3 -c "import sys; sys.exit(sys.stdin.buffer.read() != bytes([$(last_pattern 0)]) * 4096)" ||
  fail "the committed block 0 lacks the last write"
pass "the overlay commits with the last writes"

# The same through FUSE: `hexz mount --rw`, fsync after each write.
user_dir "$T/mnt"
as_user "$HEXZ" mount --rw --overlay "$T/u/fuse.ovl" -d --log-file "$T/u/mount.log" "$T/base.st" \
  "$T/mnt" >/dev/null || fail "mount --rw"
as_user python3 - "$T/mnt/disk" <<'PY' || fail "FUSE writes: $(tail -n 3 "$T/u/mount.log")"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for i in range(20000):
    os.pwrite(fd, bytes([1 + i % 200]) * 4096, (i % 64) * 4096)
    os.fsync(fd)
for k in (0, 1, 63):
    want = bytes([1 + ((19999 - k) // 64 * 64 + k) % 200]) * 4096
    assert os.pread(fd, 4096, k * 4096) == want, k
os.close(fd)
PY
meta=$(stat -c %s "$T/u/fuse.ovl.meta")
(( meta < 8 * 1024 * 1024 )) || fail "the FUSE overlay's log was never cut: $meta bytes"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount: $(tail -n 3 "$T/u/mount.log")"
! grep -q "SIGSYS\|signal 31\|died" "$T/u/mount.log" || fail "the worker died: $(tail -n 3 "$T/u/mount.log")"
pass "the same 20000 pairs through a --rw FUSE mount: compacted ($meta bytes), read back, unmounted cleanly"
