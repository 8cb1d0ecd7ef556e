#!/usr/bin/env bash
# `hexz mount --nbd` on this machine, as the unprivileged test user: the
# front-end's own refusals (usage, no filesystem; on a partitioned disk a
# partition number it does not hold, and several candidates without
# --partition, both with the partition list), a helper that is not setuid
# root (says so and how to fix it), a helper the user may not run (not in its
# group: says which group and what to ask for), and, with a setuid helper, a
# kernel without NBD (the helper's "modprobe nbd"). In every case nothing is left
# mounted, attached or running. The working path is mount_nbd_kernel.sh.
source "$(dirname "$0")/../lib/common.sh"
require_test_user
require_cmd findmnt mkfs.ext4 sfdisk

src_helper=$HEXZ_BUILD_DIR/hexz-nbd-helper/hexz-nbd-helper
[[ -x $src_helper ]] || skip "hexz-nbd-helper is not built"
user_dir "$T/u"
mkdir -p "$T/u/mnt" && chown "$TEST_USER:$TEST_USER" "$T/u/mnt"
mkfs.ext4 -q -F "$T/fs.img" 16M || fail "mkfs.ext4"
"$HEXZ" pack --disk "$T/fs.img" -o "$T/fs.st" -q || fail "pack"
head -c 1M /dev/urandom >"$T/raw.img"
"$HEXZ" pack --disk "$T/raw.img" -o "$T/raw.st" -q || fail "pack"

nothing_left() {
  ! grep -q " $T/u/mnt " /proc/mounts || fail "$1: something is mounted on $T/u/mnt"
  local p
  # Tests run in parallel as one user: only workers holding a file of this
  # test's $T are this test's.
  for p in $(pgrep -u "$TEST_USER" -x hexz-fused); do
    ls -l "/proc/$p/fd" 2>/dev/null | grep -q -- "-> $T/" && fail "$1: worker $p is still running"
  done
  return 0
}
as_helper() { as_user env HEXZ_NBD_HELPER="$1" "${@:2}"; }

expect_fail_msg 'needs --overlay' as_user "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd --rw
expect_fail_msg '--overlay x needs --rw' as_user "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd --overlay x
expect_fail_msg 'foreground' as_user "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd --daemon
expect_fail_msg 'no ext2/3/4, xfs, btrfs or vfat filesystem' as_user "$HEXZ" mount "$T/raw.st" "$T/u/mnt" --nbd
expect_fail_msg '--partitions shows partition files in a FUSE mount' \
  as_user "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd --partitions
expect_fail_msg '--partition N chooses what --nbd mounts' as_user "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --partition 1
expect_fail_msg 'partitions are numbered from 1' as_user "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd --partition 0
expect_fail_msg 'has no partition table .*ext4.*so it has no partition 1; drop --partition' \
  as_user "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd --partition 1
nothing_left "usage errors"

# A partitioned disk (MBR: ext4, ext4): the choice is checked against the
# table, as the user, before any worker or helper runs (no NBD needed here).
truncate -s 40M "$T/mbr.raw"
printf 'label: dos\nstart=2048, size=32768, type=83\nstart=34816, size=40960, type=83\n' |
  sfdisk -q "$T/mbr.raw" >/dev/null || fail "sfdisk"
mkfs.ext4 -q -F -L one "$T/one.fs" 16M && mkfs.ext4 -q -F -L two "$T/two.fs" 20M || fail "mkfs.ext4"
dd if="$T/one.fs" of="$T/mbr.raw" bs=512 seek=2048 conv=notrunc status=none
dd if="$T/two.fs" of="$T/mbr.raw" bs=512 seek=34816 conv=notrunc status=none
"$HEXZ" pack --disk "$T/mbr.raw" -o "$T/mbr.st" -q || fail "pack mbr.raw"
out=$(as_user "$HEXZ" mount "$T/mbr.st" "$T/u/mnt" --nbd --partition 3 2>&1) &&
  fail "--partition 3 of a two-partition disk was accepted"
grep -q "mbr.st has no partition 3; its partitions are:" <<<"$out" || fail "no partition 3: $out"
grep -qE "^  2 +17825792 +20 MiB +Linux +ext4 +two$" <<<"$out" || fail "partition 2 not listed: $out"
pass "--partition 3 of a two-partition disk: $(head -n1 <<<"$out")"
out=$(as_user "$HEXZ" mount "$T/mbr.st" "$T/u/mnt" --nbd 2>&1) && fail "two candidates were accepted"
grep -q "2 filesystems --nbd can mount (partitions 1, 2); choose one with --partition N" <<<"$out" ||
  fail "two candidates: $out"
grep -qE "^  1 +1048576 +16 MiB +Linux +ext4 +one$" <<<"$out" || fail "partition 1 not listed: $out"
pass "two candidates without --partition: $(head -n1 <<<"$out")"
nothing_left "partition choice"

install -m 0755 "$src_helper" "$T/bin/helper-plain"
expect_fail_msg "helper-plain is not setuid root.*chown root:hexz .*chmod 4750" \
  as_helper "$T/bin/helper-plain" "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd
nothing_left "non-setuid helper"

if [[ ",$(findmnt -no OPTIONS -T "$T")," == *,nosuid,* ]]; then
  skip "$T is on a nosuid filesystem, so a setuid test helper cannot run there"
fi
# Installed root:GROUP 4750: a user outside GROUP is told which group to ask
# for; here GROUP is hexz-test2's own group, which hexz-test is not in.
other_group=$(id -gn "$TEST_USER2")
install -m 0755 "$src_helper" "$T/bin/helper-group"
chown "root:$other_group" "$T/bin/helper-group" && chmod 4750 "$T/bin/helper-group"
expect_fail_msg "not in group $other_group.*usermod -aG $other_group $TEST_USER" \
  as_helper "$T/bin/helper-group" "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd
nothing_left "user outside the helper's group"

install -m 0755 "$src_helper" "$T/bin/helper-suid"
chown "root:$(id -gn "$TEST_USER")" "$T/bin/helper-suid" && chmod 4750 "$T/bin/helper-suid"
if [[ -e /dev/nbd0 ]]; then
  echo "# this kernel has NBD; the no-NBD message is checked in environments without it"
else
  expect_fail_msg 'no NBD support.*modprobe nbd' \
    as_helper "$T/bin/helper-suid" "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd
  nothing_left "kernel without NBD"
fi
pass "nothing left mounted or running after any refusal"
