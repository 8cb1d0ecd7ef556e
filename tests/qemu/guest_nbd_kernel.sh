# Runs inside the QEMU guest as root (busybox sh), for tests/integration/nbd_kernel.sh.
# Everything interesting runs as the unprivileged user 1000 through the setuid
# helper. The host serves the ext4 image over NBD on $ENDPOINT (guestfwd).
# /hexz/bin holds: hexz-nbd-helper (setuid root), nbd-negotiate (test-only
# front-end stand-in), setpriv (util-linux), id (setuid-root control copy).
. /hexz/guest_lib.sh
. /hexz/env

HELPER=/hexz/bin/hexz-nbd-helper
U1=1000
U2=1001
G=1100 # group hexz: may run the helper
M=/home/u1/mnt
die() { echo "FAIL: $*"; dmesg | tail -n 20; exit 1; }
# Absolute paths: busybox sh prefers its own applets (its setpriv lacks --reuid).
as_u1() { /hexz/bin/setpriv --reuid=$U1 --regid=$U1 --groups=$G -- "$@"; }
as_u2() { /hexz/bin/setpriv --reuid=$U2 --regid=$U2 --groups=$G -- "$@"; }
attach_u1() { as_u1 /hexz/bin/nbd-negotiate "$ENDPOINT" "" "$HELPER" attach --fstype ext4 "$@"; }
records() { ls /run/hexz-nbd 2>/dev/null | grep -v '\.lock$'; }

[ -e /dev/nbd0 ] || die "nbd.ko did not load: no /dev/nbd0"
chgrp $G $HELPER && chmod 4750 $HELPER
[ "$(stat -c %a:%g "$HELPER")" = 4750:$G ] || die "helper is not setuid root:hexz 4750 in the guest"
printf 'u1:x:%s:%s::/home/u1:/bin/sh\nu2:x:%s:%s::/home/u2:/bin/sh\n' $U1 $U1 $U2 $U2 >>/etc/passwd
printf 'hexz:x:%s:u1,u2\n' $G >>/etc/group
mount -t tmpfs -o mode=0755 tmpfs /home
mkdir -p /home/u1/mnt /home/u1/mnt2 /home/u1/mnt3 /home/u2/mnt
chown -R $U1:$U1 /home/u1
chown -R $U2:$U2 /home/u2
echo "# guest kernel $(uname -r), $(ls -d /sys/block/nbd* | wc -l) nbd devices"

# --- read-only attach -----------------------------------------------------
out=$(attach_u1 --mountpoint $M 2>&1) || die "attach (ro) as uid $U1 failed: $out"
dev=${out%% *}
ok "attach as uid $U1: $out"
mount_line $M >/dev/null || die "$M is not mounted"
for o in ro nosuid nodev; do
  has_opt $M $o && ok "mount has $o" || bad "mount lacks $o: $(mount_line $M)"
done
(cd $M && as_u1 sha256sum -c /hexz/expected.sha256) >/tmp/sums 2>&1 &&
  ok "all $(wc -l </hexz/expected.sha256) files read back with matching sha256 as uid $U1" ||
  bad "checksums differ: $(cat /tmp/sums)"
# nosuid: a setuid-root program on the mount does not raise the euid; the
# same program on the initramfs (no nosuid) does, so the check can fail.
[ "$(as_u1 /hexz/bin/id -u)" = 0 ] || bad "control: setuid id on the rootfs did not give euid 0"
e=$(as_u1 $M/suid-id -u)
[ "$e" = $U1 ] && ok "setuid-root binary on the mount runs with euid $e (nosuid works)" ||
  bad "setuid binary on the mount ran with euid $e"
