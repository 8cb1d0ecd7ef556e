#!/usr/bin/env bash
# Faults under a FUSE mount of a URL, as the unprivileged test user:
# - the server stopped during a long read: the read fails with EIO within
#   --remote-timeout (no hang), the mount stays, and once the server is back
#   the same reads return the right bytes (tests/tools/http_fault_server.py);
# - the object replaced on the server under the mount (nginx): reads fail
#   with ESTALE and the log names the URL without its query string; the
#   mount unmounts cleanly.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
source "$(dirname "$0")/../lib/http.sh"
require_user_fuse
require_nginx
require_cmd python3 cmp dd
PORT=20020
HTTP_PORT=20021
U=http://127.0.0.1:$PORT

cd "$T"
mkdir -p www
chmod a+rx www
head -c 24M /dev/urandom > d.raw
"$HEXZ" pack --disk d.raw -o www/d.st --quiet
chmod a+r www/d.st d.raw
on_exit stop_server
start_server
user_dir "$T/u"
user_dir "$T/mnt"

# 1. The server stopped during a long read.
as_user "$HEXZ" mount -d --remote-timeout 2 --log-file "$T/u/stop.log" "$U/ok/d.st" "$T/mnt" \
  >/dev/null || fail "hexz mount: $(cat "$T/u/stop.log")"
# A slow reader (4 MiB, then the server goes away, then the rest).
as_user dd if="$T/mnt/disk" of="$T/u/part" bs=1M count=4 iflag=direct status=none ||
  fail "the first 4 MiB"
stop_server
start=$SECONDS
out=$(as_user dd if="$T/mnt/disk" of=/dev/null bs=1M skip=4 iflag=direct 2>&1) &&
  fail "a read succeeded with the server stopped"
took=$((SECONDS - start))
grep -q "Input/output error" <<<"$out" || fail "not EIO: $out"
((took <= 12)) || fail "the read failed only after $took s (bound 2 s + margin)"
grep -q "$U/ok/d.st: .*gave up after" "$T/u/stop.log" || fail "no log line: $(cat "$T/u/stop.log")"
as_user test -e "$T/mnt/disk" || fail "the mount went away"
pass "server stopped during a read: EIO after $took s (--remote-timeout 2), the mount stays"
start_server
as_user cmp "$T/mnt/disk" d.raw || fail "the disk after the server came back"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "hexz unmount"
assert_nothing_left "server stopped"
pass "the server is back: the whole disk reads right through the same mount"

# 2. The object replaced under a mount (nginx serves $T/www; its ETag
# follows the file).
mkdir -p www2
cp www/d.st www2/d.st
chmod -R a+rX www2
mv www www-fault && mv www2 www
start_nginx $HTTP_PORT
N=http://127.0.0.1:$HTTP_PORT
as_user "$HEXZ" mount -d --log-file "$T/u/replace.log" "$N/d.st?X-Amz-Signature=querySecret9" \
  "$T/mnt" >/dev/null || fail "hexz mount: $(cat "$T/u/replace.log")"
as_user dd if="$T/mnt/disk" of=/dev/null bs=1M count=1 iflag=direct status=none || fail "first read"
head -c 24M /dev/urandom > other.raw
"$HEXZ" pack --disk other.raw -o www/new.st --quiet
touch -d '+1 hour' www/new.st
chmod a+r www/new.st
mv www/new.st www/d.st
out=$(as_user dd if="$T/mnt/disk" of=/dev/null bs=1M skip=8 iflag=direct 2>&1) &&
  fail "a read of the replaced object succeeded"
grep -q "Stale file handle" <<<"$out" || fail "not ESTALE: $out"
grep -q "$N/d.st: the object changed since it was opened" "$T/u/replace.log" ||
  fail "no log line naming the URL: $(cat "$T/u/replace.log")"
! grep -q querySecret9 "$T/u/replace.log" || fail "the query string in the log"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "hexz unmount"
assert_nothing_left "object replaced"
pass "the object replaced under a mount: ESTALE, the log names the URL without its query"
