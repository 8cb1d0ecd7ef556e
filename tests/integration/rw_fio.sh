#!/usr/bin/env bash
# fio with verify=crc32c on the disk of a read-write mount, as the test user:
# random writes of mixed sizes (4k/16k/64k) over 64 MiB with psync, every
# block verified when read back; then again after a remount with the same
# overlay (verify_only), so the data also survived the unmount.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_user_allow_other  # root reads the test user's mounts (-o allow_root)
require_cmd fio

head -c 64M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
user_dir "$T/mnt"; user_dir "$T/u"
mount_rw() {
  as_user "$HEXZ" mount -o allow_root -d --log-file "$T/u/log" "$T/snap.st" "$T/mnt" --rw --overlay u/fio.ovl \
    >"$T/d.out" 2>&1 || fail "mount --rw: $(cat "$T/d.out")"
}
job=(--name=rw --filename="$T/mnt/disk" --size=64M --ioengine=psync --rw=randwrite
     --bssplit=4k/50:16k/30:64k/20 --verify=crc32c --verify_fatal=1 --do_verify=1
     --randrepeat=1 --randseed=4242 --norandommap=0 --fsync=32 --end_fsync=1)

mount_rw
as_user fio "${job[@]}" --output="$T/u/fio.out" || fail "fio: $(cat "$T/u/fio.out")"
grep -q "err= 0" "$T/u/fio.out" || fail "fio reported errors: $(cat "$T/u/fio.out")"
pass "fio randwrite bssplit 4k/16k/64k, 64 MiB, verify=crc32c: $(grep -o 'WRITE: bw=[^,]*' "$T/u/fio.out")"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"
assert_nothing_left "fio"

mount_rw
as_user fio "${job[@]}" --verify_only --output="$T/u/fio2.out" || fail "fio verify_only: $(cat "$T/u/fio2.out")"
grep -q "err= 0" "$T/u/fio2.out" || fail "fio verify_only: $(cat "$T/u/fio2.out")"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "unmount"
assert_nothing_left "fio verify"
pass "after unmount and remount every fio block verifies again"
