#!/usr/bin/env python3
"""A stand-in of Kokoro's API for the gateway scenario, on port 8880: /health answers 200;
POST /v1/audio/speech answers with the host's name, or 503 (queue full, as Kokoro says
it) while /run/standin-503 exists; /hold answers once /run/standin-release exists, so a
test can keep a request in flight for as long as it needs."""

import http.server
import os
import sys
import time

HOST = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self.answer(200, b"ok")
        elif self.path == "/hold":
            while not os.path.exists("/run/standin-release"):
                time.sleep(0.1)
            self.answer(200, HOST.encode())
        else:
            self.answer(404, b"not found")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if os.path.exists("/run/standin-503"):
            self.answer(503, b"queue full")
        else:
            self.answer(200, HOST.encode())

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", 8880), Handler).serve_forever()
