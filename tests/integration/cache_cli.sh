#!/usr/bin/env bash
# hexz cache list|stats|drop on segments that no worker holds: none at all, a
# damaged one, one squatted by another user. (Live and stale segments, and the
# cache itself, are covered by the unit tests in tests/unit/cache.)
source "$(dirname "$0")/../lib/common.sh"

[[ -d /dev/shm && -w /dev/shm ]] || skip "/dev/shm is not writable"
export HEXZ_CACHE_NAME_PREFIX="hexz-cache-it-$$"
seg="/dev/shm/$HEXZ_CACHE_NAME_PREFIX-$(id -u)"
on_exit rm -f "$seg"

out=$("$HEXZ" cache list) || fail "cache list with no segment: $out"
grep -q "no shared caches" <<<"$out" || fail "cache list output: $out"
pass "list: no segments"
expect_fail_msg "no shared cache /$HEXZ_CACHE_NAME_PREFIX-$(id -u) \(it exists only while" "$HEXZ" cache stats
expect_fail_msg "no shared cache /$HEXZ_CACHE_NAME_PREFIX-$(id -u) to remove" "$HEXZ" cache drop
rc=0; "$HEXZ" cache frobnicate >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "unknown cache subcommand should exit 2, got $rc"
pass "unknown subcommand exits 2"

# A damaged segment (not a hexz layout) is listed as invalid and can be dropped.
head -c 65536 /dev/urandom >"$seg"
chmod 0600 "$seg"
out=$("$HEXZ" cache list) || fail "cache list: $out"
grep -qE "^/$HEXZ_CACHE_NAME_PREFIX-$(id -u) +64 KiB .*invalid \(" <<<"$out" || fail "list shows the damaged segment: $out"
pass "list: damaged segment shown as invalid"
expect_fail_msg "state +invalid \(not initialised or not a hexz cache" "$HEXZ" cache stats
out=$("$HEXZ" cache drop "/$HEXZ_CACHE_NAME_PREFIX-$(id -u)") || fail "drop damaged segment: $out"
[[ ! -e $seg ]] || fail "segment still there after drop"
pass "drop removes a damaged segment"

# A segment with the user's name but another owner is neither listed nor used.
if [[ $(id -u) -eq 0 ]]; then
  require_test_user
  uid=$(id -u "$TEST_USER")
  squat="/dev/shm/$HEXZ_CACHE_NAME_PREFIX-$uid"
  on_exit rm -f "$squat"
  head -c 4096 /dev/zero >"$squat"
  chmod 0600 "$squat"
  out=$(as_user env HEXZ_CACHE_NAME_PREFIX="$HEXZ_CACHE_NAME_PREFIX" hexz cache list) ||
    fail "list as $TEST_USER: $out"
  grep -q "no shared caches" <<<"$out" || fail "another user's segment was listed: $out"
  expect_fail_msg "Permission denied" as_user env HEXZ_CACHE_NAME_PREFIX="$HEXZ_CACHE_NAME_PREFIX" hexz cache drop
  expect_fail_msg "Permission denied" as_user env HEXZ_CACHE_NAME_PREFIX="$HEXZ_CACHE_NAME_PREFIX" hexz cache stats
  [[ -e $squat ]] || fail "another user's segment was removed"
  pass "another user's segment is left alone"
fi
