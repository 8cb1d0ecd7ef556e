# Helpers for the NBD integration tests (sourced after tests/lib/common.sh).
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

# assert_zero_map MAP: the `nbdinfo --map` output MAP of a make_zero_image
# export reports every byte of 4M..10M and 12M..16M as zero (flag bit 1), and
# neither offset 0 nor 10M.
assert_zero_map() {
  awk -v M=$((1 << 20)) '
    { s[NR] = $1; n[NR] = $2; t[NR] = $3 }
    function zero_at(o,   i) { for (i in s) if (s[i] <= o && o < s[i] + n[i] && int(t[i] / 2) % 2) return 1; return 0 }
    END {
      for (o = 4 * M; o < 10 * M; o += 4096) if (!zero_at(o)) exit 1
      for (o = 12 * M; o < 16 * M; o += 4096) if (!zero_at(o)) exit 1
      if (zero_at(0) || zero_at(10 * M)) exit 1
    }' <<<"$1" || fail "zero regions not reported as zero/hole: $1"
}

# make_ext4_tree SRC IMG: a small tree (a 3 MiB file, 50 small files, a
# symlink) in SRC and an ext4 image of it made with mkfs.ext4 -d.
make_ext4_tree() {
  local src=$1 img=$2 i
  mkdir -p "$src/dir/sub"
  head -c 3M /dev/urandom >"$src/big.bin"
  echo hello >"$src/dir/hello.txt"
  for i in $(seq 1 50); do echo "file $i" >"$src/dir/sub/f$i"; done
  ln -s hello.txt "$src/dir/link"
  mkfs.ext4 -q -F -d "$src" "$img" 32M || fail "mkfs.ext4 -d"
}

# check_ext4_via_nbdfuse URI IMG SRC: nbdfuse exposes the export URI as a
# file equal to IMG; a read-only loop mount (root) of it matches SRC (diff -r).
check_ext4_via_nbdfuse() {
  local uri=$1 img=$2 src=$3 fpid
  mkdir -p "$T/fuse" "$T/mnt"
  nbdfuse -r "$T/fuse" "$uri" &
  fpid=$!
  on_exit "fusermount3 -u -z '$T/fuse'; kill $fpid"
  wait_for test -f "$T/fuse/nbd" || fail "nbdfuse did not mount"
  cmp "$T/fuse/nbd" "$img" || fail "nbdfuse file differs from the image"
  pass "nbdfuse file equals the image"
  mount -o ro,loop -t ext4 "$T/fuse/nbd" "$T/mnt" 2>"$T/mount.err" ||
    skip "loop mount failed: $(cat "$T/mount.err")"
  on_exit "umount '$T/mnt'"
  diff -r --exclude=lost+found "$src" "$T/mnt" || fail "diff -r"
  pass "ext4 through nbdfuse + loop mount: diff -r clean"
  umount "$T/mnt"
  fusermount3 -u "$T/fuse"
  wait "$fpid" || true
}

# start_hexz_serve NAME SNAP ARGS...: runs `hexz serve SNAP --socket
# $T/u/NAME.sock ARGS` (or, when ARGS has --listen, `hexz serve SNAP ARGS`)
# as the unprivileged test user (in the background), waits until it serves,
# stops it at exit, and sets NBD_SOCK, NBD_PID (the front-end) and WORKER_PID
# (the sandboxed worker). Needs require_test_user.
start_hexz_serve() {
  local name=$1 snap=$2; shift 2
  user_dir "$T/u"
  NBD_SOCK="$T/u/$name.sock"
  local sock_args=(--socket "$NBD_SOCK")
  if [[ " $* " == *" --listen "* ]]; then NBD_SOCK=""; sock_args=(); fi
  # Not through as_user (a function: $! would be a subshell): setpriv execs
  # env, which execs hexz, so $! is the front-end itself.
  setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups --reset-env -- \
    env PATH="$T/bin:/usr/bin:/bin" HEXZ_FUSED="$HEXZ_FUSED" \
    "$HEXZ" serve "$snap" "${sock_args[@]}" "$@" >"$T/$name.out" 2>"$T/$name.log" &
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
  [[ -z "$NBD_SOCK" || ! -e "$NBD_SOCK" ]] || fail "socket $NBD_SOCK left behind"
}

# The read-only server at $(nbd_uri) exports a 16 MiB disk and a 1 MiB memory
# stream: nbdinfo sees the size, structured replies, base:allocation, the
# flags of a read-only hexz export, and both exports in the list.
assert_readonly_exports() {
  local info list f
  info=$(nbdinfo "$(nbd_uri)") || fail "nbdinfo: $info"
  grep -q 'export-size: 16777216' <<<"$info" || fail "size: $info"
  grep -q 'using structured packets' <<<"$info" || fail "structured replies: $info"
  grep -q 'base:allocation' <<<"$info" || fail "base:allocation: $info"
  for f in 'is_read_only: true' 'can_flush: true' 'can_fua: true' 'can_multi_conn: true' \
           'can_cache: true' 'can_df: true' 'can_trim: false' 'can_zero: false' \
           'block_size_minimum: 1' 'block_size_maximum: 33554432'; do
    grep -q "$f" <<<"$info" || fail "expected '$f' in: $info"
  done
  pass "nbdinfo: size, structured replies, base:allocation, flags"

  list=$(nbdinfo --list "$(nbd_uri)") || fail "nbdinfo --list: $list"
  grep -q 'export="disk"' <<<"$list" && grep -q 'export="memory"' <<<"$list" || fail "list: $list"
  [[ $(nbdinfo --size "$(nbd_uri memory)") == 1048576 ]] || fail "memory export size"
}
