#!/usr/bin/env bash
# The main job, end to end: build hexz, make a sample VM disk (GPT: an EFI
# vfat partition and an ext4 root made from a real directory tree), pack it,
# inspect it (the partition table), mount it with a file per partition, read
# the root filesystem through its partition file, unmount it.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
"$src/scripts/build.sh"
hexz="$src/build/hexz/hexz"
work=$(mktemp -d /tmp/hexz-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== hexz $("$hexz" --version | cut -d" " -f2) built in $src/build"
echo "== making a sample VM disk: GPT, EFI (vfat) + root (ext4 from /usr/share/doc)"
# Room for the tree plus ext4 metadata (the tree's size varies by machine).
tree_mb=$(du -sm /usr/share/doc | cut -f1)
root_mb=$(( tree_mb * 2 + 64 )) efi_mb=16
mkfs.vfat -C -n EFI "$work/efi.fs" $(( efi_mb * 1024 )) >/dev/null
truncate -s "${root_mb}M" "$work/root.fs"
mkfs.ext4 -q -F -L root -d /usr/share/doc "$work/root.fs"
# 1 MiB for the table, the two partitions, 1 MiB for the backup GPT.
truncate -s "$(( 1 + efi_mb + root_mb + 1 ))M" "$work/disk.img"
printf '%s\n' "label: gpt" \
  "start=1MiB, size=${efi_mb}MiB, type=U, name=\"EFI system partition\"" \
  "start=$(( 1 + efi_mb ))MiB, size=${root_mb}MiB, type=L, name=\"root\"" |
  sfdisk -q "$work/disk.img" >/dev/null
dd if="$work/efi.fs" of="$work/disk.img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.fs" of="$work/disk.img" bs=1M seek=$(( 1 + efi_mb )) conv=notrunc,sparse \
  status=none
rm -f "$work/efi.fs" "$work/root.fs"
echo "== sample disk: $(du -h --apparent-size "$work/disk.img" | cut -f1), its root filesystem holds $(find /usr/share/doc | wc -l) entries"
echo "== hexz pack: the sample disk into a snapshot"
"$hexz" pack --disk "$work/disk.img" --output "$work/disk.st"
echo "== hexz info (the partition table too)"
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
echo "== hexz mount --daemon --partitions (a file per partition; returns once usable)"
HEXZ_FUSED="$src/build/hexz-fused/hexz-fused" "$hexz" mount --daemon --partitions \
  --log-file "$work/mount.log" "$work/disk.st" "$mnt"
ls -l "$mnt"
grep " $mnt " /proc/mounts
echo "== the ext4 root filesystem inside $mnt/disk-p2"
if [[ $(id -u) -eq 0 ]] && mount -o loop,ro "$mnt/disk-p2" "$fs" 2>/dev/null; then
  how="loop mount of disk-p2, read-only"
else
  fuse2fs -o ro,fakeroot "$mnt/disk-p2" "$fs" >/dev/null
  how="fuse2fs on disk-p2, read-only"
fi
find "$fs" -type f | sed "s|^$fs/||" | sort >"$work/files"
echo "($how) $(wc -l <"$work/files") files; the first few:"
head -n 8 "$work/files"
text=$(grep -m1 '/copyright$' "$work/files" || true)
if [[ -n $text ]]; then
  echo "== a file from the root partition: $text (first lines)"
  head -n 5 "$fs/$text"
fi
umount "$fs" 2>/dev/null || fusermount3 -u "$fs"
echo "== hexz unmount"
"$hexz" unmount "$mnt"
