"""The VRAM plan's input: the role's variables (services) and the cards, validated into
one spec with every default filled in (normalize_services). A wrong value raises
ValueError naming the variable to fix. The figures and their sources: vram_sizing.py.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_table
from ansible_collections.kokoro.deploy.plugins.module_utils.vram_sizing import (
    COMFYUI_CONTEXT_MIB,
    COMFYUI_MIN_VRAM_MIB,
    COMFYUI_POLICIES,
    COMFYUI_WORKING_MIB,
    KOKORO_BATCH_TOKENS_DEFAULT,
    LLM_GPU_OVERHEAD_MIB,
    _bool,
    _choice,
    _int,
    _kokoro_batched_tokens,
    _size_mib,
    card_total_mib,
    kokoro_gpu_vram_mib,
    kv_row_bytes,
)


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


def _known_companion(companions: dict, kind: str, model: str, or_else: str = "") -> dict:
    """manifest.yml's companions.<kind>.<model>; ValueError naming the known ones."""
    known = (companions or {}).get(kind) or {}
    if model not in known:
        raise ValueError(
            f"stack_{kind}_model: {model!r} is not a companion in manifest.yml "
            f"(companions.{kind} has: {', '.join(known) or 'nothing'}); set "
            f"stack_{kind}_model to one of them{or_else}"
        )
    return known[model]


def _llm_spec(svc: dict, companions: dict) -> dict:
    model = str(svc.get("model") or "")
    spec = svc.get("model_spec") or {}
    source = "stack_llm_model_spec"
    if not spec:
        spec = _known_companion(companions, "llm", model, ", or describe your own GGUF file in "
                                "stack_llm_model_spec (planned_bytes, layers, kv_heads, head_dim)")
        source = f"companions.llm.{model}"
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
    files: dict[str, int] = {}
    for entry in _known_companion(companions, "comfyui", model).get("files") or []:
        role = str(entry.get("role") or "other")
        size = _int(entry.get("planned_bytes"), f"companions.comfyui.{model} planned_bytes")
        files[role] = files.get(role, 0) + (size or 0)
    if not files.get("diffusion_model"):
        raise ValueError(
            f"companions.comfyui.{model}: no file with role diffusion_model and a "
            "planned_bytes; the plan sizes ComfyUI from its largest model"
        )
    return {"model": model, "files": files}


def _companion(services: dict, name: str, spec_of, companions: dict,
               cards: dict) -> tuple[dict, dict[str, Any]]:
    """The LLM's or ComfyUI's variables and the start of its spec: enabled (off by
    default) and, where enabled, its model's spec (`spec_of`) with its device and card."""
    svc = services.get(name) or {}
    spec: dict[str, Any] = {"enabled": _bool(svc.get("enabled", False), f"stack_{name}_enabled")}
    if spec["enabled"]:
        spec.update(spec_of(svc, companions))
        device, gpu = _service_device(svc, name, cards)
        spec.update(device=device, gpu=gpu)
    return svc, spec


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

    m, llm = _companion(services, "llm", _llm_spec, companions, cards)
    if llm["enabled"]:
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
        llm.update(ctx_size=ctx, parallel=parallel, n_gpu_layers=ngl, overhead_mib=overhead)
    spec["llm"] = llm

    c, comfy = _companion(services, "comfyui", _comfyui_spec, companions, cards)
    if comfy["enabled"]:
        comfy.update(
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
    # Open WebUI holds no VRAM (it calls the LLM and Kokoro); the host RAM it may take is
    # its container's memory limit.
    w = services.get("webui") or {}
    spec["webui"] = {"enabled": _bool(w.get("enabled", False), "stack_webui_enabled"),
                     "ram_mib": _size_mib(w.get("mem_limit"), "stack_webui_mem_limit", 2048)}
    return spec
