#!/usr/bin/env bash
# The real kernel NBD path, end to end, in a QEMU guest (this machine's kernel
# has no NBD driver): as an unprivileged user, the setuid hexz-nbd-helper
# attaches an NBD export of an ext4 image (made with mkfs.ext4 -d) to /dev/nbdN
# and mounts it ro,nosuid,nodev; files read back with matching checksums;
# setuid binaries and device nodes on it are inert; other users cannot detach
# it; concurrent attaches get distinct devices; busy detach is refused;
# partition 1 of an MBR disk mounts; detach cleans up after the server died;
# detach leaves no device connected; a --rw mount writes through to the image.
# The helper is root:hexz 4750 (both guest users are in the group); a helper
# stuck on a full stderr pipe after claiming a device blocks no other user's
# attach or detach; devices get a request timeout.
# See tests/qemu/guest_nbd_kernel.sh.
#
# This test exercises the helper on its own: the user side is nbdkit on the
# host (reached over QEMU user networking) plus the test-only negotiator
# tests/qemu/nbd_negotiate.c, which passes the negotiated socket as fd 3, so
# that it can also point the helper at dead and relayed servers. The real
# front-end (`hexz mount --nbd`) is tested in mount_nbd_kernel.sh.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/qemu.sh"

require_root
require_cmd nbdkit mkfs.ext4 debugfs e2fsck setpriv sha256sum
qemu_require
helper=$HEXZ_BUILD_DIR/hexz-nbd-helper/hexz-nbd-helper
negotiate=$HEXZ_BUILD_DIR/tests/hexz-nbd-negotiate-test
[[ -x $helper && -x $negotiate ]] || skip "hexz-nbd-helper or hexz-nbd-negotiate-test is not built"
qemu_fetch_kernel

# The filesystem image: data, a setuid-root program and a device node.
src=$T/src
mkdir -p "$src/sub" "$src/rwdir"
echo "hello from hexz" >"$src/hello.txt"
head -c 3000000 /dev/urandom >"$src/data.bin"
seq 1 20000 >"$src/sub/nested.txt"
install -o root -g root -m 4755 /usr/bin/id "$src/suid-id"
mknod -m 0666 "$src/null" c 1 3
(cd "$src" && sha256sum hello.txt data.bin sub/nested.txt) >"$T/expected.sha256"
img=$T/disk.ext4
mkfs.ext4 -q -b 4096 -d "$src" "$img" 32M || fail "mkfs.ext4 -d failed"
# The same files in partition 1 of an MBR disk (1 MiB offset, 16 MiB long).
part=$T/disk-mbr.img
truncate -s 20M "$part"
mkfs.ext4 -q -b 4096 -E offset=1048576 -d "$src" "$part" 16M || fail "mkfs.ext4 -E offset failed"
# le32 N: the escape sequence (for printf) of N as 4 little-endian bytes.
le32() { printf '\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24)); }
printf "\x00\xfe\xff\xff\x83\xfe\xff\xff$(le32 2048)$(le32 32768)" |
  dd of="$part" bs=1 seek=446 conv=notrunc status=none
printf '\x55\xaa' | dd of="$part" bs=1 seek=510 conv=notrunc status=none

# The guest: modules, helper setuid root, negotiator, setpriv, a setuid control.
g=$T/guest
qemu_initramfs_new "$g"
qemu_add_modules "$g" "${QEMU_NET_MODULES[@]}" nbd
qemu_add_binary "$g" "$helper" /hexz/bin/hexz-nbd-helper
# (The guest makes it root:hexz 4750: the initramfs stores every file as root:root.)
qemu_add_binary "$g" "$negotiate" /hexz/bin/nbd-negotiate
qemu_add_binary "$g" "$(command -v setpriv)" /hexz/bin/setpriv
qemu_add_binary "$g" /usr/bin/id /hexz/bin/id
chmod 4755 "$g/hexz/bin/id"
cp "$T/expected.sha256" "$g/hexz/"
# nbdkit serves each image on a free host port; the guest reaches the host's
# 127.0.0.1 as 10.0.2.2. (A QEMU guestfwd cmd: endpoint carries one stream at
# a time, which breaks concurrent attaches.)
# serve IMAGE: starts nbdkit (a child of this shell), sets $served_port.
serve() {
  local p try pid
  for try in 1 2 3 4 5 6 7 8; do
    p=$((20000 + RANDOM % 40000))
    rm -f "$T/nbdkit.$p.pid"
    nbdkit --exit-with-parent -f -i 127.0.0.1 -p "$p" -P "$T/nbdkit.$p.pid" file "$1" \
      2>"$T/nbdkit.err" &
    pid=$!
    if wait_for test -s "$T/nbdkit.$p.pid"; then
      on_exit kill "$pid"
      served_port=$p
      return 0
    fi
    kill "$pid" 2>/dev/null
  done
  fail "nbdkit could not listen on any port: $(cat "$T/nbdkit.err")"
}
serve "$img"
echo "ENDPOINT=tcp:10.0.2.2:$served_port" >"$g/hexz/env"
serve "$part"
echo "ENDPOINT_PART=tcp:10.0.2.2:$served_port" >>"$g/hexz/env"
rc=0
qemu_run "$g" "$HEXZ_SOURCE_DIR/tests/qemu/guest_nbd_kernel.sh" "${HEXZ_QEMU_TIMEOUT:-240}" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 || rc=$?
[[ $rc -eq 0 ]] || fail "guest checks failed (status $rc)"

# The --rw mount's write is in the image, and the filesystem is clean.
e2fsck -fn "$img" >/dev/null 2>&1 || fail "e2fsck finds errors in the image after the rw mount"
got=$(debugfs -R "cat /rwdir/note.txt" "$img" 2>/dev/null)
[[ $got == written-in-guest ]] || fail "the file written in the guest is not in the image (got '$got')"
pass "file written through the --rw mount is in the image; e2fsck -fn is clean"
