"""Ansible filters kokoro_vendor_segments, kokoro_vendor_url and kokoro_driver_source:
the NVIDIA repository URLs and driver source of plugins/module_utils/vendor_urls.py.
The logic lives there; this file only names the filters."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.vendor_urls import (
    driver_source,
    host_segments,
    vendor_url,
)


class FilterModule:
    def filters(self):
        return {
            "kokoro_vendor_segments": host_segments,
            "kokoro_vendor_url": vendor_url,
            "kokoro_driver_source": driver_source,
        }
