"""apt_bundle on an air-gapped host (tests/molecule/apt_bundle): the offline bundle's
repository is on the host once, under its index's checksum, complete; the package came
from it; the host's own apt configuration was not touched."""
import re

ROOT = "/var/lib/kokoro-deploy/debs"


def test_the_package_came_from_the_bundle_and_runs(host):
    assert host.package("hello").is_installed
    assert host.check_output("hello") == "Hello, world!"


def test_the_repository_is_on_the_host_once_and_whole(host):
    entries = host.check_output(f"ls -A {ROOT}").split()
    assert len(entries) == 1 and re.fullmatch(r"[0-9a-f]{16}", entries[0]), entries
    repo = f"{ROOT}/{entries[0]}"
    for name in ("Packages", "Release", "apt/apt.conf", "apt/sources.list"):
        assert host.file(f"{repo}/{name}").is_file, name
    assert host.file(f"{repo}/apt/sources.list").contains(f"file:{repo} ./")
    assert not host.file(f"{repo}.partial").exists


def test_the_hosts_own_apt_sources_do_not_name_the_bundle(host):
    own = host.check_output(
        "cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true")
    assert ROOT not in own
    assert ROOT not in host.check_output("apt-cache policy")


def test_the_host_has_no_network_but_loopback(host):
    links = host.check_output("ls /sys/class/net").split()
    assert links == ["lo"], links
