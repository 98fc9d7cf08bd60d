"""Soak the Kokoro server with mixed well-formed and hostile traffic at its admission
limit, and check that it stays flat (not a CI test: `make soak`, 30 minutes by default).

    KOKORO_DEPLOY_MIRROR=http://127.0.0.1:18080/ .venv/bin/python tests/bench/soak.py [--minutes 30]

Starts `kokoro-server` (onnx int8, KOKORO_WORKERS=1, KOKORO_MAX_QUEUE=7: eight places)
as a subprocess on loopback. Eight client threads keep every place busy, each picking
its next request from a fixed mix: short and long speech in every format, streamed and
whole, captions, phonemize; clients that hang up mid-stream or never read; hostile
texts (tests' HOSTILE) and voices, bodies over the limit, malformed JSON. A ninth thread
asks /health every 0.5 s. Every 10 s the server process's RSS, open files and threads
are sampled. Verdicts, all as ratios or counts within this one run:
  * no 5xx other than 503 server_busy (the admission limit doing its job);
  * RSS, open files and threads flat: the last quarter's median within 10 % (RSS) or
    +8 (files, threads) of the second quarter's (the first is warm-up);
  * /health p99 under 100 ms, and never unanswered.
Writes docs/benchmarks/kokoro-soak.json and .md (machine, date, versions).
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "images" / "kokoro" / "tests")]

from bench import (  # noqa: E402
    OUT,
    machine,
    machine_line,
    onnx_models,
    save_json,
    start_server,
    versions,
    versions_line,
)
from kokoro_testlib import HOSTILE, free_port  # noqa: E402
from texts import LONG, MEDIUM, TEXT_SET  # noqa: E402

PLACES = 8  # KOKORO_WORKERS=1 + KOKORO_MAX_QUEUE=7
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


def speech(text: str, **extra) -> tuple[str, dict]:
    return "/v1/audio/speech", {"input": text, "voice": "af_heart", **extra}


def well_formed(rng: random.Random) -> tuple[str, tuple[str, dict]]:
    kind = rng.choice(["short", "short", "medium", "long", "captions", "phonemize"])
    fmt, stream = rng.choice(FORMATS), rng.choice([True, False])
    if kind == "short":
        return kind, speech(rng.choice(list(TEXT_SET.values())), response_format=fmt, stream=stream)
    if kind == "medium":
        return kind, speech(MEDIUM, response_format=fmt, stream=stream, speed=1.5)
    if kind == "long":
        return kind, speech(LONG, response_format="pcm", stream=True, speed=2.0)
    if kind == "captions":
        return kind, ("/v1/audio/speech/captioned", {"input": MEDIUM, "voice": "af_heart",
                                                     "caption_format": "vtt"})
    return kind, ("/v1/audio/phonemize", {"input": LONG})


def hostile(rng: random.Random) -> tuple[str, tuple[str, object]]:
    kind = rng.choice(["text", "voice", "too_long", "bad_json", "hang_up", "never_read"])
    if kind == "text":
        return kind, speech(rng.choice(list(HOSTILE.values())), response_format="pcm")
    if kind == "voice":
        return kind, ("/v1/audio/speech", {"input": "Hi.", "voice": "a(" + "1" * 5000 + "x"})
    if kind == "too_long":
        return kind, speech("word " * 50_000)
    if kind == "bad_json":
        return kind, ("/v1/audio/speech", b'{"input": "unterminated')
    return kind, speech(LONG, response_format="pcm", stream=True)


class Soak:
    def __init__(self, url: str, port: int, minutes: float):
        self.url, self.port = url, port
        self.end = time.monotonic() + minutes * 60
        self.statuses: Counter[str] = Counter()
        self.server_errors: list[str] = []
        self.health_ms: list[float] = []
        self.health_failures = 0
        self.unfinished = 0
        self.lock = threading.Lock()

    def record(self, kind: str, status: int, body: bytes) -> None:
        with self.lock:
            self.statuses[f"{kind} {status}"] += 1
            if status >= 500 and not (status == 503 and b"server_busy" in body):
                self.server_errors.append(f"{kind} {status} {body[:200]!r}")

    def never_read(self) -> None:
        """Send a streaming request, then sit on the connection without reading."""
        path, body = speech(LONG, response_format="pcm", stream=True)
        raw = json.dumps(body).encode()
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", self.port))
            s.sendall(b"POST %s HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(raw), raw))
            time.sleep(45)  # past KOKORO_SEND_TIMEOUT (30 s): the server drops it
        self.record("never_read", 0, b"")

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=300) as c:
            while time.monotonic() < self.end:
                kind, (path, body) = (hostile if rng.random() < 0.3 else well_formed)(rng)
                if kind == "never_read":
                    self.never_read()
                    continue
                try:
                    if isinstance(body, bytes):
                        r = c.post(path, content=body, headers={"Content-Type": "application/json"})
                        self.record(kind, r.status_code, r.content)
                    elif kind == "hang_up":
                        with c.stream("POST", path, json=body) as r:
                            next(r.iter_raw(), None)  # one piece, then leave
                        self.record(kind, r.status_code, b"")
                    else:
                        r = c.post(path, json=body)
                        self.record(kind, r.status_code, r.content[:300])
                except httpx.HTTPError as exc:
                    self.record(kind, 0, repr(exc).encode())

    def health(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while time.monotonic() < self.end:
                t0 = time.perf_counter()
                try:
                    ok = c.get("/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                with self.lock:
                    self.health_ms.append((time.perf_counter() - t0) * 1000)
                    self.health_failures += not ok
                time.sleep(0.5)


def sample(proc: psutil.Process, end: float, out: list[dict]) -> None:
    while time.monotonic() < end:
        with proc.oneshot():
            out.append({"t": time.monotonic(), "rss_mib": proc.memory_info().rss / 2**20,
                        "open_files": proc.num_fds(), "threads": proc.num_threads()})
        time.sleep(10)


def quarter_medians(samples: list[dict], key: str) -> tuple[float, float]:
    n = len(samples)
    second = [s[key] for s in samples[n // 4: n // 2]] or [samples[0][key]]
    last = [s[key] for s in samples[3 * n // 4:]] or [samples[-1][key]]
    return statistics.median(second), statistics.median(last)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    model_dir = onnx_models("soak")
    port = free_port()
    proc = start_server(model_dir, port, workers=1, max_queue=PLACES - 1)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    soak = Soak(f"http://127.0.0.1:{port}", port, args.minutes)
    samples: list[dict] = []
    clients = [threading.Thread(target=soak.client, args=(i,), daemon=True)
               for i in range(PLACES)]
    watchers = [threading.Thread(target=soak.health, daemon=True),
                threading.Thread(target=sample, args=(psutil.Process(proc.pid), soak.end,
                                                      samples), daemon=True)]
    try:
        for t in clients + watchers:
            t.start()
        for t in watchers:
            t.join()
        # requests still in flight at the end may finish within a grace period; past it
        # the server is stopped under them (they are counted as unfinished)
        grace = time.monotonic() + 120
        for t in clients:
            t.join(max(0.0, grace - time.monotonic()))
        soak.unfinished = sum(t.is_alive() for t in clients)
    finally:
        proc.terminate()
        proc.wait(60)
    result = verdict(soak, samples, args.minutes)
    result.update(date=started, machine=machine(), versions=versions())
    write(result, args.out)
    print(json.dumps({k: result[k] for k in ("flat", "health", "server_errors")}, indent=2))
    sys.exit(0 if result["passed"] else 1)


def verdict(soak: Soak, samples: list[dict], minutes: float) -> dict:
    flat = {}
    for key, limit in (("rss_mib", None), ("open_files", 8), ("threads", 8)):
        second, last = quarter_medians(samples, key)
        ok = last <= second * 1.10 if limit is None else last <= second + limit
        flat[key] = {"second_quarter_median": round(second, 1),
                     "last_quarter_median": round(last, 1), "flat": ok}
    ms = sorted(soak.health_ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("inf")
    health = {"polls": len(ms), "unanswered": soak.health_failures,
              "p50_ms": round(statistics.median(ms), 1) if ms else None,
              "p99_ms": round(p99, 1), "max_ms": round(ms[-1], 1) if ms else None}
    passed = (all(f["flat"] for f in flat.values()) and not soak.server_errors
              and health["unanswered"] == 0 and p99 < 100)
    return {"minutes": minutes, "places": PLACES, "requests": dict(sorted(soak.statuses.items())),
            "unfinished_at_end": soak.unfinished,
            "server_errors": soak.server_errors[:20], "flat": flat, "health": health,
            "samples": samples and [dict(s, t=round(s["t"] - samples[0]["t"])) for s in samples],
            "passed": passed}


def write(result: dict, out: Path) -> None:
    save_json(result, out, "kokoro-soak")
    h = result["health"]
    lines = [
        "# Kokoro server soak: mixed well-formed and hostile traffic at the admission limit",
        "",
        f"- Date: {result['date']}; {result['minutes']:g} minutes; {result['places']} places "
        "(KOKORO_WORKERS=1, KOKORO_MAX_QUEUE=7), 8 clients, 30 % hostile",
        machine_line(result),
        versions_line(result),
        f"- Verdict: {'PASSED' if result['passed'] else 'FAILED'}",
        "",
        "| Measure | Second quarter (median) | Last quarter (median) | Flat |",
        "| --- | ---: | ---: | --- |",
    ]
    for key, f in result["flat"].items():
        lines.append(f"| {key} | {f['second_quarter_median']} | {f['last_quarter_median']} | "
                     f"{'yes' if f['flat'] else 'NO'} |")
    lines += ["", f"/health: {h['polls']} polls, {h['unanswered']} unanswered, "
              f"p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms, max {h['max_ms']} ms "
              "(target p99 < 100 ms).", "",
              f"Server errors other than 503 server_busy: {len(result['server_errors'])}; "
              f"requests unfinished 120 s after the end: {result['unfinished_at_end']}.", "",
              "Answers by kind and status (0: no HTTP answer, as intended for clients that "
              "never read):", ""]
    lines += [f"- {k}: {v}" for k, v in result["requests"].items()]
    (out / "kokoro-soak.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
