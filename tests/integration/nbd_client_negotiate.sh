#!/usr/bin/env bash
# The client-side handshake used by `hexz mount --nbd` (common/nbd/client.h)
# against third-party servers (nbdkit, qemu-nbd) and the hexz server: it learns
# size, flags and block sizes, and leaves the socket ready for simple-reply
# transmission (it reads the first 4 KiB back byte-exact).
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/nbd.sh"
NEG="$HEXZ_BUILD_DIR/tests/hexz_nbd_negotiate"
[[ -x "$NEG" ]] || skip "hexz_nbd_negotiate is not built"

head -c 1M /dev/urandom >"$T/src.img"
head -c 4096 "$T/src.img" >"$T/want"
checked=0

start_nbd_server own --image "$T/src.img"
out=$("$NEG" "$NBD_SOCK" "" "$T/got") || fail "against hexz: $out"
grep -q 'size=1048576 .*read_only=1 min=1 preferred=4096 max=33554432' <<<"$out" || fail "hexz: $out"
cmp "$T/want" "$T/got" || fail "hexz: data differs"
expect_fail_msg "no export 'nosuch'" "$NEG" "$NBD_SOCK" nosuch "$T/got"
pass "hexz server: $out"
checked=$((checked + 1))

if command -v nbdkit >/dev/null; then
  nbdkit --exit-with-parent -U "$T/kit.sock" file file="$T/src.img" &
  on_exit "kill $!"
  wait_for "$NEG" "$T/kit.sock" "" /dev/null || fail "nbdkit did not start"
  out=$("$NEG" "$T/kit.sock" "" "$T/got") || fail "against nbdkit: $out"
  grep -q 'size=1048576' <<<"$out" || fail "nbdkit: $out"
  cmp "$T/want" "$T/got" || fail "nbdkit: data differs"
  pass "nbdkit file: $out"
  nbdkit --exit-with-parent -U "$T/mem.sock" memory 1M &
  on_exit "kill $!"
  wait_for "$NEG" "$T/mem.sock" "" /dev/null || fail "nbdkit memory did not start"
  out=$("$NEG" "$T/mem.sock" "" "$T/got") || fail "against nbdkit memory: $out"
  grep -q 'size=1048576 .*read_only=0' <<<"$out" || fail "nbdkit memory: $out"
  cmp <(head -c 4096 /dev/zero) "$T/got" || fail "nbdkit memory: not zeroes"
  pass "nbdkit memory 1M: $out"
  checked=$((checked + 1))
fi

if command -v qemu-nbd >/dev/null; then
  qemu-nbd --persistent -r -f raw -x disk -k "$T/q.sock" "$T/src.img" &
  on_exit "kill $!"
  wait_for "$NEG" "$T/q.sock" disk /dev/null || fail "qemu-nbd did not start"
  out=$("$NEG" "$T/q.sock" disk "$T/got") || fail "against qemu-nbd: $out"
  grep -q 'size=1048576 .*read_only=1' <<<"$out" || fail "qemu-nbd: $out"
  cmp "$T/want" "$T/got" || fail "qemu-nbd: data differs"
  expect_fail_msg "nosuch" "$NEG" "$T/q.sock" nosuch "$T/got"
  pass "qemu-nbd: $out"
  checked=$((checked + 1))
fi
[[ $checked -ge 2 ]] || skip "neither nbdkit nor qemu-nbd is installed"
