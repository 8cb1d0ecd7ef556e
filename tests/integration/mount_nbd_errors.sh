#!/usr/bin/env bash
# `hexz mount --nbd` on this machine, as the unprivileged test user: the
# front-end's own refusals (usage, no filesystem), a helper that is not setuid
# root (says so and how to fix it), a helper the user may not run (not in its
# group: says which group and what to ask for), and, with a setuid helper, a
# kernel without NBD (the helper's "modprobe nbd"). In every case nothing is left
# mounted, attached or running. The working path is mount_nbd_kernel.sh.
source "$(dirname "$0")/../lib/common.sh"
require_test_user
require_cmd findmnt mkfs.ext4

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
  for p in $(pgrep -u "$TEST_USER" -x hexz-fused); do
    [[ $(readlink "/proc/$p/exe" 2>/dev/null) != "$HEXZ_FUSED" ]] || fail "$1: worker $p is still running"
  done
}
as_helper() { as_user env HEXZ_NBD_HELPER="$1" "${@:2}"; }

expect_fail_msg 'needs --overlay' as_user "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd --rw
expect_fail_msg '--overlay x needs --rw' as_user "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd --overlay x
expect_fail_msg 'foreground' as_user "$HEXZ" mount "$T/fs.st" "$T/u/mnt" --nbd --daemon
expect_fail_msg 'no ext2/3/4, xfs, btrfs or vfat filesystem' as_user "$HEXZ" mount "$T/raw.st" "$T/u/mnt" --nbd
nothing_left "usage errors"

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
