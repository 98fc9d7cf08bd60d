"""Prometheus scrape targets from the inventory; the logic is the collection's
plugins/module_utils/monitoring_targets.py."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.monitoring_targets import (
    scrape_targets,
)


class FilterModule:
    def filters(self):
        return {"monitoring_scrape_targets": scrape_targets}
