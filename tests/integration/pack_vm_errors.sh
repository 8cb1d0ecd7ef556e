#!/usr/bin/env bash
# hexz pack refuses, with a clear message and nothing written: a truncated
# qcow2, a qcow2 whose backing file is missing, a container when qemu-nbd is
# not installed (PATH without it, or HEXZ_QEMU_NBD naming a missing file),
# and formats it cannot read (QED, gzip, a hexz snapshot).
source "$(dirname "$0")/../lib/common.sh"
require_cmd qemu-img qemu-nbd mkfs.ext4 gzip cmp

cd "$T"
truncate -s 64M disk.raw
mkfs.ext4 -q -F -d /usr/include/linux disk.raw
qemu-img convert -O qcow2 disk.raw disk.qcow2
qemu-img convert -c -O qcow2 disk.raw small.qcow2

# Truncated: uncompressed (qemu alone would read zeros past the end) and
# compressed.
cp disk.qcow2 cut.qcow2
truncate -s $(($(stat -c %s disk.qcow2) / 2)) cut.qcow2
expect_fail_msg "cut.qcow2: the qcow2 image is damaged \(truncated or corrupt\); qemu-img check says: ERROR" \
  "$HEXZ" pack --disk cut.qcow2 -o x.st
cp small.qcow2 cut2.qcow2
truncate -s $(($(stat -c %s small.qcow2) / 2)) cut2.qcow2
expect_fail_msg "cut2.qcow2: .*(damaged|Input/output error)" "$HEXZ" pack --disk cut2.qcow2 -o x.st

# Missing backing file.
cp disk.qcow2 base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 child.qcow2
rm base.qcow2
expect_fail_msg "child.qcow2: .*(backing file|base.qcow2).*No such file" \
  "$HEXZ" pack --disk child.qcow2 -o x.st

# qemu-nbd not installed: a PATH without it, or HEXZ_QEMU_NBD naming nothing.
expect_fail_msg "disk.qcow2: is a qcow2 image, which hexz reads with qemu-nbd, but qemu-nbd is not installed.*qemu-utils" \
  env PATH="$T/empty" "$HEXZ" pack --disk disk.qcow2 -o x.st
expect_fail_msg "HEXZ_QEMU_NBD=$T/no/qemu-nbd is not an executable" \
  env HEXZ_QEMU_NBD="$T/no/qemu-nbd" "$HEXZ" pack --disk disk.qcow2 -o x.st
# What qemu-nbd says when it fails is quoted; it is run read-only with the
# format named (never probed).
mkdir fake
printf '#!/bin/sh\necho "qemu-nbd: cannot serve: $*" >&2\nexit 1\n' > fake/qemu-nbd
chmod +x fake/qemu-nbd
expect_fail_msg "disk.qcow2: qcow2 image: qemu-nbd cannot serve it: qemu-nbd: cannot serve: --read-only --format=qcow2 -- disk.qcow2" \
  env HEXZ_QEMU_NBD="$T/fake/qemu-nbd" "$HEXZ" pack --disk disk.qcow2 -o x.st
# ...while a raw disk needs neither.
env PATH="$T/empty" "$HEXZ" pack --disk disk.raw -o raw.st --quiet
"$HEXZ" cat raw.st | cmp - disk.raw || fail "raw without qemu"
rm -f raw.st

# Formats hexz does not read are named.
qemu-img create -q -f qed disk.qed 16M
expect_fail_msg "disk.qed: is a QED image; hexz packs raw disks and qcow2" \
  "$HEXZ" pack --disk disk.qed -o x.st
head -c 1M disk.raw | gzip -c > disk.raw.gz
expect_fail_msg "disk.raw.gz: is a gzip-compressed file.*hexz pack --disk -" \
  "$HEXZ" pack --disk disk.raw.gz -o x.st
"$HEXZ" pack --disk disk.raw -o ok.st --quiet
expect_fail_msg "ok.st: is a hexz snapshot" "$HEXZ" pack --disk ok.st -o x.st
expect_fail_msg "only one input can be stdin" "$HEXZ" pack --disk - --memory - -o x.st
[[ ! -e x.st ]] || fail "a refused pack left x.st"
ls -a | grep -q "\.x\.st\.tmp" && fail "a refused pack left a temp file"
pass "clear errors, nothing written"
