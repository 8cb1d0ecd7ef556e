# Builds real partitioned VM disks for the pack/info tests (sourced).
#
# make_gpt_disk OUT: a 96 MiB GPT disk made with sfdisk, without root or loop
# devices: an EFI System partition (vfat, label EFI), a Linux root (ext4 from
# /usr/include/linux, label root) and a second Linux filesystem (ext4 from
# /usr/share/doc/e2fsprogs, label data). Each filesystem is made as a file
# and dd'd in at its partition's offset.
# Needs: sfdisk (fdisk), mkfs.vfat (dosfstools), mkfs.ext4 (e2fsprogs).
GPT_P1_START=2048 GPT_P1_SECTORS=65536    # 32 MiB EFI
GPT_P2_START=67584 GPT_P2_SECTORS=81920   # 40 MiB root
GPT_P3_START=149504 GPT_P3_SECTORS=40960  # 20 MiB data
ROOT_TREE=/usr/include/linux
DATA_TREE=/usr/share/doc/e2fsprogs

require_disk_tools() {
  require_cmd sfdisk mkfs.vfat mkfs.ext4 qemu-img qemu-nbd python3
  [[ -d $ROOT_TREE && -d $DATA_TREE ]] || skip "$ROOT_TREE or $DATA_TREE is missing"
}

make_gpt_disk() {
  local out=$1 dir
  dir=$(dirname "$out")
  rm -f "$out"
  truncate -s 96M "$out"
  sfdisk -q "$out" <<EOF >/dev/null
label: gpt
start=$GPT_P1_START, size=$GPT_P1_SECTORS, type=U, name="EFI system partition"
start=$GPT_P2_START, size=$GPT_P2_SECTORS, type=L, name="root"
start=$GPT_P3_START, size=$GPT_P3_SECTORS, type=L, name="data"
EOF
  rm -f "$dir/efi.fs" "$dir/root.fs" "$dir/data.fs"
  mkfs.vfat -C -n EFI "$dir/efi.fs" $((GPT_P1_SECTORS / 2)) >/dev/null
  mkfs.ext4 -q -F -L root -d "$ROOT_TREE" "$dir/root.fs" $((GPT_P2_SECTORS / 2))k >/dev/null
  mkfs.ext4 -q -F -L data -d "$DATA_TREE" "$dir/data.fs" $((GPT_P3_SECTORS / 2))k >/dev/null
  dd if="$dir/efi.fs" of="$out" bs=512 seek=$GPT_P1_START conv=notrunc,sparse status=none
  dd if="$dir/root.fs" of="$out" bs=512 seek=$GPT_P2_START conv=notrunc,sparse status=none
  dd if="$dir/data.fs" of="$out" bs=512 seek=$GPT_P3_START conv=notrunc,sparse status=none
  rm -f "$dir/efi.fs" "$dir/root.fs" "$dir/data.fs"
}
