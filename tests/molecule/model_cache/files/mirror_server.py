"""A plain HTTP mirror for the model_cache tests: Python's own static file server plus
the single-range requests ("Range: bytes=N-" or "bytes=N-M") that real mirrors (nginx,
S3, Hugging Face's CDN) answer, and an access log with one JSON line per request so a
test can prove what was downloaded, from where a download resumed and which requests
carried a token.

    python3 mirror_server.py --directory DIR --port 18080 --log FILE [--no-range]

--no-range makes it answer every request with the whole file (200), as
`python3 -m http.server` does. Standard library only: it runs on the test hosts. The
Hugging Face stand-in (tests/testbed/hf_standin.py) builds on it: the same file serving,
range requests and log, so the molecule scenarios copy this file beside it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class MirrorHandler(SimpleHTTPRequestHandler):
    support_range = True
    log_path: str | None = None
    _log_lock = threading.Lock()

    def send_head(self):
        range_header = self.headers.get("Range")
        path = self.translate_path(self.path)
        match = RANGE.match(range_header or "")
        if not (self.support_range and match and os.path.isfile(path)):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else size - 1
        if start >= size:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        end = min(end, size - 1)
        f = open(path, "rb")  # noqa: SIM115 - closed by copyfile's caller
        f.seek(start)
        self._remaining = end - start + 1
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(self._remaining))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return f

    def send_response(self, code, message=None):
        self._status = int(code)
        super().send_response(code, message)

    def copyfile(self, source, outputfile):
        remaining = getattr(self, "_remaining", None)
        while remaining is None or remaining > 0:
            block = source.read(1 << 16 if remaining is None else min(1 << 16, remaining))
            if not block:
                break
            outputfile.write(block)
            self._sent += len(block)
            if remaining is not None:
                remaining -= len(block)

    def log_request(self, code="-", size="-"):
        pass  # logged once the body is sent, in handle_one_request

    def handle_one_request(self):
        self._remaining, self._status, self._sent = None, None, 0
        super().handle_one_request()
        if self.log_path and getattr(self, "command", None):
            entry = {
                "method": self.command,
                "path": self.path,
                "range": self.headers.get("Range") if self.headers else None,
                # Whether a token came along (never its value): tests prove where
                # a Hugging Face token is sent.
                "auth": bool(self.headers.get("Authorization")) if self.headers else False,
                "status": getattr(self, "_status", None),
                "bytes": getattr(self, "_sent", 0),
            }
            with self._log_lock, open(self.log_path, "a") as log:
                log.write(json.dumps(entry) + "\n")

    def log_message(self, format, *args):
        pass


class Server(ThreadingHTTPServer):
    """Counts the connections being served: a request is logged after its last byte is
    sent, so a client can be done before its line is written; wait_idle() waits for it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._busy, self._idle = 0, threading.Condition()

    def finish_request(self, request, client_address):
        with self._idle:
            self._busy += 1
        try:
            super().finish_request(request, client_address)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 60) -> None:
        with self._idle:
            if not self._idle.wait_for(lambda: self._busy == 0, timeout=timeout):
                raise TimeoutError(f"{type(self).__name__}: still serving a request")


def make_server(directory: str, port: int, log: str | None, support_range: bool = True,
                bind: str = "127.0.0.1", handler: type = MirrorHandler) -> Server:
    """A server of `directory` on bind:port (0: any free port); `handler` a MirrorHandler."""
    handler = type(
        handler.__name__, (handler,), {"support_range": support_range, "log_path": log}
    )
    return Server((bind, port), functools.partial(handler, directory=directory))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--directory", required=True)
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--log")
    ap.add_argument("--no-range", action="store_true")
    args = ap.parse_args()
    server = make_server(args.directory, args.port, args.log, not args.no_range, args.bind)
    server.serve_forever()


if __name__ == "__main__":
    main()
