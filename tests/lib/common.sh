# Shared helpers for integration tests (sourced first by every
# tests/integration/*.sh; tests/lib/ holds libraries only, never tests).
#
# Each test gets a private temp dir ($T) and a cleanup trap that unmounts what
# it mounted and kills what it started. A missing prerequisite skips with 77.
# Binaries are copied into $T/bin (world-readable) so that the unprivileged
# test user can run them wherever the build tree lives.
set -u

: "${HEXZ_BUILD_DIR:?HEXZ_BUILD_DIR must point at the build tree}"
: "${HEXZ_SOURCE_DIR:?HEXZ_SOURCE_DIR must point at the source tree}"
TEST_USER=${HEXZ_TEST_USER:-hexz-test}
TEST_USER2=${HEXZ_TEST_USER2:-hexz-test2}

T=$(mktemp -d /tmp/hexz-it.XXXXXX)
chmod 0755 "$T"
mkdir -p "$T/bin"
for b in hexz/hexz hexz-fused/hexz-fused hexz-nbd-helper/hexz-nbd-helper; do
  [[ -x "$HEXZ_BUILD_DIR/$b" ]] && install -m 0755 "$HEXZ_BUILD_DIR/$b" "$T/bin/"
done
HEXZ="$T/bin/hexz"
export HEXZ_FUSED="$T/bin/hexz-fused"   # the front-end looks here first
export PATH="$T/bin:$PATH"

_cleanup_cmds=()
# on_exit CMD...: run CMD (as a string) at exit, last registered first.
on_exit() { _cleanup_cmds+=("$*"); }
_run_cleanup() {
  local rc=$?
  local i
  for ((i=${#_cleanup_cmds[@]}-1; i>=0; i--)); do eval "${_cleanup_cmds[$i]}" >/dev/null 2>&1 || true; done
  # Anything still mounted under $T goes too.
  if [[ -d "$T" ]]; then
    grep -o " $T[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do
      fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$T"
  fi
  exit $rc
}
trap _run_cleanup EXIT
trap 'exit 130' INT TERM

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $*"; }
require_cmd() { local c; for c in "$@"; do command -v "$c" >/dev/null || skip "$c is not installed"; done; }
require_root() { [[ $(id -u) -eq 0 ]] || skip "needs root (to create/switch to the unprivileged test user)"; }
require_fuse() {
  [[ -c /dev/fuse ]] || skip "/dev/fuse is missing"
  [[ -r /dev/fuse && -w /dev/fuse ]] || skip "/dev/fuse is not accessible"
  require_cmd fusermount3
}
require_test_user() {
  require_root
  id "$TEST_USER" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$TEST_USER"
}
# The test user must be able to mount through FUSE.
require_user_fuse() {
  require_test_user
  require_fuse
  [[ "$(stat -c %a /dev/fuse 2>/dev/null)" == 666 ]] || skip "/dev/fuse is not mode 0666 (run scripts/setup.sh)"
}
# as_user CMD ARGS...: run as the unprivileged test user, in $T, with a clean env.
as_user() {
  setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups --reset-env -- \
    env PATH="$T/bin:/usr/local/bin:/usr/bin:/bin" HEXZ_FUSED="$HEXZ_FUSED" \
    XDG_RUNTIME_DIR="${USER_RUNTIME_DIR:-}" HOME="$(getent passwd "$TEST_USER" | cut -d: -f6)" \
    bash -c 'cd "$1" && shift && exec "$@"' _ "$T" "$@"
}
# Gives the test user a directory it owns.
user_dir() { mkdir -p "$1"; chown "$TEST_USER:$TEST_USER" "$1"; }

# expect_fail_msg PATTERN CMD...: CMD must exit non-zero and print PATTERN.
expect_fail_msg() {
  local pattern=$1; shift
  local out rc
  out=$("$@" 2>&1) && rc=0 || rc=$?
  [[ $rc -ne 0 ]] || fail "expected failure from: $* (got success; output: $out)"
  grep -qE -- "$pattern" <<<"$out" || fail "expected '$pattern' from: $* (got rc=$rc: $out)"
  echo "ok - '$*' fails with: $(head -n1 <<<"$out")"
}

# wait_for CMD...: retry for up to 10 s.
wait_for() {
  local i
  for ((i=0; i<100; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
is_mounted() { grep -q " $1 " /proc/mounts; }
# Tests in which root reads the test user's FUSE mount mount it with
# -o allow_root, which a user may only ask for when /etc/fuse.conf has
# user_allow_other (scripts/setup.sh --user-allow-other; scripts/test.sh does).
require_user_allow_other() {
  grep -qs '^[[:space:]]*user_allow_other' /etc/fuse.conf ||
    skip "/etc/fuse.conf lacks user_allow_other (run scripts/setup.sh --user-allow-other)"
}
