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

--frontier measures issue 27's targets (TARGETS below) with the server's defaults
(Settings: workers from the device, 16 inputs and 512 padded tokens per pass on CUDA,
fp32): first audio of the long text, single stream (p50 and p95 over --ttfa-runs runs)
and per stream at --concurrent concurrent streams (p95 over --concurrent-rounds bursts),
aggregate x real time at --streams concurrent streams, the process's VRAM peak - first
through the scheduler alone (so the VRAM is the server's own), then the same work as
direct engine calls in the same process, the reference each figure is a ratio to - and
writes a summary judging each figure against its target (also -summary.txt).
    python tests/bench/gpu_bench.py --assets DIR --out DIR --frontier --streams 64
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "images" / "kokoro" / "src"), str(REPO / "images" / "kokoro" / "tests")]

from kokoro_server.settings import PRECISIONS  # noqa: E402 - after the path above

# gpu_run.sh's configurations by GPU_PRESET: workers:batch size:batch tokens[:flags],
# flags gpu_bench.py's switches joined by commas; workers "auto" is the server's default.
PRESETS = {
    # what the VRAM plan still extrapolates (more workers, fp16 batched), unbatched and
    # batched, the server's VRAM alone
    "vram": ("1:1:510:--server-only 2:1:510:--server-only 4:1:510:--server-only "
             "1:1:510:--server-only,--precision=fp16 1:16:512:--server-only,--precision=fp16 "
             "2:16:1024:--server-only,--precision=fp16"),
    # issue 27: the server's defaults (workers auto, batch size 0 = 16 on CUDA, 512 tokens)
    "frontier": "auto:0:512:--frontier,--streams=64",
}


def preset_configs(name: str) -> list[str]:
    """The configurations of a GPU_PRESET, one per gpu_bench.py process."""
    try:
        return PRESETS[name].split()
    except KeyError:
        raise SystemExit(f"unknown GPU_PRESET {name!r}; known: {', '.join(PRESETS)}") from None


def parse_config(config: str) -> tuple[str, int, int, list[str]]:
    """workers:batch:tokens[:flags] -> (workers, batch, tokens, gpu_bench.py arguments)."""
    parts = config.split(":", 3)
    if len(parts) < 3 or not (parts[0] == "auto" or parts[0].isdigit()):
        raise ValueError(f"a configuration is workers:batch:tokens[:flags], got {config!r}")
    flags = [f for f in (parts[3].split(",") if len(parts) == 4 else []) if f]
    if any(not f.startswith("--") for f in flags):
        raise ValueError(f"flags are gpu_bench.py switches (--name[=value]), got {config!r}")
    return parts[0], int(parts[1]), int(parts[2]), flags


@dataclass(frozen=True)
class Target:
    key: str  # the figure's key in the frontier figures
    op: str  # "<=" or ">="
    value: float
    unit: str
    what: str
    conditions: tuple[tuple[str, int], ...] = ()  # counts the target is defined at


# Issue 27's targets, with the server's default settings, on an H100.
TARGETS = (
    Target("aggregate_x_realtime", ">=", 750.0, "x real time",
           "aggregate throughput, concurrent streams", (("streams", 64),)),
    Target("first_audio_p50_s", "<=", 0.040, "s", "first audio p50, single stream, long text"),
    Target("first_audio_p95_concurrent_s", "<=", 0.150, "s",
           "first audio p95 per stream, concurrent streams", (("concurrent", 16),)),
    Target("process_vram_mib", "<=", 2048.0, "MiB", "process VRAM peak (server's own)"),
)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0-100, got {q}")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def plan_passes(tokens: list[int], max_batch: int, batch_tokens: int) -> list[list[int]]:
    """The engine workers' rule for direct calls: indices of the inputs in each pass, in
    order, at most max_batch inputs and batch_tokens padded tokens (inputs x the longest;
    0: no bound but the size). An input over the budget alone still gets its own pass."""
    passes: list[list[int]] = []
    longest = 0
    for i, n in enumerate(tokens):
        grown = max(longest, n)
        if passes and (len(passes[-1]) == max_batch
                       or (batch_tokens and (len(passes[-1]) + 1) * grown > batch_tokens)):
            passes.append([])
            grown = n
        elif not passes:
            passes.append([])
        passes[-1].append(i)
        longest = grown
    return passes


