"""The VRAM plan of the colocated stack (Kokoro, an LLM server, ComfyUI) and the
post-deploy VRAM report: pure functions over plain data.

Role `stack` exposes them as Ansible filters (`kokoro_vram_*`, in
roles/stack/filter_plugins/kokoro_vram.py): the preflight computes
`plan_stack` from gpu_facts' cards and the manifest's `companions:` section and fails
before touching the host when the enabled services do not fit (and warns when ComfyUI
fits below its useful minimum); verify parses `nvidia-smi` and compares what each
service holds with its plan (`vram_report`). tools/plan.py makes the same plan for a
named card with no host; tests/unit/test_vram_plan.py imports these modules.
Nothing here touches a host.

Docker puts no VRAM limit on a container, so each service is held inside its share by
its own knobs: Kokoro by its worker count, llama.cpp by -ngl, context size and KV cache
types (it allocates weights, KV cache and compute buffers at start), ComfyUI by
`--reserve-vram` (and `--lowvram` when its models cannot stay whole on the card).

This module holds the entry points (plan_stack, plan_stack_or_error); the work is in
the modules beside it, each importing only those above it in this list:

  vram_sizing.py   the figures per service with their sources, a card's total
  vram_spec.py     the role's variables validated into a spec (normalize_services)
  vram_fit.py      a spec's rows, sums, knobs, problems and warnings (evaluate)
  vram_suggest.py  what would make it fit (suggest)
  vram_tables.py   the plan and host RAM tables
  vram_report.py   the post-deploy report from nvidia-smi (vram_report)
"""

from __future__ import annotations

from typing import Any

from ansible_collections.kokoro.deploy.plugins.module_utils.vram_fit import (
    comfyui_heavy_offload,
    evaluate,
)
from ansible_collections.kokoro.deploy.plugins.module_utils.vram_sizing import _int
from ansible_collections.kokoro.deploy.plugins.module_utils.vram_spec import normalize_services
from ansible_collections.kokoro.deploy.plugins.module_utils.vram_suggest import suggest
from ansible_collections.kokoro.deploy.plugins.module_utils.vram_tables import (
    format_plan_table,
    format_ram_table,
)


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

    gpus: gpu_decisions.parse_nvidia_smi rows (or parse_pci_devices rows before a driver
    exists); services: {'vram_total_mib', 'kokoro': {...}, 'llm': {...}, 'comfyui':
    {...}, 'webui': {enabled, mem_limit}} as the role passes them; companions:
    manifest.yml's `companions:`.
    Returns {fits, device, card, cards, rows, keep_free, planned_total_mib, free_mib,
    ram, ram_rows (services with host RAM and no VRAM: Open WebUI), ram_needed_mib,
    ram_reserve_mib, knobs, problems, warnings, suggestions (what
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
            "ram_rows": [],
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
