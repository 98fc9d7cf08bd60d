"""Is "published on loopback, so no authentication" safe on this host? The logic is the
collection's plugins/module_utils/stack_loopback.py."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.stack_loopback import exposure


class FilterModule:
    """Ansible filters: stack_loopback_exposure."""

    def filters(self):
        return {"stack_loopback_exposure": exposure}
