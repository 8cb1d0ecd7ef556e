#!/usr/bin/env bash
# hexz pack writes its output atomically: SIGINT or SIGTERM in the middle
# leaves neither OUT nor a temp file, and an existing OUT stays untouched.
source "$(dirname "$0")/lib.sh"
require_cmd python3 cmp mkfifo

cd "$T"
head -c 1M /dev/urandom > small.img
"$HEXZ" pack --disk small.img -o out.st --quiet
cp out.st out.orig
for sig in INT TERM; do
  # A block device or a slow disk is simulated by a big random image read
  # while we signal; 64 MiB of random data takes long enough to compress.
  [[ -f big.img ]] || head -c 64M /dev/urandom > big.img
  "$HEXZ" pack --disk big.img -o out.st --compression zstd --level 19 --quiet &
  pid=$!
  sleep 1
  kill -"$sig" "$pid"
  rc=0; wait "$pid" || rc=$?
  [[ $rc -ne 0 ]] || fail "pack finished before SIG$sig; make the input bigger"
  cmp out.st out.orig || fail "SIG$sig replaced the existing output"
  ls -a | grep -q '\.tmp-' && fail "SIG$sig left a temp file: $(ls -a)"
  pass "SIG$sig leaves no partial output (rc $rc)"
done
# Failure on a full disk: /dev/full as the only directory is not possible, so
# use an unwritable directory instead (as root this is skipped).
if [[ $(id -u) -ne 0 ]]; then
  mkdir ro && chmod 0555 ro
  expect_fail_msg "ro/x.st: cannot create a temp file" "$HEXZ" pack --disk small.img -o ro/x.st
fi
