#!/usr/bin/env bash
# hexz mount and hexz serve straight from a URL, as the unprivileged test
# user: nginx serves an ext4 image's snapshot and a thin chain of three on
# 127.0.0.1. The sandboxed worker reaches no network: a separate fetcher
# (comm "hexz-fetch", its own seccomp filter) holds every TCP connection.
# - FUSE: fuse2fs mounts the ext4 `disk` read from the URL, diff -r against
#   the tree finds nothing; a thin chain's disk (over HTTPS with a test CA)
#   cmp's equal to its raw disk; a cold sequential read fetches each stored
#   byte once (nginx's access log).
# - serve URL: nbdcopy reads the export, cmp equal.
# - A ~/.netrc password and an AWS secret in the environment appear neither in
#   the fetcher's /proc/PID/cmdline nor in any log.
# - The fetcher killed under a mount: reads fail with EIO, the worker's log
#   says why, and the mount still unmounts cleanly.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
source "$(dirname "$0")/../lib/nbd.sh"
source "$(dirname "$0")/../lib/http.sh"
require_user_fuse
require_nginx
require_cmd mkfs.ext4 fuse2fs diff cmp nbdcopy python3 ss
HTTP_PORT=20010
HTTPS_PORT=20011

cd "$T"
# A tree of a few hundred files (random and text), in a 24 MiB ext4 image.
python3 - <<'PY'
import os, random
random.seed(7)
for d in range(12):
    os.makedirs(f"tree/d{d}/sub", exist_ok=True)
    for f in range(25):
        n = random.randint(0, 40000)
        data = os.urandom(n) if f % 3 == 0 else (b"hexz over http %d\n" % f) * (n // 18)
        open(f"tree/d{d}/{'sub/' if f % 4 == 0 else ''}f{f}", "wb").write(data)
PY
truncate -s 24M fs.img
mkfs.ext4 -q -F -d tree fs.img || fail "mkfs.ext4 -d"
mkdir -p www/chain/sub
"$HEXZ" pack --disk fs.img -o www/fs.st --quiet
python3 - <<'PY'
import os
v1 = bytearray(os.urandom(2 << 20) + bytes(1 << 20) + b"hexz remote " * ((1 << 20) // 12 + 1))[:4 << 20]
open("v1.raw", "wb").write(v1)
v2 = bytearray(v1); v2[65536 * 3:65536 * 4] = os.urandom(65536); open("v2.raw", "wb").write(v2)
v3 = bytearray(v2); v3[65536 * 40:65536 * 41] = os.urandom(65536); open("v3.raw", "wb").write(v3)
PY
"$HEXZ" pack --disk v1.raw -o www/chain/base.st --quiet
"$HEXZ" pack --disk v2.raw --parent www/chain/base.st -o www/chain/mid.st --quiet
"$HEXZ" pack --disk v3.raw --parent www/chain/mid.st -o www/chain/sub/top.st --quiet
chmod -R a+rX www
start_nginx $HTTP_PORT $HTTPS_PORT
U=http://127.0.0.1:$HTTP_PORT
S=https://127.0.0.1:$HTTPS_PORT

# Credentials the fetcher may hold but never show.
home=$(getent passwd "$TEST_USER" | cut -d: -f6)
printf 'machine 127.0.0.1 login hexzuser password netrcSecret77\n' > "$home/.netrc"
chown "$TEST_USER:" "$home/.netrc"
chmod 0600 "$home/.netrc"
on_exit rm -f "$home/.netrc"
user_dir "$T/u"
user_dir "$T/mnt"
user_dir "$T/ext"

# fetcher_of FRONTEND_PID: the hexz-fetch child of a front-end.
fetcher_of() { pgrep -P "$1" -x hexz-fetch | head -n1; }

# 1. FUSE mount of the ext4 image from the URL, in the foreground.
setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups --reset-env -- \
  env PATH="/usr/bin:/bin" HEXZ_FUSED="$HEXZ_FUSED" HOME="$home" \
  AWS_SECRET_ACCESS_KEY=awsSecret55 \
  "$HEXZ" mount "$U/fs.st?X-Amz-Signature=querySecret33" "$T/mnt" >"$T/mount.out" 2>"$T/mount.log" &
FRONT=$!
on_exit "kill $FRONT 2>/dev/null; wait $FRONT 2>/dev/null"
wait_mounted "$T/mnt"
grep -q "mounted $U/fs.st on $T/mnt" "$T/mount.log" || fail "mount message: $(cat "$T/mount.log")"
fetcher=$(fetcher_of "$FRONT")
[[ -n $fetcher ]] || fail "no hexz-fetch process under the front-end $FRONT"
worker=$(pid_from "$T/mount.log")
as_user fuse2fs -o ro,fakeroot "$T/mnt/disk" "$T/ext" >"$T/fuse2fs.out" 2>&1 ||
  fail "fuse2fs on the disk read from $U/fs.st: $(cat "$T/fuse2fs.out")"
as_user diff -r tree "$T/ext" -x lost+found >"$T/diff.out" 2>&1 ||
  fail "diff -r: $(head -n 20 "$T/diff.out")"
files=$(as_user find "$T/ext" -type f | wc -l)
[[ $files -ge 250 ]] || fail "only $files files in the mounted filesystem"
pass "FUSE mount of $U/fs.st: fuse2fs + diff -r against the tree ($files files): no difference"

# Who talks to the network: the fetcher, never the worker; both are filtered.
[[ $(awk '/^Seccomp:/ {print $2}' "/proc/$worker/status") == 2 ]] || fail "worker not filtered"
[[ $(awk '/^Seccomp:/ {print $2}' "/proc/$fetcher/status") == 2 ]] || fail "fetcher not filtered"
ss -tnpa >"$T/ss.out"
grep -q "pid=$fetcher," "$T/ss.out" || fail "the fetcher holds no TCP connection: $(cat "$T/ss.out")"
! grep -q "pid=$worker," "$T/ss.out" || fail "the worker holds a TCP socket: $(grep "pid=$worker," "$T/ss.out")"
[[ $(stat -c %U "/proc/$fetcher") == "$TEST_USER" ]] || fail "the fetcher does not run as the user"
pass "the worker holds no TCP socket; the fetcher (seccomp-filtered, as the user) holds the connections"

cmdline=$(tr -d '\0' <"/proc/$fetcher/cmdline")
[[ $cmdline == hexz-fetch ]] || fail "the fetcher's cmdline: '$cmdline'"
as_user fusermount3 -u "$T/ext"
kill -TERM "$FRONT"
wait "$FRONT" || fail "hexz mount exited $?: $(cat "$T/mount.log")"
# Gone, or a zombie left to init (the front-end that forked it has exited).
fetcher_gone() { [[ ! -e /proc/$1/stat || $(awk '{print $3}' "/proc/$1/stat") == Z ]]; }
wait_for fetcher_gone "$fetcher" || fail "the fetcher outlived the mount"
for secret in netrcSecret77 awsSecret55 querySecret33; do
  ! grep -q "$secret" "$T/mount.out" "$T/mount.log" || fail "$secret in the mount's output"
done
[[ $(nginx_count '^200 ') -eq 0 ]] || fail "a request without a range: $(grep '^200 ' "$NGINX_LOG")"
pass "the fetcher's cmdline is 'hexz-fetch'; no credential in the output; it exits with the mount"

# 2. A thin chain of three over HTTPS (the fetcher loads the CA file after
# its lockdown, for each new connection), mounted as a daemon (the fetcher
# logs to the same file).
as_user "$HEXZ" mount -d --log-file "$T/u/chain.log" --ca-file "$T/tls/ca.pem" \
  "$S/chain/sub/top.st" "$T/mnt" >/dev/null || fail "hexz mount of the chain: $(cat "$T/u/chain.log")"
as_user cmp "$T/mnt/disk" v3.raw || fail "the chain's disk differs"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "hexz unmount"
assert_nothing_left "chain mount"
[[ $(nginx_count '^206 GET /chain/base.st') -gt 0 ]] || fail "base.st was not read"
! grep -q netrcSecret77 "$T/u/chain.log" || fail "the password in the daemon log"
pass "a thin chain of three mounted from $S/chain/sub/top.st: the disk is right"

# 2b. A cold sequential read of the mounted disk fetches each stored byte
# once, in a few large requests, though the worker reads blocks in parallel
# over four channels (the readahead windows coalesce them), counted from
# nginx's access log after the mount (which read the header and index).
as_user "$HEXZ" mount -d --log-file "$T/u/seq.log" "$U/fs.st" "$T/mnt" >/dev/null ||
  fail "hexz mount: $(cat "$T/u/seq.log")"
: > "$NGINX_LOG"
as_user cat "$T/mnt/disk" | cmp - fs.img || fail "the disk read sequentially"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "hexz unmount"
read -r n fetched union < <(nginx_ranges /fs.st) || fail "access-log count"
size=$(stat -c %s www/fs.st)
echo "# $n requests, $fetched bytes fetched of $size, $((fetched - union)) twice"
(( fetched - union <= 65536 )) || fail "$((fetched - union)) bytes fetched twice"
# The rest, read at open: the header, the index and the footer.
(( union * 10 >= size * 8 )) || fail "only $union of $size bytes"
(( n <= 40 )) || fail "$n requests"
pass "a cold sequential read of the mount fetches each stored byte once, in a few requests"

# 3. serve URL, read with nbdcopy.
require_test_user
start_hexz_serve web "$U/chain/sub/top.st"
nbdcopy "$(nbd_uri)" "$T/served.raw" || fail "nbdcopy from the export"
cmp "$T/served.raw" v3.raw || fail "the served disk differs"
[[ -n $(pgrep -P "$NBD_PID" -x hexz-fetch) ]] || fail "no fetcher under hexz serve"
stop_hexz_serve
pass "hexz serve $U/chain/sub/top.st: nbdcopy reads the right disk"

# 3b. mount --nbd URL on this host: the front-end opens the URL, starts the
# fetcher and the worker and negotiates NBD through them; the kernel part
# (attach, mount) needs the QEMU guest of mount_nbd_kernel.sh. Without kernel
# NBD here, the setuid helper's refusal is the last step, and then nothing
# (no fetcher, no worker) is left running.
helper=$HEXZ_BUILD_DIR/hexz-nbd-helper/hexz-nbd-helper
if [[ -x $helper && ! -e /dev/nbd0 ]]; then
  install -m 0755 "$helper" "$T/bin/helper-suid"
  chown "root:$(id -gn "$TEST_USER")" "$T/bin/helper-suid" && chmod 4750 "$T/bin/helper-suid"
  expect_fail_msg 'no NBD support.*modprobe nbd' \
    as_user env HEXZ_NBD_HELPER="$T/bin/helper-suid" "$HEXZ" mount --nbd --log-file "$T/u/nbd.log" \
    "$U/fs.st" "$T/mnt"
  [[ $(nginx_count '^206 GET /fs.st') -gt 0 ]] || fail "mount --nbd did not read the URL"
  for p in $(procs_of_test hexz-fetch) $(procs_of_test hexz-fused); do
    wait_for fetcher_gone "$p" || fail "process $p ($(cat "/proc/$p/comm")) is left after mount --nbd"
  done
  pass "mount --nbd URL reaches the kernel step (the helper) through the fetcher; nothing left"
else
  echo "# mount --nbd URL: this host has kernel NBD or no helper; not checked here"
fi

# 4. The fetcher killed under a mount: EIO, a clear log line, clean unmount.
as_user "$HEXZ" mount -d --log-file "$T/u/kill.log" "$U/fs.st" "$T/mnt" >"$T/kill.out" ||
  fail "hexz mount: $(cat "$T/u/kill.log")"
fetcher=""
for p in $(procs_of_test hexz-fetch); do fetcher_gone "$p" || fetcher=$p; done
[[ -n $fetcher ]] || fail "no fetcher for the daemon mount"
kill -KILL "$fetcher"
out=$(as_user dd if="$T/mnt/disk" of=/dev/null bs=1M 2>&1) && fail "a read succeeded without the fetcher"
grep -q "Input/output error" <<<"$out" || fail "not EIO: $out"
wait_for grep -q "fetcher" "$T/u/kill.log" || fail "no log line about the fetcher: $(cat "$T/u/kill.log")"
grep "fetcher" "$T/u/kill.log" | head -n 2
as_user test -e "$T/mnt/disk" || fail "the mount went away"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "hexz unmount after the fetcher died"
assert_nothing_left "fetcher killed"
pass "the fetcher killed: reads fail with EIO, the log says why, the mount unmounts"
