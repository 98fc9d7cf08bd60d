"""Address logic of the firewall role, with the standard library's ipaddress only (no
netaddr on the controller): sources split by family for the nft template, and the
lockout check's question "would the new rules let this connection in?". The firewall
role's filters (filter_plugins/firewall.py) and tests/unit/test_firewall_filters.py
import these functions."""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError


def _network(source, where="a source"):
    try:
        return ipaddress.ip_network(str(source).strip(), strict=False)
    except ValueError as err:
        raise AnsibleFilterError(
            f"firewall: {source!r} in {where} is not an IPv4/IPv6 address or CIDR ({err})"
        ) from err


def _address(text):
    addr = ipaddress.ip_address(str(text).strip().split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


def split_sources(sources, where="firewall_source_restricted_ports"):
    """{'ip': [...], 'ip6': [...]}: each source as nft wants it (host bits cleared),
    by family; fails naming a source that is not an address or a CIDR."""
    out = {"ip": [], "ip6": []}
    for source in sources or []:
        net = _network(source, where)
        key = "ip" if net.version == 4 else "ip6"
        if str(net) not in out[key]:
            out[key].append(str(net))
    return out


def connection_allowed(client, port, open_ports=(), restricted=(), proto="tcp", server=""):
    """Whether the rules the variables describe accept a new connection from address
    `client` to `port`/`proto`: the port is open to all, or a restricted entry for it
    lists a network holding the client. A connection to a loopback address is always
    accepted (the rules accept everything on lo). An unknown client ('') matches the
    open ports only."""
    port = int(port)
    if server:
        try:
            if _address(server).is_loopback:
                return True
        except ValueError:
            pass
    if port in {int(p) for p in open_ports or []}:
        return True
    try:
        addr = _address(client) if client else None
    except ValueError:
        addr = None
    if addr is None:
        return False
    for rule in restricted or []:
        if int(rule["port"]) != port or rule.get("proto", "tcp") != proto:
            continue
        for source in rule.get("sources", []):
            net = _network(source, "firewall_source_restricted_ports")
            if net.version == addr.version and addr in net:
                return True
    return False
