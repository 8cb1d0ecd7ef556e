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

# start_hexz_serve NAME SNAP ARGS...: runs `hexz serve SNAP --socket
# $T/u/NAME.sock ARGS` as the unprivileged test user (in the background),
# waits until it serves, stops it at exit, and sets NBD_SOCK, NBD_PID (the
# front-end) and WORKER_PID (the sandboxed worker). Needs require_test_user.
start_hexz_serve() {
  local name=$1 snap=$2; shift 2
  user_dir "$T/u"
  NBD_SOCK="$T/u/$name.sock"
  # Not through as_user (a function: $! would be a subshell): setpriv execs
  # env, which execs hexz, so $! is the front-end itself.
  setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups --reset-env -- \
    env PATH="$T/bin:/usr/bin:/bin" HEXZ_FUSED="$HEXZ_FUSED" \
    "$HEXZ" serve "$snap" --socket "$NBD_SOCK" "$@" >"$T/$name.out" 2>"$T/$name.log" &
  NBD_PID=$!
  on_exit "kill $NBD_PID; wait $NBD_PID"
  wait_for grep -q 'worker pid' "$T/$name.out" ||
    fail "hexz serve did not start: $(cat "$T/$name.out" "$T/$name.log")"
  WORKER_PID=$(grep -o 'worker pid [0-9]*' "$T/$name.out" | awk '{print $3}')
}

# stop_hexz_serve: SIGTERM to the front-end; it must exit 0 and leave no
# worker and no socket behind.
stop_hexz_serve() {
  kill -TERM "$NBD_PID"
  local rc=0
  wait "$NBD_PID" || rc=$?
  [[ $rc -eq 0 ]] || fail "hexz serve exited $rc: $(cat "$T"/*.log)"
  ! kill -0 "$WORKER_PID" 2>/dev/null || fail "worker $WORKER_PID still running after stop"
  [[ ! -e "$NBD_SOCK" ]] || fail "socket $NBD_SOCK left behind"
}
