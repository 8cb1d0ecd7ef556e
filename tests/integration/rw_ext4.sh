#!/usr/bin/env bash
# A real filesystem end to end through a read-write FUSE mount:
# an ext4 image made with mkfs.ext4 -d from a real tree (a few thousand
# files) is packed; the test user mounts it --rw --overlay; root loop-mounts
# MNT/disk read-write (or, without loop devices, the user mounts it with
# fuse2fs); files are added, changed, renamed and deleted, and the same
# changes are made to a reference copy of the tree; everything is unmounted;
# `hexz commit` (standalone, then --thin) makes new snapshots whose
# filesystems match the reference (diff -r) and pass e2fsck -fn, while the
# old snapshot stays unchanged byte for byte.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_user_allow_other  # root reads the test user's mounts (-o allow_root)
require_cmd mkfs.ext4 e2fsck diff tar sha256sum

src=""
for d in /usr/lib/python3 /usr/share/perl5 /usr/share/doc /usr/include; do
  [[ -d $d && $(find "$d" -type f 2>/dev/null | head -n 1500 | wc -l) -ge 1500 ]] && { src=$d; break; }
done
[[ -n $src ]] || skip "no real tree with 1500+ files found to build the filesystem from"

cd "$T"
mkdir ref
find "$src" -type f -size -2M 2>/dev/null | head -n 3000 >files.txt
tar -cf - -T files.txt 2>/dev/null | tar -xf - -C ref
nfiles=$(find ref -type f | wc -l)
mkfs.ext4 -q -F -b 4096 -d ref base.img 192M >/dev/null 2>&1 || fail "mkfs.ext4 -d"
"$HEXZ" pack --disk base.img --output base.st --quiet || fail "pack"
chmod 0644 base.st
base_sum=$(sha256sum <base.st)
pass "ext4 snapshot of $nfiles files from $src ($(stat -c %s base.st) bytes packed)"
user_dir mnt; user_dir u; mkdir fs

use_loop=1
losetup -f >/dev/null 2>&1 || use_loop=0
if [[ $use_loop == 0 ]]; then
  require_cmd fuse2fs
  user_dir fs
fi
fs_mount() {  # fs_mount DISK ro|rw
  if [[ $use_loop == 1 ]]; then
    mount -o "loop,$2" "$1" "$T/fs" || fail "mount -o loop,$2 $1"
  else
    as_user fuse2fs -o "$2,fakeroot" "$1" "$T/fs" || fail "fuse2fs $1"
  fi
}
fs_umount() {
  if [[ $use_loop == 1 ]]; then umount "$T/fs"; else fusermount3 -u "$T/fs"; fi
}
on_exit "umount -l '$T/fs'"

# --- change the filesystem through the --rw mount ---
as_user "$HEXZ" mount -o allow_root -d --log-file u/log base.st mnt --rw --overlay u/fs.ovl >d.out 2>&1 \
  || fail "mount --rw: $(cat d.out)"
fs_mount mnt/disk rw
cp -a ref ref2
change() {  # change ROOT: the same changes on the mounted fs and on the reference
  local r=$1
  mapfile -t all < <(cd "$r" && find . -type f | sort)
  local n=${#all[@]} i
  mkdir -p "$r/hexz-new/deep/er"
  head -c 5000000 "$T/base.img" >"$r/hexz-new/big.bin"   # added (5 MB)
  for ((i = 0; i < 200; i++)); do echo "new file $i" >"$r/hexz-new/deep/er/f$i.txt"; done
  for ((i = 0; i < n; i += 7)); do echo "changed $i" >>"$r/${all[$i]}"; done   # changed
  for ((i = 3; i < n; i += 11)); do rm -f "$r/${all[$i]}"; done              # deleted
  mv "$r/${all[1]}" "$r/hexz-new/renamed" 2>/dev/null || true                # renamed
  dd if=/dev/zero of="$r/${all[2]}" bs=1 count=1 seek=100 conv=notrunc status=none  # overwritten
}
change fs
change ref2
sync -f fs/hexz-new
diff -r -x lost+found fs ref2 >/dev/null || fail "the mounted filesystem differs from the reference right away"
fs_umount
as_user "$HEXZ" unmount mnt >/dev/null || fail "hexz unmount"
assert_nothing_left "rw mount"
pass "files added, changed, renamed and deleted through the --rw mount"

# --- commit, mount the result, compare ---
check_snapshot() {  # check_snapshot SNAP what
  as_user "$HEXZ" mount -o allow_root -d --log-file u/log2 "$1" mnt >d.out 2>&1 || fail "mount $1: $(cat d.out)"
  e2fsck -fn mnt/disk >fsck.out 2>&1 || fail "$2: e2fsck -fn: $(tail -n 5 fsck.out)"
  fs_mount mnt/disk ro
  diff -r -x lost+found fs ref2 >diff.out 2>&1 || fail "$2: files differ from the reference: $(head diff.out)"
  fs_umount
  as_user "$HEXZ" unmount mnt >/dev/null || fail "unmount $1"
  assert_nothing_left "$2"
  [[ "$(sha256sum <base.st)" == "$base_sum" ]] || fail "$2: the base snapshot changed"
}
as_user "$HEXZ" commit --base base.st --overlay u/fs.ovl --output u/full.st -q || fail "commit"
check_snapshot u/full.st "standalone commit"
pass "standalone commit: e2fsck -fn clean, diff -r matches, base unchanged"

as_user "$HEXZ" commit --base base.st --overlay u/fs.ovl --output u/thin.st --thin -q \
  || fail "commit --thin"
check_snapshot u/thin.st "thin commit"
pass "thin commit ($(stat -c %s u/thin.st) bytes; standalone $(stat -c %s u/full.st)): the same"
