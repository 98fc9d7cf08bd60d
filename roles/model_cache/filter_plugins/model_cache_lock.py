"""Filters for model_cache's companion models and their lock file (trust on first use).
The logic is the collection's plugins/module_utils/model_cache_lock.py (tools/bundle.py
and the stack role import it too); a LockError becomes Ansible's filter error."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.kokoro.deploy.plugins.module_utils.model_cache_lock import (
    LockError,
    companion_artifacts,
    merge_lock,
    stack_companions,
    with_learned,
)


def _wrap(fn):
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LockError as err:
            raise AnsibleFilterError(f"model_cache: {err}") from None

    return inner


class FilterModule:
    def filters(self):
        return {
            "model_cache_companions": _wrap(companion_artifacts),
            "model_cache_stack_companions": _wrap(stack_companions),
            "model_cache_lock_merge": _wrap(merge_lock),
            "model_cache_with_learned": _wrap(with_learned),
        }
