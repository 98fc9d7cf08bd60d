"""GPU figures for the torch engine, for a machine with CUDA but no web stack or network.

    python tests/bench/gpu_bench.py --assets DIR --out DIR

Runs the server's own engine and scheduler code (kokoro_server.engines.torch and
kokoro_server.scheduler; no HTTP layer) on a random-init Kokoro-82M checkpoint in the
real on-disk format, built here through kokoro.KModel, with duration_proj biased to
3 frames (75 ms) per phoneme - about the real model's speaking rate - so the decoder
does realistic work. Phonemes for the fixed text set were computed beforehand with
misaki on the CPU machine (prepare_gpu_assets.py) and are replayed, so neither misaki
nor spaCy is needed here. Measures single-stream RTF (direct engine call and through
the scheduler), time to first audio of a long paragraph, aggregate throughput with 16
concurrent streams for several worker counts - through the scheduler and, as the
reference for its overhead, as direct batched engine calls on the same chunks - and
process VRAM; writes JSON + Markdown named by --tag. Run one batch size per process
(tests/bench/gpu_run.sh does), so each VRAM peak is that configuration's own.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import types
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "images" / "kokoro" / "src"), str(REPO / "images" / "kokoro" / "tests")]

from kokoro_server.settings import PRECISIONS  # noqa: E402 - after the path above


def import_kmodel():
    """Import kokoro.model without kokoro/__init__ (which pulls misaki and spaCy)."""
    spec = importlib.util.find_spec("kokoro")
    if "kokoro" not in sys.modules:
        pkg = types.ModuleType("kokoro")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["kokoro"] = pkg
    from kokoro.model import KModel

    sys.modules["kokoro"].KModel = KModel
    return KModel


def smi(*query: str) -> str:
    try:
        r = subprocess.run(["nvidia-smi", *query], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return "nvidia-smi not found"
    return r.stdout.strip() or r.stderr.strip()


def process_vram_mib() -> float | None:
    out = smi("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(os.getpid()):
            return float(parts[1])
    return None


class Replay:
    """G2P replay: the phonemes misaki produced for each text on the CPU machine."""

    english = "replayed"

    def __init__(self, table: dict[str, str]):
        self.table = table

    def ensure(self, lang: str) -> None:
        pass

    def __call__(self, text: str, lang: str) -> str:
        return self.table[text]

    def align(self, text: str, lang: str) -> tuple[str, list]:
        return self.table[text], []  # the scheduler's G2P call; no word places needed


def direct_runs(args, result: dict, engine, pack, texts: dict, phonemes: dict,
                synth_text) -> None:
    """Direct engine calls, the reference for the scheduler's figures: single-stream RTF,
    the long text's first sentence, the 16 streams' chunks in batched passes."""
    for text in (texts["hello"], texts["paragraph"]):  # warm-up
        synth_text(text)
    if args.device == "cuda":
        import torch

        torch.cuda.synchronize()

    rtf = {}
    for name in ("hello", "paragraph"):
        vals = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            secs = synth_text(texts[name])
            vals.append((time.perf_counter() - t0) / secs)
        rtf[name] = {"direct_engine": statistics.median(vals), "audio_s": secs}
    result["rtf_single_stream"] = rtf
    from kokoro_server.text.chunking import chunk_text

    first = next(chunk_text(texts["long"], lambda t: phonemes[t]))
    vals = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        engine.synthesize(first.phonemes, pack)
        vals.append(time.perf_counter() - t0)
    result["first_sentence_direct_s"] = statistics.median(vals)

    # The reference for the scheduler's aggregate figure: every chunk the 16 streams
    # speak, given straight to the engine in passes of max_batch.
    para_chunks = [c.phonemes for c in chunk_text(texts["paragraph"], lambda t: phonemes[t])]
    work = [(p, pack, 1.0) for _ in range(args.streams * args.per_stream) for p in para_chunks]
    passes: list[list] = [[]]
    for item in work:  # the workers' rule: at most max_batch inputs and batch_tokens
        tokens = len(engine.token_ids(item[0])) + 2
        longest = max([tokens] + [len(engine.token_ids(p)) + 2 for p, _, _ in passes[-1]])
        if passes[-1] and (len(passes[-1]) == engine.max_batch
                           or (len(passes[-1]) + 1) * longest > args.batch_tokens):
            passes.append([])
        passes[-1].append(item)
    engine.synthesize_batch(passes[0])
    t0 = time.perf_counter()
    secs = sum(len(r.audio) for p in passes for r in engine.synthesize_batch(p)) / 24000
    result[f"direct_batched_x_realtime_{args.streams}_streams"] = secs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=Path, required=True,
                    help="config.json, voices/*.pt, phonemes.json")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--workers", default="1,4,8,16")
    ap.add_argument("--per-stream", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cpu: dry run of this script")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=float, default=3.0, help="frames (25 ms) per phoneme")
    ap.add_argument("--batch", type=int, default=0,
                    help="KOKORO_BATCH_SIZE (0: the server's default for the device)")
    ap.add_argument("--batch-tokens", type=int, default=None,
                    help="KOKORO_BATCH_TOKENS (default: the server's)")
    ap.add_argument("--no-cudnn", action="store_true", help="measure without cuDNN")
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS,
                    help="KOKORO_PRECISION")
    ap.add_argument("--server-only", action="store_true",
                    help="no direct engine calls: warm up as the server does, then only the "
                         "scheduler, so the VRAM figures are the server's own (direct calls "
                         "run on this thread's CUDA stream, whose cached memory the workers' "
                         "streams cannot reuse)")
    ap.add_argument("--tag", default="", help="suffix of the output files' names")
    args = ap.parse_args()
    import torch

    if args.no_cudnn:
        torch.backends.cudnn.enabled = False
    KModel = import_kmodel()
    from kokoro_server.engines.torch import TorchEngine, cuda_problem
    from kokoro_server.metrics import Metrics
    from kokoro_server.pt_reader import load_voice_pack
    from kokoro_server.scheduler import Scheduler
    from kokoro_server.settings import Settings
    from kokoro_testlib import build_random_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds")}
    query = "name,memory.total,memory.used,driver_version,compute_cap"
    result["nvidia_smi_query"] = query
    result["nvidia_smi"] = smi(f"--query-gpu={query}", "--format=csv,noheader,nounits")
    (args.out / "nvidia-smi.csv").write_text(result["nvidia_smi"] + "\n")
    result["torch"] = torch.__version__
    result["torch_cuda"] = torch.version.cuda
    result["cuda_problem"] = cuda_problem()
    result["arch_list"] = torch.cuda.get_arch_list()
    if args.device == "cuda":
        assert result["cuda_problem"] is None, result["cuda_problem"]

    phonemes = json.loads((args.assets / "phonemes.json").read_text())
    ckpt = Path("/tmp/kokoro-random/random-init.pth")
    t0 = time.perf_counter()
    build_random_checkpoint(args.assets / "config.json", ckpt,
                            frames_per_phoneme=args.frames)
    result["checkpoint_build_s"] = time.perf_counter() - t0
    result["frames_per_phoneme"] = args.frames
    assert KModel is sys.modules["kokoro"].KModel
    settings = Settings(engine="torch", device=args.device, batch_size=args.batch,
                        precision=args.precision)
    if args.batch_tokens is None:
        args.batch_tokens = settings.batch_tokens
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    engine = TorchEngine(ckpt, args.assets / "config.json", settings)
    result["batch_size"] = engine.max_batch
    result["batch_tokens"] = args.batch_tokens
    result["precision"] = args.precision
    result["cudnn"] = torch.backends.cudnn.enabled
    result["alloc_conf"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    pack = load_voice_pack(args.assets / "voices" / "af_heart.pt")
    texts = json.loads((args.assets / "texts.json").read_text())

    def synth_text(text: str) -> float:
        from kokoro_server.text.chunking import chunk_text

        secs = 0.0
        for chunk in chunk_text(text, lambda t: phonemes[t]):
            secs += len(engine.synthesize(chunk.phonemes, pack)) / 24000
        return secs

    result["vram_scope"] = (
        "the server's: warm-up as the server does, then the scheduler's workers only"
        if args.server_only else
        "direct engine calls (this thread's CUDA stream) and the scheduler's workers (one "
        "stream each) in one process: more than the server alone holds")
    if args.server_only:
        engine.warm_up(phonemes[texts["hello"]], pack)
    else:
        direct_runs(args, result, engine, pack, texts, phonemes, synth_text)

    async def scheduler_runs(workers: int) -> dict:
        metrics = Metrics()
        sched = Scheduler(engine, Replay(phonemes), metrics, workers=workers,
                          max_queue=4 * args.streams, batch_tokens=args.batch_tokens)

        async def one(text: str, first_only: bool = False) -> tuple[float, float]:
            start = time.perf_counter()
            plan = await sched.plan(text, "a")
            first, secs = None, 0.0
            speech = sched.speak(plan, pack, 1.0)
            async for spoken in speech:
                if first is None:
                    first = time.perf_counter() - start
                secs += len(spoken.audio) / 24000
                if first_only:
                    break
            await speech.aclose()  # like a client that hangs up: queued chunks cancelled
            return first, secs

        out = {}
        await one(texts["paragraph"])
        ttfa = []
        for _ in range(args.repeats):
            while not sched.idle:  # the last run's cancelled chunk may still be on a worker
                await asyncio.sleep(0.002)
            ttfa.append((await one(texts["long"], first_only=True))[0])
        out["ttfa_long_s"] = statistics.median(ttfa)
        rtf = []
        for _ in range(args.repeats):
            while not sched.idle:  # else the long text's cancelled chunk runs first
                await asyncio.sleep(0.002)
            t0 = time.perf_counter()
            _, secs = await one(texts["paragraph"])
            rtf.append((time.perf_counter() - t0) / secs)
        out["rtf_paragraph_scheduler"] = statistics.median(rtf)

        async def stream_client():
            total = 0.0
            for _ in range(args.per_stream):
                total += (await one(texts["paragraph"]))[1]
            return total

        t0 = time.perf_counter()
        totals = await asyncio.gather(*[stream_client() for _ in range(args.streams)])
        wall = time.perf_counter() - t0
        out[f"aggregate_x_realtime_{args.streams}_streams"] = sum(totals) / wall
        sample = metrics.registry.get_sample_value
        out["mean_batch"] = sample("kokoro_batch_size_sum") / sample("kokoro_batch_size_count")
        sched.close()
        return out

    result["scheduler"] = {}
    for w in [int(x) for x in args.workers.split(",")]:
        result["scheduler"][f"workers_{w}"] = asyncio.run(scheduler_runs(w))
        print(w, result["scheduler"][f"workers_{w}"], flush=True)
    if cuda:
        torch.cuda.synchronize()
        result["vram"] = {"torch_max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                          "torch_max_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
                          "nvidia_smi_process_mib": process_vram_mib()}
        # after the VRAM figures: direct calls, on this thread's stream
        try:
            result["vram_peak_by_tokens"] = peak_by_tokens(engine, pack,
                                                           phonemes[texts["long"]])
        except Exception as exc:  # keep the figures above; say why this part is missing
            result["vram_peak_by_tokens"] = {"error": repr(exc)}
    if args.precision != "fp32":  # after the VRAM figures: the model is the same either way
        try:
            result["precision_vs_fp32"] = precision_check(engine, texts, phonemes, pack)
        except Exception as exc:  # keep the figures above; say why this part is missing
            result["precision_vs_fp32"] = {"error": repr(exc)}
    result["nvidia_smi_after"] = smi(f"--query-gpu={query}", "--format=csv,noheader,nounits")
    name = "kokoro-gpu-torch" + (f"-{args.tag}" if args.tag else "")
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(render(result))
    print(json.dumps(result, indent=2))


def peak_by_tokens(engine, pack, phonemes: str) -> dict:
    """torch's peak allocation for one pass by input length, beside what is allocated
    between passes (weights): what each token of a chunk costs in VRAM."""
    import torch

    torch.cuda.synchronize()
    out = {"between_passes_mib": torch.cuda.memory_allocated() / 2**20}
    for n in (64, 128, 256, 510):
        text = (phonemes * (1 + n // len(phonemes)))[:n]
        torch.cuda.reset_peak_memory_stats()
        engine.synthesize(text, pack)
        torch.cuda.synchronize()
        out[f"tokens_{len(engine.token_ids(text))}_mib"] = (
            torch.cuda.max_memory_allocated() / 2**20)
    return out


def precision_check(engine, texts: dict, phonemes: dict, pack) -> dict:
    """The same chunks with the same seed (the vocoder draws random phase and noise) in
    fp32 and in the engine's precision: how far apart the audio is, as a signal-to-noise
    ratio, beside two fp32 runs with different seeds (what the noise alone changes).
    Random-init weights: this bounds numerical drift, it does not judge speech."""
    import numpy as np
    import torch
    from kokoro_server.text.chunking import chunk_text

    def run(precision: str, seed: int):
        engine.precision = precision
        torch.manual_seed(seed)
        return [engine.synthesize_timed(c.phonemes, pack) for c in chunk_text(
            texts["paragraph"], lambda t: phonemes[t])]

    def snr(a, b) -> float:
        a, b = np.concatenate([x.audio for x in a]), np.concatenate([x.audio for x in b])
        if len(a) != len(b):
            return float("nan")
        return float(10 * np.log10((a ** 2).sum() / max(((a - b) ** 2).sum(), 1e-20)))

    low = engine.precision
    ref, other_seed, lowp = run("fp32", 1), run("fp32", 2), run(low, 1)
    engine.precision = low
    same = sum(int((a.durations == b.durations).all()) for a, b in zip(ref, lowp, strict=True))
    return {"snr_db_vs_fp32_same_seed": snr(ref, lowp),
            "snr_db_fp32_other_seed": snr(ref, other_seed),
            "chunks_with_identical_durations": f"{same}/{len(ref)}",
            "max_abs": float(max(np.abs(x.audio).max() for x in lowp)),
            "finite": bool(all(np.isfinite(x.audio).all() for x in lowp))}


def render(r: dict) -> str:
    lines = [
        "# Kokoro server benchmark: GPU, torch engine",
        "",
        f"- Date: {r['date']}",
        f"- GPU (nvidia-smi {r['nvidia_smi_query']}): `{r['nvidia_smi']}`",
        f"- torch {r['torch']} (CUDA {r['torch_cuda']}); random-init Kokoro-82M checkpoint in "
        f"the real format, {r['frames_per_phoneme']} frames (25 ms each) per phoneme",
        "- Server code without HTTP: kokoro_server TorchEngine + Scheduler; G2P replayed",
        f"- Inputs per forward pass (KOKORO_BATCH_SIZE): {r['batch_size']}, padded tokens "
        f"per pass (KOKORO_BATCH_TOKENS): {r['batch_tokens']}; KOKORO_PRECISION "
        f"{r.get('precision', 'fp32')}; cuDNN "
        f"{'on' if r['cudnn'] else 'off'}; PYTORCH_CUDA_ALLOC_CONF={r['alloc_conf'] or '(unset)'}",
        "",
        "| Measure | Value |",
        "| --- | ---: |",
    ]
    for name, v in r.get("rtf_single_stream", {}).items():
        lines.append(f"| RTF single stream, {name}, direct engine | {v['direct_engine']:.4f} |")
    if "first_sentence_direct_s" in r:
        lines.append(f"| First sentence of the long text, direct engine (s) | "
                     f"{r['first_sentence_direct_s']:.4f} |")
    for key, val in r.items():
        if key.startswith("direct_batched"):
            lines.append(f"| {key.replace('_', ' ')} | {val:.1f} |")
    for w, v in r["scheduler"].items():
        for key, val in v.items():
            lines.append(f"| {w.replace('_', ' ')}: {key.replace('_', ' ')} | {val:.4f} |")
    for key, val in (r.get("vram") or {}).items():
        if val is not None:
            lines.append(f"| VRAM {key.replace('_', ' ')} | {val:.0f} |")
    for key, val in (r.get("vram_peak_by_tokens") or {}).items():
        shown = val if isinstance(val, str) else f"{val:.0f}"  # a string: why it is missing
        lines.append(f"| torch peak allocation, one pass, {key.replace('_', ' ')} | {shown} |")
    for key, val in (r.get("precision_vs_fp32") or {}).items():
        lines.append(f"| {r['precision']} against fp32: {key.replace('_', ' ')} | {val} |")
    lines += ["", f"VRAM figures: {r['vram_scope']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
