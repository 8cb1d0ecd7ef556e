#!/usr/bin/env python3
"""A misbehaving HTTP server for the remote snapshot fault tests.

Usage: http_fault_server.py PORT ROOT. GET /MODE/NAME serves ROOT/NAME with
range requests like a normal server (206, Content-Range, a strong ETag,
If-Match answered with 412), except as MODE says:
  ok          behave
  wrong-range the Content-Range and body start one byte later than asked
  short       a correct Content-Range, but 10 bytes fewer than asked for
  long        10 bytes more than asked for
  cut         Content-Length as asked, then the connection closes early
  flaky       every request but each 3rd fails with 503
  changing    the ETag changes after the first request (a replaced object)
  no-range    ignores Range (200 and the whole file)
  no-version  sends neither ETag nor Last-Modified
  stall       answers the first request, then never answers (a hung server)
Each request is logged to stderr as "MODE STATUS RANGE".
"""
import http.server
import os
import re
import sys
import time

COUNTS = {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, headers, body):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        sys.stderr.write(f"{self.path} {status} {self.headers.get('Range')}\n")
        sys.stderr.flush()

    def do_GET(self):
        parts = self.path.split("/", 2)
        if len(parts) < 3:
            return self.reply(404, [("Content-Length", "0")], b"")
        mode, name = parts[1], parts[2]
        path = os.path.join(sys.argv[2], name)
        if not os.path.isfile(path):
            return self.reply(404, [("Content-Length", "0")], b"")
        data = open(path, "rb").read()
        n = COUNTS[self.path] = COUNTS.get(self.path, 0) + 1
        etag = '"v1"' if mode != "changing" or n == 1 else '"v2"'
        version = [] if mode == "no-version" else [("ETag", etag)]
        if mode == "stall" and n > 1:
            time.sleep(600)
        if mode == "flaky" and n % 3 != 0:
            return self.reply(503, [("Content-Length", "0")], b"")
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        if mode == "no-range" or not m:
            return self.reply(200, version + [("Content-Length", str(len(data)))], data)
        if_match = self.headers.get("If-Match")
        if if_match is not None and if_match != etag:
            return self.reply(412, [("Content-Length", "0")], b"")
        first, last = int(m.group(1)), min(int(m.group(2)), len(data) - 1)
        if mode == "wrong-range":
            first, last = first + 1, min(last + 1, len(data) - 1)
        body = data[first:last + 1]
        if mode == "short":
            body = body[:-10]
        if mode == "long":
            body = body + b"\0" * 10
        length = last - first + 1 if mode == "cut" else len(body)
        if mode == "cut":
            body = body[: len(body) // 2]
            self.close_connection = True
        headers = version + [("Content-Range", f"bytes {first}-{last}/{len(data)}"),
                             ("Content-Length", str(length))]
        self.reply(206, headers, body)


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
