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