# nodev: a world-writable char device node (1:3, /dev/null) on the mount cannot be opened.
if as_u1 sh -c "echo x > $M/null" 2>/dev/null; then bad "device node on the mount was usable"
else ok "device node on the mount refused (nodev works)"; fi
as_u1 sh -c "echo x > /dev/null" || bad "control: /dev/null not writable"
if as_u1 sh -c "echo x > $M/new" 2>/dev/null; then bad "wrote to a read-only mount"
else ok "read-only mount refuses writes"; fi
rec=/run/hexz-nbd/${dev#/dev/}
[ "$(stat -c '%u %a' /run/hexz-nbd)" = "0 700" ] && [ "$(stat -c '%u %a' $rec)" = "0 600" ] &&
  grep -qx "uid $U1" $rec && ok "record $rec is root-owned 0600 in a 0700 dir and names uid $U1" ||
  bad "record: $(ls -ld /run/hexz-nbd $rec; cat $rec)"
[ "$(cat /sys/block/${dev#/dev/}/ro)" = 1 ] && ok "$dev itself is read-only" || bad "$dev is writable"
[ "$(cat /sys/block/${dev#/dev/}/queue/io_timeout)" = 30000 ] && ok "$dev fails requests unanswered for 30 s" ||
  bad "io_timeout of $dev: $(cat /sys/block/${dev#/dev/}/queue/io_timeout)"

# --- what another user, or the user, may not do on a real device ------------
out=$(as_u2 $HELPER detach --mountpoint $M 2>&1) && bad "uid $U2 detached uid $U1's mount" ||
  ok "uid $U2 detach refused: $out"
mount_line $M >/dev/null || bad "$M vanished after the refused detach"
out=$(as_u2 /hexz/bin/nbd-negotiate "$ENDPOINT" "" $HELPER attach --fstype ext4 --mountpoint /home/u1/mnt2 2>&1) &&
  bad "uid $U2 mounted on uid $U1's directory" || ok "uid $U2 attach on uid $U1's dir refused: $out"
pid=$(cat /sys/block/${dev#/dev/}/pid)
if as_u1 kill -9 "$pid" 2>/dev/null; then bad "uid $U1 could kill the device process $pid"
else ok "uid $U1 cannot signal the device process (pid $pid)"; fi
# Two more attaches at the same time (serialized by the helper's lock) take
# two other devices.
attach_u1 --mountpoint /home/u1/mnt2 >/tmp/a2 2>&1 &
p2=$!
attach_u1 --mountpoint /home/u1/mnt3 >/tmp/a3 2>&1 &
p3=$!
wait $p2 || bad "concurrent attach on mnt2 failed: $(cat /tmp/a2)"
wait $p3 || bad "concurrent attach on mnt3 failed: $(cat /tmp/a3)"
d2=$(cut -d' ' -f1 /tmp/a2)
d3=$(cut -d' ' -f1 /tmp/a3)
[ -n "$d2" ] && [ -n "$d3" ] && [ "$d2" != "$d3" ] && [ "$d2" != "$dev" ] && [ "$d3" != "$dev" ] &&
  ok "concurrent attaches got their own devices: $d2, $d3 (first: $dev)" ||
  bad "devices: first $dev, then '$d2' and '$d3'"
for m in mnt2 mnt3; do
  as_u1 $HELPER detach --mountpoint /home/u1/$m >/dev/null 2>&1 || bad "detach of $m failed"
done
# A helper of uid $U1 that claimed a device and then blocks writing its error
# to a full stderr pipe (16 pages of 4 KiB already in it, nobody reading)
# must not hold up uid $U2's attach and detach.
(dd if=/dev/zero bs=4096 count=16 2>/dev/null; exec /hexz/bin/setpriv --reuid=$U1 --regid=$U1 --groups=$G -- \
  /hexz/bin/nbd-negotiate "$ENDPOINT_PART" "" "$HELPER" attach --fstype ext4 --partition 2 \
  --mountpoint /home/u1/mnt2) 2>&1 | sleep 300 &
reader=$!
sleep 4
stuck=$(ps -o pid,args | awk '/hexz-nbd-helper attach .*--partition 2/ && !/awk/ { print $1; exit }')
[ -n "$stuck" ] && ok "uid $U1's helper (pid $stuck) is stuck writing to a full pipe" || bad "the stuck helper is gone: $(ps -o pid,stat,args | grep -v ' grep ')"
out=$(timeout 60 /hexz/bin/setpriv --reuid=$U2 --regid=$U2 --groups=$G -- /hexz/bin/nbd-negotiate "$ENDPOINT" "" \
  "$HELPER" attach --fstype ext4 --mountpoint /home/u2/mnt 2>&1) &&
  ok "uid $U2 attaches meanwhile: $out" || bad "uid $U2's attach failed or hung: $out"
out=$(timeout 60 /hexz/bin/setpriv --reuid=$U2 --regid=$U2 --groups=$G -- $HELPER detach --mountpoint /home/u2/mnt 2>&1) &&
  ok "uid $U2 detaches meanwhile: $out" || bad "uid $U2's detach failed or hung: $out"
kill $reader
wait $reader 2>/dev/null
i=0
while [ $i -lt 100 ] && kill -0 "$stuck" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
kill -0 "$stuck" 2>/dev/null && bad "the stuck helper did not exit after its reader went away"
# Busy: a process with its cwd in the mount keeps it; detach says so and keeps it.
/hexz/bin/setpriv --reuid=$U1 --regid=$U1 --groups=$G -- sh -c "cd $M && exec sleep 30" &
busy=$!
sleep 1
out=$(as_u1 $HELPER detach --mountpoint $M 2>&1) && bad "detach of a busy mount succeeded" ||
  ok "busy detach refused: $out"
mount_line $M >/dev/null || bad "busy mount was removed"
kill $busy
wait $busy 2>/dev/null

# --- detach ------------------------------------------------------------------
out=$(as_u1 $HELPER detach --mountpoint $M 2>&1) || die "detach failed: $out"
ok "detach as uid $U1: $out"
mount_line $M >/dev/null && bad "$M still mounted after detach"
no_device_connected && ok "no /dev/nbdN left connected (no pid, size 0)" || bad "a device is still connected"
[ -z "$(records)" ] && ok "no attachment records left" || bad "records left: $(records)"

# --- a partition of a partitioned disk ----------------------------------------
attach_part() { as_u1 /hexz/bin/nbd-negotiate "$ENDPOINT_PART" "" "$HELPER" attach --fstype ext4 "$@"; }
out=$(attach_part --partition 2 --mountpoint $M 2>&1) && bad "attach of a missing partition worked" ||
  ok "missing partition refused: $out"
no_device_connected && [ -z "$(records)" ] && ok "nothing left after the refused partition attach" ||
  bad "device or record left after a failed attach"
out=$(attach_part --partition 1 --mountpoint $M 2>&1) || die "attach --partition 1 failed: $out"
case $out in /dev/nbd*p1" $M") ok "attach --partition 1: $out" ;; *) bad "attach --partition 1 printed: $out" ;; esac
(cd $M && as_u1 sha256sum -c /hexz/expected.sha256) >/tmp/sums 2>&1 &&
  ok "files in partition 1 read back with matching sha256" || bad "partition checksums: $(cat /tmp/sums)"
has_opt $M ro && has_opt $M nosuid && has_opt $M nodev || bad "partition mount options: $(mount_line $M)"
out=$(as_u1 $HELPER detach --mountpoint $M 2>&1) || die "detach of the partition mount failed: $out"
ok "detach: $out"
no_device_connected && ok "no /dev/nbdN left connected after the partition mount" || bad "device left"

# --- the server goes away while mounted ------------------------------------
# The user-side connection runs through a relay (busybox nc) that we kill: to
# the kernel, the server is gone. Detach must still clean up everything.
host=${ENDPOINT#tcp:}
nc -l -p 9000 -e nc ${host%:*} ${host##*:} &
relay=$!
sleep 1
out=$(as_u1 /hexz/bin/nbd-negotiate tcp:127.0.0.1:9000 "" "$HELPER" attach --fstype ext4 \
  --mountpoint $M 2>&1) || die "attach through the relay failed: $out"
ok "attach through a relay: $out"
kill -9 $relay
wait $relay 2>/dev/null
if as_u1 cat $M/data.bin >/dev/null 2>&1; then bad "reading through a dead server worked"
else ok "reads fail once the server is gone"; fi
out=$(as_u1 $HELPER detach --mountpoint $M 2>&1) && ok "detach after the server died: $out" ||
  bad "detach after the server died failed: $out"
mount_line $M >/dev/null && bad "$M still mounted"
no_device_connected && [ -z "$(records)" ] && ok "no device or record left after a dead server" ||
  bad "device or record left after a dead server"

# --- read-write attach: the write reaches the server's image ----------------
out=$(attach_u1 --rw --mountpoint $M 2>&1) || die "attach --rw failed: $out"
ok "attach --rw: $out"
has_opt $M rw && has_opt $M nosuid && has_opt $M nodev && ok "rw mount has rw,nosuid,nodev" ||
  bad "rw mount options: $(mount_line $M)"
as_u1 sh -c "echo written-in-guest > $M/rwdir/note.txt && sync $M/rwdir/note.txt" ||
  bad "write on the rw mount failed"
out=$(as_u1 $HELPER detach --mountpoint $M 2>&1) || die "detach (rw) failed: $out"
ok "detach (rw): $out"
no_device_connected && ok "no /dev/nbdN left connected after rw detach" || bad "a device is still connected"

echo "# guest checks done, $fails failed"
[ $fails -eq 0 ]
