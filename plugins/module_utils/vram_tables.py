"""The VRAM plan as text: the fixed-width table per service and card
(format_plan_table) and the host RAM table (format_ram_table) that the preflight and
tools/plan.py print.
"""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.vram_sizing import (
    COMFYUI_RAM_OVERHEAD_MIB,
    _gib,
)


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
    if row["service"] == "webui":
        return "Open WebUI: its container's memory limit (stack_webui_mem_limit)"
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
    for row in plan["rows"] + plan.get("ram_rows", []):
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
