"""nvidia_driver: on a host with an NVIDIA card the driver packages of the pinned branch
are installed, pinned and held, nouveau is blacklisted and nvidia-persistenced is
enabled; where the kernel can load modules, the loaded driver is the installed one. On
a host without an NVIDIA device nothing of the driver is installed.

The facts come from /etc/ansible/facts.d/kokoro_gpu.fact (role gpu_facts), so the checks
follow what the run decided. Runs from Molecule and against real hosts.
"""

import json
import re

import pytest
from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_decisions

DRIVER_FACT = "/etc/ansible/facts.d/kokoro_nvidia_driver.fact"
PIN = "/etc/apt/preferences.d/kokoro-nvidia-driver"
BLACKLIST = "/etc/modprobe.d/kokoro-blacklist-nouveau.conf"
# Packages that mark a driver install, whichever source; the role's own choice (the
# recorded "packages": nvidia-open-580, nvidia-driver-580-server-open, ...) is added.
DRIVER_PACKAGES = ["nvidia-kernel-dkms", "nvidia-open-kernel-dkms", "libcuda1", "nvidia-smi"]


@pytest.fixture
def branch(host, facts):
    if not facts["nvidia_present"]:
        pytest.skip("no NVIDIA PCI device on this host: the driver role skips it")
    pin = host.file(PIN)
    assert pin.is_file, f"{PIN} missing: nvidia_driver did not pin the branch"
    match = re.search(r"^Pin: version (\d+)\.\*$", pin.content_string, re.M)
    assert match, pin.content_string
    return match.group(1)


def _decision(host) -> dict:
    fact = host.file(DRIVER_FACT)
    return json.loads(fact.content_string) if fact.exists else {"packages": []}


def _installed(host) -> list[str]:
    names = dict.fromkeys(_decision(host)["packages"] + DRIVER_PACKAGES)
    return [p for p in names if host.package(p).is_installed]


def _in_container(host) -> bool:
    return host.file("/.dockerenv").exists or host.run(
        "systemd-detect-virt --container").rc == 0


def test_no_driver_on_a_host_without_nvidia_device(host, facts):
    if facts["nvidia_present"]:
        pytest.skip("this host has an NVIDIA device")
    assert _installed(host) == [], "driver packages on a host without an NVIDIA device"
    assert not host.file(BLACKLIST).exists


def test_driver_packages_of_the_pinned_branch_are_installed(host, branch):
    installed = _installed(host)
    assert installed, "no NVIDIA driver package installed"
    for name in installed:
        version = host.package(name).version
        assert re.match(rf"(\d+:)?{branch}\.", version), f"{name} {version} is not branch {branch}"


def test_kernel_modules_fit_the_cards(host, facts, branch):
    decision = _decision(host)
    assert str(decision["branch"]) == branch
    # The recorded flavour is one the cards can run on this branch ...
    plan = gpu_decisions.plan_driver(facts["compute_caps"], branch, decision["kernel_modules"])
    assert plan["ok"], plan["reason"]
    # ... and the kernel module package installed is of that flavour.
    # Debian: nvidia-open-kernel-dkms; NVIDIA: nvidia-open-<branch>; Ubuntu:
    # nvidia-driver-<branch>-server-open.
    open_pkg = host.package("nvidia-open-kernel-dkms").is_installed or any(
        p.startswith("nvidia-open") or p.endswith("-open") for p in decision["packages"])
    proprietary_pkg = host.package("nvidia-kernel-dkms").is_installed or any(
        p.startswith("cuda-drivers") for p in decision["packages"])
    if decision["kernel_modules"] == "open":
        assert open_pkg and not host.package("nvidia-kernel-dkms").is_installed
    else:
        assert proprietary_pkg and not host.package("nvidia-open-kernel-dkms").is_installed


def test_driver_packages_are_held(host, branch):
    # The role holds the packages it chose; their dependencies (NVIDIA's metapackages
    # pull in nvidia-smi, libcuda1, ...) stay on the branch through the pin.
    held = host.check_output("dpkg --get-selections | awk '$2 == \"hold\" {print $1}'").split()
    held = {h.split(":")[0] for h in held}
    for name in _decision(host)["packages"]:
        assert name in held, f"{name} is not on hold: unattended-upgrades could move it"


def test_apt_prefers_the_pinned_branch(host, branch):
    # nvidia-smi comes with every source (from the distribution, or as a dependency of
    # NVIDIA's metapackages); the test bed's stand-in of NVIDIA's repository offers
    # nvidia-persistenced in two branches instead.
    candidates = ("nvidia-smi", "nvidia-persistenced", *_decision(host)["packages"])
    name = next(p for p in candidates if host.package(p).is_installed)
    policy = host.check_output(f"apt-cache policy {name}")
    installed = re.search(r"Installed: (\S+)", policy).group(1)
    assert installed.split(":")[-1].startswith(f"{branch}."), policy
    assert re.search(rf"\*\*\* {re.escape(installed)} 1001", policy), policy


def test_nouveau_is_blacklisted(host, branch):
    conf = host.file(BLACKLIST)
    assert conf.is_file
    assert "blacklist nouveau" in conf.content_string
    assert "options nouveau modeset=0" in conf.content_string


def test_nvidia_persistenced_is_enabled(host, branch):
    assert host.service("nvidia-persistenced").is_enabled


def test_loaded_driver_is_the_installed_one(host, branch):
    if _in_container(host):
        pytest.skip("a container cannot load kernel modules: no nvidia module to compare")
    loaded = host.file("/sys/module/nvidia/version")
    assert loaded.exists, "the nvidia module is not loaded: reboot (nvidia_driver_reboot)"
    assert loaded.content_string.strip().startswith(f"{branch}.")
    assert not host.file("/sys/module/nouveau").exists, "nouveau is loaded"
