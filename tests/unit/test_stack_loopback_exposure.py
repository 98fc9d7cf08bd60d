"""roles/stack refuses "on loopback, so no authentication" where the LAN can reach it:
with Docker older than 28.0 (28.3.3 under firewalld) a neighbour reaches ports published
on 127.0.0.1 (moby/moby#45610), unless the host has no LAN interface or roles/firewall
is on, loaded, covers every LAN interface and does not open those ports. The decision
(filter_plugins/stack_loopback.py) on plain data, then the role's task file run for real
by ansible-playbook on this machine, against its real Docker engine and interfaces."""

import subprocess
from pathlib import Path

import pytest
from ansible_collections.kokoro.deploy.plugins.module_utils import stack_loopback as lb
from local_play import run_role_tasks
from required_tools import missing

REPO = Path(__file__).resolve().parents[2]

KOKORO = [{"name": "kokoro", "port": 8880}]
LAN = ["lo", "eth0", "docker0", "br-0123456789ab", "veth12ab34"]
FIREWALL = {
    "enabled": True,
    "filter_published_ports": True,
    "loaded": True,
    "open_tcp_ports": [22, 443],
    "restricted_ports": [],
    "external_interfaces": ["eth0"],
}


@pytest.mark.parametrize(
    "text, want",
    [
        ("20.10.24+dfsg1", (20, 10, 24)),
        ("26.1.5+dfsg1-9+b1", (26, 1, 5)),
        ("28.3.3", (28, 3, 3)),
        ("29.0.0-rc.1", (29, 0, 0)),
        ("28.1", (28, 1, 0)),
        ("", None),
        ("Cannot connect to the Docker daemon", None),
    ],
)
def test_docker_versions_are_read_as_the_engine_prints_them(text, want):
    assert lb.parse_version(text) == want


def test_only_interfaces_a_neighbour_could_send_from_count():
    assert lb.lan_interfaces([*LAN, "wlan0"]) == ["eth0", "wlan0"]
    assert lb.lan_interfaces(["lo", "docker0", "docker_gwbridge", "vethab"]) == []


def test_nothing_without_authentication_on_loopback_needs_nothing():
    assert lb.exposure([], "20.10.24", LAN)["safe"]


@pytest.mark.parametrize("version", ["28.0.0", "28.5.2", "29.1.3"])
def test_docker_28_or_later_drops_lan_packets_to_loopback(version):
    out = lb.exposure(KOKORO, version, LAN)
    assert out["safe"] and version in out["why"]


def test_older_docker_with_a_lan_and_no_firewall_fails_naming_problem_and_fixes():
    out = lb.exposure([*KOKORO, {"name": "llm", "port": 8080}], "20.10.24+dfsg1", LAN)
    assert not out["safe"]
    why = out["why"]
    for part in (
        "kokoro (127.0.0.1:8880)",
        "llm (127.0.0.1:8080)",
        "Docker 20.10.24+dfsg1",
        "eth0",
        "moby/moby#45610",
        "firewall_enabled",
        "stack_kokoro_api_keys",
        "stack_proxy_enabled",
        "28.0.0 or later",
        "stack_allow_unauthenticated",
    ):
        assert part in why, (part, why)


def test_firewalld_needs_the_fix_of_cve_2025_54388():
    assert lb.exposure(KOKORO, "28.1.0", LAN, firewalld_active=False)["safe"]
    out = lb.exposure(KOKORO, "28.1.0", LAN, firewalld_active=True)
    assert not out["safe"] and "28.3.3" in out["why"] and "CVE-2025-54388" in out["why"]
    assert lb.exposure(KOKORO, "28.3.3", LAN, firewalld_active=True)["safe"]


def test_an_unreadable_version_counts_as_old():
    out = lb.exposure(KOKORO, "", LAN)
    assert not out["safe"] and "cannot read" in out["why"]


def test_a_host_without_a_lan_interface_is_safe():
    out = lb.exposure(KOKORO, "20.10.24", ["lo", "docker0", "veth1"])
    assert out["safe"] and "no network interface" in out["why"]


def test_the_firewall_loaded_and_covering_every_lan_interface_makes_it_safe():
    out = lb.exposure(KOKORO, "20.10.24", LAN, FIREWALL)
    assert out["safe"] and "roles/firewall" in out["why"]


