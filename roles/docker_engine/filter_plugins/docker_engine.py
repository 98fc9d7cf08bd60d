"""daemon.json as the docker_engine role writes it; the logic is the collection's
plugins/module_utils/docker_engine_daemon_json.py."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.docker_engine_daemon_json import (
    managed_keys,
    merge_daemon_json,
)


class FilterModule:
    def filters(self):
        return {
            "docker_engine_managed_keys": managed_keys,
            "docker_engine_merge_daemon_json": merge_daemon_json,
        }
