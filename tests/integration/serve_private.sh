#!/usr/bin/env bash
# Who can reach a `hexz serve` endpoint. The default unix socket lies in a
# fresh 0700 directory under $XDG_RUNTIME_DIR/hexz/ with mode 0600: a second
# local user is refused (EACCES), the owner connects. (`hexz mount --nbd`
# uses a socketpair, which has no name at all.) Also --listen on TCP and
# --daemon.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
require_test_user
require_cmd nbdinfo python3
id "$TEST_USER2" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$TEST_USER2"

user_dir "$T/u"
head -c 2M /dev/urandom >"$T/disk.img"
"$HEXZ" pack --disk "$T/disk.img" -o "$T/snap.st" -q || fail "pack"
user_dir "$T/run"
chmod 0700 "$T/run"

setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups --reset-env -- \
  env PATH="$T/bin:/usr/bin:/bin" HEXZ_FUSED="$HEXZ_FUSED" XDG_RUNTIME_DIR="$T/run" \
  "$HEXZ" serve "$T/snap.st" >"$T/def.out" 2>"$T/def.log" &
pid=$!
on_exit "kill $pid; wait $pid"
wait_for grep -q 'worker pid' "$T/def.out" || fail "hexz serve did not start: $(cat "$T/def.out" "$T/def.log")"
sock=$(grep -o 'socket=[^ ]*' "$T/def.out" | cut -d= -f2)
dir=$(dirname "$sock")
[[ $dir == "$T/run/hexz/serve-"* ]] || fail "default socket not under \$XDG_RUNTIME_DIR/hexz: $sock"
[[ $(stat -c '%a %U %F' "$dir") == "700 $TEST_USER directory" ]] || fail "dir: $(stat -c '%a %U %F' "$dir")"
[[ $(stat -c '%a %U %F' "$sock") == "600 $TEST_USER socket" ]] || fail "socket: $(stat -c '%a %U %F' "$sock")"
pass "default socket $sock: mode 0600 in a 0700 directory, owned by $TEST_USER"

as_user nbdinfo --size "nbd+unix:///disk?socket=$sock" | grep -qx 2097152 || fail "the owner cannot connect"
# The second user may enter a world-searchable path up to the private dir:
chmod 0711 "$T/run" "$T/run/hexz"
out=$(setpriv --reuid="$TEST_USER2" --regid="$TEST_USER2" --init-groups --reset-env -- \
  python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1]); print("CONNECTED")
except OSError as e:
    print(e.strerror)' "$sock" 2>&1)
[[ $out == "Permission denied" ]] || fail "second user: expected EACCES, got: $out"
out=$(setpriv --reuid="$TEST_USER2" --regid="$TEST_USER2" --init-groups --reset-env -- \
  nbdinfo --size "nbd+unix:///disk?socket=$sock" 2>&1) && fail "second user connected: $out"
grep -q 'Permission denied' <<<"$out" || fail "nbdinfo as second user: $out"
pass "$TEST_USER2 is refused (Permission denied); $TEST_USER connects"

kill -TERM "$pid"; wait "$pid" || fail "hexz serve exit status $?"
[[ ! -e "$dir" ]] || fail "private directory $dir left behind"
pass "stop removes the socket and its private directory"

# TCP (anyone on the machine could connect: only by explicit choice).
port=""
for _ in 1 2 3 4 5; do
  p=$((20000 + RANDOM % 20000))
  as_user "$HEXZ" serve "$T/snap.st" --listen "127.0.0.1:$p" --daemon --log-file "$T/u/tcp.log" \
    >"$T/tcp.out" 2>&1 && { port=$p; break; }
done
[[ -n $port ]] || fail "hexz serve --listen: $(cat "$T/tcp.out")"
wpid=$(grep -o 'worker pid [0-9]*' "$T/tcp.out" | awk '{print $3}')
on_exit "kill $wpid"
grep -q "nbd://127.0.0.1:$port/disk" "$T/tcp.out" || fail "TCP URI: $(cat "$T/tcp.out")"
[[ $(nbdinfo --size "nbd://127.0.0.1:$port/disk") == 2097152 ]] || fail "TCP export size"
pass "--listen 127.0.0.1:$port --daemon returns once serving; nbdinfo connects over TCP"
kill -TERM "$wpid"
wait_for bash -c "! kill -0 $wpid" || fail "daemon worker did not stop on SIGTERM"
grep -q 'NBD server stopped' "$T/u/tcp.log" || fail "daemon log: $(cat "$T/u/tcp.log")"
pass "the daemon's worker stops cleanly on SIGTERM"
expect_fail_msg 'bad port' "$HEXZ" serve "$T/snap.st" --listen 127.0.0.1:99999
