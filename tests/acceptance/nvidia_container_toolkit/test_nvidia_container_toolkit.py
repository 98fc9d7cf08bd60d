"""nvidia_container_toolkit: on a GPU host Docker knows the nvidia runtime (registered in
daemon.json next to every other key, and listed by the running engine), the toolkit is
installed and, once a driver runs, the CDI spec exists. Hosts without an NVIDIA device
are left alone.

Runs from Molecule and against real hosts (tests/acceptance/README.md).
"""

import json

import pytest

DAEMON_JSON = "/etc/docker/daemon.json"


@pytest.fixture
def gpu_host(facts):
    if not facts["nvidia_present"]:
        pytest.skip("no NVIDIA PCI device on this host: the toolkit role skips it")
    return facts


def _daemon_json(host) -> dict:
    f = host.file(DAEMON_JSON)
    return json.loads(f.content_string) if f.exists else {}


def test_no_nvidia_runtime_without_nvidia_device(host, facts):
    if facts["nvidia_present"]:
        pytest.skip("this host has an NVIDIA device")
    assert "nvidia" not in _daemon_json(host).get("runtimes", {})


def test_daemon_json_registers_the_nvidia_runtime(host, gpu_host):
    config = _daemon_json(host)
    assert config["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"


def test_daemon_json_keeps_the_other_keys(host, gpu_host):
    config = _daemon_json(host)
    others = set(config) - {"runtimes", "default-runtime"}
    assert others, "daemon.json holds nothing but the nvidia runtime: were keys clobbered?"
    if "log-opts" in config:
        assert config["log-opts"].get("max-size"), config


def test_running_engine_lists_the_nvidia_runtime(host, gpu_host):
    if not host.exists("docker") or host.run("docker info").rc != 0:
        pytest.skip("no running Docker engine on this host")
    runtimes = json.loads(host.check_output("docker info --format '{{json .Runtimes}}'"))
    assert "nvidia" in runtimes, f"dockerd was not restarted after the change: {runtimes}"


def test_toolkit_is_installed(host, gpu_host):
    for name in ("nvidia-container-toolkit", "nvidia-container-toolkit-base",
                 "libnvidia-container-tools", "libnvidia-container1"):
        assert host.package(name).is_installed, f"{name} is not installed"


def test_toolkit_commands_are_on_the_path(host, gpu_host):
    if gpu_host["source"] == "test-seam":
        pytest.skip("facts from test seams (Molecule): the packages there are stand-ins of "
                    "NVIDIA's, with its names and no binaries")
    assert host.exists("nvidia-ctk") and host.exists("nvidia-container-runtime")


def test_cdi_spec_lists_the_gpus(host, gpu_host):
    if not gpu_host["driver_loaded"]:
        pytest.skip("no NVIDIA driver loaded: the CDI spec is generated once one runs")
    spec = host.file("/etc/cdi/nvidia.yaml")
    assert spec.is_file and "nvidia.com/gpu" in spec.content_string
