"""Caddy size strings as bytes, for the front door's Content-Length check; the logic is the
collection's plugins/module_utils/stack_proxy.py."""

from __future__ import annotations

from ansible_collections.kokoro.deploy.plugins.module_utils.stack_proxy import (
    stack_proxy_size_bytes,
)


class FilterModule:
    def filters(self):
        return {"stack_proxy_size_bytes": stack_proxy_size_bytes}
