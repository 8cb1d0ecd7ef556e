#!/usr/bin/env bash
# Bad option values are usage errors: exit status 2 and a message naming the
# option, before anything is opened or started. --cache-size (malformed, out
# of range, empty), --listen ports, --level (0, and outside each codec's
# range; none takes no level), --uid/--gid 4294967295 ((uid_t)-1). Good values
# of the same options are not usage errors.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"

cd "$T"
head -c 1M /dev/urandom >disk.img
make_snapshot snap.st disk.img

# expect_rc RC PATTERN CMD...: CMD exits with RC and prints PATTERN.
expect_rc() {
  local want=$1 pattern=$2 out rc
  shift 2
  out=$(timeout 60 "$@" 2>&1) && rc=0 || rc=$?
  [[ $rc -eq $want ]] || fail "expected exit $want from: $* (got $rc: $out)"
  grep -qE -- "$pattern" <<<"$out" || fail "expected '$pattern' from: $* (got: $out)"
}

# The mountpoint does not exist: nothing can be mounted whatever happens.
for v in 0 -1 1X 99999T 512K 1 16E 1.5G ""; do
  expect_rc 2 "--cache-size.*(invalid size|too small|too large|empty)" \
    "$HEXZ" mount snap.st nomnt --cache-size "$v"
  expect_rc 2 "--cache-size.*(invalid size|too small|too large|empty)" \
    "$HEXZ" serve snap.st --socket "$T/s.sock" --cache-size "$v"
done
[[ ! -e "$T/s.sock" ]] || fail "a refused serve left its socket"
expect_rc 1 "mountpoint nomnt does not exist" "$HEXZ" mount snap.st nomnt --cache-size 1G
pass "bad --cache-size values (also empty) exit 2; good ones pass"

for v in 127.0.0.1:99999 127.0.0.1:abc 99999 :0 "[::1]:70000"; do
  expect_rc 2 "--listen.*(bad port|expected)" "$HEXZ" serve snap.st --listen "$v"
done
pass "bad --listen ports exit 2"

for args in "--level 0" "--level 13" "--compression lz4 --level -1" "--compression zstd --level 0" \
  "--compression zstd --level 20" "--compression none --level 1" "--compression none --level 0"; do
  # shellcheck disable=SC2086
  expect_rc 2 "--level" "$HEXZ" pack --disk disk.img -o out.st --quiet $args
  [[ ! -e out.st ]] || fail "pack $args wrote out.st"
  # shellcheck disable=SC2086
  expect_rc 2 "--level" "$HEXZ" commit --base snap.st --overlay none.ovl -o out.st $args
done
for args in "--level 1" "--level 12" "--compression zstd --level 1" "--compression zstd --level 19" \
  "--compression none" ""; do
  # shellcheck disable=SC2086
  "$HEXZ" pack --disk disk.img -o out.st --quiet $args || fail "pack $args was refused"
  "$HEXZ" cat out.st | cmp - disk.img || fail "pack $args: content differs"
  rm -f out.st
done
pass "--level 0 and levels outside 1..12 (lz4) / 1..19 (zstd) exit 2; none takes no level"

for opt in --uid --gid; do
  expect_rc 2 "$opt 4294967295 is \(uid_t\)-1" "$HEXZ" mount snap.st nomnt "$opt" 4294967295
  expect_rc 1 "mountpoint nomnt does not exist" "$HEXZ" mount snap.st nomnt "$opt" 4294967294
done
pass "--uid/--gid 4294967295 exit 2"
