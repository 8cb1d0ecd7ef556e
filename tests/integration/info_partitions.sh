#!/usr/bin/env bash
# hexz info on real partition tables: an MBR disk made with sfdisk with an
# extended partition and logical partitions (ext4, swap), and a GPT disk whose
# primary header is damaged (the backup is used, and info says so).
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/vm_disk.sh"
require_disk_tools
require_cmd mkswap

cd "$T"
truncate -s 64M mbr.raw
sfdisk -q mbr.raw <<'EOF2' >/dev/null
label: dos
start=2048, size=40960, type=83, bootable
start=43008, size=86016, type=5
start=45056, size=20480, type=82
start=67584, size=40960, type=83
EOF2
mkfs.ext4 -q -F -L boot -d "$DATA_TREE" boot.fs 20M >/dev/null
truncate -s 10M swap.fs
mkswap -L swap0 swap.fs >/dev/null 2>&1
mkfs.ext4 -q -F -L home -d "$DATA_TREE" home.fs 20M >/dev/null
dd if=boot.fs of=mbr.raw bs=512 seek=2048 conv=notrunc status=none
dd if=swap.fs of=mbr.raw bs=512 seek=45056 conv=notrunc status=none
dd if=home.fs of=mbr.raw bs=512 seek=67584 conv=notrunc status=none
"$HEXZ" pack --disk mbr.raw -o mbr.st --quiet
info=$("$HEXZ" info mbr.st)
echo "$info" | sed -n '/^partitions/,$p'
grep -qE "^partitions: +MBR" <<<"$info" || fail "no MBR"
grep -qE "^  1 +1048576 +20 MiB +Linux +ext4 +boot$" <<<"$info" || fail "p1"
grep -qE "^  2 +22020096 +42 MiB +Extended +- +-$" <<<"$info" || fail "p2"
grep -qE "^  5 +23068672 +10 MiB +Linux swap +swap +swap0$" <<<"$info" || fail "p5"
grep -qE "^  6 +34603008 +20 MiB +Linux +ext4 +home$" <<<"$info" || fail "p6"
"$HEXZ" info --json mbr.st | python3 -c '
import json, sys
t = json.load(sys.stdin)["partition_table"]
assert t["scheme"] == "mbr", t
p = [(x["number"], x["type_id"], x["bootable"], x["filesystem"], x["label"]) for x in t["partitions"]]
assert p == [(1, "0x83", True, "ext4", "boot"), (2, "0x05", False, None, None),
             (5, "0x82", False, "swap", "swap0"), (6, "0x83", False, "ext4", "home")], p
' || fail "MBR --json"
pass "MBR with logical partitions"

# GPT with a damaged primary header: the backup is used and reported.
make_gpt_disk gpt.raw
printf 'X' | dd of=gpt.raw bs=1 seek=$((512 + 40)) conv=notrunc status=none
"$HEXZ" pack --disk gpt.raw -o gpt.st --quiet
info=$("$HEXZ" info gpt.st)
grep -q "warning: primary GPT damaged: GPT header at LBA 1 has a bad CRC32; using the backup" \
  <<<"$info" || fail "no warning: $info"
grep -qE "^  2 +34603008 +40 MiB +Linux filesystem +ext4 +root$" <<<"$info" || fail "p2: $info"
"$HEXZ" info --json gpt.st | python3 -c '
import json, sys
t = json.load(sys.stdin)["partition_table"]
assert t["gpt_header"] == "backup" and len(t["problems"]) == 1 and len(t["partitions"]) == 3, t
' || fail "GPT backup --json"
pass "damaged primary GPT: the backup is used and reported"

# A bare filesystem without a table.
mkfs.ext4 -q -F -L bare -d "$DATA_TREE" bare.raw 8M >/dev/null
"$HEXZ" pack --disk bare.raw -o bare.st --quiet
"$HEXZ" info bare.st | grep -q '^partitions:  none (whole disk: ext4 "bare")' || fail "bare"
pass "a disk without a partition table"
