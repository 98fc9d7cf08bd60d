"""Filters for the model_cache role: which manifest artifacts a host needs, and where
each comes from. The logic is the collection's
plugins/module_utils/model_cache_plan.py (tools/bundle.py imports it too); its
PlanError becomes Ansible's filter error (plugins/module_utils/filter_errors.py)."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.filter_errors import (
    filters_failing_cleanly,
)
from ansible_collections.kokoro.deploy.plugins.module_utils.model_cache_plan import (
    cache_index,
    plan_sources,
    select_artifacts,
)


class FilterModule:
    def filters(self):
        return filters_failing_cleanly("model_cache", {
            "model_cache_select": select_artifacts,
            "model_cache_plan_sources": plan_sources,
            "model_cache_index": cache_index,
        })
