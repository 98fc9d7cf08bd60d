"""Is "published on loopback, so no authentication" safe on this host? Pure functions
over plain data, standard library only: the stack role's filter stack_loopback_exposure
(filter_plugins/stack_loopback.py) and tests/unit/test_stack_loopback_exposure.py
import them.

A port that Docker publishes on 127.0.0.1 (or ::1) is a DNAT rule in the nat table's
PREROUTING: `-d 127.0.0.1 --dport 8880 -j DNAT --to <container>:8880`, with no input
interface in it. Before Docker Engine 28.0, a host on the same L2 segment could send a
packet addressed to 127.0.0.1 to this host's MAC address: the rule rewrote it to the
container's address before the routing decision (which would have dropped a packet for
127.0.0.1 from outside as a martian), the kernel forwarded it, and the service answered
(moby/moby#45610 and #41872). Docker 28.0 (moby/moby#49325) drops such packets in the
raw table's PREROUTING before NAT; on a host running firewalld, a firewalld reload
removed those rules again until Docker 28.3.3 (CVE-2025-54388). The Docker environment
variable DOCKER_INSECURE_NO_IPTABLES_RAW=1 turns that protection off.

roles/firewall closes the same hole where it is loaded: its forward chain (priority
filter - 10, before Docker's) drops every new, DNATed connection that came in on one of
firewall_external_interfaces unless the port the client dialled is one it allows
(firewall_ssh_ports, firewall_allowed_tcp_ports, firewall_source_restricted_ports). That
holds only for those interfaces, only with firewall_filter_published_ports, and only for
ports it does not open.
"""

from __future__ import annotations

import fnmatch
import re

# Loopback, Docker's own interfaces, and ifb (a mirror of another interface's ingress,
# for traffic shaping): nothing on a LAN sends from them.
HOST_ONLY_INTERFACES = ("lo", "docker0", "docker_gwbridge", "br-*", "veth*", "ifb*")
MINIMUM = (28, 0, 0)
MINIMUM_WITH_FIREWALLD = (28, 3, 3)


def parse_version(text) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a Docker server version such as '20.10.24+dfsg1',
    '28.3.3', '26.1.5+dfsg1-9+b1' or '29.0.0-rc.1'; None when it is not one."""
    m = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", str(text or ""))
    if not m:
        return None
    return int(m[1]), int(m[2]), int(m[3] or 0)


def lan_interfaces(interfaces) -> list[str]:
    """The host's interfaces that a LAN neighbour could send from (not loopback, not
    Docker's bridges and veths)."""
    return sorted(
        i
        for i in set(interfaces or [])
        if not any(fnmatch.fnmatchcase(i, p) for p in HOST_ONLY_INTERFACES)
    )


def _dotted(version) -> str:
    return ".".join(map(str, version))


def exposure(services, docker_version, interfaces, firewall=None, firewalld_active=False):
    """Decide whether `services` ([{name, port}], each published on a loopback address
    without authentication) are safe from the LAN on this host.

    docker_version: the engine's version as `docker version` reports it.
    interfaces: the host's network interfaces (ansible_facts['interfaces']).
    firewall: roles/firewall's settings as the inventory gives them: enabled,
      filter_published_ports, loaded (its published chain is in the kernel now),
      open_tcp_ports, restricted_ports ([{port, proto}]), external_interfaces.
    Returns {"safe": bool, "why": str}: why it is safe, or the problem and its fixes.
    """
    services = list(services or [])
    if not services:
        return {"safe": True, "why": "no service runs without authentication on a loopback port"}
    names = ", ".join(f"{s['name']} (127.0.0.1:{s['port']})" for s in services)
    version = parse_version(docker_version)
    minimum = MINIMUM_WITH_FIREWALLD if firewalld_active else MINIMUM
    if version is not None and version >= minimum:
        return {
            "safe": True,
            "why": f"Docker {docker_version} drops LAN packets addressed to loopback "
            f"(>= {_dotted(minimum)})",
        }
    lan = lan_interfaces(interfaces)
    if not lan:
        return {
            "safe": True,
            "why": "the host has no network interface besides loopback and Docker's own: "
            "no LAN neighbour can send to it",
        }

    fw = firewall or {}
    gaps = []
    if not fw.get("enabled"):
        gaps.append("the firewall role is off (firewall_enabled)")
    else:
        if not fw.get("filter_published_ports", True):
            gaps.append("firewall_filter_published_ports is false")
        uncovered = [i for i in lan if i not in set(fw.get("external_interfaces") or [])]
        if uncovered:
            gaps.append(
                f"interfaces {', '.join(uncovered)} are not in firewall_external_interfaces"
            )
        open_ports = {int(p) for p in fw.get("open_tcp_ports") or []}
        open_ports |= {
            int(r["port"])
            for r in fw.get("restricted_ports") or []
            if str(r.get("proto", "tcp")) == "tcp"
        }
        opened = [s["name"] for s in services if int(s["port"]) in open_ports]
        if opened:
            gaps.append(f"the firewall lets in the port of {', '.join(opened)}")
        if not gaps and not fw.get("loaded"):
            gaps.append(
                "the firewall role's rules are not loaded on the host yet "
                "(site.yml runs it after the services: run `ansible-playbook ansible/site.yml "
                "--tags firewall` once, then this play again)"
            )
    if not gaps:
        return {
            "safe": True,
            "why": "roles/firewall drops DNATed connections to these ports from " + ", ".join(lan),
        }
    found = (
        f"Docker {docker_version}"
        if version
        else f"a Docker version it cannot read ({docker_version!r})"
    )
    return {
        "safe": False,
        "why": (
            f"{names} would listen without authentication on loopback, but this host runs "
            f"{found}: before Docker {_dotted(minimum)} a machine on the same network "
            f"({', '.join(lan)}) can reach ports published on 127.0.0.1 by sending packets "
            f"addressed to 127.0.0.1 to this host (moby/moby#45610"
            + ("; with firewalld, CVE-2025-54388" if firewalld_active else "")
            + f"), and {'; '.join(gaps)}. Fix one of: set API keys for them "
            "(stack_kokoro_api_keys, stack_llm_api_keys) or put them behind the proxy "
            "(stack_proxy_enabled: true; ComfyUI has no keys of its own); enable the "
            "firewall role (firewall_enabled: true, not opening these ports); upgrade "
            f"Docker to {_dotted(minimum)} or later (docker_engine_source: docker-ce); or, "
            "if every machine on that network is trusted, stack_allow_unauthenticated: true."
        ),
    }
