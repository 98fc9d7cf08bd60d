"""Benchmark the Kokoro server against direct engine calls in the same run.

    KOKORO_DEPLOY_MIRROR=http://127.0.0.1:18080/ .venv/bin/python tests/bench/bench.py

Starts `kokoro-server` (onnx engine, the real int8 model) as a subprocess on loopback
and measures, each beside a direct call of the same engine code in this process:
  * real-time factor (synthesis wall time / audio seconds) on a fixed English text set,
    also beside the kokoro-onnx library (the engine a user would pick instead) run in its
    own venv (library_baseline.py);
  * time to first audio in stream mode for a long paragraph (direct: G2P + synthesis
    of the first chunk; kokoro-onnx: its create_stream's first chunk), and the server's
    time to the last byte;
  * aggregate throughput (audio seconds per wall second) at 1, 4 and 16 clients
    (16 requests of a two-sentence text per level);
  * peak RSS of the server process (and of this process for the direct engine);
  * the server's RSS after 50 and after 500 requests.
Writes docs/benchmarks/kokoro-cpu-onnx.json and .md (machine, date, versions).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "images" / "kokoro" / "tests")]

from kokoro_testlib import MANIFEST, fetch_models, free_port, voice_paths  # noqa: E402
from texts import LONG, MEDIUM, TEXT_SET  # noqa: E402

OUT = REPO / "docs" / "benchmarks"
VOICE = "af_heart"


class PeakRss:
    """Sample a process's RSS every 50 ms and keep the peak."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(
        psutil.virtual_memory().total / 2**30, 1), "os": platform.platform(),
        "python": platform.python_version(), "load_avg_at_start": os.getloadavg()}


