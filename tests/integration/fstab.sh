#!/usr/bin/env bash
# Administrators' paths: `mount -t fuse.hexz SNAP MNT -o ...` and an fstab
# entry of type fuse.hexz (kept in a temporary fstab file, mounted with
# `mount --fstab FILE MNT`; /etc/fstab is never edited). mount.fuse3 runs
# `hexz SNAP MNT -o OPTS` with a fixed PATH, so hexz must be on it: the test
# links /usr/local/bin/hexz to the build for its duration.
source "$(dirname "$0")/../lib/common.sh"
require_root
require_fuse
require_cmd mount.fuse3 mount
link=/usr/local/bin/hexz
if [[ -e $link || -L $link ]]; then
  skip "$link already exists; not replacing an installed hexz"
fi
ln -s "$HEXZ" "$link"
on_exit "rm -f '$link'"

head -c 3M /dev/urandom >"$T/img"
truncate -s 8M "$T/img"
"$HEXZ" pack --disk "$T/img" --output "$T/snap.st" --quiet || fail "pack"
mkdir -p "$T/mnt"

mount -t fuse.hexz "$T/snap.st" "$T/mnt" -o ro,uid=4321,gid=4322 || fail "mount -t fuse.hexz failed"
on_exit "'$HEXZ' unmount '$T/mnt'"
grep -q "^hexz $T/mnt fuse.hexz ro," /proc/mounts || fail "not in /proc/mounts as fuse.hexz ro"
[[ "$(stat -c '%u:%g' "$T/mnt/disk")" == 4321:4322 ]] || fail "uid/gid options not applied"
cmp "$T/img" "$T/mnt/disk" || fail "mount -t fuse.hexz serves wrong bytes"
"$HEXZ" unmount "$T/mnt" || fail "unmount"
pass "mount -t fuse.hexz with -o ro,uid=,gid= reads back correctly"

expect_fail_msg "unknown mount option 'bogus'" mount -t fuse.hexz "$T/snap.st" "$T/mnt" -o ro,bogus
is_mounted "$T/mnt" && fail "a refused option left a mount"

cat >"$T/fstab" <<FSTAB
# hexz test fstab
$T/snap.st $T/mnt fuse.hexz ro,cache_size=256M,uid=1000,noauto,nofail 0 0
FSTAB
mount --fstab "$T/fstab" "$T/mnt" || fail "mount --fstab failed"
is_mounted "$T/mnt" || fail "fstab entry did not mount"
[[ "$(stat -c %u "$T/mnt/disk")" == 1000 ]] || fail "fstab uid=1000 not applied"
cmp "$T/img" "$T/mnt/disk" || fail "fstab mount serves wrong bytes"
"$HEXZ" unmount "$T/mnt" || fail "unmount"
pass "fstab entry (ro,cache_size=256M,uid=1000,noauto,nofail) mounts and reads back correctly"

# Private unless the entry says allow_other: the test user gets EACCES from a
# root mount without it, and reads the files with it.
if id "$TEST_USER" >/dev/null 2>&1; then
  chmod 0755 "$T" "$T/mnt"
  mount -t fuse.hexz "$T/snap.st" "$T/mnt" -o ro || fail "mount -t fuse.hexz -o ro"
  setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups -- cat "$T/mnt/disk" >/dev/null 2>&1 &&
    fail "$TEST_USER reads a root fuse.hexz mount made without allow_other"
  "$HEXZ" unmount "$T/mnt" || fail "unmount"
  chmod 0644 "$T/snap.st"
  mount -t fuse.hexz "$T/snap.st" "$T/mnt" -o ro,allow_other || fail "mount -t fuse.hexz -o ro,allow_other"
  grep -q "^hexz $T/mnt fuse.hexz ro,.*allow_other" /proc/mounts || fail "no allow_other: $(grep " $T/mnt " /proc/mounts)"
  setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups -- cmp "$T/img" "$T/mnt/disk" ||
    fail "$TEST_USER cannot read a fuse.hexz mount with allow_other"
  "$HEXZ" unmount "$T/mnt" || fail "unmount"
  pass "fuse.hexz is private to root unless allow_other is in the options"
fi
