# QEMU guest harness for tests that need a real kernel feature this machine's
# kernel lacks (NBD). Sourced by tests/integration/*.sh after
# tests/lib/common.sh.
#
#   qemu_require                  skip (77) unless QEMU and busybox-static exist
#   qemu_fetch_kernel             sets QEMU_KERNEL and QEMU_MODULES (dir of *.ko) from a
#                                 Debian linux-image-*-cloud-amd64 package (cached)
#   qemu_initramfs_new DIR        busybox root skeleton in DIR (with /init)
#   qemu_add_binary DIR SRC [DST] copy SRC (with its shared libraries) to DST in DIR
#   qemu_add_modules DIR NAME...  copy kernel modules (loaded in this order by /init)
#   qemu_pack_initramfs DIR OUT   pack DIR into the gzipped cpio OUT
#   qemu_run DIR SCRIPT TIMEOUT [QEMU ARGS...]
#                                 pack DIR, boot it with SCRIPT as the test (run as
#                                 root in the guest), print the console, and return
#                                 the script's exit status (1 if it never finished)
#
# The kernel package is cached in ${HEXZ_QEMU_CACHE:-${XDG_CACHE_HOME:-~/.cache}/hexz-qemu}
# so reruns need no network. Guest network: QEMU user mode (slirp); the host's
# 127.0.0.1 is 10.0.2.2 in the guest, and tests can add guestfwd endpoints.

QEMU_CACHE=${HEXZ_QEMU_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/hexz-qemu}
QEMU_BIN=${QEMU_BIN:-qemu-system-x86_64}
# The virtio-net driver stack, in load order, then whatever a test adds.
QEMU_NET_MODULES=(failover net_failover virtio_ring virtio virtio_pci_modern_dev
                  virtio_pci_legacy_dev virtio_pci virtio_net)