def versions() -> dict:
    out = {}
    for dist in ("kokoro-server", "onnxruntime", "misaki", "spacy", "numpy", "av", "fastapi",
                 "uvicorn", "torch", "kokoro"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


class Direct:
    """The same engine, phonemizer, chunker and stitcher the server uses, called directly."""

    def __init__(self, model_dir: Path):
        from kokoro_server.assets import verify
        from kokoro_server.engines import load_engine
        from kokoro_server.settings import Settings
        from kokoro_server.text.g2p import Phonemizer
        from kokoro_server.voices import VoiceStore

        s = Settings(engine="onnx", model_dir=model_dir, manifest=MANIFEST)
        found = verify(s)
        self.engine = load_engine(s, found)
        self.voices = VoiceStore.from_files({VOICE: found.voices[VOICE]})
        self.pack, _ = self.voices.resolve(VOICE)
        self.g2p = Phonemizer()

    def speak(self, text: str, first_only: bool = False) -> float:
        """Synthesize like the server does; return audio seconds."""
        from kokoro_server.audio.stitch import stitch_chunk
        from kokoro_server.engines.base import FRAME_SAMPLES
        from kokoro_server.text.chunking import chunk_text

        seconds = 0.0
        chunks = chunk_text(text, lambda t: self.g2p(t, "a"))
        chunk = next(chunks)
        while chunk is not None:
            out = self.engine.synthesize_timed(chunk.phonemes, self.pack)
            following = None if first_only else next(chunks, None)
            pad = None if out.durations is None else int(out.durations[0]) * FRAME_SAMPLES
            audio, _ = stitch_chunk(out.audio, pad, chunk.text, chunk.index == 0,
                                    following is None)
            seconds += len(audio) / 24000
            chunk = following
        return seconds


class Library:
    """kokoro-onnx (tests/bench/baseline-requirements.txt) in a venv of its own, with
    onnxruntime at the server's version, serving library_baseline.py's requests."""

    VENV = REPO / ".cache" / "bench" / "kokoro-onnx"

    def __init__(self, model_dir: Path, pack):
        import numpy as np

        python = self.VENV / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(self.VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q",
                            "-r", str(HERE / "baseline-requirements.txt"),
                            f"onnxruntime=={metadata.version('onnxruntime')}"], check=True)
        voices = self.VENV.parent / "voices.npz"
        np.savez(voices, **{VOICE: np.asarray(pack, dtype=np.float32).reshape(-1, 1, 256)})
        self.proc = subprocess.Popen(
            [str(python), str(HERE / "library_baseline.py"),
             str(model_dir / "kokoro/onnx/kokoro-v1.0.int8.onnx"), str(voices), VOICE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version = json.loads(self.proc.stdout.readline())["version"]

    def timed(self, text: str, first_only: bool = False) -> tuple[float, float]:
        """(wall seconds, audio seconds), the wall time measured in the worker."""
        self.proc.stdin.write(json.dumps({"text": text, "first_only": first_only}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return answer["wall"], answer["audio_seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def start_server(model_dir: Path, port: int, workers: int,
                 max_queue: int = 64) -> subprocess.Popen:
    env = {**os.environ, "KOKORO_ENGINE": "onnx", "KOKORO_MODEL_DIR": str(model_dir),
           "KOKORO_MANIFEST": str(MANIFEST), "KOKORO_PORT": str(port),
           "KOKORO_HOST": "127.0.0.1", "KOKORO_WORKERS": str(workers),
           "KOKORO_MAX_QUEUE": str(max_queue), "KOKORO_LOG_LEVEL": "warning"}
    exe = Path(sys.executable).with_name("kokoro-server")
    proc = subprocess.Popen([str(exe)], env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("kokoro-server exited during start-up")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("kokoro-server did not become ready")


def post_pcm(client: httpx.Client, text: str) -> float:
    r = client.post("/v1/audio/speech", json={"input": text, "voice": VOICE,
                                              "response_format": "pcm", "stream": False})
    r.raise_for_status()
    return len(r.content) / 2 / 24000


def ttfa_stream(client: httpx.Client, text: str) -> tuple[float, float]:
    """Seconds to the first audio byte and to the last."""
    start = time.perf_counter()
    with client.stream("POST", "/v1/audio/speech",
                       json={"input": text, "voice": VOICE, "response_format": "pcm",
                             "stream": True}) as r:
        pieces = r.iter_raw()
        for piece in pieces:
            if piece:
                first = time.perf_counter() - start
                break
        for _ in pieces:  # drain: the next measurement starts on an idle server
            pass
    return first, time.perf_counter() - start


def timed(fn, *args) -> tuple[float, float]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def throughput(fn, clients: int, per_client: int) -> float:
    """Aggregate audio seconds per wall second with `clients` concurrent callers."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        seconds = sum(pool.map(lambda _: sum(fn() for _ in range(per_client)),
                               range(clients)))
    return seconds / (time.perf_counter() - start)


def onnx_models(tool: str) -> Path:
    """The int8 onnx model, its config and the voices, fetched from the mirror that
    KOKORO_DEPLOY_MIRROR names (without it, `tool` exits saying so)."""
    mirror = os.environ.get("KOKORO_DEPLOY_MIRROR")
    if not mirror:
        sys.exit(f"{tool}: set KOKORO_DEPLOY_MIRROR to the model mirror's base URL")
    return fetch_models(mirror, ["kokoro/config.json", "kokoro/onnx/kokoro-v1.0.int8.onnx",
                                 *voice_paths()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--leak-requests", type=int, default=500)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--workers", type=int, default=1, help="server KOKORO_WORKERS")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    model_dir = onnx_models("bench")
    result: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": machine(), "versions": versions(), "engine": "onnx int8",
                    "voice": VOICE, "server_workers": args.workers}
    direct = Direct(model_dir)
    library = Library(model_dir, direct.pack)
    result["versions"]["kokoro-onnx (baseline)"] = library.version
    port = free_port()
    server = start_server(model_dir, port, args.workers)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    try:
        for text in TEXT_SET.values():  # warm every path
            direct.speak(text)
            library.timed(text)
            post_pcm(client, text)
        rtf = {}
        for name, text in TEXT_SET.items():
            d, lib, s = [], [], []
            for _ in range(args.repeats):  # interleave so load changes hit all alike
                wall, secs = timed(direct.speak, text)
                d.append(wall / secs)
                wall, secs = library.timed(text)
                lib.append(wall / secs)
                wall, secs = timed(post_pcm, client, text)
                s.append(wall / secs)
            rtf[name] = {"direct": statistics.median(d), "server": statistics.median(s),
                         "ratio": statistics.median(s) / statistics.median(d),
                         "library": statistics.median(lib),
                         "server_vs_library": statistics.median(s) / statistics.median(lib)}
        result["rtf"] = rtf
        d_first, s_first, s_total, lib_first = [], [], [], []
        for _ in range(args.repeats):
            d_first.append(timed(direct.speak, LONG, True)[0])
            lib_first.append(library.timed(LONG, True)[0])
            first, total = ttfa_stream(client, LONG)
            s_first.append(first)
            s_total.append(total)
        result["ttfa_stream_long_paragraph_s"] = {
            "direct_first_chunk": statistics.median(d_first),
            "server": statistics.median(s_first),
            "server_total": statistics.median(s_total),
            "server_minus_direct_ms": 1000 * (statistics.median(s_first)
                                              - statistics.median(d_first)),
            "library_first_chunk": statistics.median(lib_first)}
        library.close()
        tput = {}
        local = threading.local()

        def via_server():
            if not hasattr(local, "c"):
                local.c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
            return post_pcm(local.c, MEDIUM)

        with PeakRss(server.pid) as server_rss, PeakRss(os.getpid()) as direct_rss:
            for n in [int(c) for c in args.concurrency.split(",")]:
                per = max(1, 16 // n)
                tput[str(n)] = {"direct": throughput(lambda: direct.speak(MEDIUM), n, per),
                                "server": throughput(via_server, n, per)}
                tput[str(n)]["ratio"] = tput[str(n)]["server"] / tput[str(n)]["direct"]
        result["throughput_audio_s_per_s"] = tput
        result["peak_rss_mib"] = {"server_process": server_rss.peak / 2**20,
                                  "direct_process": direct_rss.peak / 2**20}
        proc = psutil.Process(server.pid)
        rss = {}
        for i in range(1, args.leak_requests + 1):
            post_pcm(client, "Hi." if i % 2 else "Okay.")
            if i in (50, args.leak_requests):
                rss[str(i)] = proc.memory_info().rss / 2**20
        result["server_rss_mib_after_requests"] = rss
        if "50" in rss and str(args.leak_requests) in rss:
            result["rss_growth_50_to_last_pct"] = 100 * (rss[str(args.leak_requests)]
                                                         / rss["50"] - 1)
        result["machine"]["load_avg_at_end"] = os.getloadavg()
    finally:
        client.close()
        server.terminate()
        server.wait(30)
    write(result, args.out)


def save_json(result: dict, out: Path, stem: str) -> None:
    """The run's figures as <out>/<stem>.json (its report, <stem>.md, follows)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")


def machine_line(result: dict) -> str:
    m = result["machine"]
    return f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}"


def versions_line(result: dict) -> str:
    return "- Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items())


def write(result: dict, out: Path) -> None:
    save_json(result, out, "kokoro-cpu-onnx")
    m = result["machine"]
    lines = [
        "# Kokoro server benchmark: CPU, onnx int8",
        "",
        f"- Date: {result['date']}",
        machine_line(result),
        f"- Load average at start / end: {', '.join(f'{x:.2f}' for x in m['load_avg_at_start'])}"
        f" / {', '.join(f'{x:.2f}' for x in m.get('load_avg_at_end', ()))}",
        versions_line(result),
        f"- Voice {result['voice']}, server KOKORO_WORKERS={result['server_workers']}; "
        "direct = the same engine/G2P/chunking code called in-process",
        "",
        "| Measure | Direct engine | Server | Server / direct |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in result["rtf"].items():
        lines.append(f"| RTF, {name} | {r['direct']:.3f} | {r['server']:.3f} | {r['ratio']:.3f} |")
    t = result["ttfa_stream_long_paragraph_s"]
    lines.append(f"| Time to first audio, stream, long paragraph (s) | "
                 f"{t['direct_first_chunk']:.3f} (first chunk) | {t['server']:.3f} | "
                 f"+{t['server_minus_direct_ms']:.0f} ms |")
    lines.append(f"| Time to last audio, stream, long paragraph (s) | | "
                 f"{t['server_total']:.3f} | |")
    for n, r in result["throughput_audio_s_per_s"].items():
        lines.append(f"| Throughput, {n} clients (audio s / s) | {r['direct']:.2f} | "
                     f"{r['server']:.2f} | {r['ratio']:.3f} |")
    p = result["peak_rss_mib"]
    lines.append(f"| Peak RSS (MiB) | {p['direct_process']:.0f} (bench process) | "
                 f"{p['server_process']:.0f} | |")
    rss = result.get("server_rss_mib_after_requests", {})
    if rss:
        lines.append("")
        lines.append("Server RSS after N requests (MiB): " + ", ".join(
            f"{k}: {val:.0f}" for k, val in rss.items()) +
            f" (growth {result.get('rss_growth_50_to_last_pct', 0):+.1f} %)")
    if "library" in next(iter(result["rtf"].values())):
        lines += ["", "Beside the kokoro-onnx library (its own G2P and chunking, the same model "
                  "file and onnxruntime), interleaved in the same run:", "",
                  "| Measure | kokoro-onnx | Server | Server / kokoro-onnx |",
                  "| --- | ---: | ---: | ---: |"]
        for name, r in result["rtf"].items():
            lines.append(f"| RTF, {name} | {r['library']:.3f} | {r['server']:.3f} | "
                         f"{r['server_vs_library']:.3f} |")
        lines.append(f"| Time to first audio, long paragraph (s) | "
                     f"{t['library_first_chunk']:.3f} (create_stream) | {t['server']:.3f} | "
                     f"{t['server'] / t['library_first_chunk']:.3f} |")
    (out / "kokoro-cpu-onnx.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
