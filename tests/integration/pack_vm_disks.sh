#!/usr/bin/env bash
# hexz pack reads real VM disk containers (qcow2 compressed, VMDK, VDI, VPC,
# VHDX) through qemu-nbd and packs the guest-visible disk: `hexz cat` gives
# exactly the bytes of `qemu-img convert -O raw`. hexz info lists the GPT
# partitions with their types, filesystems and labels (text and JSON).
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/vm_disk.sh"
require_disk_tools
require_cmd cmp

cd "$T"
make_gpt_disk disk.raw

check_info() {  # SNAP: the three partitions, as text and as JSON
  local info
  info=$("$HEXZ" info "$1")
  grep -qE "^partitions: +GPT, 512-byte sectors" <<<"$info" || fail "$1: no GPT in: $info"
  grep -qE "^  1 +1048576 +32 MiB +EFI System +vfat +EFI$" <<<"$info" || fail "$1: p1 in: $info"
  grep -qE "^  2 +34603008 +40 MiB +Linux filesystem +ext4 +root$" <<<"$info" ||
    fail "$1: p2 in: $info"
  grep -qE "^  3 +76546048 +20 MiB +Linux filesystem +ext4 +data$" <<<"$info" ||
    fail "$1: p3 in: $info"
  "$HEXZ" info --json "$1" | python3 -c '
import json, sys
t = json.load(sys.stdin)["partition_table"]
assert t["scheme"] == "gpt" and t["gpt_header"] == "primary" and t["problems"] == [], t
p = [(x["number"], x["start"], x["size"], x["type"], x["type_id"], x["filesystem"], x["label"])
     for x in t["partitions"]]
want = [
  (1, 2048 * 512, 65536 * 512, "EFI System", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "vfat", "EFI"),
  (2, 67584 * 512, 81920 * 512, "Linux filesystem", "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
   "ext4", "root"),
  (3, 149504 * 512, 40960 * 512, "Linux filesystem", "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
   "ext4", "data"),
]
assert p == want, p
assert t["partitions"][1]["name"] == "root", t
' || fail "$1: info --json"
}

# The raw disk itself.
"$HEXZ" pack --disk disk.raw -o raw.st --quiet
"$HEXZ" cat raw.st | cmp - disk.raw || fail "raw round trip"
check_info raw.st
pass "raw GPT disk: round trip and partitions"

# Containers: compressed qcow2, VMDK, and the other formats qemu-img writes.
for fmt in qcow2 vmdk vdi vpc vhdx; do
  opts=()
  [[ $fmt == qcow2 ]] && opts=(-c)
  qemu-img convert "${opts[@]}" -O "$fmt" disk.raw "disk.$fmt"
  cmp -s disk.raw "disk.$fmt" && fail "disk.$fmt is the raw disk"
  qemu-img convert -O raw "disk.$fmt" "ref.$fmt.raw"
  out=$("$HEXZ" pack --disk "disk.$fmt" -o "$fmt.st" 2>&1) || fail "pack $fmt: $out"
  "$HEXZ" cat "$fmt.st" | cmp - "ref.$fmt.raw" || fail "$fmt: not the bytes of qemu-img convert"
  "$HEXZ" verify -q "$fmt.st" || fail "$fmt: verify"
  check_info "$fmt.st"
  pass "$fmt: packs the guest disk ($(stat -c %s "disk.$fmt") bytes of $fmt)"
  rm -f "ref.$fmt.raw"
done
# The compressed qcow2 is much smaller than the disk: the container was not
# packed as raw bytes.
[[ $(stat -c %s disk.qcow2) -lt 50000000 ]] || fail "qcow2 was not compressed"

# Block status: a 100 GiB qcow2 holding 1 MiB packs in seconds, its zeros
# never read (reading them through NBD would take minutes).
qemu-img create -q -f qcow2 huge.qcow2 100G
qemu-io -c "write -P 0x61 50G 1M" huge.qcow2 >/dev/null
start=$SECONDS
timeout 120 "$HEXZ" pack --disk huge.qcow2 -o huge.st --quiet || fail "100 GiB qcow2 took too long"
echo "100 GiB qcow2 packed in $((SECONDS - start)) s"
"$HEXZ" info --json huge.st | python3 -c '
import json, sys
d = json.load(sys.stdin)["streams"]["disk"]
assert d["logical_size"] == 100 << 30 and d["zero_blocks"] == d["blocks"] - 16, d
' || fail "huge.st"
rm -f huge.qcow2 huge.st
pass "holes and zeros of a qcow2 are skipped by block status"

# An explicit --disk-format overrides detection (here: the container's bytes).
"$HEXZ" pack --disk disk.qcow2 --disk-format raw -o bytes.st --quiet
"$HEXZ" cat bytes.st | cmp - disk.qcow2 || fail "--disk-format raw"
pass "--disk-format raw packs a container's bytes on request"

# A pipe: stdin, of unknown length, also a length that is not whole blocks.
cat disk.raw | "$HEXZ" pack --disk - -o pipe.st --quiet
"$HEXZ" cat pipe.st | cmp - disk.raw || fail "pipe round trip"
head -c 1000000 disk.raw > odd.raw
"$HEXZ" pack --disk - -o odd.st --quiet < <(cat odd.raw)
"$HEXZ" cat odd.st | cmp - odd.raw || fail "pipe of 1000000 bytes"
"$HEXZ" pack --disk - -o empty.st --quiet </dev/null
[[ $("$HEXZ" cat empty.st | wc -c) -eq 0 ]] || fail "empty pipe"
expect_fail_msg "holds a qcow2 image.*give its path" "$HEXZ" pack --disk - -o x.st < disk.qcow2
pass "--disk - reads a stream"

# An NBD URI: qemu-nbd serving the qcow2 on a unix socket.
qemu-nbd --read-only --format=qcow2 --persistent --socket="$T/nbd.sock" disk.qcow2 &
nbd_pid=$!
on_exit "kill $nbd_pid"
wait_for test -S "$T/nbd.sock" || fail "qemu-nbd did not start"
"$HEXZ" pack --disk "nbd+unix:///?socket=$T/nbd.sock" -o uri.st --quiet
"$HEXZ" cat uri.st | cmp - disk.raw || fail "NBD URI round trip"
pass "--disk nbd+unix:// reads an NBD export"
# An export that serves a container's bytes is refused, not packed.
qemu-nbd --read-only --format=raw --persistent --socket="$T/raw.sock" disk.qcow2 &
raw_pid=$!
on_exit "kill $raw_pid"
wait_for test -S "$T/raw.sock" || fail "qemu-nbd did not start"
expect_fail_msg "NBD export holds a qcow2 image" \
  "$HEXZ" pack --disk "nbd+unix:///?socket=$T/raw.sock" -o x.st
pass "an NBD export of container bytes is refused"
