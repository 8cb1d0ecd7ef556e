#!/usr/bin/env bash
# `hexz mount --nbd --partition N` on a real kernel NBD client, in a QEMU
# guest (this machine's kernel has no NBD driver), as an unprivileged member
# of group hexz. On the GPT disk made with sfdisk (EFI vfat, ext4 root from a
# real tree, second ext4): --partition 2 mounts the root from /dev/nbdNp2 and
# every file of the tree reads back (names and sha256); without --partition
# the disk has three candidates and is refused with the list of partitions;
# a partition number that does not exist is refused with the list, before any
# device is connected. An MBR disk with a swap partition and one ext4
# partition mounts its only filesystem without --partition. One guest boot
# for all of it; see tests/qemu/guest_mount_nbd_partitions.sh.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/qemu.sh"
source "$(dirname "$0")/../lib/vm_disk.sh"

require_root
require_disk_tools
require_cmd sha256sum setpriv mkswap
qemu_require
helper=$HEXZ_BUILD_DIR/hexz-nbd-helper/hexz-nbd-helper
[[ -x $helper && -x $HEXZ && -x $HEXZ_FUSED ]] || skip "hexz, hexz-fused or hexz-nbd-helper is not built"
qemu_fetch_kernel

cd "$T"
make_gpt_disk gpt.raw
"$HEXZ" pack --disk gpt.raw -o gpt.st -q || fail "pack gpt.raw"
(cd "$ROOT_TREE" && find . -type f | sort | xargs sha256sum) >root.sha256
(cd "$ROOT_TREE" && find . | sort) >root.list

# MBR: 1 swap, 2 ext4 (the only mountable filesystem).
truncate -s 48M mbr.raw
sfdisk -q mbr.raw <<'EOF2' >/dev/null
label: dos
start=2048, size=20480, type=82
start=22528, size=65536, type=83
EOF2
truncate -s 10M swap.fs && mkswap swap.fs >/dev/null 2>&1
mkfs.ext4 -q -F -L only -d "$DATA_TREE" only.fs 32M >/dev/null
dd if=swap.fs of=mbr.raw bs=512 seek=2048 conv=notrunc status=none
dd if=only.fs of=mbr.raw bs=512 seek=22528 conv=notrunc status=none
"$HEXZ" pack --disk mbr.raw -o mbr.st -q || fail "pack mbr.raw"
(cd "$DATA_TREE" && find . -type f | sort | xargs sha256sum) >only.sha256

g=$T/guest
qemu_initramfs_new "$g"
qemu_add_modules "$g" "${QEMU_NET_MODULES[@]}" nbd
qemu_add_binary "$g" "$HEXZ" /hexz/bin/hexz
qemu_add_binary "$g" "$HEXZ_FUSED" /hexz/bin/hexz-fused
qemu_add_binary "$g" "$helper" /hexz/bin/hexz-nbd-helper
qemu_add_binary "$g" "$(command -v setpriv)" /hexz/bin/setpriv
cp gpt.st mbr.st root.sha256 root.list only.sha256 "$g/hexz/"
rc=0
qemu_run "$g" "$HEXZ_SOURCE_DIR/tests/qemu/guest_mount_nbd_partitions.sh" "${HEXZ_QEMU_TIMEOUT:-240}" ||
  rc=$?
[[ $rc -eq 0 ]] || fail "guest checks failed (status $rc)"
pass "mount --nbd --partition: root mounted and read back; refusals list the partitions"
