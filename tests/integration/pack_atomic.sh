#!/usr/bin/env bash
# hexz pack writes its output atomically: SIGINT or SIGTERM in the middle
# leaves neither OUT nor a temp file, and an existing OUT stays untouched.
source "$(dirname "$0")/../lib/common.sh"
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
# A full file system: the error names the output, and nothing is left.
if [[ $(id -u) -eq 0 ]] && mkdir full && mount -t tmpfs -o size=1m tmpfs full 2>/dev/null; then
  on_exit "umount -l '$T/full'"
  expect_fail_msg "full/x.st: No space left on device" \
    "$HEXZ" pack --disk big.img -o full/x.st --compression none
  [[ -z "$(ls -A full)" ]] || fail "a full file system kept: $(ls -A full)"
  pass "ENOSPC leaves nothing behind"
fi
