#!/usr/bin/env bash
# nbdfuse exposes the export as a file; a loop mount (root) of the ext4 image
# in it matches the source tree with diff -r.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
require_root
require_fuse
require_cmd nbdfuse mkfs.ext4 losetup
grep -qw ext4 /proc/filesystems || modprobe ext4 2>/dev/null || true
grep -qw ext4 /proc/filesystems || skip "no ext4 in this kernel"

make_ext4_tree "$T/src" "$T/fs.img"

start_nbd_server fs --image "$T/fs.img"
check_ext4_via_nbdfuse "$(nbd_uri disk)" "$T/fs.img" "$T/src"
stop_nbd_server
