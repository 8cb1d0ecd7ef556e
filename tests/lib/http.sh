# nginx as a real HTTP(S) server for the remote snapshot tests.
#
# start_nginx HTTP_PORT [HTTPS_PORT] serves $T/www on 127.0.0.1 (and over TLS
# with a certificate from a test CA made with certtool: $T/tls/ca.pem) with
# its own prefix, config and logs under $T/nginx; the access log
# ($NGINX_LOG) has one line per request: status, method, URI, Range header
# and body bytes sent. Locations /denied/ (403) and /moved/ (302) exist for
# error tests. stop_nginx stops it (also at exit).
require_nginx() {
  [[ -x /usr/sbin/nginx ]] || skip "nginx is not installed (nginx-light)"
  require_cmd certtool
}

make_test_ca() {
  local d=$T/tls
  mkdir -p "$d"
  certtool --generate-privkey --outfile "$d/ca.key" 2>/dev/null
  printf 'cn = "hexz test CA"\nca\ncert_signing_key\nexpiration_days = 2\n' > "$d/ca.tmpl"
  certtool --generate-self-signed --load-privkey "$d/ca.key" --template "$d/ca.tmpl" \
    --outfile "$d/ca.pem" 2>/dev/null
  certtool --generate-privkey --outfile "$d/server.key" 2>/dev/null
  printf 'cn = "127.0.0.1"\nip_address = "127.0.0.1"\ndns_name = "localhost"\n%s\n' \
    'tls_www_server
encryption_key
signing_key
expiration_days = 2' > "$d/server.tmpl"
  certtool --generate-certificate --load-privkey "$d/server.key" \
    --load-ca-certificate "$d/ca.pem" --load-ca-privkey "$d/ca.key" \
    --template "$d/server.tmpl" --outfile "$d/server.pem" 2>/dev/null
  chmod 0644 "$d"/*.pem
}

start_nginx() {
  local http=$1 https=${2:-}
  local d=$T/nginx
  mkdir -p "$d/tmp" "$T/www"
  NGINX_LOG=$d/access.log
  local tls=""
  if [[ -n $https ]]; then
    [[ -f $T/tls/server.pem ]] || make_test_ca
    tls="listen 127.0.0.1:$https ssl;
    ssl_certificate $T/tls/server.pem;
    ssl_certificate_key $T/tls/server.key;"
  fi
  cat > "$d/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log info;
events { worker_connections 256; }
http {
  default_type application/octet-stream;
  log_format ranges '\$status \$request_method \$uri "\$http_range" \$body_bytes_sent';
  access_log $NGINX_LOG ranges;
  client_body_temp_path $d/tmp;
  proxy_temp_path $d/tmp;
  fastcgi_temp_path $d/tmp;
  uwsgi_temp_path $d/tmp;
  scgi_temp_path $d/tmp;
  server {
    listen 127.0.0.1:$http;
    $tls
    root $T/www;
    location /denied/ { return 403; }
    location /moved/ { return 302 http://127.0.0.1:$http/elsewhere/; }
  }
}
CONF
  /usr/sbin/nginx -p "$d" -c "$d/nginx.conf" 2>>"$d/error.log" &
  NGINX_PID=$!
  on_exit stop_nginx
  wait_for bash -c "exec 3<>/dev/tcp/127.0.0.1/$http" || fail "nginx did not start: $(cat "$d/error.log")"
}

stop_nginx() {
  [[ -n ${NGINX_PID:-} ]] || return 0
  kill "$NGINX_PID" 2>/dev/null
  wait "$NGINX_PID" 2>/dev/null
  NGINX_PID=""
}

# The number of requests in the access log whose line matches $1.
nginx_count() { grep -c -- "$1" "$NGINX_LOG" || true; }

# The fault server (tests/tools/http_fault_server.py) on 127.0.0.1:$PORT,
# serving ./www; start_server waits until it listens, stop_server (also at
# exit) stops it, and a test may stop and start it again.
start_server() {
  python3 "$HEXZ_SOURCE_DIR/tests/tools/http_fault_server.py" "$PORT" www 2>>server.log &
  SERVER_PID=$!
  wait_for bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" || fail "the test server did not start"
}
stop_server() { kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; }

# nginx_ranges URI [--whole-bodies]: the range requests for URI in the access
# log, as "REQUESTS FETCHED UNION" (bytes asked for, and bytes of the union of
# the ranges). Any other request in the log is an error; with --whole-bodies,
# so is an answer whose body is shorter or longer than its range.
nginx_ranges() {
  python3 - "$NGINX_LOG" "$1" "${2:-}" <<'PY'
import re, sys
log, uri, whole = sys.argv[1], sys.argv[2], sys.argv[3] == "--whole-bodies"
ranges = []
for line in open(log):
    m = re.fullmatch(r'206 GET ' + re.escape(uri) + r' "bytes=(\d+)-(\d+)" (\d+)\n', line)
    if not m:
        sys.exit("unexpected request: " + line)
    a, b, n = map(int, m.groups())
    if whole and n != b - a + 1:
        sys.exit("body length differs from the range: " + line)
    ranges.append((a, b + 1))
union, end = 0, 0
for a, b in sorted(ranges):
    a = max(a, end)
    if b > a:
        union += b - a
        end = b
print(len(ranges), sum(b - a for a, b in ranges), union)
PY
}
