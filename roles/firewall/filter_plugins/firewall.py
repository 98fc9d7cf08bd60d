"""Address filters of the firewall role; the logic is the collection's
plugins/module_utils/firewall_addresses.py."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.firewall_addresses import (
    connection_allowed,
    split_sources,
)


class FilterModule:
    def filters(self):
        return {
            "firewall_split_sources": split_sources,
            "firewall_connection_allowed": connection_allowed,
        }
