"""Filters for model_cache's companion models and their lock file (trust on first use).
The logic is the collection's plugins/module_utils/model_cache_lock.py (tools/bundle.py
and the stack role import it too); its LockError becomes Ansible's filter error
(plugins/module_utils/filter_errors.py)."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.filter_errors import (
    filters_failing_cleanly,
)
from ansible_collections.kokoro.deploy.plugins.module_utils.model_cache_lock import (
    companion_artifacts,
    merge_lock,
    stack_companions,
    with_learned,
)


class FilterModule:
    def filters(self):
        return filters_failing_cleanly("model_cache", {
            "model_cache_companions": companion_artifacts,
            "model_cache_stack_companions": stack_companions,
            "model_cache_lock_merge": merge_lock,
            "model_cache_with_learned": with_learned,
        })
