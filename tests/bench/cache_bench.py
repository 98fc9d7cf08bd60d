"""Audio cache: a hit's time to first byte and total time, beside a miss's, same run.

    KOKORO_DEPLOY_MIRROR=http://127.0.0.1:18080/ .venv/bin/python tests/bench/cache_bench.py

Starts `kokoro-server` (onnx engine, the real int8 model) as a subprocess on loopback
with KOKORO_AUDIO_CACHE_DIR in a temporary folder, and for each way of asking (mp3 sent
whole, mp3 streamed) sends `--requests` distinct two-sentence texts (each a miss:
synthesized, then stored), then the same texts `--hit-rounds` times over (hits), over
HTTP. Time to first byte: the request sent to the first body byte read; total: to the
last. Medians and p95 per kind; the load average is sampled every second of the run.
Writes docs/benchmarks/kokoro-audio-cache.json and .md (machine, date, versions).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from bench import (  # noqa: E402  (bench puts the test library on sys.path)
    OUT,
    VOICE,
    free_port,
    machine,
    machine_line,
    onnx_models,
    save_json,
    start_server,
    versions,
    versions_line,
)

MODES = {"mp3, whole": False, "mp3, streamed": True}
STEM = "kokoro-audio-cache"


def text(i: int) -> str:
    return (f"Ship number {i} passed the lighthouse in the night. "
            "The keeper watched its lights fade into the steady rain.")


def one(client: httpx.Client, body: dict) -> dict:
    start = time.perf_counter()
    first = None
    size = 0
    with client.stream("POST", "/v1/audio/speech", json=body) as r:
        r.raise_for_status()
        for piece in r.iter_raw():
            if piece and first is None:
                first = time.perf_counter() - start
            size += len(piece)
        cache = r.headers.get("x-cache")
    return {"ttfb_s": first, "total_s": time.perf_counter() - start, "bytes": size,
            "x_cache": cache}


def summary(rows: list[dict]) -> dict:
    out = {"n": len(rows)}
    for k in ("ttfb_s", "total_s"):
        xs = sorted(r[k] for r in rows)
        out[k] = {"median": statistics.median(xs),
                  "p95": xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))], "max": xs[-1]}
    return out


class LoadSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(1.0):
            self.samples.append(os.getloadavg()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=12, help="distinct texts (misses) per mode")
    ap.add_argument("--hit-rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    model_dir = onnx_models("cache_bench.py")
    result: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": machine(), "versions": versions(), "voice": VOICE,
                    "requests": args.requests, "hit_rounds": args.hit_rounds, "modes": {}}
    load = LoadSampler()
    with tempfile.TemporaryDirectory() as folder:
        os.environ["KOKORO_AUDIO_CACHE_DIR"] = folder
        port = free_port()
        server = start_server(model_dir, port, workers=1)
        load.start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
                one(client, {"input": "Warm up.", "voice": VOICE})
                for i, (mode, stream) in enumerate(MODES.items()):
                    bodies = [{"input": text(100 * i + n), "voice": VOICE,
                               "response_format": "mp3", "stream": stream}
                              for n in range(args.requests)]
                    misses = [one(client, b) for b in bodies]
                    hits = [one(client, b) for _ in range(args.hit_rounds) for b in bodies]
                    assert {r["x_cache"] for r in misses} == {"miss"}
                    assert {r["x_cache"] for r in hits} == {"hit"}
                    miss, hit = summary(misses), summary(hits)
                    result["modes"][mode] = {
                        "miss": miss, "hit": hit, "mean_bytes": statistics.mean(
                            r["bytes"] for r in hits),
                        "ttfb_miss_over_hit": miss["ttfb_s"]["median"]
                        / hit["ttfb_s"]["median"],
                        "total_miss_over_hit": miss["total_s"]["median"]
                        / hit["total_s"]["median"]}
        finally:
            load.stop.set()
            server.terminate()
            server.wait(30)
            os.environ.pop("KOKORO_AUDIO_CACHE_DIR", None)
    m = result["machine"]
    m["load_avg_at_end"] = os.getloadavg()
    m["load_1min_during"] = {"min": min(load.samples, default=0.0),
                             "max": max(load.samples, default=0.0),
                             "mean": statistics.mean(load.samples or [0.0])}
    write(result, args.out)
    print((args.out / f"{STEM}.md").read_text())


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def write(result: dict, out: Path) -> None:
    save_json(result, out, STEM)
    m = result["machine"]
    during = m["load_1min_during"]
    lines = [
        "# Audio cache: a hit beside a miss (CPU, loopback HTTP)",
        "",
        f"- Date: {result['date']}",
        machine_line(result) + " (no GPU)",
        f"- Load average at start / end: {', '.join(f'{x:.2f}' for x in m['load_avg_at_start'])}"
        f" / {', '.join(f'{x:.2f}' for x in m['load_avg_at_end'])}; 1-minute load during the "
        f"run {during['min']:.2f}-{during['max']:.2f} (mean {during['mean']:.2f}). The "
        "machine is shared and busy: every figure is an upper bound",
        versions_line(result),
        f"- Per mode: {result['requests']} distinct two-sentence texts ({result['voice']}), "
        f"each a miss, then the same texts {result['hit_rounds']} times over (hits); one "
        "client, one request at a time; time to first byte is the request sent to the "
        "first body byte read",
        "- Made by `KOKORO_DEPLOY_MIRROR=<mirror URL> .venv/bin/python "
        "tests/bench/cache_bench.py`",
        "",
        "| Mode | Kind | n | First byte (ms), median / p95 | Total (ms), median / p95 |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for mode, r in result["modes"].items():
        for kind in ("miss", "hit"):
            s = r[kind]
            lines.append(
                f"| {mode} | {kind} | {s['n']} | {ms(s['ttfb_s']['median'])} / "
                f"{ms(s['ttfb_s']['p95'])} | {ms(s['total_s']['median'])} / "
                f"{ms(s['total_s']['p95'])} |")
    lines += ["", "Miss / hit, medians: " + "; ".join(
        f"{mode}: first byte {r['ttfb_miss_over_hit']:.0f}x, total "
        f"{r['total_miss_over_hit']:.0f}x ({r['mean_bytes'] / 1024:.0f} KiB)"
        for mode, r in result["modes"].items()) + "."]
    (out / f"{STEM}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
