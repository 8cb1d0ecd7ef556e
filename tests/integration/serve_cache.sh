#!/usr/bin/env bash
# A FUSE worker and an NBD server of the same user share one block cache:
# after `hexz mount --cache-size` reads the disk, `hexz serve --cache-size`
# serves the same blocks from the cache (hit counters of `hexz cache stats`),
# with correct bytes, and the segment is gone once both have stopped.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
require_user_fuse
require_user_allow_other  # root reads the test user's mounts (-o allow_root)
require_cmd nbdcopy cmp dd
use_test_cache sv

head -c 8M /dev/urandom >"$T/disk.img"
make_snapshot "$T/snap.st" "$T/disk.img"
user_dir "$T/mnt"
user_dir "$T/run"

hx mount -o allow_root --daemon --cache-size 64M --log-file "$T/run/mount.log" "$T/snap.st" "$T/mnt" ||
  fail "mount --cache-size"
on_exit "as_user '$HEXZ' unmount '$T/mnt'"
as_user dd if="$T/mnt/disk" of=/dev/null bs=1M iflag=direct status=none || fail "read through FUSE"
hits_before=$(stat_field hits)
misses_before=$(stat_field misses)

hx serve --daemon --cache-size 64M --log-file "$T/run/serve.log" --socket "$T/run/nbd.sock" \
  "$T/snap.st" >"$T/serve.out" 2>&1 || fail "serve --cache-size: $(cat "$T/serve.out")"
server=$(pid_from "$T/serve.out")
[[ -n "$server" ]] || fail "no worker pid in: $(cat "$T/serve.out")"
on_exit "kill -TERM $server"
wait_for test -S "$T/run/nbd.sock" || fail "no socket"
as_user nbdcopy "nbd+unix:///disk?socket=$T/run/nbd.sock" "$T/run/copy" || fail "nbdcopy"
cmp "$T/run/copy" "$T/disk.img" || fail "served bytes differ"
hits_after=$(stat_field hits)
misses_after=$(stat_field misses)
[[ $misses_after -eq $misses_before ]] || fail "the server decompressed again ($misses_before -> $misses_after misses)"
((hits_after >= hits_before + 128)) || fail "the server did not hit the cache ($hits_before -> $hits_after hits)"
pass "hexz serve hit the FUSE worker's cache: $hits_before -> $hits_after hits, misses unchanged at $misses_after"

as_user "$HEXZ" unmount "$T/mnt" || fail "unmount"
kill -TERM "$server" || fail "server already gone"
wait_for bash -c "[[ ! -e '$seg' ]]" || fail "segment $seg left after both stopped"
pass "segment removed after the last worker stopped"
