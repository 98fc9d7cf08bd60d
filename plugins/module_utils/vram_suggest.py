"""What would make a VRAM plan fit, or give a heavily offloaded ComfyUI its useful
minimum: each knob (KV cache type, context, layers on the GPU, Kokoro's workers and
batching, ComfyUI's reserve policy, another GPU, the reserve, a service off, a bigger
card, more host RAM) checked by planning again with it changed alone (suggest).
"""

from __future__ import annotations

import copy
from typing import Any

from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_table
from ansible_collections.kokoro.deploy.plugins.module_utils.vram_fit import (
    _llm_layers_on_gpu,
    _llm_row,
    comfyui_heavy_offload,
    evaluate,
)
from ansible_collections.kokoro.deploy.plugins.module_utils.vram_sizing import (
    GGML_TYPE_SIZE,
    RESERVE_FLOOR_MIB,
    _gib,
    _kokoro_batched_tokens,
    kokoro_gpu_vram_mib,
)


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
    webui = spec["webui"]["enabled"]
    if webui and fits({"webui": {"enabled": False}}):
        out.append("disable Open WebUI (stack_webui_enabled: false)")
    # Open WebUI cannot run without the LLM (the preflight refuses it): both go
    if llm["enabled"] and fits({"llm": {"enabled": False},
                                **({"webui": {"enabled": False}} if webui else {})}):
        out.append("disable the LLM (stack_llm_enabled: false)" + (
            " and Open WebUI (stack_webui_enabled: false)" if webui else ""))
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
