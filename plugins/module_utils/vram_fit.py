"""Whether a validated spec (vram_spec.normalize_services) fits: one row per service
(VRAM and host RAM planned, with its breakdown), ComfyUI's budget, offload mode and
--reserve-vram, the per-card and host RAM sums, the knobs each service starts with,
and the problems and warnings (evaluate). No suggestions: vram_suggest.py. The
figures and their sources ([COMFY-MM], [LLAMA-KV], ...): vram_sizing.py.
"""

from __future__ import annotations

import math

from ansible_collections.kokoro.deploy.plugins.module_utils.vram_sizing import (
    COMFYUI_RAM_OVERHEAD_MIB,
    COMFYUI_USEFUL_RESIDENT_SHARE,
    GGML_TYPE_SIZE,
    KOKORO_CPU_RAM_MIB,
    KOKORO_CUDA_CONTEXT_MIB,
    KOKORO_GPU_RAM_MIB,
    LLM_ALL_LAYERS,
    LLM_HOST_OVERHEAD_MIB,
    MIB,
    PCIE_GEN4_X16_GB_S,
    _gib,
    _kokoro_batched_tokens,
    _mib_ceil,
    kv_cache_mib,
)


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

    # services with host RAM and no VRAM: in the RAM sums and table, not the VRAM rows
    webui = spec["webui"]
    ram_rows = [{"service": "webui", "ram_mib": webui["ram_mib"]}] if webui["enabled"] else []
    ram_planned = sum(r["ram_mib"] for r in rows + ram_rows)
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
            names = " + ".join(r["service"] for r in rows + ram_rows if r["ram_mib"])
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
        "ram_rows": ram_rows,
        # What the services and the system need, known whether or not the host's is.
        "ram_needed_mib": ram_planned + ram_reserve_mib,
        "ram_reserve_mib": ram_reserve_mib,
        "knobs": knobs,
        "problems": problems,
        "warnings": warnings,
        "suggestions": [],
        "warning_suggestions": [],
    }
