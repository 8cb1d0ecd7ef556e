# Helpers shared by the mount, overlay and commit tests (sourced after
# tests/lib/common.sh).

# make_snapshot OUT DISK [MEMORY]: packs with `hexz pack`, world-readable.
make_snapshot() {
  local out=$1 disk=$2 mem=${3:-}
  local args=(pack --disk "$disk" --output "$out" --quiet)
  [[ -n "$mem" ]] && args+=(--memory "$mem")
  local msg
  msg=$("$HEXZ" "${args[@]}" 2>&1) || fail "hexz pack failed: $msg"
  chmod 0644 "$out"
}

# cat_stream SNAP STREAM OUT: the reference bytes, through `hexz cat`.
cat_stream() {
  "$HEXZ" cat "$1" --stream "$2" --output "$3" || fail "hexz cat $1 --stream $2 failed"
}

# procs_of_test [COMM]: the processes named COMM (default hexz-fused) that
# hold a descriptor into this test's $T (tests run in parallel as one user).
procs_of_test() {
  local p
  for p in $(pgrep -x "${1:-hexz-fused}"); do
    ls -l "/proc/$p/fd" 2>/dev/null | grep -q -- "-> $T/" && echo "$p"
  done
  return 0
}
# Workers serving a file of this test.
workers_of_test() { procs_of_test hexz-fused; }
kill_test_workers() {
  local p
  for p in $(workers_of_test); do kill -KILL "$p" 2>/dev/null || true; done
}
on_exit kill_test_workers

# "worker pid N" from hexz mount's message.
pid_from() { grep -o 'worker pid [0-9]*' "$1" | head -n1 | awk '{print $3}'; }

# No hexz mount under $T and no worker of this test may be left.
assert_nothing_left() {
  local what=$1 i
  grep -q " $T[^ ]* fuse.hexz " /proc/mounts && fail "$what: a hexz mount is left: $(grep " $T" /proc/mounts)"
  for ((i=0; i<50; i++)); do [[ -z "$(workers_of_test)" ]] && break; sleep 0.1; done
  [[ -z "$(workers_of_test)" ]] || fail "$what: a hexz-fused worker is left running: $(workers_of_test)"
  return 0
}

# Waits until MNT shows `disk` (to the test user: without -o allow_root the
# mount is theirs alone).
wait_mounted() { wait_for as_user test -e "$1/disk" || fail "$1 did not become usable"; }

# Cache tests use a segment of their own (HEXZ_CACHE_NAME_PREFIX), so a real
# cache of the test user is never touched: sets P, uid and seg (the segment's
# path), removes the segment on exit; hx runs hexz as the test user with it.
use_test_cache() {
  [[ -d /dev/shm && -w /dev/shm ]] || skip "/dev/shm is not writable"
  P="hexz-cache-$1-$$"
  uid=$(id -u "$TEST_USER")
  seg="/dev/shm/$P-$uid"
  on_exit rm -f "$seg"
}
hx() { as_user env HEXZ_CACHE_NAME_PREFIX="$P" "$HEXZ" "$@"; }
stat_field() { hx cache stats | awk -v f="$1" '$1 == f {print $2}'; }
segment_gone() { [[ ! -e $seg ]]; }