qemu_require() {
  command -v "$QEMU_BIN" >/dev/null || skip "$QEMU_BIN is not installed (package qemu-system-x86)"
  [[ -x /bin/busybox ]] && file_is_static /bin/busybox ||
    skip "/bin/busybox is missing or not static (package busybox-static)"
  require_cmd cpio gzip dpkg-deb apt-get apt-cache ldd
  [[ $(uname -m) == x86_64 ]] || skip "the guest kernel is x86-64 only"
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

# Picks the kernel the archive's linux-image-cloud-amd64 meta package points
# at; falls back to any cached package when the archive cannot be reached.
qemu_fetch_kernel() {
  mkdir -p "$QEMU_CACHE"
  local pkg deb
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9].*-cloud-amd64$/ { print $2; exit }')
  if [[ -n $pkg ]]; then
    deb=$(ls -t "$QEMU_CACHE/${pkg}_"*.deb 2>/dev/null | head -n1)
    if [[ -z $deb ]]; then
      echo "# downloading $pkg into $QEMU_CACHE"
      (cd "$QEMU_CACHE" && apt-get download "$pkg" >/dev/null 2>&1) || true
      deb=$(ls -t "$QEMU_CACHE/${pkg}_"*.deb 2>/dev/null | head -n1)
    fi
  fi
  [[ -n $deb ]] || deb=$(ls -t "$QEMU_CACHE"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n1)
  [[ -n $deb ]] || skip "cannot fetch a linux-image-*-cloud-amd64 package (apt-get download failed; no cache in $QEMU_CACHE)"
  local root=${deb%.deb}
  if [[ ! -e $root/.extracted ]]; then
    rm -rf "$root" && mkdir -p "$root"
    dpkg-deb -x "$deb" "$root" || fail "cannot extract $deb"
    touch "$root/.extracted"
  fi
  QEMU_KERNEL=$(ls "$root"/boot/vmlinuz-* | head -n1)
  QEMU_MODULES=$(ls -d "$root"/lib/modules/*/kernel | head -n1)
  [[ -f $QEMU_KERNEL && -d $QEMU_MODULES ]] || fail "$deb has no kernel or modules"
  echo "# guest kernel: $(basename "$deb")"
}

qemu_initramfs_new() {
  local dir=$1
  mkdir -p "$dir"/{bin,sbin,dev,proc,sys,tmp,run,etc,home,mnt,lib/modules,root,hexz}
  cp /bin/busybox "$dir/bin/busybox"
  ln -sf busybox "$dir/bin/sh"
  chmod 1777 "$dir/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$dir/etc/passwd"
  printf 'root:x:0:\n' >"$dir/etc/group"
  : >"$dir/lib/modules/order"
  cat >"$dir/init" <<'EOF'
#!/bin/sh
# hexz QEMU test guest: set up, run /hexz/test.sh, report its status, power off.
/bin/busybox --install -s /bin
export PATH=/hexz/bin:/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
while read -r m; do insmod "/lib/modules/$m.ko" || echo "init: insmod $m failed"; done </lib/modules/order
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
fi
echo "HEXZ-GUEST-START"
sh /hexz/test.sh
echo "HEXZ-GUEST-RC=$?"
sync
poweroff -f
EOF
  chmod 0755 "$dir/init"
}

# Copies a dynamically linked program and every library ldd names for it.
qemu_add_binary() {
  local dir=$1 src=$2 dst=${3:-$2} lib
  mkdir -p "$dir/$(dirname "$dst")"
  cp -L "$src" "$dir/$dst"
  while read -r lib; do
    [[ -n $lib && -e $lib && ! -e $dir/$lib ]] || continue
    mkdir -p "$dir/$(dirname "$lib")"
    cp -L "$lib" "$dir/$lib"
  done < <(ldd "$src" 2>/dev/null | grep -oE '/[^ ]+' | sort -u)
}

# Copies modules (by name, from QEMU_MODULES) and queues them for /init.
qemu_add_modules() {
  local dir=$1 name f
  shift
  for name in "$@"; do
    f=$(find "$QEMU_MODULES" -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" | head -n1)
    [[ -n $f ]] || fail "module $name is not in the guest kernel package"
    case $f in
      *.xz) xz -dc "$f" >"$dir/lib/modules/$name.ko" ;;
      *.zst) zstd -qdc "$f" >"$dir/lib/modules/$name.ko" ;;
      *) cp "$f" "$dir/lib/modules/$name.ko" ;;
    esac
    echo "$name" >>"$dir/lib/modules/order"
  done
}

qemu_pack_initramfs() {
  (cd "$1" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$2" ||
    fail "cannot pack the initramfs $2"
}

qemu_run() {
  local dir=$1 script=$2 timeout=$3
  shift 3
  cp "$script" "$dir/hexz/test.sh"
  cp "$(dirname "$script")/guest_lib.sh" "$dir/hexz/guest_lib.sh"
  local initrd=$dir.cpio.gz log=$dir.log
  qemu_pack_initramfs "$dir" "$initrd"
  local rc=0 start=$SECONDS
  timeout --kill-after=5 "$timeout" "$QEMU_BIN" -accel tcg -m 1G -smp 1 -nographic -no-reboot \
    -kernel "$QEMU_KERNEL" -initrd "$initrd" -append 'console=ttyS0 quiet panic=-1' \
    "$@" </dev/null >"$log" 2>&1 || rc=$?
  sed -n '/HEXZ-GUEST-START/,$p' "$log" | sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\r//g' |
    grep -av 'HEXZ-GUEST-START'
  local grc
  grc=$(grep -a -o 'HEXZ-GUEST-RC=[0-9]*' "$log" | tail -n1 | cut -d= -f2)
  if [[ -z $grc ]]; then
    echo "# guest did not finish (qemu exit $rc after $((SECONDS - start)) s); console log:"
    tail -n 40 "$log" | tr -d '\r'
    return 1
  fi
  echo "# guest finished in $((SECONDS - start)) s with status $grc"
  return "$grc"
}
