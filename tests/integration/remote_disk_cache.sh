#!/usr/bin/env bash
# --disk-cache DIR[:SIZE]: the blocks a mount of a URL fetches are kept in
# DIR/blocks.cache, and a second mount on the host fetches nothing. As the
# unprivileged test user, against nginx on 127.0.0.1 (its access log counts
# the requests):
# - first mount: the disk cmp's equal to the local one; DIR is created 0700,
#   the file 0600, both the user's; second mount: equal, no range request for
#   the snapshot after the mount is up (the front-end reads the header and
#   index at open, without the cache);
# - the cache file damaged by hand (bytes flipped, then cut short): a miss,
#   fetched again, and the data is still right;
# - the object replaced on the server by another snapshot: no old entry hits;
# - SIZE bounds the file; a smaller bound than the disk still reads right;
# - hexz serve URL --disk-cache DIR (no SIZE: the file keeps its size): nbdcopy reads the right disk from the warm
#   cache, fetching nothing;
# - a block the server sent wrong is cached with a valid entry checksum: the
#   worker reads it once more past the cache, which the fresh bytes replace;
# - a DIR of another user or writable by others is refused; --disk-cache with
#   a local file is refused.
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/mount.sh"
source "$(dirname "$0")/../lib/nbd.sh"
source "$(dirname "$0")/../lib/http.sh"
require_user_fuse
require_nginx
require_cmd cmp nbdcopy python3
HTTP_PORT=20030

