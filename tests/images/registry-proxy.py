#!/usr/bin/env python3
"""A forwarding HTTP proxy in front of a registry, for the image tests (issue 9):
it logs every request (method, path, Range header) and can misbehave on the
blobs it is told about, to test resumed and failed pulls.

usage: registry-proxy.py --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT --log FILE
           [--throttle BYTES_PER_S] [--only DIGEST ...]
           [--drop-after BYTES --drop-times N]      close the connection after BYTES
                                                    of a blob body, the first N times
           [--stall-after BYTES --stall-times N]    send BYTES then hang (until the
                                                    client goes away), the first N times
           [--corrupt-flag FILE]                    while FILE exists, flip one byte
                                                    in the middle of every blob body

The misbehaviour applies to GETs of blobs whose digest is given with --only (any
blob when --only is absent); throttling applies to every blob GET. Runs in the
caller's network namespace (start it with nsenter into the daemon's holder).
Prints "listening" on stdout once it accepts connections.

Log: one JSON object a line, flushed at once:
  {"ev": "req", "n": N, "method": M, "path": P, "range": R|null}
  {"ev": "done", "n": N, "status": S, "sent": BYTES}
  {"ev": "dropped"|"stalled"|"corrupted", "n": N, "sent": BYTES}
  {"ev": "gone", "n": N, "sent": BYTES}      (the client hung up)
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import re
import socketserver
import sys
import threading
import time

HOP = {"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer"}
BLOB_RE = re.compile(r"/v2/.+/blobs/(sha256:[0-9a-f]{64})$")

args = None
lock = threading.Lock()
counter = {"n": 0, "dropped": 0, "stalled": 0}
logf = None


def log(**ev):
    with lock:
        logf.write(json.dumps(ev) + "\n")
        logf.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else None

    def _proxy(self):
        with lock:
            counter["n"] += 1
            n = counter["n"]
        path = self.path.split("?", 1)[0]
        log(ev="req", n=n, method=self.command, path=self.path, range=self.headers.get("Range"))
        body = self._body()
        host, port = args.upstream.rsplit(":", 1)
        up = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            # header by header: clients send several Accept lines
            up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in HOP and k.lower() != "content-length":
                    up.putheader(k, v)
            if body is not None:
                up.putheader("Content-Length", str(len(body)))
            up.endheaders(body)
            r = up.getresponse()
        except OSError as e:
            self.send_error(502, f"upstream: {e}")
            log(ev="done", n=n, status=502, sent=0)
            return
        m = BLOB_RE.search(path)
        digest = m.group(1) if m else None
        is_blob_get = self.command == "GET" and digest is not None and r.status in (200, 206)
        targeted = is_blob_get and (not args.only or digest in args.only)
        self.send_response(r.status)
        length = r.getheader("Content-Length")
        for k, v in r.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        data_whole = None
        if length is None and self.command != "HEAD":
            data_whole = r.read()
            length = str(len(data_whole))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command == "HEAD" or r.status in (204, 304):
            log(ev="done", n=n, status=r.status, sent=0)
            up.close()
            return
        total = int(length)
        drop = stall = False
        corrupt_at = -1
        if targeted:
            with lock:
                if args.drop_after is not None and counter["dropped"] < args.drop_times:
                    counter["dropped"] += 1
                    drop = True
                elif args.stall_after is not None and counter["stalled"] < args.stall_times:
                    counter["stalled"] += 1
                    stall = True
            if args.corrupt_flag and os.path.exists(args.corrupt_flag):
                corrupt_at = total // 2
        sent = 0
        t0 = time.monotonic()
        try:
            while sent < total:
                chunk = data_whole[sent:sent + 65536] if data_whole is not None else r.read(min(65536, total - sent))
                if not chunk:
                    break
                if drop and sent + len(chunk) >= args.drop_after:
                    chunk = chunk[:max(0, args.drop_after - sent)]
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    sent += len(chunk)
                    log(ev="dropped", n=n, sent=sent)
                    self.close_connection = True
                    try:
                        import socket
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if stall and sent + len(chunk) >= args.stall_after:
                    chunk = chunk[:max(0, args.stall_after - sent)]
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    sent += len(chunk)
                    log(ev="stalled", n=n, sent=sent)
                    # hang until the client goes away (or an hour passes)
                    self.connection.settimeout(1.0)
                    deadline = time.monotonic() + 3600
                    while time.monotonic() < deadline:
                        try:
                            if self.connection.recv(1) == b"":
                                break
                        except TimeoutError:
                            continue
                        except OSError:
                            break
                    log(ev="gone", n=n, sent=sent)
                    self.close_connection = True
                    return
                if 0 <= corrupt_at - sent < len(chunk):
                    i = corrupt_at - sent
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                    log(ev="corrupted", n=n, sent=sent + i)
                self.wfile.write(chunk)
                sent += len(chunk)
                if args.throttle and is_blob_get:
                    ahead = sent / args.throttle - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            self.wfile.flush()
            log(ev="done", n=n, status=r.status, sent=sent)
        except (BrokenPipeError, ConnectionResetError):
            log(ev="gone", n=n, sent=sent)
            self.close_connection = True
        finally:
            up.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _proxy


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    global args, logf
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--throttle", type=float, default=0)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--drop-after", type=int)
    ap.add_argument("--drop-times", type=int, default=1)
    ap.add_argument("--stall-after", type=int)
    ap.add_argument("--stall-times", type=int, default=1)
    ap.add_argument("--corrupt-flag")
    args = ap.parse_args()
    logf = open(args.log, "a")
    host, port = args.listen.rsplit(":", 1)
    srv = Server((host, int(port)), Handler)
    print("listening", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