def judge(target: Target, value: float | None, conditions: dict | None = None,
          device: str = "cuda") -> str:
    """pass, fail, or why the figure cannot be judged against the target."""
    if value is None:
        return "not measured"
    ok = value <= target.value if target.op == "<=" else value >= target.value
    verdict = "pass" if ok else "fail"
    differ = [f"{k} {(conditions or {}).get(k)}, the target's {v}" for k, v in target.conditions
              if (conditions or {}).get(k) != v]
    if device != "cuda":
        differ.insert(0, f"on {device}, the targets are for a GPU")
    return f"{verdict} (not comparable: {'; '.join(differ)})" if differ else verdict


def summarize(figures: dict, device: str = "cuda") -> list[dict]:
    """One row per target: the figure, the direct engine's, their ratio, the verdict.
    `figures`: {key: value, "direct": {key: value}, "conditions": {name: count}}."""
    rows = []
    direct = figures.get("direct", {})
    for t in TARGETS:
        value, ref = figures.get(t.key), direct.get(t.key)
        rows.append({"figure": t.key, "what": t.what, "value": value, "unit": t.unit,
                     "target": f"{t.op} {t.value:g}", "direct_engine": ref,
                     "ratio_to_direct": value / ref if value is not None and ref else None,
                     "verdict": judge(t, value, figures.get("conditions"), device)})
    return rows


def render_summary(rows: list[dict], header: str) -> str:
    def num(v) -> str:
        return "-" if v is None else f"{v:.4g}"

    lines = [header, f"{'figure':<35} {'value':>10} {'target':>9} {'direct':>10} {'ratio':>7}"
                     "  verdict"]
    for r in rows:
        lines.append(f"target {r['figure']:<28} {num(r['value']):>10} {r['target']:>9} "
                     f"{num(r['direct_engine']):>10} {num(r['ratio_to_direct']):>7}  "
                     f"{r['verdict']}  ({r['unit']}: {r['what']})")
    return "\n".join(lines) + "\n"


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
    # the workers' rule: at most max_batch inputs and batch_tokens
    passes = [[work[i] for i in idx] for idx in plan_passes(
        [len(engine.token_ids(p)) + 2 for p, _, _ in work], engine.max_batch, args.batch_tokens)]
    engine.synthesize_batch(passes[0])
    t0 = time.perf_counter()
    secs = sum(len(r.audio) for p in passes for r in engine.synthesize_batch(p)) / 24000
    result[f"direct_batched_x_realtime_{args.streams}_streams"] = secs / (time.perf_counter() - t0)


async def speak_once(sched, pack, text: str, first_only: bool = False) -> tuple[float, float]:
    """One request through the scheduler: (seconds to its first audio, audio seconds)."""
    start = time.perf_counter()
    plan = await sched.plan(text, "a")
    first, secs = None, 0.0
    speech = sched.speak(plan, pack, 1.0)
    try:
        async for spoken in speech:
            if first is None:
                first = time.perf_counter() - start
            secs += len(spoken.audio) / 24000
            if first_only:
                break
    finally:
        await speech.aclose()  # like a client that hangs up: queued chunks cancelled
    return first, secs


async def wait_idle(sched) -> None:
    while not sched.idle:  # a cancelled request's chunk may still be on a worker
        await asyncio.sleep(0.002)


