#!/usr/bin/env bash
# hexz loads libcurl (URLs) and libnbd (VM disk containers, NBD sources) only
# when a command needs them: they are not linked, a command on a local
# snapshot does not load them, and the commands that need them load them
# and work. A library that cannot be used is a clear error naming it.
source "$(dirname "$0")/../lib/common.sh"
require_cmd ldd cc qemu-img qemu-nbd

cd "$T"
libs=$(ldd "$HEXZ")
! grep -qE 'libcurl|libnbd' <<<"$libs" || fail "hexz links libcurl or libnbd: $libs"
pass "hexz is not linked with libcurl or libnbd"

head -c 4M /dev/urandom >disk.raw
"$HEXZ" pack --disk disk.raw -o local.st -q || fail "pack"
loaded=$(LD_DEBUG=files "$HEXZ" info local.st 2>&1 >/dev/null)
! grep -qE 'file=(libcurl|libnbd)' <<<"$loaded" || fail "hexz info of a local snapshot loaded: $(grep -E 'file=(libcurl|libnbd)' <<<"$loaded" | head -3)"
pass "hexz info of a local snapshot loads neither"

qemu-img convert -O qcow2 disk.raw disk.qcow2
loaded=$(LD_DEBUG=files "$HEXZ" pack --disk disk.qcow2 -o q.st -q 2>&1) || fail "pack of a qcow2: $loaded"
grep -q 'file=libnbd.so.0' <<<"$loaded" || fail "pack of a qcow2 did not load libnbd"
"$HEXZ" cat q.st | cmp - disk.raw || fail "the qcow2's snapshot differs from its disk"
pass "pack of a qcow2 loads libnbd and reads the disk"

# Nothing listens on port 1: the URL is tried (libcurl loaded), and fails
# once the time bound is over, not once per look at the file (info used to
# try the server three times, each for the whole --remote-timeout).
start=$SECONDS
out=$(LD_DEBUG=files "$HEXZ" info --remote-timeout 4 http://127.0.0.1:1/x.st 2>&1) &&
  fail "info of a dead URL succeeded"
took=$((SECONDS - start))
grep -q 'file=libcurl.so.4' <<<"$out" || fail "info of a URL did not load libcurl"
grep -qE '^hexz: http://127.0.0.1:1/x.st: .* \(gave up after [0-9]+ attempts in [0-9]+ s\)' <<<"$out" ||
  fail "info of a dead URL: $(grep '^hexz' <<<"$out")"
[[ $(grep -c 'gave up after' <<<"$out") -eq 1 ]] || fail "more than one error: $(grep '^hexz' <<<"$out")"
((took < 6)) || fail "info of a dead URL took $took s with --remote-timeout 4 (the server was tried again)"
pass "info of a URL loads libcurl; a dead server is given up on once, after --remote-timeout"

# Stand-ins without the functions hexz needs, found first by the loader.
mkdir fake
echo 'int hexz_fake_library;' >fake.c
cc -shared -fPIC -o fake/libcurl.so.4 fake.c
cc -shared -fPIC -o fake/libnbd.so.0 fake.c
LD_LIBRARY_PATH=$T/fake expect_fail_msg "remote snapshots need libcurl: libcurl.so.4 lacks curl_global_init" \
  "$HEXZ" info http://127.0.0.1:1/x.st
LD_LIBRARY_PATH=$T/fake expect_fail_msg "needs libnbd: libnbd.so.0 lacks nbd_create" \
  "$HEXZ" pack --disk disk.qcow2 -o q2.st
[[ ! -e q2.st ]] || fail "a failed pack left q2.st"
LD_LIBRARY_PATH=$T/fake "$HEXZ" info local.st >/dev/null || fail "a local snapshot needs neither library"
pass "an unusable libcurl or libnbd is a clear error; local snapshots do not need them"
