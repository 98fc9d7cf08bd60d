"""Idle release: how long the model takes to load again after it was released.

    KOKORO_DEPLOY_MIRROR=http://127.0.0.1:18080/ .venv/bin/python tests/bench/reload_bench.py

The engines the server uses, called in this process on the CPU: the onnx engine with the
real int8 model, and (where the kokoro package is installed) the torch engine with a
random-init checkpoint in the real format and size (the real weights are not on these
machines; loading reads, builds and moves the same tensors). For each, `--repeats`
rounds of: Engine.unload() (what an idle release does; process RSS before and after),
Engine.load() from the page cache (the file was read moments before), the first
synthesis after the load, and a warm synthesis of the same sentence. The onnx load is
also split into its parts (reading the file, exposing the durations output, opening the
session). Reported beside each other from the same run: reload / warm synthesis, and
the first synthesis after a reload / a warm one. Target: a reload under 2 s.
Writes docs/benchmarks/kokoro-idle-reload.json and .md (machine, date, versions).
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from bench import (  # noqa: E402  (bench puts the test library on sys.path)
    MANIFEST,
    OUT,
    VOICE,
    machine,
    machine_line,
    onnx_models,
    save_json,
    versions,
    versions_line,
)

SENTENCE = "The weather is nice today and the children are playing in the park."
TARGET_S = 2.0


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def onnx_parts(engine) -> dict:
    """The onnx load's parts, each timed alone (the file is in the page cache)."""
    import onnxruntime as ort
    from kokoro_server.engines.onnx_graph import with_durations_output

    read_s, data = timed(engine._model_path.read_bytes)
    patch_s, patched = timed(with_durations_output, data)
    start = time.perf_counter()
    session = ort.InferenceSession(patched[0], sess_options=engine._opts,
                                   providers=engine._providers)
    session_s = time.perf_counter() - start
    del session, patched, data
    gc.collect()
    return {"read_s": read_s, "durations_output_s": patch_s, "session_s": session_s}


def rounds(engine, phonemes: str, pack, repeats: int) -> dict:
    engine.synthesize(phonemes, pack)  # warm
    rows = []
    for _ in range(repeats):
        before = rss_mib()
        unload_s, _ = timed(engine.unload)
        gc.collect()
        released = rss_mib()
        load_s, _ = timed(engine.load)
        loaded = rss_mib()
        first_s, audio = timed(engine.synthesize, phonemes, pack)
        warm_s, _ = timed(engine.synthesize, phonemes, pack)
        rows.append({"unload_s": unload_s, "load_s": load_s, "first_synthesis_s": first_s,
                     "warm_synthesis_s": warm_s, "audio_s": len(audio) / 24000,
                     "rss_loaded_mib": before, "rss_released_mib": released,
                     "rss_reloaded_mib": loaded})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {
        "rounds": rows,
        "median": med,
        "max_load_s": max(r["load_s"] for r in rows),
        "reload_over_warm_synthesis": med["load_s"] / med["warm_synthesis_s"],
        "first_over_warm_synthesis": med["first_synthesis_s"] / med["warm_synthesis_s"],
        "rss_freed_mib": med["rss_loaded_mib"] - med["rss_released_mib"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    model_dir = onnx_models("reload_bench.py")

    from kokoro_server.assets import verify
    from kokoro_server.engines import load_engine
    from kokoro_server.settings import Settings
    from kokoro_server.text.g2p import Phonemizer
    from kokoro_server.voices import VoiceStore

    result: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": machine(), "versions": versions(), "voice": VOICE,
                    "sentence": SENTENCE, "repeats": args.repeats, "target_s": TARGET_S,
                    "engines": {}}
    s = Settings(engine="onnx", device="cpu", model_dir=model_dir, manifest=MANIFEST)
    found = verify(s)
    pack, _ = VoiceStore.from_files({VOICE: found.voices[VOICE]}).resolve(VOICE)
    phonemes = Phonemizer()(SENTENCE, "a")

    first_s, engine = timed(load_engine, s, found)
    onnx = rounds(engine, phonemes, pack, args.repeats)
    onnx["first_load_s"] = first_s
    onnx["parts"] = onnx_parts(engine)
    onnx["what"] = "onnx int8 (kokoro-v1.0.int8.onnx, 92 MB), CPU"
    result["engines"]["onnx"] = onnx
    engine.unload()
    del engine
    gc.collect()

    try:
        import kokoro  # noqa: F401
    except ImportError:
        result["engines"]["torch"] = {"skipped": "the kokoro package is not installed"}
    else:
        from kokoro_server.engines.torch import TorchEngine
        from kokoro_testlib import build_random_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            ckpt = build_random_checkpoint(model_dir / "kokoro/config.json",
                                           Path(tmp) / "random-init.pth")
            ts = Settings(engine="torch", device="cpu", model_dir=model_dir,
                          manifest=MANIFEST)
            first_s, engine = timed(TorchEngine, ckpt, model_dir / "kokoro/config.json", ts)
            torch_r = rounds(engine, phonemes, pack, args.repeats)
            torch_r["first_load_s"] = first_s
            torch_r["what"] = (f"torch fp32, random-init checkpoint in the real format "
                               f"({ckpt.stat().st_size / 1e6:.0f} MB), CPU")
            result["engines"]["torch"] = torch_r
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    write(result, args.out)
    print((args.out / "kokoro-idle-reload.md").read_text())


def write(result: dict, out: Path) -> None:
    save_json(result, out, "kokoro-idle-reload")
    m = result["machine"]
    lines = [
        "# Idle release: reloading the model (CPU, from the page cache)",
        "",
        f"- Date: {result['date']}",
        machine_line(result) + " (no GPU)",
        f"- Load average at start / end: {', '.join(f'{x:.2f}' for x in m['load_avg_at_start'])}"
        f" / {', '.join(f'{x:.2f}' for x in m['load_avg_at_end'])}",
        versions_line(result),
        f"- {result['repeats']} rounds per engine of unload, load, first synthesis, warm "
        f"synthesis of one sentence ({result['voice']}); medians; target: reload under "
        f"{result['target_s']:g} s",
        "- Made by `KOKORO_DEPLOY_MIRROR=<mirror URL> .venv/bin/python "
        "tests/bench/reload_bench.py`",
        "",
        "| Engine | Reload (s), median / max | First load at start (s) | Warm synthesis (s) "
        "| Reload / warm synthesis | First synthesis after reload / warm | RSS freed by "
        "release (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in result["engines"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | | |")
            continue
        med = r["median"]
        lines.append(
            f"| {r['what']} | {med['load_s']:.2f} / {r['max_load_s']:.2f} "
            f"| {r['first_load_s']:.2f} | {med['warm_synthesis_s']:.2f} "
            f"| {r['reload_over_warm_synthesis']:.2f} | {r['first_over_warm_synthesis']:.2f} "
            f"| {r['rss_freed_mib']:.0f} |")
    parts = result["engines"]["onnx"].get("parts")
    if parts:
        lines += ["", "onnx load, its parts (one run): read the file "
                  f"{parts['read_s']:.3f} s, expose the durations output "
                  f"{parts['durations_output_s']:.3f} s, open the session "
                  f"{parts['session_s']:.3f} s."]
    (out / "kokoro-idle-reload.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
