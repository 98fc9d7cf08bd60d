"""Filters for the model_cache role: which manifest artifacts a host needs, and where
each comes from. The logic is the collection's
plugins/module_utils/model_cache_plan.py (tools/bundle.py imports it too); a PlanError
becomes Ansible's filter error."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.kokoro.deploy.plugins.module_utils.model_cache_plan import (
    PlanError,
    cache_index,
    plan_sources,
    select_artifacts,
)


def _wrap(fn):
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PlanError as err:
            raise AnsibleFilterError(f"model_cache: {err}") from None

    return inner


class FilterModule:
    def filters(self):
        return {
            "model_cache_select": _wrap(select_artifacts),
            "model_cache_plan_sources": _wrap(plan_sources),
            "model_cache_index": _wrap(cache_index),
        }
