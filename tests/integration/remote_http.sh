#!/usr/bin/env bash
# Snapshots read straight from HTTP and HTTPS: nginx serves a chain of three
# snapshots (top -> ../mid -> base) on 127.0.0.1; info, verify, cat and
# commit --base read it by URL (the parents resolve relative to the child's URL) and match the
# local files byte for byte. HTTPS needs the test CA (--ca-file or
# CURL_CA_BUNDLE). 404, 403, a redirect, credentials in the URL and a
# missing remote parent each fail with a clear message that never shows the
# URL's query string. Every request is a range request (no 200 in the log).
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/http.sh"
require_nginx
require_cmd cmp python3
HTTP_PORT=22010
HTTPS_PORT=22011

cd "$T"
python3 - <<'PY'
import os
rnd = os.urandom
# 4 MiB: random data, a zero MiB, repeated text (compressible, dedup).
v1 = bytearray(rnd(2 << 20) + bytes(1 << 20) + b"hexz remote " * ((1 << 20) // 12) + bytes(1 << 20))
v1 = v1[:4 << 20]
open("v1.raw", "wb").write(v1)
v2 = bytearray(v1); v2[65536 * 3:65536 * 4] = rnd(65536); open("v2.raw", "wb").write(v2)
v3 = bytearray(v2); v3[65536 * 40:65536 * 41] = rnd(65536); open("v3.raw", "wb").write(v3)
PY
mkdir -p www/chain/sub www/lonely www/denied
"$HEXZ" pack --disk v1.raw -o www/chain/base.st --quiet
"$HEXZ" pack --disk v2.raw --parent www/chain/base.st -o www/chain/mid.st --quiet
"$HEXZ" pack --disk v3.raw --parent www/chain/mid.st -o www/chain/sub/top.st --quiet
"$HEXZ" info --json www/chain/sub/top.st | grep -q '"path": "../mid.st"' || fail "local chain layout"
cp www/chain/sub/top.st www/lonely/top.st
cp www/chain/base.st www/denied/base.st
start_nginx $HTTP_PORT $HTTPS_PORT
U=http://127.0.0.1:$HTTP_PORT
S=https://127.0.0.1:$HTTPS_PORT

out=$("$HEXZ" verify "$U/chain/sub/top.st") || fail "verify over http: $out"
[[ $out == "$U/chain/sub/top.st: ok (with 2 parents)" ]] || fail "verify output: $out"
"$HEXZ" info "$U/chain/sub/top.st" | grep -qE "parent: +\.\./mid\.st \(id [0-9a-f]{32}\)" ||
  fail "info over http"
"$HEXZ" info --json "$U/chain/sub/top.st" | grep -q "\"path\": \"$U/chain/sub/top.st\"" ||
  fail "info --json names the URL"
"$HEXZ" cat "$U/chain/sub/top.st" | cmp - v3.raw || fail "cat over http differs from the disk"
"$HEXZ" cat "$U/chain/mid.st" | cmp - <("$HEXZ" cat www/chain/mid.st) || fail "cmp with local"
"$HEXZ" cat "$U/chain/sub/top.st" -o top.raw
cmp top.raw v3.raw || fail "cat -o over http"
[[ $(nginx_count '^200 ') -eq 0 ]] || fail "a request without a range: $(grep '^200 ' "$NGINX_LOG")"
[[ $(nginx_count '^206 GET /chain/base.st') -gt 0 ]] || fail "base.st was not read by range"
pass "info, verify and cat of a chain of three snapshots over http"

# A cold sequential read fetches each stored byte once, in a few large
# requests (readahead windows), counted from the server's access log.
: > "$NGINX_LOG"
"$HEXZ" cat "$U/chain/base.st" > /dev/null || fail "cat for the access-log count"
read -r n fetched union < <(nginx_ranges /chain/base.st --whole-bodies) || fail "access-log count"
size=$(stat -c %s www/chain/base.st)
# Twice: only the small structures read at open (the first 64 bytes, the
# index and the footer, which the last window covers again).
echo "# $n requests, $fetched bytes fetched of $size, $((fetched - union)) twice"
(( union == size )) || fail "read $union of $size bytes"
(( fetched - union <= 8192 )) || fail "$((fetched - union)) bytes fetched twice"
(( n <= 12 )) || fail "$n requests"
pass "a cold sequential read fetches each stored byte once, in a few requests"

"$HEXZ" verify -q --ca-file tls/ca.pem "$S/chain/sub/top.st" || fail "verify over https"
"$HEXZ" cat --ca-file tls/ca.pem "$S/chain/sub/top.st" | cmp - v3.raw || fail "cat over https"
CURL_CA_BUNDLE=$T/tls/ca.pem "$HEXZ" info "$S/chain/sub/top.st" >/dev/null ||
  fail "CURL_CA_BUNDLE"
expect_fail_msg "$S/chain/sub/top.st: .*certificate.*--ca-file" \
  env -u CURL_CA_BUNDLE "$HEXZ" info "$S/chain/sub/top.st"
pass "https with the test CA (--ca-file, CURL_CA_BUNDLE); an unknown CA is refused"

secret="X-Amz-Signature=topsecret"
for cmd in info verify "cat -o /dev/null"; do
  # shellcheck disable=SC2086
  out=$("$HEXZ" $cmd "$U/chain/nope.st?$secret" 2>&1) && fail "404 succeeded"
  grep -q "^hexz: $U/chain/nope.st: not found (HTTP 404)" <<<"$out" || fail "404 message: $out"
  [[ $out != *topsecret* ]] || fail "the query string shows: $out"
done
expect_fail_msg "$U/denied/base.st: access denied \(HTTP 403\)" "$HEXZ" verify "$U/denied/base.st"
: > www/empty.st
expect_fail_msg "^hexz: $U/empty.st: not a hexz snapshot \(empty object\)" "$HEXZ" info "$U/empty.st"
expect_fail_msg "$U/moved/base.st: the server redirects \(HTTP 302\) to $U/elsewhere/; hexz follows no redirects" \
  "$HEXZ" info "$U/moved/base.st"
out=$("$HEXZ" info "http://user:hunter2@127.0.0.1:$HTTP_PORT/chain/base.st" 2>&1) &&
  fail "credentials in the URL accepted"
grep -q "credentials in a URL are visible to every local user" <<<"$out" || fail "userinfo: $out"
[[ $out != *hunter2* ]] || fail "the password shows: $out"
expect_fail_msg "$U/lonely/top.st: parent \.\./mid\.st \($U/mid.st\): not found" \
  "$HEXZ" verify "$U/lonely/top.st"
pass "404, 403, an empty object, redirect, credentials and a missing parent: clear messages, no secrets"

# An existing output file is replaced (a remote chain holds no local file
# that the output could be).
"$HEXZ" cat "$U/chain/base.st" -o top.raw
cmp top.raw v1.raw || fail "cat -o over an existing file"
pass "cat -o replaces an existing file"

# commit --base URL: an overlay made on base.st (same id) is committed
# against the remote copy of it.
TOOL="$HEXZ_BUILD_DIR/tests/hexz_overlay_write"
[[ -x $TOOL ]] || fail "test tool $TOOL is not built"
head -c 5000 /dev/urandom > patch
"$TOOL" www/chain/base.st o.ovl 70000:patch >/dev/null || fail "writing the overlay"
cp v1.raw expected.raw
dd if=patch of=expected.raw bs=1 seek=70000 conv=notrunc status=none
"$HEXZ" commit -q --base "$U/chain/base.st" --overlay o.ovl -o new.st || fail "commit --base URL"
"$HEXZ" cat new.st | cmp - expected.raw || fail "the committed snapshot"
"$HEXZ" verify -q new.st || fail "verify of the committed snapshot"
expect_fail_msg "^hexz: --thin: the base $U/chain/base.st is remote" \
  "$HEXZ" commit --thin --base "$U/chain/base.st?sig=x" --overlay o.ovl -o thin.st
pass "commit --base URL writes a standalone snapshot; --thin is refused"
