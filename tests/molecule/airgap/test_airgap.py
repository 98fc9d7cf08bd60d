"""The air-gapped scenario's host really had no network: no interface but loopback, no
route, no name resolution, the host's own apt mirror unreachable; and what it runs came
from the bundle (apt installed docker.io and espeak-ng from the bundle's repository)."""

import json
import re
import subprocess

import pytest

PROBE = r"""
import json, socket, sys
out = {}
try:
    socket.getaddrinfo(sys.argv[1], 80)
    out["resolve"] = "resolved"
except OSError as err:
    out["resolve"] = repr(err)
try:
    socket.create_connection((sys.argv[2], 80), timeout=5).close()
    out["connect"] = "connected"
except OSError as err:
    out["connect"] = repr(err)
print(json.dumps(out))
"""


def test_the_container_has_network_mode_none(host):
    name = host.backend.get_hostname()
    r = subprocess.run(
        ["docker", "inspect", "--format", "{{.HostConfig.NetworkMode}}", name],
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.strip() == "none"


def test_the_host_has_only_loopback_and_no_route(host):
    links = host.check_output("ip -o link show | awk -F': ' '{print $2}'").split()
    assert links == ["lo"] or all(
        name == "lo" or name.startswith(("docker", "br-", "veth")) for name in links
    ), links  # the inner engine's own bridges are local to the host
    routes = host.check_output("ip route show default; ip -6 route show default")
    assert routes.strip() == "", routes


def test_the_host_cannot_resolve_or_reach_its_apt_mirror(host):
    sources = host.file("/etc/apt/sources.list.d/debian.sources").content_string
    uri = re.search(r"^URIs:\s*(\S+)", sources, re.M)
    if not uri:
        pytest.skip("the host image names no Debian mirror")
    mirror = re.sub(r"^\w+://([^/:]+).*", r"\1", uri.group(1))
    out = json.loads(host.check_output("python3 -c %s %s %s", PROBE, mirror, "192.0.2.1"))
    assert out["resolve"] != "resolved", out
    assert out["connect"] != "connected", out


def test_packages_came_from_the_bundle_repository(host):
    conf = host.check_output("ls /var/lib/kokoro-deploy/debs/*/apt/apt.conf").split()
    assert len(conf) == 1, conf
    policy = host.check_output("APT_CONFIG=%s apt-cache policy docker.io espeak-ng", conf[0])
    for package in ("docker.io", "espeak-ng"):
        assert host.package(package).is_installed, package
    assert "file:/var/lib/kokoro-deploy/debs/" in policy, policy
    assert "(none)" not in policy.split("Candidate:")[1].splitlines()[0], policy
