# TLS material for the NBD-over-TLS tests, made with GnuTLS's certtool and
# psktool (gnutls-bin): make_tls_pki DIR builds, under DIR,
#   ca/         the CA (ca-cert.pem, ca-key.pem)
#   server/     server-cert.pem, server-key.pem, ca-cert.pem (localhost,
#               127.0.0.1 and 10.0.2.2, the host as a QEMU guest sees it)
#   client/     client-cert.pem, client-key.pem, ca-cert.pem, for libnbd and
#               qemu (tls-creds-x509 dir=): subject "CN=client1,O=hexz test"
#   intruder/   the same layout, a valid certificate with another subject
#   expired/    the same layout, a certificate that expired in 2021
#   otherca/    a client whose certificate and CA come from another CA
#   psk/        keys.psk (identity alice), for the server and for qemu
#               (tls-creds-psk dir=, username=alice)
#   wrongpsk/   keys.psk with alice and another key
# All files are world-readable, so that any test user can use them.
CLIENT_DN="CN=client1,O=hexz test"

_cert() {  # _cert OUT_CERT KEY CA_CERT CA_KEY TEMPLATE_LINES...
  local out=$1 key=$2 cacert=$3 cakey=$4; shift 4
  printf '%s\n' "$@" >"$out.tmpl"
  certtool --generate-certificate --load-privkey "$key" --load-ca-certificate "$cacert" \
    --load-ca-privkey "$cakey" --template "$out.tmpl" --outfile "$out" >/dev/null 2>&1 ||
    fail "certtool: could not make $out"
  rm -f "$out.tmpl"
}

_ca() {  # _ca DIR CN
  mkdir -p "$1"
  certtool --generate-privkey --outfile "$1/ca-key.pem" >/dev/null 2>&1 || fail "certtool privkey"
  printf '%s\n' "cn = $2" ca cert_signing_key "expiration_days = 3650" >"$1/ca.tmpl"
  certtool --generate-self-signed --load-privkey "$1/ca-key.pem" --template "$1/ca.tmpl" \
    --outfile "$1/ca-cert.pem" >/dev/null 2>&1 || fail "certtool: could not make the CA in $1"
}

_client() {  # _client DIR CA_DIR TEMPLATE_LINES...
  local dir=$1 ca=$2; shift 2
  mkdir -p "$dir"
  certtool --generate-privkey --outfile "$dir/client-key.pem" >/dev/null 2>&1 || fail "privkey"
  _cert "$dir/client-cert.pem" "$dir/client-key.pem" "$ca/ca-cert.pem" "$ca/ca-key.pem" \
    tls_www_client signing_key encryption_key "$@"
}

make_tls_pki() {
  local d=$1
  require_cmd certtool psktool
  _ca "$d/ca" "hexz test CA"
  _ca "$d/otherca" "another CA"
  mkdir -p "$d/server"
  certtool --generate-privkey --outfile "$d/server/server-key.pem" >/dev/null 2>&1 || fail "privkey"
  _cert "$d/server/server-cert.pem" "$d/server/server-key.pem" "$d/ca/ca-cert.pem" \
    "$d/ca/ca-key.pem" "cn = localhost" "dns_name = localhost" "ip_address = 127.0.0.1" \
    "ip_address = 10.0.2.2" tls_www_server signing_key encryption_key "expiration_days = 365"
  cp "$d/ca/ca-cert.pem" "$d/server/"
  _client "$d/client" "$d/ca" "cn = client1" "organization = hexz test" "expiration_days = 365"
  _client "$d/intruder" "$d/ca" "cn = intruder" "organization = hexz test" "expiration_days = 365"
  _client "$d/expired" "$d/ca" "cn = client1" "organization = hexz test" \
    'activation_date = "2020-01-01 00:00:00"' 'expiration_date = "2021-01-01 00:00:00"'
  _client "$d/otherca" "$d/otherca" "cn = client1" "organization = hexz test" \
    "expiration_days = 365"
  local c
  for c in client intruder expired; do cp "$d/ca/ca-cert.pem" "$d/$c/"; done
  mkdir -p "$d/psk" "$d/wrongpsk"
  psktool -u alice -p "$d/psk/keys.psk" >/dev/null 2>&1 || fail "psktool"
  psktool -u alice -p "$d/wrongpsk/keys.psk" >/dev/null 2>&1 || fail "psktool"
  chmod -R a+rX "$d"
}
