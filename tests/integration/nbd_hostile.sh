#!/usr/bin/env bash
# Hostile clients against the server process over TCP: truncated handshakes,
# garbage, bad option magic, an oversized option, a WRITE whose payload never
# arrives, clients that vanish. The server must stay up and keep serving real
# clients byte-exact, then shut down cleanly.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
require_cmd nbdinfo nbdcopy

head -c 2M /dev/urandom >"$T/disk.img"
port=""
for _ in 1 2 3 4 5; do
  p=$((20000 + RANDOM % 20000))
  "$NBD_TESTSERVER" --verbose --port "$p" --image "$T/disk.img" 2>"$T/srv.log" &
  pid=$!
  if wait_for bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" && kill -0 "$pid" 2>/dev/null; then
    port=$p
    break
  fi
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
done
[[ -n $port ]] || fail "test server did not start on TCP: $(cat "$T/srv.log")"
on_exit "kill $pid"
U="nbd://127.0.0.1:$port/disk"

FLAGS='\x00\x00\x00\x03'
IHAVEOPT='IHAVEOPT'
GO_DISK="${IHAVEOPT}"'\x00\x00\x00\x07\x00\x00\x00\x0a\x00\x00\x00\x04disk\x00\x00'
# client sends $1 (printf format) and hangs up; output is ignored.
send_and_vanish() {
  ( exec 3<>/dev/tcp/127.0.0.1/$port || exit 0
    printf "$1" >&3 2>/dev/null
    timeout 2 head -c 100000 <&3 >/dev/null 2>&1
    exec 3>&- ) || true
}

send_and_vanish ''                                        # connect and leave
send_and_vanish '\x00\x00'                                # half the client flags
send_and_vanish "$FLAGS"'IHAVEO'                          # truncated option header
send_and_vanish "$FLAGS"'NOTMAGIC\x00\x00\x00\x07\x00\x00\x00\x00'   # bad option magic
send_and_vanish "$FLAGS${IHAVEOPT}"'\x00\x00\x00\x63\x00\x00\x00\x03abc'  # unknown option
send_and_vanish "$FLAGS${IHAVEOPT}"'\x00\x00\x00\x07\xff\xff\xff\xf0'    # 4 GiB option
send_and_vanish '\xff\xff\xff\xff'                        # unknown client flags
# GO, then a 1 MiB WRITE with 10 bytes of payload, then gone.
send_and_vanish "$FLAGS$GO_DISK"'\x25\x60\x95\x13\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x000123456789'
# GO, then out-of-range, oversized and bad-flag READs, a bad magic.
send_and_vanish "$FLAGS$GO_DISK"'\x25\x60\x95\x13\x00\x00\x00\x00AAAAAAAA\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x10\x00''\x25\x60\x95\x13\x00\x00\x00\x00BBBBBBBB\x00\x00\x00\x00\x00\x00\x00\x00\x7f\xff\xff\xff''\x25\x60\x95\x13\x40\x00\x00\x00CCCCCCCC\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00''JUNKJUNKJUNKJUNKJUNKJUNKJUNK'
head -c 64K /dev/urandom >"$T/noise"
( exec 3<>/dev/tcp/127.0.0.1/$port && cat "$T/noise" >&3 ) 2>/dev/null || true
kill -0 "$pid" || fail "server died: $(cat "$T/srv.log")"
grep -q "bad option magic" "$T/srv.log" && grep -q "too large" "$T/srv.log" && grep -q "bad request magic" "$T/srv.log" && grep -q "WRITE payload" "$T/srv.log" \
  || fail "hostile input did not reach the parser: $(cat "$T/srv.log")"
pass "server survives hostile clients"

[[ $(nbdinfo --size "$U") == 2097152 ]] || fail "nbdinfo after hostile clients"
nbdcopy "$U" "$T/copy.img" || fail "nbdcopy after hostile clients"
cmp "$T/disk.img" "$T/copy.img" || fail "copy differs after hostile clients"
pass "still serving real clients byte-exact"

kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
[[ $rc -eq 0 ]] || fail "server exited $rc: $(cat "$T/srv.log")"
pass "clean shutdown"
