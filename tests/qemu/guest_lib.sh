# Sourced by the guest scripts (busybox sh) from /hexz/guest_lib.sh: what
# both kernel NBD tests check, and how they report.
fails=0
ok() { echo "ok - $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
# mount_line DIR: the /proc/mounts line of the mount on DIR.
mount_line() { grep " $1 " /proc/mounts; }
# has_opt DIR OPT: the mount on DIR has the option OPT.
has_opt() { mount_line "$1" | awk '{print $4}' | tr ',' '\n' | grep -qx "$2"; }
# no_device_connected: no /dev/nbdN has a receiver or a size.
no_device_connected() {
  for d in /sys/block/nbd*; do
    [ -e "$d/pid" ] && return 1
    [ "$(cat "$d/size")" = 0 ] || return 1
  done
  return 0
}
