"""Caddy size strings as bytes, for the front door's Content-Length check
(roles/stack_proxy/templates/Caddyfile.j2; tests/unit/test_proxy_caddyfile.py checks the
rendered numbers against Caddy's own reading), the stack_proxy role's filter
stack_proxy_size_bytes (filter_plugins/stack_proxy.py)."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

# The units roles/stack_proxy admits (vars/main.yml __stack_proxy_size_pattern), as Caddy
# reads them (github.com/dustin/go-humanize, which Caddy's request_body uses): KB is 1000.
UNITS = {"B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2,
         "GB": 1000**3, "GiB": 1024**3}


def stack_proxy_size_bytes(size: str) -> int:
    """'256KiB' -> 262144."""
    match = re.fullmatch(r"([1-9][0-9]*)([KMG]?i?B)", str(size))
    if not match or match[2] not in UNITS:
        raise AnsibleFilterError(
            f"stack_proxy_size_bytes: {size!r} is not a size such as 256KiB, 16MiB or 100MB")
    return int(match[1]) * UNITS[match[2]]
