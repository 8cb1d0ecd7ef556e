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
# Hardening: the helper is root:hexz 4750 and a user outside the group gets a
# clear refusal; files appear owned by the caller (idmapped mount), never by
# another user; another user's world-writable directory is refused as a
# mountpoint; an image that asks for errors=panic (tune2fs -e panic and
# stored mount options) with a corrupted directory is mounted
# errors=remount-ro and reading the corruption does not panic the guest;
# a vfat image mounts with the caller as owner.
# See tests/qemu/guest_mount_nbd.sh.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/qemu.sh"

require_root
require_cmd mkfs.ext4 debugfs e2fsck sha256sum setpriv tune2fs dumpe2fs mkfs.vfat
qemu_require
helper=$HEXZ_BUILD_DIR/hexz-nbd-helper/hexz-nbd-helper
[[ -x $helper && -x $HEXZ && -x $HEXZ_FUSED ]] || skip "hexz, hexz-fused or hexz-nbd-helper is not built"
qemu_fetch_kernel

src=$T/src
mkdir -p "$src/sub" "$src/rwdir"
echo "hello from hexz" >"$src/hello.txt"
head -c 3000000 /dev/urandom >"$src/data.bin"
seq 1 20000 >"$src/sub/nested.txt"
echo "owned by uid 1001 in the image" >"$src/u2-file"
chown 1001:1001 "$src/u2-file"
(cd "$src" && sha256sum hello.txt data.bin sub/nested.txt) >"$T/expected.sha256"
mkfs.ext4 -q -b 4096 -d "$src" "$T/disk.ext4" 32M || fail "mkfs.ext4 -d failed"
"$HEXZ" pack --disk "$T/disk.ext4" -o "$T/snap.st" -q || fail "pack"
# An image that asks the kernel to panic on the first error, twice (s_errors
# and the stored mount options), with a directory entry whose inode is cleared.
mkdir -p "$T/psrc/bad" && echo victim >"$T/psrc/bad/victim" && echo fine >"$T/psrc/ok.txt"
mkfs.ext4 -q -b 4096 -d "$T/psrc" "$T/panic.ext4" 16M || fail "mkfs.ext4 (panic image)"
tune2fs -e panic -E mount_opts=errors=panic "$T/panic.ext4" >/dev/null || fail "tune2fs"
debugfs -w -R "clri /bad/victim" "$T/panic.ext4" 2>/dev/null || fail "debugfs clri"
dumpe2fs -h "$T/panic.ext4" 2>/dev/null | grep -q '^Errors behavior: *Panic' &&
  dumpe2fs -h "$T/panic.ext4" 2>/dev/null | grep -q '^Mount options: *errors=panic' ||
  fail "the panic image does not ask for errors=panic"
"$HEXZ" pack --disk "$T/panic.ext4" -o "$T/panic.st" -q || fail "pack (panic image)"
mkfs.vfat -C "$T/disk.vfat" 8192 >/dev/null || fail "mkfs.vfat"
"$HEXZ" pack --disk "$T/disk.vfat" -o "$T/vfat.st" -q || fail "pack (vfat)"

g=$T/guest
qemu_initramfs_new "$g"
qemu_add_modules "$g" "${QEMU_NET_MODULES[@]}" virtio_blk nbd fat vfat nls_cp437 nls_ascii nls_utf8
qemu_add_binary "$g" "$HEXZ" /hexz/bin/hexz
qemu_add_binary "$g" "$HEXZ_FUSED" /hexz/bin/hexz-fused
qemu_add_binary "$g" "$helper" /hexz/bin/hexz-nbd-helper
# (The guest makes it root:hexz 4750: the initramfs stores every file as root:root.)
qemu_add_binary "$g" "$(command -v setpriv)" /hexz/bin/setpriv
cp "$T/expected.sha256" "$T/snap.st" "$T/panic.st" "$T/vfat.st" "$g/hexz/"
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
