"""The VRAM plan of the colocated stack (Kokoro, an LLM server, ComfyUI) and the
post-deploy VRAM report: pure functions over plain data.

Role `stack` exposes them as Ansible filters (`kokoro_vram_*`): the preflight computes
`plan_stack` from gpu_facts' cards and the manifest's `companions:` section and fails
before touching the host when the enabled services do not fit (and warns when ComfyUI
fits below its useful minimum); verify parses `nvidia-smi` and compares what each
service holds with its plan (`vram_report`). tools/plan.py makes the same plan for a
named card with no host; tests/unit/test_vram_plan.py imports this file directly.
Nothing here touches a host.

Docker puts no VRAM limit on a container, so each service is held inside its share by
its own knobs: Kokoro by its worker count, llama.cpp by -ngl, context size and KV cache
types (it allocates weights, KV cache and compute buffers at start), ComfyUI by
`--reserve-vram` (and `--lowvram` when its models cannot stay whole on the card).

Sources of the numbers (checked 2026-11-27):

[BENCH-GPU]  docs/benchmarks/gpu-server-vram-2026-11-27 (H100, torch 2.11 cu130,
             expandable segments, the server's code with weight norm folded, no other
             calls in the process): one worker holds 1,714 MiB unbatched, 2,136 MiB
             batched at 512 padded tokens, two workers 4,918 MiB at 1,024 (nvidia-smi
             per-process figure); ~838 MiB of it is the CUDA context and kernels
             (process minus torch reserved, the same in every run), there from the
             first CUDA call on; 378 MiB stays allocated between passes (weights,
             library workspaces). A worker's pass: 498 MiB at 510 tokens unbatched
             (1,714 - 838 - 378), 1.80-1.81 MiB per padded token batched.
[BENCH-W4]   docs/benchmarks/README.md, GPU re-run 2026-11-27 02:33 (before the fold, with
             the benchmark's direct calls in the process): 2,592 MiB with one worker,
             4,802 with four, 737 MiB per extra worker. The only multi-worker unbatched
             figure; likely an upper bound now (the fold and the benchmark fix shrank
             every one-worker figure), not re-measured with more workers.
[BENCH-CPU]  docs/benchmarks/kokoro-cpu-onnx.md: the onnx int8 server's RSS is 1,096 MiB
             after 50 and after 500 requests (no growth).
[GGML]       ggml/src/ggml.c `type_traits`: (block size, bytes per block) of f32 (1, 4),
             f16 (1, 2), bf16 (1, 2), q8_0 (32, 34), q4_0 (32, 18), q4_1 (32, 20), q5_0
             (32, 22), q5_1 (32, 24), iq4_nl (32, 18): the KV cache types llama.cpp's
             --cache-type-k/-v accept.
[LLAMA-KV]   llama.cpp src/llama-kv-cache.cpp: one K and one V tensor per layer of
             ggml_row_size(type, n_head_kv * head_dim) x kv_size bytes, kv_size = n_ctx
             (-c, the total over all parallel slots); a layer's KV lives on that layer's
             device (offload_kqv defaults on), so partial offload moves only the offloaded
             layers' KV to the GPU. A quantized V cache needs flash attention.
[LLAMA-LOG]  llama.cpp's load log for 7-8B Qwen-family GGUFs with n_ubatch 512 and flash
             attention: "CUDA0 compute buffer size" about 300 MiB, dominated by the logits
             (512 tokens x 151,936 vocab x 4 B = 297 MiB); the CUDA context with its cuBLAS
             handle adds roughly 300-450 MiB to the process (nvidia-smi minus buffers).
[COMFY-CLI]  ComfyUI comfy/cli_args.py: `--reserve-vram` (float, "the amount of vram in GB
             you want to reserve for use by your OS/other software"), `--lowvram` ("Split
             the unet in parts to use less vram").
[COMFY-MM]   ComfyUI comfy/model_management.py: EXTRA_RESERVED_VRAM = reserve_vram x 1024^3
             (400 MiB on Linux when unset); get_free_memory() is cudaMemGetInfo's free
             memory of the whole device (other processes' allocations are already
             excluded) plus torch's cached-but-idle memory; load_models_gpu() loads as much
             of a model's weights as fits in free - reserve - inference memory and streams
             the rest (NORMAL and LOW vram states), unloading the models it holds (the text
             encoder after encoding) when the next one needs room;
             minimum_inference_memory() = 0.8 GiB + reserve; in LOW_VRAM the text encoder
             runs on the CPU.
[NVSMI]      memory.total as nvidia-smi prints it: H100 SXM5 81,559 MiB measured here
             (docs/benchmarks/nvidia-smi-query-h100.csv); RTX 5090 32,607, RTX 4090 24,564
             and RTX 4080 16,376 MiB as those cards print it (the first two also in
             tests/unit/test_gpu_decisions.py); the other rows are NVIDIA's spec-sheet
             capacity x 1024 (nvidia-smi prints that or a little less, which the reserve
             covers). Device ids from the PCI ID repository, as in kokoro_gpu.py.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_table, nvidia_smi

MIB = 1024 * 1024

# ------------------------------------------------------------------------- constants

# [BENCH-GPU] Kokoro's torch process with one worker, passes not batched.
KOKORO_GPU_VRAM_ONE_WORKER = 1714
# [BENCH-W4] each further worker (its own CUDA stream and allocator pool).
KOKORO_GPU_VRAM_PER_EXTRA_WORKER = 737
# [BENCH-GPU] a worker's batched pass costs 1.81 MiB per padded token of
# KOKORO_BATCH_TOKENS, in place of the unbatched pass's 498 MiB counted above. The
# server batches the torch engine on CUDA by default (16 inputs, 512 tokens); batch
# size 1 turns it off.
KOKORO_BATCH_MIB_PER_TOKEN = 1.81
KOKORO_UNBATCHED_PASS_MIB = 498
KOKORO_BATCH_TOKENS_DEFAULT = 512
# [BENCH-GPU] process - torch reserved: there from start, does not grow.
KOKORO_CUDA_CONTEXT_MIB = 838
# [BENCH-CPU] 1,096 MiB measured RSS, rounded up by ~10 % for voices and longer texts.
KOKORO_CPU_RAM_MIB = 1200
# Host RAM of the GPU (torch) Kokoro process: an estimate (CUDA libraries mapped,
# Python, spaCy), not measured; only used for the host RAM check.
KOKORO_GPU_RAM_MIB = 2048

# [LLAMA-LOG] CUDA context + cuBLAS (~450) + compute buffers (~300), rounded up. The
# plan also counts every weight as offloaded (the token embedding stays on the CPU in
# reality), which leaves it a few hundred MiB on the safe side for Qwen3-8B.
LLM_GPU_OVERHEAD_MIB = 768
# Host side of llama-server: compute buffer on the CPU, process, HTTP slots.
LLM_HOST_OVERHEAD_MIB = 512
# -ngl value the plan passes for "every layer": llama.cpp offloads the output layer too
# when n_gpu_layers > n_layer; -1 means "auto-fit to free memory" in recent llama.cpp,
# which is exactly the unpredictability the plan exists to remove.
LLM_ALL_LAYERS = 999

# ComfyUI (estimates; override per service): the torch CUDA context of the same stack
# as Kokoro's 838 MiB plus cuDNN kernels for the VAE, rounded up to 1 GiB; working
# memory of a ~1 MP Qwen-Image step and VAE decode (ComfyUI's own floor is 0.8 GiB
# [COMFY-MM] and it tiles the VAE decode when short); the least VRAM it can run with
# when it streams weights (context + working memory + ~1 GiB of resident blocks: one of
# Qwen-Image's 60 blocks is ~0.33 GiB in fp8).
COMFYUI_CONTEXT_MIB = 1024
COMFYUI_WORKING_MIB = 2048
COMFYUI_MIN_VRAM_MIB = 4096
# The least ComfyUI can usefully run with: half of its largest model resident (plus
# context and working memory). Offloading, it copies every non-resident block over PCIe
# on every sampling step [COMFY-MM]; below half, more of the model crosses the bus each
# step than stays on the card (Qwen-Image: 12.5 GiB; beside Kokoro and the LLM on a 24 GB
# card it gets 6.5 GiB and copies 15.5 of its 19 GiB every step). The plan still fits
# there, since ComfyUI does run, but it warns and names what would give it this much.
COMFYUI_USEFUL_RESIDENT_SHARE = 0.5
# Host-to-device copy rate of PCIe 4.0 x16 from pinned memory (31.5 GB/s raw per
# direction; cudaMemcpy reaches about 25): what the warning's copy time assumes.
PCIE_GEN4_X16_GB_S = 25
# Host RAM: ComfyUI keeps the models it is not running (and the offloaded part of the
# one it runs) in RAM, so every file of the set plus the process.
COMFYUI_RAM_OVERHEAD_MIB = 2048
COMFYUI_POLICIES = ("restart_safe", "resident")

# The smallest reserve the suggestions propose (desktop compositors hold 200-500 MiB).
RESERVE_FLOOR_MIB = 512

# [GGML] KV cache type -> (elements per block, bytes per block).
GGML_TYPE_SIZE: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
    "iq4_nl": (32, 18),
}

SERVICES = ("kokoro", "llm", "comfyui")


# --------------------------------------------------------------------------- helpers


def _mib_ceil(n_bytes: float) -> int:
    return math.ceil(n_bytes / MIB)


def _gib(mib: float) -> str:
    return f"{mib / 1024:.2f}"


def _bool(value: Any, var: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", "", "none"):
        return False
    raise ValueError(f"{var}: {value!r} is not a boolean; set it to true or false")


def _int(value: Any, var: str, default: int | None = None) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return default
    try:
        return int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
    except ValueError:
        raise ValueError(f"{var}: {value!r} is not a whole number") from None


def _choice(value: Any, var: str, choices: tuple[str, ...], default: str) -> str:
    text = default if value is None or str(value).strip() == "" else str(value).strip()
    if text not in choices:
        raise ValueError(f"{var}: {value!r} is not one of {', '.join(choices)}")
    return text


# ------------------------------------------------------------------------ arithmetic


def kv_row_bytes(cache_type: str, n_elements: int, var: str = "cache type") -> int:
    """Bytes of one KV row of `n_elements` (n_head_kv x head_dim) in `cache_type`
    (ggml_row_size [GGML])."""
    if cache_type not in GGML_TYPE_SIZE:
        raise ValueError(
            f"{var}: unknown KV cache type {cache_type!r}; set it to one of "
            f"{', '.join(GGML_TYPE_SIZE)} (llama.cpp's --cache-type-k/-v values)"
        )
    block, size = GGML_TYPE_SIZE[cache_type]
    if n_elements % block:
        raise ValueError(
            f"{var}: {cache_type} needs rows that are a multiple of {block} elements, "
            f"this model's are {n_elements}; use f16 or q8_0"
        )
    return n_elements // block * size


def kv_cache_bytes(
    layers: int,
    ctx_size: int,
    kv_heads: int,
    head_dim: int,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
) -> int:
    """llama.cpp's KV cache for `layers` layers and `ctx_size` cells (the TOTAL context,
    -c, over all slots): layers x ctx x (row(K) + row(V)) [LLAMA-KV]."""
    n = kv_heads * head_dim
    row = kv_row_bytes(cache_type_k, n, "stack_llm_cache_type_k") + kv_row_bytes(
        cache_type_v, n, "stack_llm_cache_type_v"
    )
    return layers * ctx_size * row


def kv_cache_mib(*args: Any, **kwargs: Any) -> int:
    """kv_cache_bytes in MiB, rounded up."""
    return _mib_ceil(kv_cache_bytes(*args, **kwargs))


def kokoro_gpu_vram_mib(workers: int, batch_tokens: int = 0) -> int:
    """Kokoro's torch process VRAM for `workers` workers ([BENCH-GPU], [BENCH-W4]), with
    each worker's pass batched up to `batch_tokens` padded tokens (0: not batched).
    At or above every [BENCH-GPU] point (exact unbatched, +0.3 % at 512 tokens, +5 % for
    two workers at 1,024); more workers than two are extrapolated."""
    workers = max(1, workers)
    vram = KOKORO_GPU_VRAM_ONE_WORKER + (workers - 1) * KOKORO_GPU_VRAM_PER_EXTRA_WORKER
    if batch_tokens > 0:
        batched = math.ceil(batch_tokens * KOKORO_BATCH_MIB_PER_TOKEN)
        vram += workers * max(0, batched - KOKORO_UNBATCHED_PASS_MIB)
    return vram


def _kokoro_batched_tokens(kokoro: dict) -> int:
    """The padded tokens per pass when the server batches (torch on the GPU, batch size
    0 = its default of 16, or above 1), else 0."""
    on = kokoro["device"] == "gpu" and kokoro["engine"] == "torch" and kokoro["batch_size"] != 1
    return kokoro["batch_tokens"] if on else 0


def card_total_mib(gpu: dict, override_mib: int | None = None) -> tuple[int, str]:
    """(total VRAM MiB, where it came from) for one card: nvidia-smi's figure, else the
    override (stack_vram_total_mib), else the PCI id table; ValueError when none."""
    total = _int(gpu.get("memory_total_mib"), "memory_total_mib")
    if total:
        return total, "nvidia-smi"
    if override_mib:
        return override_mib, "stack_vram_total_mib"
    device_id = str(gpu.get("device_id") or "").lower().removeprefix("0x")
    known = gpu_table.card(device_id)
    if known and known.memory_mib:
        return known.memory_mib, f"PCI id table ({device_id})"
    what = f"PCI id 10de:{device_id}" if device_id else (gpu.get("name") or "no name")
    raise ValueError(
        f"GPU {gpu.get('index', 0)} ({what}): its total VRAM is unknown (no figure from "
        "nvidia-smi and not in the kit's GPU table); set stack_vram_total_mib to "
        "the card's memory in MiB"
    )


# --------------------------------------------------------------------- normalisation


def _cards(gpus: list[dict] | None, override_mib: int | None) -> dict[int, dict]:
    cards: dict[int, dict] = {}
    for position, gpu in enumerate(gpus or []):
        index = _int(gpu.get("index"), "gpu index", position)
        total, source = card_total_mib(gpu, override_mib)
        device_id = str(gpu.get("device_id") or "").lower().removeprefix("0x")
        known = gpu_table.card(device_id)
        name = gpu.get("name") or (known.name if known else f"PCI 10de:{device_id}")
        cards[index] = {"index": index, "name": name, "total_mib": total, "source": source}
    return cards


def _service_device(svc: dict, name: str, cards: dict) -> tuple[str, int | None]:
    device = _choice(svc.get("device"), f"stack_{name}_device", ("auto", "cuda", "cpu"), "auto")
    gpu = _int(svc.get("gpu"), f"stack_{name}_gpu", 0)
    if device == "cuda" and not cards:
        raise ValueError(
            f"stack_{name}_device: cuda, but the plan has no GPU (no NVIDIA card with a "
            f"loaded driver); set stack_{name}_device to auto or cpu, or install the driver"
        )
    if device == "cpu" or not cards:
        return "cpu", None
    if gpu not in cards:
        raise ValueError(
            f"stack_{name}_gpu: this host has no GPU {gpu} (it has "
            f"{', '.join(str(i) for i in sorted(cards))}); set stack_{name}_gpu to one of them"
        )
    return "gpu", gpu


def _llm_spec(svc: dict, companions: dict) -> dict:
    model = str(svc.get("model") or "")
    spec = svc.get("model_spec") or {}
    source = "stack_llm_model_spec"
    if not spec:
        known = (companions or {}).get("llm") or {}
        if model not in known:
            raise ValueError(
                f"stack_llm_model: {model!r} is not a companion in manifest.yml "
                f"(companions.llm has: {', '.join(known) or 'nothing'}); set stack_llm_model "
                "to one of them, or describe your own GGUF file in stack_llm_model_spec "
                "(planned_bytes, layers, kv_heads, head_dim)"
            )
        spec, source = known[model], f"companions.llm.{model}"
    out = {}
    for key in ("planned_bytes", "layers", "kv_heads", "head_dim"):
        value = _int(spec.get(key), f"{source}.{key}")
        if not value or value <= 0:
            raise ValueError(
                f"{source}: needs a positive {key} (the plan sizes weights and KV cache "
                "from planned_bytes, layers, kv_heads and head_dim)"
            )
        out[key] = value
    out["context_max"] = _int(spec.get("context_max"), f"{source}.context_max")
    out["model"] = model or "custom"
    return out


def _comfyui_spec(svc: dict, companions: dict) -> dict:
    model = str(svc.get("model") or "")
    known = (companions or {}).get("comfyui") or {}
    if model not in known:
        raise ValueError(
            f"stack_comfyui_model: {model!r} is not a companion in manifest.yml "
            f"(companions.comfyui has: {', '.join(known) or 'nothing'}); set "
            "stack_comfyui_model to one of them"
        )
    files: dict[str, int] = {}
    for entry in known[model].get("files") or []:
        role = str(entry.get("role") or "other")
        size = _int(entry.get("planned_bytes"), f"companions.comfyui.{model} planned_bytes")
        files[role] = files.get(role, 0) + (size or 0)
    if not files.get("diffusion_model"):
        raise ValueError(
            f"companions.comfyui.{model}: no file with role diffusion_model and a "
            "planned_bytes; the plan sizes ComfyUI from its largest model"
        )
    return {"model": model, "files": files}


def normalize_services(
    gpus: list[dict] | None, services: dict, companions: dict, reserve_mib: int = 1024
) -> dict:
    """Validate `services` (the role's variables) into the plan's spec: cards and one
    dict per service with every default filled in. ValueError names the variable."""
    services = services or {}
    override = _int(services.get("vram_total_mib"), "stack_vram_total_mib", 0) or None
    cards = _cards(gpus, override)
    reserve = _int(reserve_mib, "stack_vram_reserve_mib", 1024)
    if reserve is None or reserve < 0:
        raise ValueError("stack_vram_reserve_mib: must be 0 or more MiB")
    spec: dict[str, Any] = {"cards": cards, "reserve_mib": reserve}

    k = services.get("kokoro") or {}
    kokoro: dict[str, Any] = {"enabled": _bool(k.get("enabled", True), "kokoro enabled")}
    engine = _choice(k.get("engine"), "stack_kokoro_engine", ("auto", "torch", "onnx"), "auto")
    device, gpu = _service_device(k, "kokoro", cards)
    if engine == "onnx" and str(k.get("device") or "") == "cuda":
        raise ValueError(
            "stack_kokoro_engine: onnx runs on the CPU in these images (onnxruntime has no "
            "CUDA provider there); set stack_kokoro_engine to torch for the GPU"
        )
    if engine == "onnx":
        device, gpu = "cpu", None
    workers = _int(k.get("workers"), "stack_kokoro_workers", 1) or 1
    vram = _int(k.get("vram_mib"), "stack_kokoro_vram_mib", 0) or 0
    auto_batch = str(k.get("batch_size", "auto")).strip().lower() in ("auto", "", "none")
    batch_size = 0 if auto_batch else _int(k.get("batch_size"), "stack_kokoro_batch_size", 0)
    tokens = _int(k.get("batch_tokens"), "stack_kokoro_batch_tokens", KOKORO_BATCH_TOKENS_DEFAULT)
    if batch_size is None or batch_size < 0 or tokens is None or tokens < 0:
        raise ValueError("stack_kokoro_batch_size (auto or 0 or more) and "
                         "stack_kokoro_batch_tokens (0 or more): bad value")
    precision = _choice(k.get("precision"), "stack_kokoro_precision",
                        ("fp32", "fp16", "bf16"), "fp32")
    engine = ("torch" if device == "gpu" else "onnx") if engine == "auto" else engine
    kokoro.update(
        device=device,
        gpu=gpu,
        engine=engine,
        # The server refuses fp16/bf16 but for torch on CUDA: elsewhere (a fleet's CPU
        # hosts under the same group_vars) the host runs fp32. The plan counts fp32's
        # VRAM either way, an upper bound (fp16: 1,536 against 1,714 MiB, one worker).
        precision=precision if device == "gpu" and engine == "torch" else "fp32",
        workers=workers,
        batch_size=batch_size,
        batch_tokens=tokens,
        vram_from_workers=not vram,
    )
    spec["kokoro"] = kokoro

    m = services.get("llm") or {}
    llm: dict[str, Any] = {"enabled": _bool(m.get("enabled", False), "stack_llm_enabled")}
    if llm["enabled"]:
        llm.update(_llm_spec(m, companions))
        device, gpu = _service_device(m, "llm", cards)
        ctx = _int(m.get("ctx_size"), "stack_llm_ctx_size", 8192)
        parallel = _int(m.get("parallel"), "stack_llm_parallel", 1)
        ngl = _int(m.get("n_gpu_layers"), "stack_llm_n_gpu_layers", -1)
        if ctx is None or ctx < 0:
            raise ValueError("stack_llm_ctx_size: must be 0 (the model's own) or more tokens")
        if ctx == 0:
            if not llm["context_max"]:
                raise ValueError(
                    "stack_llm_ctx_size: 0 takes the model's trained context, which this "
                    "model spec does not give (context_max); set a size"
                )
            ctx = llm["context_max"]
        if parallel is None or parallel < 1:
            raise ValueError("stack_llm_parallel: must be 1 or more slots")
        if ngl is None or ngl < -1:
            raise ValueError("stack_llm_n_gpu_layers: -1 (all) or 0 and up")
        for key in ("cache_type_k", "cache_type_v"):
            value = str(m.get(key) or "f16")
            kv_row_bytes(value, llm["kv_heads"] * llm["head_dim"], f"stack_llm_{key}")
            llm[key] = value
        overhead = _int(m.get("overhead_mib"), "stack_llm_overhead_mib", LLM_GPU_OVERHEAD_MIB)
        llm.update(
            device=device,
            gpu=gpu,
            ctx_size=ctx,
            parallel=parallel,
            n_gpu_layers=ngl,
            overhead_mib=overhead,
        )
    spec["llm"] = llm

    c = services.get("comfyui") or {}
    comfy: dict[str, Any] = {"enabled": _bool(c.get("enabled", False), "stack_comfyui_enabled")}
    if comfy["enabled"]:
        comfy.update(_comfyui_spec(c, companions))
        device, gpu = _service_device(c, "comfyui", cards)
        comfy.update(
            device=device,
            gpu=gpu,
            context_mib=_int(c.get("context_mib"), "comfyui context_mib", COMFYUI_CONTEXT_MIB),
            working_mib=_int(c.get("working_mib"), "comfyui working_mib", COMFYUI_WORKING_MIB),
            min_vram_mib=_int(
                c.get("min_vram_mib"), "stack_comfyui_min_vram_mib", COMFYUI_MIN_VRAM_MIB
            ),
            reserve_policy=_choice(
                c.get("reserve_policy"),
                "stack_comfyui_reserve_policy",
                COMFYUI_POLICIES,
                "restart_safe",
            ),
        )
    spec["comfyui"] = comfy
    if auto_batch:
        # Batched passes buy throughput under concurrent load with VRAM; a card shared
        # with a companion needs that VRAM more: batch only where Kokoro has the card.
        shared = any(spec[s]["enabled"] and spec[s].get("device") == "gpu"
                     and spec[s].get("gpu") == kokoro["gpu"] for s in ("llm", "comfyui"))
        kokoro["batch_size"] = 1 if shared else 0
    kokoro["vram_mib"] = vram or kokoro_gpu_vram_mib(workers, _kokoro_batched_tokens(kokoro))
    return spec


# -------------------------------------------------------------------------- the plan


def _llm_layers_on_gpu(llm: dict) -> int:
    if llm["device"] != "gpu":
        return 0
    ngl = llm["n_gpu_layers"]
    return llm["layers"] if ngl < 0 or ngl >= llm["layers"] else ngl


def _llm_row(llm: dict) -> dict:
    layers, on_gpu = llm["layers"], _llm_layers_on_gpu(llm)
    weights_gpu = _mib_ceil(llm["planned_bytes"] * on_gpu / layers)
    weights_all = _mib_ceil(llm["planned_bytes"])
    kv_args = (llm["ctx_size"], llm["kv_heads"], llm["head_dim"])
    kv_types = (llm["cache_type_k"], llm["cache_type_v"])
    kv_gpu = kv_cache_mib(on_gpu, *kv_args, *kv_types)
    kv_all = kv_cache_mib(layers, *kv_args, *kv_types)
    on_cuda = llm["device"] == "gpu"
    overhead = llm["overhead_mib"] if on_cuda else 0
    return {
        "service": "llm",
        "device": llm["device"],
        "gpu": llm["gpu"],
        "planned_mib": weights_gpu + kv_gpu + overhead if on_cuda else 0,
        "ram_mib": (weights_all - weights_gpu) + (kv_all - kv_gpu) + LLM_HOST_OVERHEAD_MIB,
        "breakdown": {
            "weights_mib": weights_gpu,
            "kv_cache_mib": kv_gpu,
            "overhead_mib": overhead,
            "layers_on_gpu": on_gpu,
            "layers": layers,
            "kv_cache_total_mib": kv_all,
        },
    }


def _resident_rows(spec: dict) -> list[dict]:
    rows = []
    kokoro = spec["kokoro"]
    if kokoro["enabled"]:
        on_gpu = kokoro["device"] == "gpu"
        rows.append(
            {
                "service": "kokoro",
                "device": kokoro["device"],
                "gpu": kokoro["gpu"],
                "planned_mib": kokoro["vram_mib"] if on_gpu else 0,
                "ram_mib": KOKORO_GPU_RAM_MIB if on_gpu else KOKORO_CPU_RAM_MIB,
                "breakdown": {
                    "engine": kokoro["engine"],
                    "workers": kokoro["workers"],
                    "batch_tokens": _kokoro_batched_tokens(kokoro),
                    # what may still grow after start: the torch cache, not the context
                    "growth_mib": max(0, kokoro["vram_mib"] - KOKORO_CUDA_CONTEXT_MIB)
                    if on_gpu
                    else 0,
                },
            }
        )
    if spec["llm"]["enabled"]:
        row = _llm_row(spec["llm"])
        row["breakdown"]["growth_mib"] = 0  # llama.cpp allocates everything at start
        rows.append(row)
    return rows


def _reserve_vram_gib(mib: float) -> float:
    """--reserve-vram takes GB as a float, read as GiB (x 1024^3) [COMFY-MM]; round up
    to 0.1 so ComfyUI never keeps less free than planned."""
    return math.ceil(round(mib / 1024 * 10, 6)) / 10


def _comfyui_rows(spec: dict, resident: list[dict]) -> tuple[dict, dict | None, dict]:
    comfy, reserve = spec["comfyui"], spec["reserve_mib"]
    files = comfy["files"]
    largest = max(files.values())
    ram = _mib_ceil(sum(files.values())) + COMFYUI_RAM_OVERHEAD_MIB
    if comfy["device"] != "gpu":
        row = {
            "service": "comfyui",
            "device": "cpu",
            "gpu": None,
            "planned_mib": 0,
            "ram_mib": ram,
            "mode": None,
            "breakdown": {"reason": "no GPU", "model": comfy["model"]},
        }
        return row, None, {"mode": None, "args": "", "reserve_vram_gib": None}
    card = spec["cards"][comfy["gpu"]]
    mine = [r for r in resident if r["device"] == "gpu" and r["gpu"] == comfy["gpu"]]
    others = sum(r["planned_mib"] for r in mine)
    growth = sum(r["breakdown"]["growth_mib"] for r in mine)
    policy = comfy["reserve_policy"]
    # ComfyUI keeps --reserve-vram free beyond what the device already has in use
    # [COMFY-MM]: restart_safe keeps the others' whole share free (a service that
    # restarts finds its memory; with everything up ComfyUI's budget is total - 2 x
    # others - reserve); resident keeps only their growth free (their memory must not
    # be released while ComfyUI holds models).
    keep_free = reserve + (others if policy == "restart_safe" else growth)
    gib = _reserve_vram_gib(keep_free)
    keep_free_mib = math.ceil(gib * 1024)
    budget = card["total_mib"] - others - keep_free_mib
    full_set = comfy["context_mib"] + _mib_ceil(largest) + comfy["working_mib"]
    useful = full_set - _mib_ceil(largest) + math.ceil(
        _mib_ceil(largest) * COMFYUI_USEFUL_RESIDENT_SHARE
    )
    if budget >= full_set:
        mode, planned = "normal", full_set
    elif budget >= comfy["min_vram_mib"]:
        mode, planned = "offload", budget
    else:
        mode, planned = None, comfy["min_vram_mib"]
    args = f"--reserve-vram {gib:.1f}" + (" --lowvram" if mode == "offload" else "")
    row = {
        "service": "comfyui",
        "device": "gpu",
        "gpu": comfy["gpu"],
        "planned_mib": planned,
        "ram_mib": ram,
        "mode": mode,
        # Runs, but with most of its largest model crossing PCIe every step.
        "heavy_offload": mode == "offload" and budget < useful,
        "breakdown": {
            "model": comfy["model"],
            "context_mib": comfy["context_mib"],
            "largest_model_mib": _mib_ceil(largest),
            "working_mib": comfy["working_mib"],
            "full_set_mib": full_set,
            "useful_mib": useful,
            "min_vram_mib": comfy["min_vram_mib"],
            "budget_mib": budget,
        },
    }
    hold = {
        "service": "keep-free",
        "device": "gpu",
        "gpu": comfy["gpu"],
        "planned_mib": keep_free_mib - reserve,
        "ram_mib": 0,
        "breakdown": {"policy": policy, "reserve_vram_gib": gib},
    }
    knobs = {
        "mode": mode,
        "args": args,
        "reserve_vram_gib": gib,
        "budget_mib": budget,
        "reserve_policy": policy,
    }
    return row, hold, knobs


def _heavy_offload_warning(row: dict) -> str:
    b = row["breakdown"]
    resident = max(0, b["budget_mib"] - b["context_mib"] - b["working_mib"])
    streamed = b["largest_model_mib"] - resident
    seconds = streamed * MIB / (PCIE_GEN4_X16_GB_S * 1e9)
    return (
        f"comfyui: runs only with heavy offloading, below its useful minimum: beside the "
        f"other services on GPU {row['gpu']} it gets {_gib(b['budget_mib'])} GiB, less than "
        f"the {_gib(b['useful_mib'])} GiB that keeps half of {b['model']}'s "
        f"{_gib(b['largest_model_mib'])} GiB diffusion model on the card; the other "
        f"{_gib(streamed)} GiB cross PCIe on every sampling step (at least {seconds:.1f} s "
        f"of copying per step at PCIe 4.0 x16's {PCIE_GEN4_X16_GB_S} GB/s) and --lowvram "
        "runs its text encoder on the CPU"
    )


def comfyui_heavy_offload(plan: dict) -> bool:
    """True when the plan's ComfyUI runs below its useful minimum (a warning)."""
    return any(r.get("heavy_offload") for r in plan["rows"])


def comfy_mode_none(rows: list[dict]) -> bool:
    return any(r["service"] == "comfyui" and r.get("mode") is None for r in rows)


def evaluate(spec: dict, host_ram_mib: int | None = None, ram_reserve_mib: int = 1024) -> dict:
    """The plan of a normalised spec (normalize_services): rows, per-card sums, knobs,
    problems. No suggestions (plan_stack adds them)."""
    reserve = spec["reserve_mib"]
    rows = _resident_rows(spec)
    problems: list[str] = []
    warnings: list[str] = []
    knobs: dict[str, dict] = {}

    kokoro = spec["kokoro"]
    if kokoro["enabled"]:
        knobs["kokoro"] = {
            "device": "cuda" if kokoro["device"] == "gpu" else "cpu",
            "engine": kokoro["engine"],
            "workers": kokoro["workers"],
            "batch_size": kokoro["batch_size"],
            "batch_tokens": kokoro["batch_tokens"],
            "precision": kokoro["precision"],
            "gpu": kokoro["gpu"],
            "vram_mib": kokoro["vram_mib"] if kokoro["device"] == "gpu" else 0,
        }
    llm = spec["llm"]
    if llm["enabled"]:
        on_gpu = _llm_layers_on_gpu(llm)
        quant_v = GGML_TYPE_SIZE[llm["cache_type_v"]][0] > 1
        knobs["llm"] = {
            "device": "cuda" if llm["device"] == "gpu" else "cpu",
            "gpu": llm["gpu"],
            "n_gpu_layers": 0
            if llm["device"] != "gpu"
            else (LLM_ALL_LAYERS if on_gpu == llm["layers"] else on_gpu),
            "ctx_size": llm["ctx_size"],
            "parallel": llm["parallel"],
            "ctx_per_slot": llm["ctx_size"] // llm["parallel"],
            "cache_type_k": llm["cache_type_k"],
            "cache_type_v": llm["cache_type_v"],
            # [LLAMA-KV] a quantized V cache needs flash attention
            "flash_attn": "on" if quant_v else "auto",
        }
        per_slot = llm["ctx_size"] // llm["parallel"]
        if llm["context_max"] and per_slot > llm["context_max"]:
            warnings.append(
                f"llm: {per_slot} tokens per slot (stack_llm_ctx_size {llm['ctx_size']} / "
                f"stack_llm_parallel {llm['parallel']}) exceeds the model's trained context "
                f"{llm['context_max']}"
            )
        if per_slot < 512:
            warnings.append(
                f"llm: only {per_slot} tokens per slot; raise stack_llm_ctx_size or lower "
                "stack_llm_parallel (the context is shared by the slots)"
            )

    comfy = spec["comfyui"]
    if comfy["enabled"]:
        row, hold, knobs["comfyui"] = _comfyui_rows(spec, rows)
        rows.append(row)
        if hold:
            rows.append(hold)
        if row["device"] != "gpu":
            problems.append(
                "comfyui: needs an NVIDIA GPU (its image is a CUDA torch build and "
                f"{comfy['model']} on a CPU takes hours per image); this plan has "
                + ("no GPU" if not spec["cards"] else "it on the CPU")
            )

    cards = []
    for index, card in sorted(spec["cards"].items()):
        mine = [r for r in rows if r["device"] == "gpu" and r["gpu"] == index]
        planned = sum(r["planned_mib"] for r in mine)
        free = card["total_mib"] - reserve - planned
        cards.append(
            {
                **card,
                "reserve_mib": reserve,
                "planned_mib": planned,
                "free_mib": free,
                "used": bool(mine),
                "fits": free >= 0,
            }
        )
        if not mine:
            continue
        if free < 0:
            labels = {
                "keep-free": "the room ComfyUI keeps free (--reserve-vram)",
                "comfyui": "comfyui (its offload minimum)" if comfy_mode_none(mine) else "comfyui",
            }
            names = " + ".join(labels.get(r["service"], r["service"]) for r in mine)
            problems.append(
                f"GPU {index} ({card['name']}, {_gib(card['total_mib'])} GiB): {names} + "
                f"reserve need {_gib(planned + reserve)} GiB, {_gib(-free)} GiB more than "
                "the card has"
            )
    comfy_row = next((r for r in rows if r["service"] == "comfyui"), None)
    if comfy_row and comfy_row["device"] == "gpu" and comfy_row["mode"] is None:
        b = comfy_row["breakdown"]
        problems.append(
            f"comfyui: needs at least {_gib(b['min_vram_mib'])} GiB of VRAM to run "
            f"{comfy['model']} with offloading (its whole set needs {_gib(b['full_set_mib'])} "
            f"GiB), but beside the other services it gets {_gib(max(0, b['budget_mib']))} GiB "
            f"(--reserve-vram {knobs['comfyui']['reserve_vram_gib']:.1f}, policy "
            f"{comfy['reserve_policy']})"
        )
    if comfy_row and comfy_row.get("heavy_offload"):
        warnings.append(_heavy_offload_warning(comfy_row))

    ram_planned = sum(r["ram_mib"] for r in rows)
    ram = None
    if host_ram_mib:
        free_ram = host_ram_mib - ram_reserve_mib - ram_planned
        ram = {
            "total_mib": host_ram_mib,
            "reserve_mib": ram_reserve_mib,
            "planned_mib": ram_planned,
            "free_mib": free_ram,
        }
        if free_ram < 0:
            names = " + ".join(r["service"] for r in rows if r["ram_mib"])
            problems.append(
                f"host RAM: {names} + {_gib(ram_reserve_mib)} GiB for the system need "
                f"{_gib(ram_planned + ram_reserve_mib)} GiB, {_gib(-free_ram)} GiB more than "
                f"the host's {_gib(host_ram_mib)} GiB"
            )

    used = [c for c in cards if c["used"]]
    card = used[0] if used else (cards[0] if cards else None)
    return {
        "fits": not problems,
        "device": "gpu" if used else "cpu",
        "card": None
        if card is None
        else {k: card[k] for k in ("index", "name", "total_mib", "reserve_mib", "source")},
        "cards": cards,
        "rows": [r for r in rows if r["service"] != "keep-free"],
        "keep_free": next((r for r in rows if r["service"] == "keep-free"), None),
        "planned_total_mib": sum(r["planned_mib"] for r in rows),
        "free_mib": min((c["free_mib"] for c in used), default=None),
        "ram": ram,
        # What the services and the system need, known whether or not the host's is.
        "ram_needed_mib": ram_planned + ram_reserve_mib,
        "ram_reserve_mib": ram_reserve_mib,
        "knobs": knobs,
        "problems": problems,
        "warnings": warnings,
        "suggestions": [],
        "warning_suggestions": [],
    }


# ----------------------------------------------------------------------- suggestions


def _variant(spec: dict, change: dict[str, dict]) -> dict:
    out = copy.deepcopy(spec)
    for key, values in change.items():
        if key in ("reserve_mib",):
            out[key] = values
        elif key == "cards":
            for index, total in values.items():
                out["cards"][index]["total_mib"] = total
        else:
            out[key].update(values)
    return out


GOALS = ("fit", "useful")


def _meets(plan: dict, goal: str) -> bool:
    """goal "fit": the plan fits; "useful": it fits and ComfyUI is not heavily offloaded."""
    return plan["fits"] and (goal == "fit" or not comfyui_heavy_offload(plan))


def _fits(spec: dict, host_ram_mib: int | None, ram_reserve_mib: int, goal: str = "fit") -> bool:
    return _meets(evaluate(spec, host_ram_mib, ram_reserve_mib), goal)


def _largest(lo: int, hi: int, ok: Any) -> int | None:
    """Largest n in [lo, hi] with ok(n), ok monotone (true up to some n); None if none."""
    if hi < lo or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _bigger_card(card: dict, need_mib: int) -> str:
    """The card-size suggestion, in MiB as nvidia-smi counts them: a nominal 32 GB card
    has 32607 MiB (31.84 GiB), so a need rounded up to whole GiB ("32 GiB") could name
    the very class the user has. An example is the smallest larger card the planner knows."""
    larger = [(mib, name) for name, mib in gpu_table.sized_cards() if mib >= need_mib]
    example = (
        f", e.g. {larger[0][1]} ({larger[0][0]} MiB)"
        if larger
        else "; no card in the planner's table has that much"
    )
    return (
        f"use a card with at least {need_mib} MiB of VRAM for GPU {card['index']} (this "
        f"{card['name']} has {card['total_mib']}: {need_mib - card['total_mib']} MiB short)"
        f"{example}"
    )


def suggest(
    spec: dict, host_ram_mib: int | None = None, ram_reserve_mib: int = 1024, goal: str = "fit"
) -> list[str]:
    """The knobs that would meet `goal` (GOALS: make a spec that does not fit fit, or
    give a heavily offloaded ComfyUI its useful minimum), each checked by planning again
    with it changed alone (the card size last: it always works for VRAM)."""

    def fits(change: dict) -> bool:
        return _fits(_variant(spec, change), host_ram_mib, ram_reserve_mib, goal)

    out: list[str] = []
    llm, comfy, kokoro = spec["llm"], spec["comfyui"], spec["kokoro"]
    base = evaluate(spec, host_ram_mib, ram_reserve_mib)
    llm_row = next((r for r in base["rows"] if r["service"] == "llm"), None)

    if llm["enabled"]:
        kv_now = llm_row["breakdown"]["kv_cache_total_mib"]
        for kv_type in ("q8_0", "q4_0"):
            sizes = [GGML_TYPE_SIZE[llm[k]] for k in ("cache_type_k", "cache_type_v")]
            target = GGML_TYPE_SIZE[kv_type]
            if all(b[1] / b[0] <= target[1] / target[0] for b in sizes):
                continue
            change = {"llm": {"cache_type_k": kv_type, "cache_type_v": kv_type}}
            if fits(change):
                kv_new = _llm_row(_variant(spec, change)["llm"])["breakdown"]
                out.append(
                    f"set stack_llm_cache_type_k and stack_llm_cache_type_v to {kv_type} "
                    f"(KV cache {_gib(kv_now)} -> {_gib(kv_new['kv_cache_total_mib'])} GiB; "
                    "a quantized V cache runs with flash attention on)"
                )
                break
        step = 256
        ctx = _largest(
            1, (llm["ctx_size"] - 1) // step, lambda n: fits({"llm": {"ctx_size": n * step}})
        )
        if ctx is not None and ctx * step >= 512 * llm["parallel"]:
            n = ctx * step
            out.append(
                f"lower stack_llm_ctx_size to {n} (now {llm['ctx_size']}; "
                f"{n // llm['parallel']} tokens per slot with stack_llm_parallel "
                f"{llm['parallel']})"
            )
        if llm["device"] == "gpu":
            on_gpu = _llm_layers_on_gpu(llm)
            layers = _largest(0, on_gpu - 1, lambda n: fits({"llm": {"n_gpu_layers": n}}))
            if layers is not None:
                out.append(
                    f"set stack_llm_n_gpu_layers to {layers} (of {llm['layers']}; the other "
                    "layers and their KV cache run on the CPU, slower)"
                )
    batched = _kokoro_batched_tokens(kokoro) if kokoro["enabled"] else 0
    if kokoro["enabled"] and kokoro["vram_from_workers"] and kokoro["workers"] > 1:
        change = {"kokoro": {"workers": 1, "vram_mib": kokoro_gpu_vram_mib(1, batched)}}
        if kokoro["device"] == "gpu" and fits(change):
            out.append(f"lower stack_kokoro_workers to 1 (now {kokoro['workers']})")
    if kokoro["enabled"] and kokoro["vram_from_workers"] and batched:
        change = {"kokoro": {"batch_size": 1,
                             "vram_mib": kokoro_gpu_vram_mib(kokoro["workers"])}}
        if fits(change):
            out.append("set stack_kokoro_batch_size to 1 (no batched forward passes: "
                       f"{kokoro['vram_mib'] - kokoro_gpu_vram_mib(kokoro['workers'])} MiB "
                       "less, about 1.6x less throughput under concurrent load)")
    restart_safe = comfy["enabled"] and comfy["reserve_policy"] == "restart_safe"
    if (
        restart_safe
        and comfy["device"] == "gpu"
        and fits({"comfyui": {"reserve_policy": "resident"}})
    ):
        out.append(
            "set stack_comfyui_reserve_policy to resident (ComfyUI then keeps free only "
            "the reserve and Kokoro's cache growth, not the other services' whole share: "
            "a job run while Kokoro or the LLM restarts can take their memory)"
        )
    for name, key in (("comfyui", "stack_comfyui_gpu"), ("llm", "stack_llm_gpu")):
        svc = spec[name]
        if svc["enabled"] and svc["device"] == "gpu":
            for index in sorted(spec["cards"]):
                if index != svc["gpu"] and fits({name: {"gpu": index}}):
                    out.append(f"set {key} to {index} (move {name} to GPU {index})")
                    break
    if spec["reserve_mib"] > RESERVE_FLOOR_MIB:
        reserve = _largest(
            RESERVE_FLOOR_MIB // 128,
            (spec["reserve_mib"] - 1) // 128,
            lambda n: fits({"reserve_mib": n * 128}),
        )
        if reserve is not None:
            out.append(
                f"lower stack_vram_reserve_mib to {reserve * 128} (now {spec['reserve_mib']}; "
                "leaves less for the desktop and fragmentation)"
            )
    if comfy["enabled"] and fits({"comfyui": {"enabled": False}}):
        out.append("disable ComfyUI (stack_comfyui_enabled: false)")
    if llm["enabled"] and fits({"llm": {"enabled": False}}):
        out.append("disable the LLM (stack_llm_enabled: false)")
    if comfy["enabled"] and comfy["device"] != "gpu":
        out.append("run ComfyUI on a host with an NVIDIA GPU")
    # The card size that meets the goal, on the cards that do not.
    comfy_row = next((r for r in base["rows"] if r["service"] == "comfyui"), None)
    for card in base["cards"]:
        comfy_short = (
            comfy_row is not None
            and comfy_row["device"] == "gpu"
            and comfy_row["gpu"] == card["index"]
            and (comfy_row["mode"] is None or (goal == "useful" and comfy_row["heavy_offload"]))
        )
        if not card["used"] or not (comfy_short or not card["fits"]):
            continue
        index = card["index"]
        big = 4 * 1024 * 1024
        if not fits({"cards": {index: big}}):
            continue
        lo, hi = card["total_mib"], big
        while lo < hi:
            mid = (lo + hi) // 2
            if fits({"cards": {index: mid}}):
                hi = mid
            else:
                lo = mid + 1
        if lo > card["total_mib"]:
            out.append(_bigger_card(card, lo))
    short_of_ram = host_ram_mib and base["ram"] and base["ram"]["free_mib"] < 0
    if short_of_ram and _fits(spec, 1 << 40, ram_reserve_mib, goal):
        # In MiB as `free -m` (and Ansible's memtotal_mb) count them, for the same reason
        # as the card: a nominal 32 GB host has about 31.3 GiB.
        need = base["ram"]["planned_mib"] + ram_reserve_mib
        out.append(
            f"give the host at least {need} MiB of RAM (as `free -m` counts it; it has "
            f"{host_ram_mib}: {need - host_ram_mib} MiB short)"
        )
    return out


# -------------------------------------------------------------------------- the table


def _row_note(row: dict, spec: dict) -> str:
    b = row["breakdown"]
    if row["service"] == "kokoro":
        workers = f"{b['workers']} worker" + ("s" if b["workers"] != 1 else "")
        batch = f", batches of {b['batch_tokens']} tokens" if b.get("batch_tokens") else ""
        return f"{b['engine']}, {workers}{batch}" + ("" if row["device"] == "gpu" else ", host RAM")
    if row["service"] == "llm":
        llm = spec["llm"]
        kv = f"{llm['cache_type_k']}/{llm['cache_type_v']}, ctx {llm['ctx_size']}"
        if row["device"] != "gpu":
            return f"host RAM: weights + KV ({kv}) + buffers"
        return (
            f"weights {_gib(b['weights_mib'])} + KV {_gib(b['kv_cache_mib'])} ({kv}) + "
            f"overhead {_gib(b['overhead_mib'])}; {b['layers_on_gpu']}/{b['layers']} layers"
        )
    if row["service"] == "comfyui":
        if row["device"] != "gpu":
            return "needs a GPU"
        mode = "heavy offload" if row.get("heavy_offload") else (row["mode"] or "does not fit")
        return (
            f"{mode}: budget {_gib(b['budget_mib'])}, whole set {_gib(b['full_set_mib'])}, "
            f"useful {_gib(b['useful_mib'])}, minimum {_gib(b['min_vram_mib'])}"
        )
    if row["service"] == "keep-free":
        room = "kokoro/llm restarts" if b["policy"] == "restart_safe" else "kokoro cache growth"
        return f"--reserve-vram {b['reserve_vram_gib']:.1f} minus reserve: room for {room}"
    return ""


def format_plan_table(plan: dict, spec: dict) -> str:
    """Fixed-width table: service, device, planned GiB, card total GiB, free GiB, notes."""
    head = f"{'service':<10}{'device':<8}{'planned GiB':>12}{'card GiB':>10}{'free GiB':>10}  notes"
    lines = [head, "-" * len(head)]
    cards = {c["index"]: c for c in plan["cards"]}
    rows = list(plan["rows"]) + ([plan["keep_free"]] if plan["keep_free"] else [])
    for row in rows:
        if row["device"] == "gpu":
            card = cards[row["gpu"]]
            dev, amount = f"gpu{row['gpu']}", row["planned_mib"]
            total, free = _gib(card["total_mib"]), _gib(card["free_mib"])
        else:
            dev, amount, total, free = "cpu", row["ram_mib"], "-", "-"
        lines.append(
            f"{row['service']:<10}{dev:<8}{_gib(amount):>12}{total:>10}{free:>10}  "
            f"{_row_note(row, spec)}"
        )
    for card in plan["cards"]:
        if not card["used"]:
            continue
        dev = f"gpu{card['index']}"
        total, free = _gib(card["total_mib"]), _gib(card["free_mib"])
        lines.append(
            f"{'reserve':<10}{dev:<8}{_gib(card['reserve_mib']):>12}{total:>10}{free:>10}  "
            "stack_vram_reserve_mib"
        )
        verdict = "fits" if card["fits"] else f"short by {_gib(-card['free_mib'])} GiB"
        lines.append(
            f"{'total':<10}{dev:<8}{_gib(card['planned_mib'] + card['reserve_mib']):>12}"
            f"{total:>10}{free:>10}  {card['name']}: {verdict}"
        )
    if plan["ram"]:
        ram = plan["ram"]
        lines.append(
            f"{'host RAM':<10}{'cpu':<8}{_gib(ram['planned_mib'] + ram['reserve_mib']):>12}"
            f"{_gib(ram['total_mib']):>10}{_gib(ram['free_mib']):>10}  "
            f"services + {_gib(ram['reserve_mib'])} GiB for the system"
        )
    return "\n".join(lines)


def _ram_note(row: dict) -> str:
    b = row["breakdown"]
    if row["service"] == "kokoro":
        if row["device"] == "gpu":
            return "torch process: CUDA libraries, Python, spaCy (estimate)"
        return "onnx int8 server (1.07 GiB measured, + 10 %)"
    if row["service"] == "llm":
        on_cpu = b["layers"] - b["layers_on_gpu"]
        if not on_cpu:
            return "llama-server process (weights and KV cache on the GPU)"
        return f"llama-server: weights and KV cache of {on_cpu}/{b['layers']} layers + process"
    if row["service"] == "comfyui":
        files = row["ram_mib"] - COMFYUI_RAM_OVERHEAD_MIB
        return (
            f"every file of {b['model']} ({_gib(files)}: it keeps the "
            f"models it is not running in RAM) + process ({_gib(COMFYUI_RAM_OVERHEAD_MIB)})"
        )
    return ""


def format_ram_table(plan: dict) -> str:
    """Host RAM per service, the system's share, the total needed and, where the host's
    RAM is known, what it has and what is left."""
    head = f"{'host RAM':<10}{'GiB':>8}  notes"
    lines = [head, "-" * len(head)]
    for row in plan["rows"]:
        if row["ram_mib"]:
            lines.append(f"{row['service']:<10}{_gib(row['ram_mib']):>8}  {_ram_note(row)}")
    lines.append(f"{'system':<10}{_gib(plan['ram_reserve_mib']):>8}  kept for the system")
    ram = plan["ram"]
    verdict = (
        "host RAM not given"
        if not ram
        else f"the host has {_gib(ram['total_mib'])}: "
        + ("fits" if ram["free_mib"] >= 0 else f"short by {_gib(-ram['free_mib'])} GiB")
    )
    lines.append(f"{'total':<10}{_gib(plan['ram_needed_mib']):>8}  {verdict}")
    return "\n".join(lines)


def plan_stack(
    gpus: list[dict] | None,
    services: dict,
    companions: dict,
    *,
    reserve_mib: int = 1024,
    host_ram_mib: int | None = None,
    ram_reserve_mib: int = 1024,
) -> dict:
    """Plan the enabled services on the host's cards (or its CPU when `gpus` is empty).

    gpus: kokoro_gpu.parse_nvidia_smi rows (or parse_pci_devices rows before a driver
    exists); services: {'vram_total_mib', 'kokoro': {...}, 'llm': {...}, 'comfyui':
    {...}} as the role passes them; companions: manifest.yml's `companions:`.
    Returns {fits, device, card, cards, rows, keep_free, planned_total_mib, free_mib,
    ram, ram_needed_mib, ram_reserve_mib, knobs, problems, warnings, suggestions (what
    would make it fit), warning_suggestions (what would give a heavily offloaded ComfyUI
    its useful minimum), table, ram_table}. ValueError names the variable to fix when
    the input is wrong (unknown model, cache type, GPU, total VRAM).
    """
    ram = _int(host_ram_mib, "host_ram_mib", None)
    ram_reserve = _int(ram_reserve_mib, "ram_reserve_mib", 1024) or 0
    spec = normalize_services(gpus, services, companions, reserve_mib)
    plan = evaluate(spec, ram, ram_reserve)
    if not plan["fits"]:
        plan["suggestions"] = suggest(spec, ram, ram_reserve)
    elif comfyui_heavy_offload(plan):
        plan["warning_suggestions"] = suggest(spec, ram, ram_reserve, goal="useful")
    plan["table"] = format_plan_table(plan, spec)
    plan["ram_table"] = format_ram_table(plan)
    return plan


def plan_stack_or_error(gpus: Any, services: dict, companions: dict, **kwargs: Any) -> dict:
    """plan_stack for templates: a ValueError becomes a plan that does not fit, with
    the message as its problem (so a task fails with it, not with a filter traceback)."""
    try:
        return {**plan_stack(gpus, services, companions, **kwargs), "error": None}
    except ValueError as exc:
        return {
            "fits": False,
            "device": None,
            "card": None,
            "cards": [],
            "rows": [],
            "keep_free": None,
            "planned_total_mib": 0,
            "free_mib": None,
            "ram": None,
            "ram_needed_mib": None,
            "ram_reserve_mib": None,
            "knobs": {},
            "problems": [str(exc)],
            "warnings": [],
            "suggestions": [],
            "warning_suggestions": [],
            "table": f"no plan: {exc}",
            "ram_table": f"no plan: {exc}",
            "error": str(exc),
        }


# ----------------------------------------------------------------------- nvidia-smi

NVIDIA_SMI_GPUS_QUERY = (
    "nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv,noheader,nounits"
)
NVIDIA_SMI_APPS_QUERY = (
    "nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory "
    "--format=csv,noheader,nounits"
)


def parse_gpu_uuids(text: str) -> list[dict]:
    """NVIDIA_SMI_GPUS_QUERY output -> [{'index', 'uuid', 'name', 'memory_total_mib',
    'memory_used_mib'}] (memory None where the card prints '[N/A]'). ValueError on a
    line it cannot read."""
    fields = ("index", "uuid", "name", "memory.total", "memory.used")
    cards = []
    for row in nvidia_smi.records(text, fields, free="name", what="GPU"):
        if not re.fullmatch(r"\d+", row["index"]):
            raise ValueError(f"nvidia-smi GPU line has not 5 fields: {row!r}")
        cards.append(
            {
                "index": int(row["index"]),
                "uuid": row["uuid"],
                "name": row["name"],
                "memory_total_mib": nvidia_smi.mib(row["memory.total"]),
                "memory_used_mib": nvidia_smi.mib(row["memory.used"]),
            }
        )
    return cards


def parse_compute_apps(text: str) -> list[dict]:
    """NVIDIA_SMI_APPS_QUERY output -> [{'gpu_uuid', 'pid', 'process_name',
    'used_memory_mib'}]; process_name None for '[Insufficient Permissions]' (a process
    of another PID namespace or user), used memory None for '[N/A]'. Lines without a
    process ('No running processes found') are skipped; ValueError on others."""
    fields = ("gpu_uuid", "pid", "process_name", "used_memory")
    lines = "\n".join(line for line in str(text or "").splitlines()
                      if not line.strip().lower().startswith("no running"))
    apps = []
    for row in nvidia_smi.records(lines, fields, free="process_name", what="compute-apps"):
        if not re.fullmatch(r"\d+", row["pid"]):
            raise ValueError(f"nvidia-smi compute-apps line has not 4 fields: {row!r}")
        name = row["process_name"]
        apps.append(
            {
                "gpu_uuid": row["gpu_uuid"],
                "pid": int(row["pid"]),
                "process_name": None if name.startswith("[") else name,
                "used_memory_mib": nvidia_smi.mib(row["used_memory"]),
            }
        )
    return apps


def vram_report(
    gpus_text: str,
    apps_text: str,
    pid_services: dict | None,
    plan: dict | None,
    min_headroom_mib: int = 512,
) -> dict:
    """What the running stack holds, beside the plan.

    gpus_text / apps_text: output of NVIDIA_SMI_GPUS_QUERY / NVIDIA_SMI_APPS_QUERY;
    pid_services: {host pid: compose service} for every process of every service
    container (e.g. from `docker top <container> -eo pid`); plan: plan_stack's result.
    Returns {ok, cards: [{index, uuid, name, total_mib, used_mib, free_mib,
    headroom_ok}], services: [{service, gpu, planned_mib, measured_mib, pids}], others:
    [{pid, process_name, gpu, used_mib}], problems, warnings, table}. ok: every card
    keeps at least min_headroom_mib free.
    """
    cards = parse_gpu_uuids(gpus_text)
    apps = parse_compute_apps(apps_text)
    owners = {int(pid): str(svc) for pid, svc in (pid_services or {}).items()}
    by_uuid = {c["uuid"]: c for c in cards}
    problems: list[str] = []
    warnings: list[str] = []
    min_headroom = int(min_headroom_mib)

    for card in cards:
        total, used = card["memory_total_mib"], card["memory_used_mib"]
        card["free_mib"] = None if total is None or used is None else total - used
        card["headroom_ok"] = card["free_mib"] is not None and card["free_mib"] >= min_headroom
        if card["free_mib"] is None:
            problems.append(f"GPU {card['index']} ({card['name']}) reports no memory figures")
        elif not card["headroom_ok"]:
            problems.append(
                f"GPU {card['index']} ({card['name']}): {_gib(card['free_mib'])} GiB free, "
                f"below the {_gib(min_headroom)} GiB headroom (stack_vram_min_headroom_mib)"
            )

    measured: dict[str, dict] = {}
    others = []
    for app in apps:
        card = by_uuid.get(app["gpu_uuid"])
        gpu = card["index"] if card else None
        service = owners.get(app["pid"])
        if service is None:
            others.append(
                {
                    "pid": app["pid"],
                    "process_name": app["process_name"],
                    "gpu": gpu,
                    "used_mib": app["used_memory_mib"],
                }
            )
            continue
        entry = measured.setdefault(service, {"mib": 0, "pids": [], "gpus": set(), "na": False})
        entry["pids"].append(app["pid"])
        entry["gpus"].add(gpu)
        if app["used_memory_mib"] is None:
            entry["na"] = True
        else:
            entry["mib"] += app["used_memory_mib"]

    planned_rows = [r for r in (plan or {}).get("rows", []) if r.get("device") == "gpu"]
    names = [r["service"] for r in planned_rows] + sorted(
        s for s in measured if s not in {r["service"] for r in planned_rows}
    )
    services = []
    for name in names:
        row = next((r for r in planned_rows if r["service"] == name), None)
        got = measured.get(name)
        mib = None if got is None and not apps else (got["mib"] if got else 0)
        if got and got["na"] and not got["mib"]:
            mib = None
        entry = {
            "service": name,
            "gpu": row["gpu"] if row else (sorted(got["gpus"], key=str)[0] if got else None),
            "planned_mib": row["planned_mib"] if row else None,
            "measured_mib": mib,
            "pids": sorted(got["pids"]) if got else [],
        }
        services.append(entry)
        if row and mib is not None and mib > row["planned_mib"]:
            warnings.append(
                f"{name} holds {_gib(mib)} GiB, more than its planned {_gib(row['planned_mib'])}"
                " GiB: the plan under-counts it (raise its figure or lower its knobs)"
            )
        if row and apps and not got and name != "comfyui":
            warnings.append(
                f"{name} is planned on GPU {row['gpu']} but none of its processes holds VRAM "
                "(running on the CPU?)"
            )
    if not apps and any(c["memory_used_mib"] for c in cards):
        warnings.append(
            "nvidia-smi lists no compute processes although memory is in use (no permission "
            "or another PID namespace): per-service figures unavailable, card headroom checked"
        )
    if planned_rows and not cards:
        problems.append("the plan puts services on a GPU but nvidia-smi lists none")

    report = {
        "ok": not problems,
        "cards": cards,
        "services": services,
        "others": others,
        "problems": problems,
        "warnings": warnings,
    }
    report["table"] = format_report_table(report, min_headroom)
    return report


def format_report_table(report: dict, min_headroom_mib: int) -> str:
    def gib(value: int | None) -> str:
        return "-" if value is None else _gib(value)

    head = f"{'service':<10}{'gpu':<5}{'planned GiB':>12}{'measured GiB':>14}  pids"
    lines = [head, "-" * len(head)]
    for s in report["services"]:
        gpu = "-" if s["gpu"] is None else str(s["gpu"])
        pids = " ".join(str(p) for p in s["pids"]) or "-"
        lines.append(
            f"{s['service']:<10}{gpu:<5}{gib(s['planned_mib']):>12}"
            f"{gib(s['measured_mib']):>14}  {pids}"
        )
    for o in report["others"]:
        gpu = "-" if o["gpu"] is None else str(o["gpu"])
        lines.append(
            f"{'other':<10}{gpu:<5}{'-':>12}{gib(o['used_mib']):>14}  "
            f"{o['pid']} {o['process_name'] or '?'}"
        )
    lines.append("")
    head = f"{'gpu':<5}{'total GiB':>10}{'used GiB':>10}{'free GiB':>10}  headroom  name"
    lines += [head, "-" * len(head)]
    for c in report["cards"]:
        verdict = "ok" if c["headroom_ok"] else "LOW"
        lines.append(
            f"{c['index']:<5}{gib(c['memory_total_mib']):>10}{gib(c['memory_used_mib']):>10}"
            f"{gib(c['free_mib']):>10}  {verdict:<8}  {c['name']}"
        )
    lines.append(f"minimum headroom per card: {_gib(min_headroom_mib)} GiB")
    return "\n".join(lines)


def card_total_mib_only(gpu: dict, override_mib: int | None = None) -> int:
    """card_total_mib without its source."""
    return card_total_mib(gpu, override_mib)[0]


class FilterModule:
    """Ansible filters: kokoro_vram_<function>."""

    def filters(self):
        return {
            "kokoro_vram_plan": plan_stack_or_error,
            "kokoro_vram_report": vram_report,
            "kokoro_vram_parse_compute_apps": parse_compute_apps,
            "kokoro_vram_parse_gpus": parse_gpu_uuids,
            "kokoro_vram_kv_cache_mib": kv_cache_mib,
            "kokoro_vram_card_total_mib": card_total_mib_only,
        }
