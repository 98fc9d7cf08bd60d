#!/usr/bin/env python3
"""A stand-in of one of a host's services for the gateway scenario: `kokoro_standin.py
HOST kokoro` on Kokoro's port 8880, `kokoro_standin.py HOST llm` on the LLM's 8080.
GET /health answers 200; a POST (speech, chat) answers "<service> <host>", or 503 (queue
full, as Kokoro says it) while /run/standin-<service>-503 exists; GET /hold answers the
same once /run/standin-release exists, so a test can keep a request in flight for as
long as it needs."""

import http.server
import os
import sys
import time

HOST, SERVICE = sys.argv[1], sys.argv[2]
PORT = {"kokoro": 8880, "llm": 8080}[SERVICE]
ANSWER = f"{SERVICE} {HOST}".encode()


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
            self.answer(200, ANSWER)
        else:
            self.answer(404, b"not found")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if os.path.exists(f"/run/standin-{SERVICE}-503"):
            self.answer(503, b"queue full")
        else:
            self.answer(200, ANSWER)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
