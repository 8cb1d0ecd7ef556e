# Runs inside the QEMU guest as root (busybox sh), for
# tests/integration/mount_nbd_kernel.sh. Everything interesting runs as the
# unprivileged user 1000: `hexz mount --nbd` starts its sandboxed NBD server
# on a socketpair and attaches through the setuid helper.
U1=1000
M=/home/u1/mnt
HEXZ=/hexz/bin/hexz
fails=0
ok() { echo "ok - $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
die() { echo "FAIL: $*"; cat /tmp/*.log 2>/dev/null; dmesg | tail -n 20; exit 1; }
as_u1() { /hexz/bin/setpriv --reuid=$U1 --regid=$U1 --clear-groups -- "$@"; }
# A front-end started in the background with this prefix is its own $!
# (setpriv execs hexz; a shell function would put a subshell in between).
U1_EXEC="/hexz/bin/setpriv --reuid=$U1 --regid=$U1 --clear-groups --"
# wait_fe PID: its exit status, or 124 after a SIGKILL when it takes > 60 s.
wait_fe() {
  (sleep 60; kill -KILL "$1" 2>/dev/null) &
  wd=$!
  wait "$1"
  r=$?
  kill $wd 2>/dev/null
  return $r
}
mount_line() { grep " $1 " /proc/mounts; }
has_opt() { mount_line "$1" | awk '{print $4}' | tr ',' '\n' | grep -qx "$2"; }
no_device_connected() {
  for d in /sys/block/nbd*; do
    [ -e "$d/pid" ] && return 1
    [ "$(cat "$d/size")" = 0 ] || return 1
  done
  return 0
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
printf 'u1:x:%s:%s::/home/u1:/bin/sh\n' $U1 $U1 >>/etc/passwd
mount -t tmpfs -o mode=0755 tmpfs /home
mkdir -p $M
chown -R $U1:$U1 /home/u1
echo "# guest kernel $(uname -r)"

# --- read-only, ended by Ctrl+C (SIGINT) -------------------------------------
$U1_EXEC $HEXZ mount /hexz/snap.st $M --nbd >/tmp/ro.log 2>&1 &
fe=$!
wait_mounted /tmp/ro.log $fe || die "hexz mount --nbd did not mount: $(cat /tmp/ro.log)"
ok "hexz mount --nbd as uid $U1: $(grep -o 'mounted .*) on [^ ]* via [^ ]*' /tmp/ro.log)"
for o in ro nosuid nodev; do
  has_opt $M $o && ok "mount has $o" || bad "mount lacks $o: $(mount_line $M)"
done
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
