# Runs inside the QEMU guest as root (busybox sh), for
# tests/integration/mount_nbd_partitions.sh: `hexz mount --nbd` on
# partitioned disks, as user 1000 in group hexz (1100), which alone may run
# the setuid helper.
. /hexz/guest_lib.sh
U1=1000
G=1100
M=/home/u1/mnt
HEXZ=/hexz/bin/hexz
die() { echo "FAIL: $*"; cat /tmp/*.log 2>/dev/null; dmesg | tail -n 20; exit 1; }
as_u1() { /hexz/bin/setpriv --reuid=$U1 --regid=$U1 --groups=$G -- "$@"; }
U1_EXEC="/hexz/bin/setpriv --reuid=$U1 --regid=$U1 --groups=$G --"
# wait_mounted LOG PID: up to 60 s for the front-end to report the mount.
wait_mounted() {
  i=0
  while [ $i -lt 600 ]; do
    grep -q 'mounted .* via /dev/nbd' "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1; i=$((i + 1))
  done
  return 1
}
# stop_mount PID: Ctrl+C, then the front-end must exit 0 within 60 s.
stop_mount() {
  kill -INT "$1"
  (sleep 60; kill -KILL "$1" 2>/dev/null) &
  wd=$!
  wait "$1"
  r=$?
  kill $wd 2>/dev/null
  return $r
}

[ -e /dev/nbd0 ] || die "nbd.ko did not load: no /dev/nbd0"
printf 'u1:x:%s:%s::/home/u1:/bin/sh\n' $U1 $U1 >>/etc/passwd
printf 'u1:x:%s:\nhexz:x:%s:u1\n' $U1 $G >>/etc/group
chgrp $G /hexz/bin/hexz-nbd-helper && chmod 4750 /hexz/bin/hexz-nbd-helper
mount -t tmpfs -o mode=0755 tmpfs /home
mkdir -p $M
chown -R $U1:$U1 /home/u1
echo "# guest kernel $(uname -r), nbd max_part $(cat /sys/module/nbd/parameters/max_part 2>/dev/null)"

# --- --partition 2: the root partition of the GPT disk ----------------------
$U1_EXEC $HEXZ mount /hexz/gpt.st $M --nbd --partition 2 >/tmp/p2.log 2>&1 &
fe=$!
wait_mounted /tmp/p2.log $fe || die "hexz mount --nbd --partition 2 did not mount: $(cat /tmp/p2.log)"
ok "$(grep -o 'mounted .* via [^ ]*' /tmp/p2.log)"
case "$(mount_line $M)" in /dev/nbd*p2" $M ext4 "*) ok "mounted from $(mount_line $M | cut -d' ' -f1)" ;;
  *) bad "mount line: $(mount_line $M)" ;; esac
has_opt $M ro && has_opt $M nosuid && has_opt $M nodev || bad "mount options: $(mount_line $M)"
(cd $M && as_u1 sha256sum -c /hexz/root.sha256) >/tmp/sums 2>&1 &&
  ok "all $(wc -l </hexz/root.sha256) files of the root tree read back with matching sha256" ||
  bad "checksums differ: $(grep -v ': OK$' /tmp/sums | head -n 5)"
(cd $M && find . | grep -v '^./lost+found' | sort) >/tmp/list
cmp -s /tmp/list /hexz/root.list && ok "the same $(wc -l </tmp/list) names as the tree" ||
  bad "the names differ from the tree: $(diff /hexz/root.list /tmp/list | head -n 5)"
stop_mount $fe && ok "Ctrl+C: unmounted: $(tail -n1 /tmp/p2.log)" || bad "hexz mount exit $?: $(cat /tmp/p2.log)"
mount_line $M >/dev/null && bad "$M still mounted"
no_device_connected && ok "no /dev/nbdN left connected" || bad "a device is still connected"

# --- several candidates, no --partition: refused with the list ---------------
out=$(as_u1 $HEXZ mount /hexz/gpt.st $M --nbd 2>&1) && bad "mounted a disk with three candidates" ||
  case $out in
    *"3 filesystems --nbd can mount (partitions 1, 2, 3); choose one with --partition N"*) ok "refused: $out" ;;
    *) bad "refused without the list: $out" ;; esac
for n in 1 2 3; do
  echo "$out" | grep -qE "^  $n +[0-9]+ " || bad "partition $n is not listed: $out"
done
echo "$out" | grep -qE '^  2 +34603008 +40 MiB +Linux filesystem +ext4 +root$' ||
  bad "the list lacks partition 2's start, size, type, filesystem and label: $out"
no_device_connected && ok "nothing connected after the refusal" || bad "a device is connected"

# --- a partition that does not exist -----------------------------------------
out=$(as_u1 $HEXZ mount /hexz/gpt.st $M --nbd --partition 7 2>&1) && bad "--partition 7 mounted" ||
  case $out in *"has no partition 7; its partitions are:"*"EFI System"*) ok "refused: $out" ;;
    *) bad "--partition 7 refused without naming it or listing the partitions: $out" ;; esac
grep -qx hexz-fused /proc/[0-9]*/comm 2>/dev/null &&
  bad "a worker was started for a partition that does not exist"
no_device_connected && ok "nothing connected for --partition 7" || bad "a device is connected"

# --- the only mountable filesystem: MBR swap + ext4 -------------------------
$U1_EXEC $HEXZ mount /hexz/mbr.st $M --nbd >/tmp/mbr.log 2>&1 &
fe=$!
wait_mounted /tmp/mbr.log $fe || die "hexz mount --nbd of the MBR disk did not mount: $(cat /tmp/mbr.log)"
case "$(mount_line $M)" in /dev/nbd*p2" $M ext4 "*) ok "only candidate mounted: $(grep -o 'mounted .* via [^ ]*' /tmp/mbr.log)" ;;
  *) bad "mount line: $(mount_line $M)" ;; esac
(cd $M && as_u1 sha256sum -c /hexz/only.sha256) >/tmp/sums 2>&1 &&
  ok "its $(wc -l </hexz/only.sha256) files read back" || bad "checksums differ: $(grep -v ': OK$' /tmp/sums | head -n 5)"
stop_mount $fe || bad "hexz mount exit $?: $(cat /tmp/mbr.log)"
no_device_connected && ok "no /dev/nbdN left connected at the end" || bad "a device is still connected"

echo "# guest checks done, $fails failed"
[ $fails -eq 0 ]