@pytest.mark.parametrize(
    "change, named",
    [
        ({"enabled": False}, "firewall_enabled"),
        ({"filter_published_ports": False}, "firewall_filter_published_ports is false"),
        ({"external_interfaces": ["eth1"]}, "interfaces eth0 are not in"),
        ({"open_tcp_ports": [22, 443, 8880]}, "lets in the port of kokoro"),
        ({"restricted_ports": [{"port": 8880, "sources": ["10.0.0.0/8"]}]}, "port of kokoro"),
        ({"loaded": False}, "--tags firewall"),
    ],
)
def test_the_firewall_counts_only_where_it_really_drops_those_connections(change, named):
    out = lb.exposure(KOKORO, "20.10.24", LAN, {**FIREWALL, **change})
    assert not out["safe"] and named in out["why"], out["why"]


def test_a_udp_restricted_port_does_not_open_the_tcp_one():
    fw = {**FIREWALL, "restricted_ports": [{"port": 8880, "proto": "udp", "sources": ["10.0.0.1"]}]}
    assert lb.exposure(KOKORO, "20.10.24", LAN, fw)["safe"]


def run_role(tmp_path: Path, **extra) -> subprocess.CompletedProcess:
    """roles/stack/tasks/loopback.yml, with the network facts it reads."""
    variables = {
        "stack_proxy_enabled": False,
        "stack_kokoro_bind_address": "127.0.0.1",
        **extra,
    }
    return run_role_tasks(tmp_path, "stack", "loopback", variables, "-v",
                          gather_subset=["network"])


@pytest.fixture(scope="module")
def engine_version() -> str:
    r = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode or not r.stdout.strip():
        missing("no Docker engine answers (tests/testbed/up.sh starts one)")
    return r.stdout.strip()


def test_the_role_decides_on_the_engine_it_reads_from_the_host(tmp_path, engine_version):
    """Whatever this machine's engine and interfaces are, the role's verdict is the
    decision's on them, and names the version the engine reported."""
    r = run_role(tmp_path)
    out = r.stdout
    assert engine_version in out, out
    if r.returncode:
        assert "would listen without authentication on loopback" in out, out
    else:
        assert "Loopback without authentication is safe here" in out, out


@pytest.mark.parametrize(
    "settings",
    [
        {"stack_kokoro_api_keys": ["a-key-of-sixteen-or-more"]},
        {"stack_allow_unauthenticated": True},
        {"stack_proxy_enabled": True},
    ],
    ids=["keys", "trusted-network", "proxy"],
)
def test_the_check_is_skipped_where_nothing_runs_without_authentication(tmp_path, settings):
    r = run_role(tmp_path, **settings)
    assert r.returncode == 0, r.stdout + r.stderr
    # the verdict's task did not run (it prints one of these when it does)
    assert "Loopback without authentication is safe here" not in r.stdout
    assert "would listen without authentication" not in r.stdout


def test_wyoming_on_loopback_is_checked_even_where_kokoro_has_keys(tmp_path):
    # Wyoming has no authentication of its own: the keys do not cover its port.
    r = run_role(tmp_path, stack_kokoro_api_keys=["a-key-of-sixteen-or-more"],
                 stack_kokoro_wyoming_enabled=True)
    if r.returncode:
        assert "wyoming (127.0.0.1:10200)" in r.stdout, r.stdout
    else:
        assert "Loopback without authentication is safe here" in r.stdout, r.stdout


RESTRICTED = [{"port": 10200, "sources": ["192.0.2.7"]}]


@pytest.mark.parametrize("firewall, refused", [
    ({}, "roles/firewall off"),
    ({"firewall_enabled": True}, "port 10200 not limited to named sources"),
    ({"firewall_enabled": True, "firewall_source_restricted_ports": RESTRICTED,
      "firewall_allowed_tcp_ports": [443, 10200]}, "port 10200 not limited to named sources"),
    ({"firewall_enabled": True,
      "firewall_source_restricted_ports": [{**RESTRICTED[0], "proto": "udp"}]},
     "port 10200 not limited to named sources"),
    ({"firewall_enabled": True, "firewall_source_restricted_ports": RESTRICTED}, None),
    ({"stack_allow_unauthenticated": True}, None),
], ids=["no-firewall", "port-open", "also-allowed-to-all", "udp-only", "named-sources", "trusted"])
def test_wyoming_beyond_loopback_only_to_the_sources_the_firewall_names(tmp_path, firewall,
                                                                      refused):
    r = run_role(tmp_path, stack_kokoro_api_keys=["a-key-of-sixteen-or-more"],
                 stack_kokoro_wyoming_enabled=True, stack_kokoro_wyoming_bind_address="0.0.0.0",
                 **firewall)
    out = " ".join(r.stdout.split())
    if refused:
        assert r.returncode != 0 and refused in out, out[-2000:]
        assert "firewall_source_restricted_ports" in out and "127.0.0.1" in out
    else:
        assert r.returncode == 0, out[-2000:]
