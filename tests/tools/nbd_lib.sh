# Helpers for the NBD integration tests (sourced after tests/integration/lib.sh).
#
# start_nbd_server NAME ARGS...: runs hexz_nbd_testserver on $T/NAME.sock with
# ARGS, stops it at exit, and sets NBD_SOCK and NBD_PID.
NBD_TESTSERVER="$HEXZ_BUILD_DIR/tests/hexz_nbd_testserver"
[[ -x "$NBD_TESTSERVER" ]] || skip "hexz_nbd_testserver is not built"

start_nbd_server() {
  local name=$1; shift
  NBD_SOCK="$T/$name.sock"
  "$NBD_TESTSERVER" --socket "$NBD_SOCK" "$@" 2>"$T/$name.log" &
  NBD_PID=$!
  on_exit "kill $NBD_PID; wait $NBD_PID"
  wait_for test -S "$NBD_SOCK" || fail "NBD test server did not start: $(cat "$T/$name.log")"
}

# stop_nbd_server: SIGTERM, and the server must exit 0 (clean shutdown).
stop_nbd_server() {
  kill -TERM "$NBD_PID"
  local rc=0
  wait "$NBD_PID" || rc=$?
  [[ $rc -eq 0 ]] || fail "NBD test server exited $rc: $(cat "$T"/*.log)"
}

nbd_uri() { echo "nbd+unix:///${1:-}?socket=$NBD_SOCK"; }

# make_zero_image PATH: 16 MiB with data, a sparse hole, and written zeroes.
make_zero_image() {
  local p=$1
  head -c 4M /dev/urandom >"$p"
  truncate -s 16M "$p"                                                  # 4M..16M hole
  dd if=/dev/zero of="$p" bs=1M count=2 seek=6 conv=notrunc status=none  # 6M..8M zeros, allocated
  dd if=/dev/urandom of="$p" bs=1M count=2 seek=10 conv=notrunc status=none
}
