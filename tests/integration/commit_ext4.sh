#!/usr/bin/env bash
# A real ext4 filesystem through an overlay and `hexz commit`, without FUSE:
# the changed image is made with debugfs (files added, changed, deleted), its
# differing 4 KiB blocks go into an overlay through the same library a --rw
# mount uses (test tool hexz_overlay_write diff:IMAGE), and the committed
# snapshots (standalone and --thin) must read back as exactly that image,
# pass e2fsck -fn, and hold the files. The base stays unchanged byte for byte.
# (The FUSE --rw mount of the same flow is tested with the mount code.)
source "$(dirname "$0")/../lib/common.sh"

require_cmd mkfs.ext4 debugfs e2fsck
TOOL="$HEXZ_BUILD_DIR/tests/hexz_overlay_write"
[[ -x "$TOOL" ]] || skip "test tool $TOOL is not built"
cd "$T"

mkdir root root/dir
seq 1 20000 > root/keep.txt
seq 1 30000 > root/change.txt
head -c 200000 /dev/urandom > root/dir/delete.bin
mkfs.ext4 -q -F -b 4096 -d root base.img 32M >/dev/null 2>&1 || fail "mkfs.ext4"
head -c $((2*1024*1024)) /dev/urandom > mem.img
"$HEXZ" pack --disk base.img --memory mem.img -o base.st -q || fail "pack"
base_sum=$(sha256sum < base.st)

cp base.img mod.img
head -c 300000 /dev/urandom > new.bin
seq 5 40000 > changed.txt
debugfs -w mod.img -f - >/dev/null 2>&1 <<CMDS || fail "debugfs"
write new.bin new.bin
rm change.txt
write changed.txt change.txt
rm dir/delete.bin
mkdir newdir
write changed.txt newdir/copy.txt
CMDS
e2fsck -fn mod.img >/dev/null 2>&1 || fail "the debugfs-made image is not clean"
"$TOOL" base.st fs.ovl diff:mod.img 2>tool.log || fail "overlay write: $(cat tool.log)"
pass "ext4 changes in the overlay: $(cat tool.log)"

check_fs() {  # check_fs SNAP
  "$HEXZ" cat "$1" > out.img || fail "cat $1"
  cmp out.img mod.img || fail "$1: disk differs from the changed filesystem image"
  e2fsck -fn out.img >/dev/null 2>&1 || fail "$1: e2fsck -fn reports problems"
  debugfs -R "cat /new.bin" out.img 2>/dev/null | cmp - new.bin || fail "$1: new.bin"
  debugfs -R "cat /change.txt" out.img 2>/dev/null | cmp - changed.txt || fail "$1: change.txt"
  debugfs -R "cat /newdir/copy.txt" out.img 2>/dev/null | cmp - changed.txt || fail "$1: copy.txt"
  debugfs -R "cat /keep.txt" out.img 2>/dev/null | cmp - root/keep.txt || fail "$1: keep.txt"
  debugfs -R "ls -l /dir" out.img 2>/dev/null | grep -q delete.bin && fail "$1: delete.bin still there"
  "$HEXZ" cat --stream memory "$1" | cmp - mem.img || fail "$1: memory not carried over"
  [[ "$(sha256sum < base.st)" == "$base_sum" ]] || fail "the base changed"
}

"$HEXZ" commit --base base.st --overlay fs.ovl --output full.st -q || fail "commit"
check_fs full.st
pass "standalone commit: image identical, e2fsck clean, files added/changed/deleted as written"

"$HEXZ" commit --base base.st --overlay fs.ovl --output thin.st --thin -q || fail "commit --thin"
check_fs thin.st
pass "thin commit: the same, in $(stat -c %s thin.st) bytes (standalone: $(stat -c %s full.st))"

# The overlay itself still opens and lists its changes; progress goes to a TTY.
"$HEXZ" overlay info fs.ovl | grep -q "changed blocks:" || fail "overlay info"
if command -v script >/dev/null; then
  script -qec "$HEXZ commit --base base.st --overlay fs.ovl --output tty.st" /dev/null > tty.log 2>&1 \
    || fail "commit on a tty: $(cat tty.log)"
  grep -q '\[#\{25\}\] 100%' tty.log || fail "no progress bar on a terminal: $(cat -v tty.log)"
  pass "progress bar on a terminal"
fi