async def frontier_server(args, make_scheduler, pack, texts: dict) -> dict:
    """Issue 27's figures through the scheduler (the server's code, no HTTP)."""
    sched, metrics = make_scheduler()
    ctext = texts[args.concurrent_text]
    try:
        await speak_once(sched, pack, texts["paragraph"])  # warm-up, then a warm-up burst
        await asyncio.gather(*[speak_once(sched, pack, ctext) for _ in range(args.concurrent)])
        single = []
        for _ in range(args.ttfa_runs):
            await wait_idle(sched)
            single.append((await speak_once(sched, pack, texts["long"], first_only=True))[0])
        burst = []
        for _ in range(args.concurrent_rounds):
            await wait_idle(sched)
            runs = await asyncio.gather(*[speak_once(sched, pack, ctext)
                                          for _ in range(args.concurrent)])
            burst += [first for first, _ in runs]

        async def stream_client() -> float:
            total = 0.0
            for _ in range(args.per_stream):
                total += (await speak_once(sched, pack, texts["paragraph"]))[1]
            return total

        await wait_idle(sched)
        sample = metrics.registry.get_sample_value
        n0, s0 = sample("kokoro_batch_size_count") or 0, sample("kokoro_batch_size_sum") or 0
        t0 = time.perf_counter()
        totals = await asyncio.gather(*[stream_client() for _ in range(args.streams)])
        wall = time.perf_counter() - t0
        n1, s1 = sample("kokoro_batch_size_count") or 0, sample("kokoro_batch_size_sum") or 0
    finally:
        sched.close()
    return {"first_audio_single_s": single, "first_audio_concurrent_s": burst,
            "aggregate_audio_s": sum(totals), "aggregate_wall_s": wall,
            "aggregate_mean_batch": (s1 - s0) / (n1 - n0) if n1 > n0 else None}


def frontier_direct(args, engine, pack, texts: dict, phonemes: dict) -> dict:
    """The same work as direct engine calls, packed in passes by the workers' rule: the
    reference each scheduler figure is a ratio to. A stream's first audio is the end of
    the pass that holds its first chunk; audio seconds are counted stitched, as the
    scheduler sends them."""
    from kokoro_server.audio.stitch import stitch_chunk
    from kokoro_server.scheduler import _start_pad
    from kokoro_server.text.chunking import chunk_text

    def chunks(text: str) -> list:
        return list(chunk_text(text, lambda t: phonemes[t]))

    def tokens(ps: str) -> int:
        return len(engine.token_ids(ps)) + 2

    first = chunks(texts["long"])[0]
    engine.synthesize(first.phonemes, pack)  # warm-up
    single = []
    for _ in range(args.ttfa_runs):
        t0 = time.perf_counter()
        engine.synthesize(first.phonemes, pack)
        single.append(time.perf_counter() - t0)

    lead = chunks(texts[args.concurrent_text])[0]
    item = (lead.phonemes, pack, 1.0)
    passes = plan_passes([tokens(lead.phonemes)] * args.concurrent, engine.max_batch,
                         args.batch_tokens)
    engine.synthesize_batch([item] * len(passes[0]))  # warm-up
    burst = []
    for _ in range(args.concurrent_rounds):
        t0 = time.perf_counter()
        for idx in passes:
            engine.synthesize_batch([item] * len(idx))
            burst += [time.perf_counter() - t0] * len(idx)

    para = chunks(texts["paragraph"])
    work = [c for _ in range(args.streams * args.per_stream) for c in para]
    passes = plan_passes([tokens(c.phonemes) for c in work], engine.max_batch,
                         args.batch_tokens)
    engine.synthesize_batch([(work[i].phonemes, pack, 1.0) for i in passes[0]])  # warm-up
    results: list = [None] * len(work)
    t0 = time.perf_counter()
    for idx in passes:
        out = engine.synthesize_batch([(work[i].phonemes, pack, 1.0) for i in idx])
        for i, r in zip(idx, out, strict=True):
            results[i] = r
    wall = time.perf_counter() - t0
    samples = sum(len(stitch_chunk(r.audio, _start_pad(r.durations), c.text, c.index == 0,
                                   c.index == len(para) - 1, 1.0, 24000)[0])
                  for c, r in zip(work, results, strict=True))
    return {"first_audio_single_s": single, "first_audio_concurrent_s": burst,
            "aggregate_audio_s": samples / 24000, "aggregate_wall_s": wall,
            "aggregate_passes": len(passes)}


def figures_of(part: dict) -> dict:
    """The targets' figures (TARGETS' keys) from frontier_server/frontier_direct's raw."""
    single, burst = part["first_audio_single_s"], part["first_audio_concurrent_s"]
    return {"first_audio_p50_s": percentile(single, 50) if single else None,
            "first_audio_p95_s": percentile(single, 95) if single else None,
            "first_audio_p50_concurrent_s": percentile(burst, 50) if burst else None,
            "first_audio_p95_concurrent_s": percentile(burst, 95) if burst else None,
            "aggregate_x_realtime": part["aggregate_audio_s"] / part["aggregate_wall_s"]}