cd "$T"
mkdir -p www
python3 - <<'PY'
import os
d = os.urandom(3 << 20) + bytes(1 << 20) + b"hexz disk cache " * (((2 << 20) // 16) + 1)
open("a.raw", "wb").write(d[:6 << 20])
open("b.raw", "wb").write(os.urandom(6 << 20))
PY
"$HEXZ" pack --disk a.raw -o www/d.st --quiet
chmod -R a+rX www
start_nginx $HTTP_PORT
U=http://127.0.0.1:$HTTP_PORT
user_dir "$T/u"
user_dir "$T/mnt"
DC=$T/u/dc

# mount_read CACHE_SPEC EXPECTED [LOG_CUT]: mounts $U/d.st with the cache,
# empties the access log once the mount is up, cmp's the disk, unmounts.
mount_read() {
  as_user "$HEXZ" mount -d --log-file "$T/u/m.log" --disk-cache "$1" "$U/d.st" "$T/mnt" \
    >/dev/null || fail "hexz mount --disk-cache $1: $(cat "$T/u/m.log")"
  : > "$NGINX_LOG"
  as_user cmp "$T/mnt/disk" "$2" || fail "the disk read with --disk-cache $1 differs from $2"
  as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "hexz unmount"
  assert_nothing_left "mount --disk-cache $1"
}
fetched() { nginx_count '^206 GET /d.st'; }

# 1. Cold, then warm.
mount_read "$DC:64M" a.raw
[[ $(fetched) -gt 0 ]] || fail "the cold mount fetched nothing"
[[ $(stat -c '%a %U' "$DC") == "700 $TEST_USER" ]] || fail "DIR: $(stat -c '%a %U' "$DC")"
[[ $(stat -c '%a %U' "$DC/blocks.cache") == "600 $TEST_USER" ]] ||
  fail "the cache file: $(stat -c '%a %U' "$DC/blocks.cache")"
size=$(stat -c %s "$DC/blocks.cache")
[[ $size -le $((64 << 20)) ]] || fail "the cache file has $size bytes, over 64M"
pass "a cold mount with --disk-cache reads the right disk; DIR 0700 and blocks.cache 0600, the user's, $size bytes"
mount_read "$DC:64M" a.raw
[[ $(fetched) -eq 0 ]] || fail "the warm mount fetched: $(grep 'GET /d.st' "$NGINX_LOG")"
pass "a second mount with the same --disk-cache reads the right disk and fetches nothing"

# 2. The cache damaged by hand: a bit flipped every 4 KiB, then cut short.
python3 - "$DC/blocks.cache" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    data = bytearray(f.read())
    for i in range(100, len(data), 4096):
        data[i] ^= 0x10
    f.seek(0); f.write(data)
PY
mount_read "$DC:64M" a.raw
[[ $(fetched) -gt 0 ]] || fail "a damaged cache was used"
truncate -s 100000 "$DC/blocks.cache"
mount_read "$DC:64M" a.raw
[[ $(fetched) -gt 0 ]] || fail "nothing refetched after the cache was cut short"
[[ $(stat -c %s "$DC/blocks.cache") -eq $size ]] || fail "the cache file was not restored to its size"
mount_read "$DC:64M" a.raw
[[ $(fetched) -eq 0 ]] || fail "the repaired cache is not warm"
pass "a damaged or truncated cache file is a miss: fetched again, the data right, then warm again"

# 3. The object replaced by another snapshot: no old entry hits.
"$HEXZ" pack --disk b.raw -o www/d.st.new --quiet
chmod a+r www/d.st.new
mv www/d.st.new www/d.st
mount_read "$DC:64M" b.raw
[[ $(fetched) -gt 0 ]] || fail "the replaced object was not fetched"
pass "an object replaced on the server reads right through the same cache (another snapshot id)"

# 4. SIZE bounds the file; a bound under the disk's size still reads right.
mount_read "$T/u/small:1M" b.raw
small=$(stat -c %s "$T/u/small/blocks.cache")
[[ $small -le $((1 << 20)) && $small -gt 0 ]] || fail "a 1M cache file has $small bytes"
mount_read "$T/u/small:1M" b.raw
pass "--disk-cache DIR:1M: the file holds $small bytes and a 6 MiB disk still reads right"

# 5. serve URL --disk-cache DIR: without SIZE the file keeps its size (and
# so its entries).
require_test_user
start_hexz_serve web "$U/d.st" --disk-cache "$DC"
: > "$NGINX_LOG"
nbdcopy "$(nbd_uri)" "$T/served.raw" || fail "nbdcopy from the export"
cmp "$T/served.raw" b.raw || fail "the served disk differs"
stop_hexz_serve
[[ $(stat -c %s "$DC/blocks.cache") -eq $size ]] || fail "serve without SIZE resized the cache"
[[ $(fetched) -eq 0 ]] || fail "serve fetched though the cache is warm: $(grep 'GET /d.st' "$NGINX_LOG")"
pass "hexz serve URL --disk-cache: nbdcopy reads the right disk from the warm cache, fetching nothing"

# 6. Bytes the server sent wrong are cached with a valid entry checksum;
# the worker's block check fails on them, reads the block once more past
# the cache, and the fresh bytes replace the entry. A damaged copy of the
# object (same snapshot id, one byte flipped inside a stored block) first:
# every read of that block is EIO (the fresh bytes are bad too) and the log
# names the URL and the offset; then the good object back: the read is right
# and exactly the one block is fetched again.
DC2=$T/u/dc2
cp www/d.st good.st
python3 - www/d.st <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek((1 << 20) + 12345); b = f.read(1)
    f.seek((1 << 20) + 12345); f.write(bytes([b[0] ^ 0x40]))
PY
as_user "$HEXZ" mount -d --log-file "$T/u/bad.log" --disk-cache "$DC2:64M" "$U/d.st" "$T/mnt" \
  >/dev/null || fail "hexz mount of the damaged object: $(cat "$T/u/bad.log")"
err=$(as_user dd if="$T/mnt/disk" of=/dev/null bs=64k conv=noerror 2>&1)
[[ $err == *"Input/output error"* ]] || fail "the damaged object read without EIO: $err"
as_user "$HEXZ" unmount "$T/mnt" >/dev/null || fail "hexz unmount"
assert_nothing_left "mount of the damaged object"
grep -q "$U/d.st: disk block [0-9]* checksum mismatch at offset [0-9]* (also when read again past the disk cache)" \
  "$T/u/bad.log" || fail "the log does not name the URL, the block and its offset: $(cat "$T/u/bad.log")"
cp good.st www/d.st
mount_read "$DC2:64M" b.raw
[[ $(fetched) -eq 1 ]] ||
  fail "not exactly the one damaged block refetched: $(grep 'GET /d.st' "$NGINX_LOG")"
mount_read "$DC2:64M" b.raw
[[ $(fetched) -eq 0 ]] || fail "the refetched block did not replace the cache entry"
pass "a block cached wrong from the server is fetched once more past the cache and the entry replaced"

# 6. Refusals.
mkdir -p "$T/rootdir" && chmod 0755 "$T/rootdir"
expect_fail_msg 'belongs to uid 0' \
  as_user "$HEXZ" mount --disk-cache "$T/rootdir" "$U/d.st" "$T/mnt"
user_dir "$T/u/open"
chmod 0777 "$T/u/open"
expect_fail_msg 'writable by group or others' \
  as_user "$HEXZ" mount --disk-cache "$T/u/open" "$U/d.st" "$T/mnt"
cp www/d.st "$T/u/local.st" && chmod a+r "$T/u/local.st"
expect_fail_msg 'disk-cache is for a snapshot read from a URL' \
  as_user "$HEXZ" mount --disk-cache "$DC" "$T/u/local.st" "$T/mnt"
assert_nothing_left "refusals"
pass "a DIR of another user or writable by others, and a local snapshot, are refused"
