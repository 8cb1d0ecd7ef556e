#!/usr/bin/env bash
# The main job, end to end: build hexz, make a sample ext4 disk image from a
# real directory tree, pack it, inspect it, mount it, list it, unmount it.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
"$src/scripts/build.sh"
hexz="$src/build/hexz/hexz"
work=$(mktemp -d /tmp/hexz-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== hexz $("$hexz" --version | cut -d" " -f2) built in $src/build"
echo "== making a sample ext4 image from /usr/share/doc"
# Room for the tree plus ext4 metadata (the tree's size varies by machine).
tree_mb=$(du -sm /usr/share/doc | cut -f1)
truncate -s "$(( tree_mb * 2 + 64 ))M" "$work/disk.img"
mkfs.ext4 -q -F -d /usr/share/doc "$work/disk.img"
echo "== sample image: $(du -h --apparent-size "$work/disk.img" | cut -f1) ($(find /usr/share/doc | wc -l) entries)"
echo "== hexz pack: the sample image into a snapshot"
"$hexz" pack --disk "$work/disk.img" --output "$work/disk.st"
echo "== hexz info"
"$hexz" info "$work/disk.st"
echo "== hexz verify"
"$hexz" verify "$work/disk.st"
echo "== hexz cat gives the image back byte for byte"
"$hexz" cat "$work/disk.st" | cmp - "$work/disk.img" && echo "identical"

# --- hexz mount: the snapshot through FUSE, the filesystem inside it, unmount ---
mnt="$work/mnt"; fs="$work/fs"
mkdir -p "$mnt" "$fs"
demo_unmount() {
  umount "$fs" 2>/dev/null || fusermount3 -u "$fs" 2>/dev/null || true
  "$hexz" unmount "$mnt" >/dev/null 2>&1 || true
}
trap 'demo_unmount; rm -rf "$work"' EXIT
echo "== hexz mount --daemon (returns once the mount is usable)"
HEXZ_FUSED="$src/build/hexz-fused/hexz-fused" "$hexz" mount --daemon \
  --log-file "$work/mount.log" "$work/disk.st" "$mnt"
ls -l "$mnt"
grep " $mnt " /proc/mounts
echo "== the ext4 filesystem inside $mnt/disk"
if [[ $(id -u) -eq 0 ]] && mount -o loop,ro "$mnt/disk" "$fs" 2>/dev/null; then
  how="loop mount, read-only"
else
  fuse2fs -o ro,fakeroot "$mnt/disk" "$fs" >/dev/null
  how="fuse2fs, read-only"
fi
find "$fs" -type f | sed "s|^$fs/||" | sort >"$work/files"
echo "($how) $(wc -l <"$work/files") files; the first few:"
head -n 8 "$work/files"
umount "$fs" 2>/dev/null || fusermount3 -u "$fs"
echo "== hexz unmount"
"$hexz" unmount "$mnt"
