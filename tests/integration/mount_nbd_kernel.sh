#!/usr/bin/env bash
# `hexz mount --nbd` end to end on a real kernel NBD client, in a QEMU guest
# (this machine's kernel has no NBD driver). Inside the guest, as an
# unprivileged user, with hexz, hexz-fused and the setuid-root
# hexz-nbd-helper: an ext4 snapshot mounts (nosuid, nodev, read-only), files
# read back with matching checksums, the serving worker is sandboxed, Ctrl+C
# tears down; with --rw --overlay a file is written and synced, `hexz
# unmount` ends the mount, `hexz commit` makes a new snapshot and a second
# --nbd mount of it shows the file; a killed server makes hexz mount detach
# and fail; no /dev/nbdN is left connected. The new
# snapshot is also checked on the host (hexz cat + debugfs).
# See tests/qemu/guest_mount_nbd.sh.
source "$(dirname "$0")/lib.sh"
source "$HEXZ_SOURCE_DIR/tests/qemu/lib.sh"

require_root
require_cmd mkfs.ext4 debugfs e2fsck sha256sum setpriv
qemu_require
helper=$HEXZ_BUILD_DIR/hexz-nbd-helper/hexz-nbd-helper
[[ -x $helper && -x $HEXZ && -x $HEXZ_FUSED ]] || skip "hexz, hexz-fused or hexz-nbd-helper is not built"
qemu_fetch_kernel

src=$T/src
mkdir -p "$src/sub" "$src/rwdir"
echo "hello from hexz" >"$src/hello.txt"
head -c 3000000 /dev/urandom >"$src/data.bin"
seq 1 20000 >"$src/sub/nested.txt"
chown 1000:1000 "$src/rwdir"
(cd "$src" && sha256sum hello.txt data.bin sub/nested.txt) >"$T/expected.sha256"
mkfs.ext4 -q -b 4096 -d "$src" "$T/disk.ext4" 32M || fail "mkfs.ext4 -d failed"
"$HEXZ" pack --disk "$T/disk.ext4" -o "$T/snap.st" -q || fail "pack"

g=$T/guest
qemu_initramfs_new "$g"
qemu_add_modules "$g" "${QEMU_NET_MODULES[@]}" virtio_blk nbd
qemu_add_binary "$g" "$HEXZ" /hexz/bin/hexz
qemu_add_binary "$g" "$HEXZ_FUSED" /hexz/bin/hexz-fused
qemu_add_binary "$g" "$helper" /hexz/bin/hexz-nbd-helper
chmod 4755 "$g/hexz/bin/hexz-nbd-helper"
qemu_add_binary "$g" "$(command -v setpriv)" /hexz/bin/setpriv
cp "$T/expected.sha256" "$T/snap.st" "$g/hexz/"
# The guest writes its results (the committed snapshot) to a second disk.
truncate -s 64M "$T/out.img"
rc=0
qemu_run "$g" "$HEXZ_SOURCE_DIR/tests/qemu/guest_mount_nbd.sh" "${HEXZ_QEMU_TIMEOUT:-240}" \
  -drive "file=$T/out.img,format=raw,if=none,id=out" -device virtio-blk-pci,drive=out || rc=$?
[[ $rc -eq 0 ]] || fail "guest checks failed (status $rc)"

# The snapshot committed in the guest, read on the host.
size=$(head -c 20 "$T/out.img" | tr -d '\0 ')
[[ $size =~ ^[0-9]+$ ]] || fail "the guest did not hand back the committed snapshot"
dd if="$T/out.img" of="$T/new.st" bs=4096 skip=1 count=$(((size + 4095) / 4096)) status=none
truncate -s "$size" "$T/new.st"
"$HEXZ" cat "$T/new.st" -o "$T/new.ext4" || fail "hexz cat of the committed snapshot"
e2fsck -fn "$T/new.ext4" >/dev/null 2>&1 || fail "e2fsck finds errors in the committed disk"
got=$(debugfs -R "cat /rwdir/note.txt" "$T/new.ext4" 2>/dev/null)
[[ $got == written-in-guest ]] || fail "the file written in the guest is not in the commit (got '$got')"
pass "host: the committed snapshot holds /rwdir/note.txt (hexz cat + debugfs); e2fsck -fn clean"
