#!/usr/bin/env bash
# Remote snapshots against a misbehaving server (tests/tools/
# http_fault_server.py): a wrong Content-Range, a short, a long and a cut
# answer, a server that ignores ranges or sends no version, an object that
# changes after it was opened, a hung server and a stopped one. Each is
# detected with its own message, never served as data; transient failures
# are retried and give up within --remote-timeout (EIO, no hang); 503s are
# retried through; a server that comes back is read again.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/http.sh"
require_cmd python3 cmp
PORT=22020
U=http://127.0.0.1:$PORT

cd "$T"
mkdir www
head -c 192K /dev/urandom > d.raw
"$HEXZ" pack --disk d.raw -o www/d.st --quiet
on_exit stop_server
start_server

"$HEXZ" cat "$U/ok/d.st" | cmp - d.raw || fail "a well-behaved server"
pass "the test server serves the snapshot"

hx() { "$HEXZ" "$@" --remote-timeout 2; }
expect_fail_msg "$U/wrong-range/d.st: the server sent bytes 1-64 when asked for 0-63" \
  hx info "$U/wrong-range/d.st"
expect_fail_msg "$U/short/d.st: the server sent 54 bytes for the range 0-63 \(a truncated answer\) \(gave up after [0-9]+ attempts" \
  hx info "$U/short/d.st"
expect_fail_msg "$U/long/d.st: the server sent more than the 64 bytes asked for at 0" \
  hx info "$U/long/d.st"
expect_fail_msg "$U/cut/d.st: transfer closed with 32 bytes remaining.*gave up after" \
  hx info "$U/cut/d.st"
expect_fail_msg "$U/no-range/d.st: the server ignores range requests" hx info "$U/no-range/d.st"
expect_fail_msg "$U/no-version/d.st: the server sends neither ETag nor Last-Modified" \
  hx info "$U/no-version/d.st"
pass "wrong Content-Range, short, long and cut answers, no ranges, no version: refused"

expect_fail_msg "$U/changing/d.st: the object changed since it was opened \(HTTP 412\)" \
  hx cat -o /dev/null "$U/changing/d.st"
pass "an object replaced after it was opened fails, never mixes versions"

"$HEXZ" cat --remote-timeout 20 "$U/flaky/d.st" | cmp - d.raw || fail "503s are retried through"
pass "503 answers are retried until the server answers"

start=$SECONDS
expect_fail_msg "$U/stall/d.st: .*timed out.*gave up after" hx verify "$U/stall/d.st"
((SECONDS - start <= 8)) || fail "a hung server held hexz for $((SECONDS - start)) s (bound 2 s)"
pass "a hung server: the read fails within the bound"

stop_server
start=$SECONDS
expect_fail_msg "$U/ok/d.st: .*(onnect|refused).*gave up after" hx verify "$U/ok/d.st"
((SECONDS - start <= 8)) || fail "a stopped server held hexz for $((SECONDS - start)) s"
start_server
"$HEXZ" verify -q "$U/ok/d.st" || fail "the server is back, the snapshot is not"
pass "a stopped server: fails within the bound, works again once it is back"
