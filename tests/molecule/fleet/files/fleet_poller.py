#!/usr/bin/env python3
"""A client of Kokoro's API, run during a rolling update on each host (its own server,
over loopback) and on the fleet gateway (the fleet's front door): it calls GET /health
every --interval seconds and, --speech-every seconds after the last one came back, asks
for a short sentence of speech (spaced out so that the clients do not starve two shared
cores), and appends one JSON line per request to --out:

    {"t": <epoch at send>, "kind": "health"|"speech", "ok": bool, "status": <http status>,
     "ms": <latency>, "error": <text or null>, "retried": <0 or 1>}

A request counts as ok only when it is answered 200 (speech: a WAV body). A connection
the server closes before any answer (http.client.RemoteDisconnected: the request was
never answered) is retried once on a new one, as HTTP clients do; the line says so, and
files/check_roll.py bounds how often it may happen. The fleet gateway drains a host by
reloading Caddy's config, and a connection accepted just as the old config stops can be
closed that way (seen once in 1,526 requests). It runs until SIGTERM (systemctl stop).
Standard library only: it runs on a bare host.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request

running = True
headers = {"Content-Type": "application/json"}
context: ssl.SSLContext | None = None


def stop(*_args: object) -> None:
    global running
    running = False


def call(url: str, body: dict | None, timeout: float) -> tuple[int, bytes, int]:
    """(status, body, retries): one retry when the connection closed unanswered."""
    data = json.dumps(body).encode() if body is not None else None
    for retried in (0, 1):
        req = urllib.request.Request(url, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                return resp.status, resp.read(), retried
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), retried
        except http.client.RemoteDisconnected:
            if retried:
                raise
    raise AssertionError("unreachable")


def one(kind: str, url: str, timeout: float) -> dict:
    """One request; ok only when answered 200 with the expected body."""
    t = time.time()
    start = time.monotonic()
    status, error, retried = None, None, 0
    try:
        if kind == "health":
            status, body, retried = call(url + "/health", None, timeout)
            ok = status == 200 and json.loads(body).get("status") == "ok"
        else:
            status, body, retried = call(
                url + "/v1/audio/speech",
                {
                    "model": "kokoro",
                    "input": "Still serving.",
                    "voice": "af_heart",
                    "response_format": "wav",
                    "stream": False,
                },
                timeout,
            )
            ok = status == 200 and body[:4] == b"RIFF"
        if not ok:
            error = f"answered {status}: {body[:200]!r}"
    except Exception as exc:  # refused, reset, timed out: all failures of the service
        ok, error = False, f"{type(exc).__name__}: {exc}"
    ms = round((time.monotonic() - start) * 1000, 1)
    return {
        "t": round(t, 3),
        "kind": kind,
        "ok": ok,
        "status": status,
        "ms": ms,
        "error": error,
        "retried": retried,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8880")
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--speech-every", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds for /health")
    ap.add_argument("--speech-timeout", type=float, default=120.0)
    ap.add_argument("--key", help="API key, sent as a Bearer token")
    ap.add_argument("--cafile", help="CA certificate that signs the server's (https)")
    args = ap.parse_args()
    global context
    if args.key:
        headers["Authorization"] = f"Bearer {args.key}"
    if args.cafile:
        context = ssl.create_default_context(cafile=args.cafile)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    next_speech = 0.0
    with open(args.out, "a", buffering=1) as out:
        while running:
            now = time.monotonic()
            if now >= next_speech:
                out.write(json.dumps(one("speech", args.url, args.speech_timeout)) + "\n")
                next_speech = time.monotonic() + args.speech_every
            out.write(json.dumps(one("health", args.url, args.timeout)) + "\n")
            time.sleep(max(0.0, args.interval - (time.monotonic() - now)))
    sys.exit(0)


if __name__ == "__main__":
    main()
