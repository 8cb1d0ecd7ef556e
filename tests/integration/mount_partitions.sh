#!/usr/bin/env bash
# hexz mount --partitions, as an unprivileged user on a real FUSE mount of a
# GPT disk made with sfdisk (EFI vfat, ext4 root from a real tree, second
# ext4): the default listing stays `disk`; with --partitions (-o partitions
# in the mount.fuse form of /etc/fstab) the mount also
# shows disk-p1..disk-p3, whose sizes and bytes are those of sfdisk's
# partitions; fuse2fs -o ro on disk-p2 gives the tree back (diff -r); a
# write to a partition file of a read-only mount fails with EROFS. With --rw
# a partition file is a writable window of the disk: a write lands at the
# partition's offset in `disk`, and a write past the partition's end fails
# with ENOSPC and changes nothing. A disk without a partition table gets no
# partition files, and the mount says so.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
source "$(dirname "$0")/../lib/vm_disk.sh"
require_user_fuse
require_disk_tools
require_cmd fuse2fs diff cmp dd

cd "$T"
make_gpt_disk disk.raw
chmod 0644 disk.raw
make_snapshot disk.st disk.raw
user_dir mnt
user_dir ext
user_dir u
names() { as_user ls "$1" | tr '\n' ' ' | sed 's/ $//'; }

# The default listing stays `disk`.
as_user "$HEXZ" mount -d --log-file u/log0 disk.st mnt >/dev/null || fail "hexz mount"
[[ $(names mnt) == disk ]] || fail "default listing: $(names mnt)"
as_user "$HEXZ" unmount mnt >/dev/null || fail "hexz unmount"
pass "without --partitions the mount shows only: disk"

# The mount.fuse form (mount -t fuse.hexz, /etc/fstab) spells it -o partitions.
as_user "$HEXZ" disk.st mnt -o ro,partitions,log_file=u/log1 >/dev/null || fail "-o partitions"
[[ $(names mnt) == "disk disk-p1 disk-p2 disk-p3" ]] || fail "-o partitions listing: $(names mnt)"
as_user "$HEXZ" unmount mnt >/dev/null || fail "hexz unmount"
pass "-o partitions (fstab form) shows: disk disk-p1 disk-p2 disk-p3"

out=$(as_user "$HEXZ" mount --partitions -d --log-file u/log1 disk.st mnt) || fail "mount --partitions"
[[ $(names mnt) == "disk disk-p1 disk-p2 disk-p3" ]] || fail "--partitions listing: $(names mnt)"
pass "--partitions shows: $(names mnt)"

# Sizes, offsets and bytes: those of the partitions sfdisk made.
while read -r node start size; do
  n=${node##*disk.raw}
  got=$(as_user stat -c %s "mnt/disk-p$n")
  [[ $got -eq $((size * 512)) ]] || fail "disk-p$n is $got bytes, sfdisk says $((size * 512))"
  dd if=disk.raw of="p$n.raw" bs=512 skip="$start" count="$size" status=none
  chmod 0644 "p$n.raw"
  as_user cmp "p$n.raw" "mnt/disk-p$n" || fail "disk-p$n differs from sfdisk's partition $n"
  echo "ok - disk-p$n: $got bytes, the bytes at sector $start (as sfdisk says)"
done < <(sfdisk -d disk.raw | sed -nE 's/^([^ ]+) : start= *([0-9]+), size= *([0-9]+),.*/\1 \2 \3/p')
[[ -e p3.raw ]] || fail "sfdisk -d listed no partitions"

# The root partition's files, through fuse2fs on the partition file.
as_user fuse2fs -o ro mnt/disk-p2 ext >u/fuse2fs.out 2>&1 || fail "fuse2fs: $(cat u/fuse2fs.out)"
wait_for as_user test -e ext/lost+found || fail "fuse2fs mount did not appear"
as_user diff -r --no-dereference "$ROOT_TREE" ext -x lost+found >diff.out 2>&1 ||
  fail "diff -r: $(head -n 20 diff.out)"
files=$(as_user find ext -type f 2>/dev/null | wc -l)
[[ $files -ge 100 ]] || fail "only $files files in the root partition"
as_user fusermount3 -u ext || fail "fusermount3 -u ext"
pass "fuse2fs -o ro on disk-p2: diff -r $ROOT_TREE finds no difference ($files files)"

# A read-only mount: writing a partition file fails with EROFS.
as_user python3 -c '
import errno, os, sys
try:
    os.open(sys.argv[1], os.O_WRONLY)
except OSError as e:
    sys.exit(0 if e.errno == errno.EROFS else "got %s" % e)
sys.exit("opened for writing")' mnt/disk-p2 || fail "write open of disk-p2 on a ro mount"
as_user "$HEXZ" unmount mnt >/dev/null || fail "hexz unmount"
pass "opening disk-p2 of a read-only mount for writing fails with EROFS"

# --rw: a writable window onto the overlay disk, bounded by the partition.
as_user "$HEXZ" mount --rw --partitions -d --log-file u/log2 disk.st mnt >/dev/null ||
  fail "mount --rw --partitions"
p3_start=$((GPT_P3_START * 512)) p3_size=$((GPT_P3_SECTORS * 512))
# Read first, so that a page cache of `disk` would hold the old bytes.
before=$(as_user dd if=mnt/disk bs=1 skip=$((p3_start + 4096)) count=20 status=none | od -An -tx1)
as_user sh -c 'printf hexz-partition-write | dd of=mnt/disk-p3 bs=1 seek=4096 conv=notrunc status=none' ||
  fail "write to disk-p3"
got=$(as_user dd if=mnt/disk bs=1 skip=$((p3_start + 4096)) count=20 status=none)
[[ $got == hexz-partition-write ]] ||
  fail "disk at partition 3 + 4096 holds '$got' (before the write: $before)"
pass "--rw: a write to disk-p3 at 4096 is in disk at $((p3_start + 4096))"
out=$(as_user sh -c "printf xx | dd of=mnt/disk-p3 bs=2 seek=$((p3_size - 1)) oflag=seek_bytes conv=notrunc status=none" 2>&1) &&
  fail "a write across the end of disk-p3 succeeded"
grep -q "No space left on device" <<<"$out" || fail "write across the end: $out"
after=$(as_user dd if=mnt/disk bs=1 skip=$((p3_start + p3_size - 1)) count=2 status=none | od -An -tx1)
want=$(dd if=disk.raw bs=1 skip=$((p3_start + p3_size - 1)) count=2 status=none | od -An -tx1)
[[ $after == "$want" ]] || fail "the bytes around the end of partition 3 changed: $after (was $want)"
[[ $(as_user stat -c %s mnt/disk-p3) -eq $p3_size ]] || fail "disk-p3 changed size"
as_user "$HEXZ" unmount mnt >/dev/null || fail "hexz unmount (rw)"
pass "--rw: a write across the end of disk-p3 fails with ENOSPC and changes nothing"

# No partition table: only `disk`, and a note.
mkfs.ext4 -q -F -d "$DATA_TREE" bare.raw 8M >/dev/null
make_snapshot bare.st bare.raw
out=$(as_user "$HEXZ" mount --partitions -d --log-file u/log3 bare.st mnt) || fail "mount bare"
[[ $(names mnt) == disk ]] || fail "bare disk listing: $(names mnt)"
grep -q "the disk has no partition table; no partition files" <<<"$out" || fail "no note: $out"
as_user "$HEXZ" unmount mnt >/dev/null || fail "hexz unmount (bare)"
pass "--partitions on a disk without a partition table: only disk, and it says so"
assert_nothing_left "partitions"
