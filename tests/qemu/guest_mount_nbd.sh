# Runs inside the QEMU guest as root (busybox sh), for
# tests/integration/mount_nbd_kernel.sh. Everything interesting runs as the
# unprivileged user 1000, a member of group hexz (1100), which alone may run
# the setuid helper (root:hexz 4750): `hexz mount --nbd` starts its sandboxed
# NBD server on a socketpair and attaches through the helper. User 1001 is not
# in the group.
. /hexz/guest_lib.sh
U1=1000
U2=1001
G=1100
M=/home/u1/mnt
HEXZ=/hexz/bin/hexz
die() { echo "FAIL: $*"; cat /tmp/*.log 2>/dev/null; dmesg | tail -n 20; exit 1; }
as_u1() { /hexz/bin/setpriv --reuid=$U1 --regid=$U1 --groups=$G -- "$@"; }
as_u2() { /hexz/bin/setpriv --reuid=$U2 --regid=$U2 --clear-groups -- "$@"; }
# A front-end started in the background with this prefix is its own $!
# (setpriv execs hexz; a shell function would put a subshell in between).
U1_EXEC="/hexz/bin/setpriv --reuid=$U1 --regid=$U1 --groups=$G --"
# wait_fe PID: its exit status, or 124 after a SIGKILL when it takes > 60 s.
wait_fe() {
  (sleep 60; kill -KILL "$1" 2>/dev/null) &
  wd=$!
  wait "$1"
  r=$?
  kill $wd 2>/dev/null
  return $r
}
# wait_mounted LOG: up to 60 s for the front-end to report the mount.
wait_mounted() {
  i=0
  while [ $i -lt 600 ]; do
    grep -q 'mounted .* via /dev/nbd' "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1; i=$((i + 1))
  done
  return 1
}

[ -e /dev/nbd0 ] || die "nbd.ko did not load: no /dev/nbd0"
printf 'u1:x:%s:%s::/home/u1:/bin/sh\nu2:x:%s:%s::/home/u2:/bin/sh\n' $U1 $U1 $U2 $U2 >>/etc/passwd
printf 'u1:x:%s:\nu2:x:%s:\nhexz:x:%s:u1\n' $U1 $U2 $G >>/etc/group
chgrp $G /hexz/bin/hexz-nbd-helper && chmod 4750 /hexz/bin/hexz-nbd-helper
mount -t tmpfs -o mode=0755 tmpfs /home
mkdir -p $M /home/u2/mnt /home/shared
chown -R $U1:$U1 /home/u1
chown -R $U2:$U2 /home/u2 /home/shared
chmod 0777 /home/shared
echo "# guest kernel $(uname -r)"

# --- who may mount ----------------------------------------------------------
out=$(as_u2 $HEXZ mount /hexz/snap.st /home/u2/mnt --nbd 2>&1) && bad "uid $U2 (not in group hexz) mounted" ||
  case $out in *"not in group hexz"*"usermod -aG hexz u2"*) ok "uid $U2 outside group hexz refused: $out" ;;
    *) bad "uid $U2 refused without naming the group: $out" ;; esac
out=$(as_u1 $HEXZ mount /hexz/snap.st /home/shared --nbd 2>&1) && bad "mounted on uid $U2's 0777 directory" ||
  case $out in *"owned by uid $U2, not by you"*) ok "uid $U2's world-writable directory refused: $(echo "$out" | head -n1)" ;;
    *) bad "shared directory refused for another reason: $out" ;; esac

# --- read-only, ended by Ctrl+C (SIGINT) -------------------------------------
$U1_EXEC $HEXZ mount /hexz/snap.st $M --nbd >/tmp/ro.log 2>&1 &
fe=$!
wait_mounted /tmp/ro.log $fe || die "hexz mount --nbd did not mount: $(cat /tmp/ro.log)"
ok "hexz mount --nbd as uid $U1: $(grep -o 'mounted .*) on [^ ]* via [^ ]*' /tmp/ro.log)"
for o in ro nosuid nodev errors=remount-ro; do
  has_opt $M $o && ok "mount has $o" || bad "mount lacks $o: $(mount_line $M)"
done
grep " $M " /proc/self/mountinfo | grep -q idmapped && ok "the mount is idmapped" ||
  bad "not idmapped: $(grep " $M " /proc/self/mountinfo)"
[ "$(stat -c %u:%g $M/hello.txt)" = $U1:$U1 ] && ok "files the image's root owns appear owned by uid $U1" ||
  bad "hello.txt owner: $(stat -c %u:%g $M/hello.txt)"
[ "$(stat -c %u:%g $M/u2-file)" = 65534:65534 ] && ok "a file of uid $U2 in the image appears as 65534 (nobody), not uid $U2" ||
  bad "u2-file owner: $(stat -c %u:%g $M/u2-file)"
d=$(mount_line $M | cut -d' ' -f1)
[ "$(cat /sys/block/${d#/dev/}/queue/io_timeout)" = 30000 ] && ok "$d has a 30 s request timeout" ||
  bad "io_timeout of $d: $(cat /sys/block/${d#/dev/}/queue/io_timeout)"
case "$(mount_line $M)" in /dev/nbd*" $M ext4 "*) ok "mounted from $(mount_line $M | cut -d' ' -f1) as ext4" ;;
  *) bad "mount line: $(mount_line $M)" ;; esac
(cd $M && as_u1 sha256sum -c /hexz/expected.sha256) >/tmp/sums 2>&1 &&
  ok "all $(wc -l </hexz/expected.sha256) files read back with matching sha256" ||
  bad "checksums differ: $(cat /tmp/sums)"
wpid=$(grep -o 'NBD server pid [0-9]*' /tmp/ro.log | awk '{print $4}')
st=/proc/$wpid/status
grep -q '^Seccomp:.2' $st && grep -q '^NoNewPrivs:.1' $st && [ "$(stat -c %u /proc/$wpid)" = $U1 ] &&
  ok "the NBD server (pid $wpid) runs as uid $U1 with Seccomp 2, NoNewPrivs 1" ||
  bad "NBD server status: $(grep -E 'Seccomp|NoNewPrivs|Uid' $st)"
ls -l /proc/$wpid/fd 2>/dev/null | grep -q 'socket:' && ! ls -l /proc/$wpid/fd | grep -q '/run\|\.sock' &&
  ok "the server's endpoint is an unnamed socket (socketpair)" || bad "server fds: $(ls -l /proc/$wpid/fd)"
kill -INT $fe
wait_fe $fe && ok "Ctrl+C: hexz mount exited 0: $(tail -n1 /tmp/ro.log)" || bad "hexz mount exit $?: $(cat /tmp/ro.log)"
mount_line $M >/dev/null && bad "$M still mounted after Ctrl+C"
kill -0 $wpid 2>/dev/null && bad "NBD server $wpid still running"
no_device_connected && ok "no /dev/nbdN left connected after Ctrl+C" || bad "a device is still connected"

# --- an image that asks for errors=panic, with a corrupted directory ----------
$U1_EXEC $HEXZ mount /hexz/panic.st $M --nbd >/tmp/panic.log 2>&1 &
fe=$!
wait_mounted /tmp/panic.log $fe || die "hexz mount --nbd of the panic image did not mount: $(cat /tmp/panic.log)"
has_opt $M errors=remount-ro && ok "errors=panic image mounted with errors=remount-ro: $(mount_line $M)" ||
  bad "panic image mount options: $(mount_line $M)"
if as_u1 stat $M/bad/victim >/tmp/stat.out 2>&1; then bad "stat of the cleared inode worked"
else ok "reading the corrupted directory fails: $(tail -n1 /tmp/stat.out)"; fi
dmesg | grep -q 'EXT4-fs error.*deleted inode referenced' &&
  ok "the kernel hit the corruption ($(dmesg | grep -o 'EXT4-fs error.*' | tail -n1)) and did not panic" ||
  bad "no ext4 error in dmesg: the corruption was not reached"
[ "$(cat $M/ok.txt)" = fine ] && ok "the rest of the panic image still reads" || bad "ok.txt unreadable"
kill -INT $fe
wait_fe $fe && ok "Ctrl+C: the panic image unmounted" || bad "hexz mount exit $?: $(cat /tmp/panic.log)"
no_device_connected || bad "a device is still connected after the panic image"

# --- vfat: no owners in the image; the caller owns everything -----------------
$U1_EXEC $HEXZ mount /hexz/vfat.st $M --nbd >/tmp/vfat.log 2>&1 &
fe=$!
wait_mounted /tmp/vfat.log $fe || die "hexz mount --nbd of a vfat image did not mount: $(cat /tmp/vfat.log)"
for o in ro nosuid nodev uid=$U1 gid=$U1 errors=remount-ro; do
  has_opt $M $o || bad "vfat mount lacks $o: $(mount_line $M)"
done
[ "$(stat -c %u:%g $M)" = $U1:$U1 ] && ok "vfat mount: $(mount_line $M)" || bad "vfat root owner: $(stat -c %u:%g $M)"
kill -INT $fe
wait_fe $fe || bad "hexz mount (vfat) exit $?: $(cat /tmp/vfat.log)"
no_device_connected || bad "a device is still connected after the vfat mount"

# --- read-write with an overlay, ended by hexz unmount ------------------------
$U1_EXEC $HEXZ mount /hexz/snap.st $M --nbd --rw --overlay /home/u1/disk.ovl >/tmp/rw.log 2>&1 &
fe=$!
wait_mounted /tmp/rw.log $fe || die "hexz mount --nbd --rw did not mount: $(cat /tmp/rw.log)"
has_opt $M rw && has_opt $M nosuid && has_opt $M nodev && ok "rw mount has rw,nosuid,nodev" ||
  bad "rw mount options: $(mount_line $M)"
as_u1 sh -c "echo written-in-guest > $M/rwdir/note.txt && sync $M/rwdir/note.txt" ||
  bad "write on the rw mount failed"
out=$(as_u1 $HEXZ unmount $M 2>&1) && ok "hexz unmount: $out" || bad "hexz unmount failed: $out"
wait_fe $fe && ok "the foreground hexz mount --nbd exited 0 after hexz unmount" ||
  bad "hexz mount exit $?: $(cat /tmp/rw.log)"
mount_line $M >/dev/null && bad "$M still mounted after hexz unmount"
no_device_connected && ok "no /dev/nbdN left connected after hexz unmount" || bad "a device is still connected"

out=$(as_u1 $HEXZ commit --base /hexz/snap.st --overlay /home/u1/disk.ovl -o /home/u1/new.st 2>&1) ||
  die "hexz commit failed: $out"
ok "hexz commit of the overlay: /home/u1/new.st"

# --- the committed snapshot, mounted again ------------------------------------
$U1_EXEC $HEXZ mount /home/u1/new.st $M --nbd >/tmp/new.log 2>&1 &
fe=$!
wait_mounted /tmp/new.log $fe || die "mount of the committed snapshot failed: $(cat /tmp/new.log)"
[ "$(cat $M/rwdir/note.txt)" = written-in-guest ] && ok "the new snapshot contains the written file" ||
  bad "note.txt in the new snapshot: '$(cat $M/rwdir/note.txt 2>&1)'"
(cd $M && as_u1 sha256sum -c /hexz/expected.sha256) >/tmp/sums 2>&1 &&
  ok "the other files are unchanged" || bad "checksums in the new snapshot: $(cat /tmp/sums)"
kill -TERM $fe
wait_fe $fe || bad "hexz mount exit $? on SIGTERM: $(cat /tmp/new.log)"
no_device_connected && ok "no /dev/nbdN left connected at the end" || bad "a device is still connected"

# --- the server dies while mounted: hexz mount detaches and fails ------------
$U1_EXEC $HEXZ mount /hexz/snap.st $M --nbd >/tmp/die.log 2>&1 &
fe=$!
wait_mounted /tmp/die.log $fe || die "hexz mount --nbd did not mount: $(cat /tmp/die.log)"
wpid=$(grep -o 'NBD server pid [0-9]*' /tmp/die.log | awk '{print $4}')
kill -KILL "$wpid"
wait_fe $fe && bad "hexz mount exited 0 after its server was killed" ||
  ok "server killed: hexz mount exits non-zero: $(tail -n1 /tmp/die.log)"
mount_line $M >/dev/null && bad "$M still mounted after the server died"
no_device_connected && ok "no /dev/nbdN left connected after the server died" || bad "a device is still connected"

# A -DHEXZ_SECCOMP_DEBUG build logs refused system calls instead of dying.
if grep -h 'refused syscall' /tmp/ro.log /tmp/rw.log /tmp/new.log; then bad "the sandbox refused a system call"
else ok "no refused system call in the front-end and worker logs"; fi

# Hand the committed snapshot to the host: size in the first 4 KiB, data after.
size=$(stat -c %s /home/u1/new.st)
dev=/dev/vda
[ -b $dev ] || die "no output disk $dev"
printf '%s' "$size" | dd of=$dev bs=4096 count=1 conv=sync,notrunc 2>/dev/null
dd if=/home/u1/new.st of=$dev bs=4096 seek=1 conv=notrunc 2>/dev/null
sync
echo "# guest checks done, $fails failed"
[ $fails -eq 0 ]
