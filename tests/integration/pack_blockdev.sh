#!/usr/bin/env bash
# hexz pack reads a block device (a loop device over an image) and the
# snapshot gives the device's bytes back exactly.
source "$(dirname "$0")/../lib/common.sh"
require_root
require_cmd losetup cmp

cd "$T"
head -c 6M /dev/urandom > dev.img
truncate -s 32M dev.img
yes "block device" | head -c 3M | dd of=dev.img bs=1M seek=20 conv=notrunc status=none
dev=$(losetup -f --show dev.img 2>/dev/null) || skip "cannot attach a loop device here"
on_exit "losetup -d '$dev'"
[[ -b "$dev" ]] || skip "$dev is not a block device"
"$HEXZ" pack --disk "$dev" --output dev.st --quiet
"$HEXZ" cat dev.st | cmp - dev.img || fail "block device round trip"
"$HEXZ" info dev.st | grep -q "32 MiB" || fail "size of the block device"
pass "pack from block device $dev"
