#!/usr/bin/env bash
# Snapshots read from an S3-compatible store: s3rver (npm) serves a bucket on
# 127.0.0.1; a chain of three snapshots is uploaded under vm/ (top.st in
# vm/sub/, its parent ../mid.st resolved inside the bucket), and info, verify
# and cat read s3://BUCKET/KEY with --s3-endpoint, and a FUSE mount reads it
# through the fetcher, signed with SigV4 by libcurl, with credentials from AWS_* variables and from a profile of a
# shared credentials file. A missing key is "not found (HTTP 404)", an
# unknown access key "access denied (HTTP 403)".
#
# What s3rver does not check (so neither does this test): it validates the
# access key id (an unknown one gets 403) but, in our runs, accepted a
# request signed with the wrong secret, so the signature itself is only
# known to be well-formed, not verified; it ignores If-Match and
# If-Unmodified-Since (hexz also compares the ETag of every answer, which
# tests/integration/remote_faults.sh covers), and it serves unsigned
# requests. Real S3 checks all of these.
source "$(dirname "$0")/../lib/common.sh"
require_cmd s3rver curl cmp
PORT=22030
E=http://127.0.0.1:$PORT
B=hexz-images

cd "$T"
mkdir data
s3rver -d data -a 127.0.0.1 -p $PORT --configure-bucket $B --no-vhost-buckets >s3rver.log 2>&1 &
S3_PID=$!
on_exit "kill $S3_PID"
wait_for bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" || fail "s3rver did not start: $(cat s3rver.log)"

python3 - <<'PY'
import os
v1 = bytearray(os.urandom(1 << 20) + bytes(1 << 20))
open("v1.raw", "wb").write(v1)
v2 = bytearray(v1); v2[65536 * 2:65536 * 3] = os.urandom(65536); open("v2.raw", "wb").write(v2)
v3 = bytearray(v2); v3[65536 * 20:65536 * 21] = os.urandom(65536); open("v3.raw", "wb").write(v3)
PY
mkdir -p vm/sub
"$HEXZ" pack --disk v1.raw -o vm/base.st --quiet
"$HEXZ" pack --disk v2.raw --parent vm/base.st -o vm/mid.st --quiet
"$HEXZ" pack --disk v3.raw --parent vm/mid.st -o vm/sub/top.st --quiet
put() {
  curl -sf -o /dev/null -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --aws-sigv4 aws:amz:us-east-1:s3 \
    --user S3RVER:S3RVER -T "$1" "$E/$B/$1" || fail "upload of $1"
}
put vm/base.st
put vm/mid.st
put vm/sub/top.st

export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
out=$("$HEXZ" verify --s3-endpoint "$E" "s3://$B/vm/sub/top.st") || fail "verify: $out"
[[ $out == "s3://$B/vm/sub/top.st: ok (with 2 parents)" ]] || fail "verify output: $out"
"$HEXZ" info --s3-endpoint "$E" "s3://$B/vm/sub/top.st" | grep -q "parent: *../mid.st" ||
  fail "info of the s3 chain"
"$HEXZ" cat --s3-endpoint "$E" "s3://$B/vm/sub/top.st" | cmp - v3.raw || fail "cat of the s3 chain"
"$HEXZ" cat --s3-endpoint "$E/" "s3://$B/vm/mid.st" | cmp - <("$HEXZ" cat vm/mid.st) ||
  fail "cmp with the local file"
pass "info, verify and cat of a chain of three snapshots in S3 (credentials from AWS_*)"

# A FUSE mount of the chain in S3: the fetcher signs its requests with the
# credentials it inherited from the environment.
if [[ -c /dev/fuse ]] && command -v fusermount3 >/dev/null; then
  mkdir mnt
  "$HEXZ" mount -d --log-file mount.log --s3-endpoint "$E" "s3://$B/vm/sub/top.st" mnt \
    >/dev/null || fail "hexz mount s3://: $(cat mount.log)"
  cmp mnt/disk v3.raw || { "$HEXZ" unmount mnt; fail "the mounted s3 chain differs"; }
  "$HEXZ" unmount mnt >/dev/null || fail "hexz unmount"
  ! grep -q "$AWS_SECRET_ACCESS_KEY" mount.log || fail "the secret key in the log"
  pass "a FUSE mount of the s3 chain reads the right disk"
fi

mkdir -p home/.aws
printf '[default]\naws_access_key_id = NOPE\naws_secret_access_key = x\n\n[hexz]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n' \
  > home/.aws/credentials
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY HOME="$T/home" AWS_PROFILE=hexz \
  "$HEXZ" verify -q --s3-endpoint "$E" "s3://$B/vm/sub/top.st" || fail "credentials from a profile"
expect_fail_msg "^hexz: s3://$B/vm/base.st: access denied \(HTTP 403\)" \
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY HOME="$T/home" \
  "$HEXZ" info --s3-endpoint "$E" "s3://$B/vm/base.st"
pass "credentials from ~/.aws/credentials (AWS_PROFILE); an unknown key is refused"

expect_fail_msg "^hexz: s3://$B/vm/nope.st: not found \(HTTP 404\)" \
  "$HEXZ" info --s3-endpoint "$E" "s3://$B/vm/nope.st"
expect_fail_msg "not an S3 URL of the form s3://BUCKET/KEY" \
  "$HEXZ" info --s3-endpoint "$E" "s3://Bad_Bucket/vm/base.st"
expect_fail_msg "not an S3 URL of the form s3://BUCKET/KEY" "$HEXZ" info "s3://$B"
pass "a missing key and malformed S3 URLs: clear messages"
