"""VRAM and host RAM per service of the colocated stack, in MiB: the measured and cited
figures (Kokoro's torch process by workers and batch, llama.cpp's KV cache and
overhead, ComfyUI's context, working memory and minimum), a card's total, and the
small readers of the role's variables that the other vram_* modules share.

The plan built from these is vram_plan.py (vram_spec, vram_fit, vram_suggest and
vram_tables beneath it); the post-deploy report is vram_report.py. Nothing here
touches a host.

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
             covers). Device ids from the PCI ID repository, as in gpu_table.py.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_table

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


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size_mib(value: Any, var: str, default: int) -> int:
    """A Docker memory size (2g, 512m, 1.5g, 2gb; a bare number is bytes, as compose
    reads it) in MiB, rounded up."""
    text = "" if value is None else str(value).strip().lower()
    if not text:
        return default
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"{var}: {value!r} is not a memory size such as 2g or 512m")
    size = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if size <= 0:
        raise ValueError(f"{var}: {value!r} must be more than 0")
    return -(-int(size) // (1 << 20))


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


def card_total_mib_only(gpu: dict, override_mib: int | None = None) -> int:
    """card_total_mib without its source."""
    return card_total_mib(gpu, override_mib)[0]