def device_used_mib() -> float | None:
    out = smi("--query-gpu=memory.used", "--format=csv,noheader,nounits").splitlines()
    try:
        return float(out[0])
    except (IndexError, ValueError):
        return None


def run_frontier(args, engine, pack, texts: dict, phonemes: dict, settings, result: dict,
                 used_at_start: float | None) -> dict:
    """Issue 27: the scheduler alone first (its VRAM is the server's own), the VRAM peak,
    then the direct engine in the same process; figures, ratios, the targets' verdicts."""
    from kokoro_server.metrics import Metrics
    from kokoro_server.scheduler import Scheduler

    cuda = args.device == "cuda"
    if args.workers in (None, "auto"):
        pick = getattr(settings, "engine_workers", None)  # KOKORO_WORKERS=0: by the device
        workers = pick(engine.device) if pick else (settings.workers or 1)
    else:
        workers = int(args.workers)
    engine.warm_up(phonemes[texts["hello"]], pack)  # as the server does before serving

    def make_scheduler():
        metrics = Metrics()
        return Scheduler(engine, Replay(phonemes), metrics, workers=workers,
                         max_queue=settings.max_queue, batch_tokens=args.batch_tokens), metrics

    t0 = time.perf_counter()
    server = asyncio.run(frontier_server(args, make_scheduler, pack, texts))
    server_s = time.perf_counter() - t0
    vram: dict = {}
    if cuda:
        import torch

        torch.cuda.synchronize()
        used = device_used_mib()
        vram = {"torch_max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                "torch_max_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
                "nvidia_smi_process_mib": process_vram_mib(),
                "device_used_mib": used,
                "device_used_at_start_mib": used_at_start}
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    direct = frontier_direct(args, engine, pack, texts, phonemes)
    direct_s = time.perf_counter() - t0
    figures = figures_of(server)
    figures["process_vram_mib"] = None
    if cuda:
        import torch

        torch.cuda.synchronize()
        vram["direct_torch_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        vram["server_vs_direct_torch_allocated"] = (vram["torch_max_allocated_mib"]
                                                    / vram["direct_torch_max_allocated_mib"])
        process = vram["nvidia_smi_process_mib"]
        if process is None and None not in (vram["device_used_mib"], used_at_start):
            process = vram["device_used_mib"] - used_at_start  # no per-process listing
            vram["process_mib_from"] = "device memory.used, less what was used at the start"
        figures["process_vram_mib"] = process
    figures["direct"] = figures_of(direct)
    figures["conditions"] = {"streams": args.streams, "per_stream": args.per_stream,
                             "ttfa_runs": args.ttfa_runs, "concurrent": args.concurrent,
                             "concurrent_rounds": args.concurrent_rounds,
                             "concurrent_text": args.concurrent_text}
    device = "cuda" if cuda else f"cpu ({platform.machine()})"
    rows = summarize(figures, device)
    gpu = result["nvidia_smi"].split(",")[0].strip() if cuda else f"no GPU: {device} dry run"
    capacity = workers + settings.max_queue
    header = (f"Issue 27 targets: {gpu}, {result['date']}; server defaults: workers {workers}, "
              f"batch size {engine.max_batch}, batch tokens {args.batch_tokens}, "
              f"{args.precision}; {args.streams} streams x {args.per_stream} paragraphs, "
              f"{args.ttfa_runs} single runs, {args.concurrent} concurrent x "
              f"{args.concurrent_rounds} rounds ({args.concurrent_text} text)")
    note = None
    if args.streams > capacity:
        note = (f"admission: a server with the defaults admits {capacity} requests (workers + "
                f"KOKORO_MAX_QUEUE {settings.max_queue}); of {args.streams} concurrent "
                f"streams it would answer 503 to {args.streams - capacity}. This benchmark "
                "calls the scheduler directly, past admission.")

    def rounded(xs: list[float]) -> list[float]:
        return [round(x, 5) for x in xs]

    return {"workers": workers, "max_queue": settings.max_queue, "capacity": capacity,
            "figures": figures, "vram": vram, "summary": rows,
            "summary_text": render_summary(rows, header) + (f"{note}\n" if note else ""),
            "admission_note": note, "server_s": server_s, "direct_s": direct_s,
            "server_mean_batch_aggregate": server["aggregate_mean_batch"],
            "direct_passes_aggregate": direct["aggregate_passes"],
            "raw": {part: {k: rounded(v) if isinstance(v, list) else v for k, v in raw.items()}
                    for part, raw in (("server", server), ("direct", direct))}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=Path,
                    help="config.json, voices/*.pt, phonemes.json")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--streams", type=int, default=None,
                    help="concurrent streams for the aggregate (16; 64 with --frontier)")
    ap.add_argument("--workers", default=None,
                    help="comma-separated worker counts, or auto (the server's default; "
                         "default: 1,4,8,16, or auto with --frontier)")
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
    ap.add_argument("--frontier", action="store_true",
                    help="issue 27's targets with the server's defaults (see the docstring)")
    ap.add_argument("--ttfa-runs", type=int, default=20,
                    help="--frontier: single-stream first-audio runs (p50, p95)")
    ap.add_argument("--concurrent", type=int, default=16,
                    help="--frontier: streams started at once, for first audio p95")
    ap.add_argument("--concurrent-rounds", type=int, default=3,
                    help="--frontier: bursts of --concurrent streams (after one warm-up)")
    ap.add_argument("--concurrent-text", default="long", choices=("hello", "paragraph", "long"),
                    help="--frontier: what each concurrent stream speaks in full")
    ap.add_argument("--preset-configs", metavar="PRESET",
                    help="print GPU_PRESET's configurations (gpu_run.sh) and exit")
    args = ap.parse_args()
    if args.preset_configs:
        print("\n".join(preset_configs(args.preset_configs)))
        return
    if args.assets is None or args.out is None:
        ap.error("--assets and --out are required")
    if args.workers is None:
        args.workers = "auto" if args.frontier else "1,4,8,16"
    if args.streams is None:
        args.streams = 64 if args.frontier else 16
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

    name = "kokoro-gpu-torch" + (f"-{args.tag}" if args.tag else "")
    if args.frontier:
        try:  # memory.used before this process touched the GPU
            used_at_start = float(result["nvidia_smi"].splitlines()[0].split(",")[2])
        except (IndexError, ValueError):
            used_at_start = None
        result["vram_scope"] = ("the server's: warm-up as the server does, then the "
                                "scheduler's workers only; the direct engine calls come "
                                "after the VRAM figures")
        result["frontier"] = run_frontier(args, engine, pack, texts, phonemes, settings,
                                          result, used_at_start)
        result["nvidia_smi_after"] = smi(f"--query-gpu={query}",
                                         "--format=csv,noheader,nounits")
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(render_frontier(result))
        (args.out / f"{name}-summary.txt").write_text(result["frontier"]["summary_text"])
        print(result["frontier"]["summary_text"], end="", flush=True)
        return

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

        def one(text: str, first_only: bool = False):
            return speak_once(sched, pack, text, first_only)

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
    for w in [settings.engine_workers(args.device) if x == "auto" else int(x)
              for x in args.workers.split(",")]:
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


def render_frontier(r: dict) -> str:
    f = r["frontier"]
    lines = ["# Kokoro server benchmark: issue 27's targets, torch engine, server defaults", "",
             f"- Date: {r['date']}",
             f"- GPU (nvidia-smi {r['nvidia_smi_query']}): `{r['nvidia_smi']}`",
             f"- torch {r['torch']} (CUDA {r['torch_cuda']}); random-init Kokoro-82M "
             f"checkpoint in the real format, {r['frames_per_phoneme']} frames per phoneme",
             "- Server code without HTTP: kokoro_server TorchEngine + Scheduler; G2P replayed;"
             " each figure beside the same work as direct engine calls in the same process",
             "", "```", f["summary_text"].rstrip("\n"), "```", ""]
    for key, val in f["vram"].items():
        lines.append(f"- VRAM {key.replace('_', ' ')}: {val}")
    lines += ["", f"VRAM figures: {r['vram_scope']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
