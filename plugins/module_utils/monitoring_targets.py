"""Prometheus scrape targets from the inventory: pure functions over plain data.

Role `monitoring` renders prometheus.yml from `monitoring_scrape_targets`: for every host
of the monitored group, node exporter, Kokoro, the LLM (where that host runs it) and,
with DCGM, the DCGM exporter, each labelled with its host and service. How a service is
reached follows the host's own roles/stack variables: behind the TLS proxy (one HTTPS
port, a Bearer key per service, the proxy's CA), or on the port the service publishes.
The role's filter monitoring_scrape_targets (filter_plugins/monitoring_targets.py) and
tests/unit/test_monitoring_targets.py import it.
"""

from __future__ import annotations

from collections.abc import Mapping

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # the unit tests run without Ansible on the path too
    AnsibleFilterError = ValueError

LOOPBACK = ("127.0.0.1", "::1", "localhost")
ANY = ("0.0.0.0", "::", "")


def _hostport(address: str, port) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def service_address(
    name: str, hv: Mapping, local: bool, bind: str, var: str, service: str, server: str
) -> str:
    """Where the Prometheus host reaches a service that its host publishes at `bind`."""
    if local:
        return "127.0.0.1" if bind in ANY or bind == "localhost" else bind
    if bind in LOOPBACK:
        raise AnsibleFilterError(
            f"monitoring: host {name} publishes {service} on loopback only ({var}={bind}), so "
            f"Prometheus on {server} cannot reach it. Set stack_proxy_enabled: true for {name} "
            f"(one TLS port, keys on every route; recommended), or publish {service} on an "
            f"address {server} can reach ({var}, with its API keys), or run Prometheus on "
            f"{name} (monitoring_server_host)."
        )
    if bind in ANY:
        return str(hv.get("monitoring_scrape_address") or hv.get("ansible_host") or name)
    return bind


def scrape_targets(
    names: list,
    hostvars: list,
    server: str,
    defaults: Mapping,
    cred_dir: str,
    node_port: int = 9100,
    gpu_exporter: str = "nvidia_smi",
    dcgm_port: int = 9400,
) -> list[dict]:
    """One dict per (host, service): labels, scheme, address, path, TLS and key files."""
    if len(names) != len(hostvars):
        raise AnsibleFilterError("monitoring: names and hostvars differ in length")
    targets = []
    for name, hv in zip(names, hostvars, strict=True):

        def var(key, hv=hv):
            value = hv.get(key) if hasattr(hv, "get") else None
            return defaults.get(key) if value is None else value

        local = name == server
        address = (
            "127.0.0.1"
            if local
            else str(hv.get("monitoring_scrape_address") or hv.get("ansible_host") or name)
        )
        node_bind = str(hv.get("monitoring_node_exporter_bind_address") or "")
        node_addr = address if node_bind in ANY or node_bind.strip().startswith("{{") else node_bind
        if not local and node_addr in LOOPBACK:
            raise AnsibleFilterError(
                f"monitoring: host {name} runs node exporter on loopback only "
                f"(monitoring_node_exporter_bind_address={node_bind}), so Prometheus on "
                f"{server} cannot reach it. Set it to an address {server} can reach, or "
                "0.0.0.0 (the default on hosts other than the Prometheus host)."
            )
        base = {
            "host": name,
            "scheme": "http",
            "metrics_path": "/metrics",
            "tls_server_name": "",
            "ca_src": "",
            "ca_file": "",
            "key_src": "",
            "key_file": "",
        }
        targets.append(
            {
                **base,
                "job": "node",
                "service": "node",
                "address": _hostport(
                    node_addr, hv.get("monitoring_node_exporter_port") or node_port
                ),
            }
        )
        if str(hv.get("monitoring_gpu_exporter") or gpu_exporter) == "dcgm":
            targets.append(
                {
                    **base,
                    "job": "gpu",
                    "service": "gpu",
                    "address": _hostport(
                        address, hv.get("monitoring_dcgm_exporter_port") or dcgm_port
                    ),
                }
            )
        project = str(var("stack_project_dir")).rstrip("/")
        proxy = _bool(var("stack_proxy_enabled"))
        services = ["kokoro"] + (["llm"] if _bool(var("stack_llm_enabled")) else [])
        for service in services:
            target = {
                **base,
                "job": service,
                "service": service,
                "key_src": f"{project}/secrets/{service}_api_keys",
                "key_file": f"{cred_dir}/{name}/{service}.key",
            }
            if proxy:
                bind = str(var("stack_proxy_bind_address") or "0.0.0.0")
                names_ = var("stack_proxy_server_names") or [name]
                if isinstance(names_, str):
                    names_ = [names_]
                target.update(
                    scheme="https",
                    address=_hostport(
                        service_address(
                            name, hv, local, bind, "stack_proxy_bind_address", "the proxy", server
                        ),
                        var("stack_proxy_port"),
                    ),
                    metrics_path=f"/{service}/metrics",
                    tls_server_name="localhost" if local else str(next(iter(names_))),
                    ca_src=f"{project}/proxy-ca.crt",
                    ca_file=f"{cred_dir}/{name}/proxy-ca.crt",
                )
            else:
                bind = str(var(f"stack_{service}_bind_address"))
                target["address"] = _hostport(
                    service_address(
                        name, hv, local, bind, f"stack_{service}_bind_address", service, server
                    ),
                    var(f"stack_{service}_port"),
                )
            targets.append(target)
    return targets
