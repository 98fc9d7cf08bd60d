"""Ansible filters kokoro_vram_*: the VRAM plan and the post-deploy VRAM report of
plugins/module_utils/vram_*.py (vram_plan.py lists the modules). The logic and the
sources of its numbers live there; this file only names the filters."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.vram_plan import plan_stack_or_error
from ansible_collections.kokoro.deploy.plugins.module_utils.vram_report import (
    parse_compute_apps,
    parse_gpu_uuids,
    vram_report,
)
from ansible_collections.kokoro.deploy.plugins.module_utils.vram_sizing import (
    card_total_mib_only,
    kv_cache_mib,
)


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
