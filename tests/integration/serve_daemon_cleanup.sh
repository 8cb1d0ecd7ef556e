#!/usr/bin/env bash
# `hexz serve --daemon` leaves nothing behind: once its worker exits (SIGTERM,
# or SIGKILL), the socket is removed, and with the default socket its private
# serve-XXXXXX directory too. The worker cannot do it (its sandbox forbids
# unlink); a small companion of the front-end does, also for a foreground
# server whose front-end was killed. A socket that someone replaced in the
# meantime is left alone.
source "$(dirname "$0")/../lib/common.sh"
require_test_user
require_cmd nbdinfo python3

head -c 1M /dev/urandom >"$T/disk.img"
"$HEXZ" pack --disk "$T/disk.img" -o "$T/snap.st" -q || fail "pack"
chmod 0644 "$T/snap.st"
user_dir "$T/run"
chmod 0700 "$T/run"
user_dir "$T/u"
export USER_RUNTIME_DIR="$T/run"

serve_d() {
  as_user "$HEXZ" serve "$T/snap.st" --daemon --log-file "$T/u/serve.log" "$@" >"$T/out" 2>&1 ||
    fail "serve --daemon $*: $(cat "$T/out")"
  wpid=$(grep -o 'worker pid [0-9]*' "$T/out" | awk '{print $3}')
  sock=$(grep -o 'socket=[^ ]*' "$T/out" | cut -d= -f2)
  [[ -n $wpid && -S $sock ]] || fail "no worker pid or socket in: $(cat "$T/out")"
  on_exit "kill -KILL $wpid"
  as_user nbdinfo --size "nbd+unix:///disk?socket=$sock" | grep -qx 1048576 || fail "cannot connect to $sock"
}
gone() { [[ ! -e $1 ]]; }

for sig in TERM KILL; do
  serve_d
  dir=$(dirname "$sock")
  [[ $(basename "$dir") == serve-* ]] || fail "default socket not in a serve-XXXXXX directory: $sock"
  kill -"$sig" "$wpid"
  wait_for gone "$dir" || fail "SIG$sig: $dir left behind: $(ls -la "$dir" 2>&1)"
  pass "default socket: its directory is removed after the worker's SIG$sig"
done
left=$(find "$T/run" -name 'serve-*' | wc -l)
((left == 0)) || fail "$left serve-* directories left"

serve_d --socket "$T/u/my.sock"
kill -TERM "$wpid"
wait_for gone "$T/u/my.sock" || fail "--socket $T/u/my.sock left behind"
pass "--socket PATH is removed after the worker exits"

# A socket replaced by another one under the same name stays.
serve_d --socket "$T/u/re.sock"
mv "$T/u/re.sock" "$T/u/re.sock.moved"
as_user python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$T/u/re.sock"
kill -TERM "$wpid"
wait_for bash -c "! kill -0 $wpid 2>/dev/null" || fail "worker did not stop"
sleep 0.5
[[ -S $T/u/re.sock ]] || fail "a socket that replaced ours was removed"
pass "a socket that replaced ours is left alone"

# Foreground server whose front-end is killed with SIGKILL: the worker
# follows, and the companion removes the socket and its directory.
as_user "$HEXZ" serve "$T/snap.st" >"$T/fg.out" 2>"$T/fg.err" &
wait_for grep -q 'worker pid' "$T/fg.out" || fail "foreground serve: $(cat "$T/fg.out" "$T/fg.err")"
wpid=$(grep -o 'worker pid [0-9]*' "$T/fg.out" | awk '{print $3}')
sock=$(grep -o 'socket=[^ ]*' "$T/fg.out" | cut -d= -f2)
fe=$(ps -o ppid= -p "$wpid" | tr -d ' ')
[[ $(cat "/proc/$fe/comm") == hexz ]] || fail "front-end of worker $wpid not found"
kill -KILL "$fe"
wait_for bash -c "! kill -0 $wpid 2>/dev/null" || fail "worker $wpid outlived its killed front-end"
wait_for gone "$(dirname "$sock")" || fail "$(dirname "$sock") left after the front-end was killed"
pass "foreground front-end killed: the socket and its directory are removed"
