"""The GPU host as a whole, as the services need it: the pinned driver is loaded,
nvidia-smi sees every NVIDIA card on the PCI bus, containers see them through
`docker run --gpus all`, nouveau is not loaded, persistence mode is on, and every card
has VRAM headroom left; and, where the Kokoro server runs, a sentence synthesised on the
GPU comes back at 24 kHz and not silent.

Every check skips, saying so, on a host with no NVIDIA display controller; nothing here
fakes a GPU. Run it on a GPU machine with `--hosts=local://` or against a fleet with
`--hosts=ansible://GROUP` (tests/acceptance/README.md). Settings (environment):
  KOKORO_VRAM_HEADROOM_MIB  free VRAM each card must keep (default 1024)
  KOKORO_GPU_TEST_IMAGE     image for the `docker run --gpus all` check
                            (default debian:bookworm-slim; any local image works: the
                            NVIDIA runtime mounts nvidia-smi into it)
  KOKORO_DRIVER_BRANCH      expected driver branch when the host has no
                            nvidia_driver pin file
  KOKORO_URL, KOKORO_API_KEY  the Kokoro server as the host reaches it (default
                            http://127.0.0.1:8880, no key); the synthesis check is
                            roles/stack/files/stack_smoke.py, run there with python3
"""

import json
import os
import re
from pathlib import Path

import pytest
from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_decisions

PIN = "/etc/apt/preferences.d/kokoro-nvidia-driver"
HEADROOM_MIB = int(os.environ.get("KOKORO_VRAM_HEADROOM_MIB", "1024"))
TEST_IMAGE = os.environ.get("KOKORO_GPU_TEST_IMAGE", "debian:bookworm-slim")


def nvidia_pci_devices(host) -> list[dict]:
    out = host.check_output(
        "for d in /sys/bus/pci/devices/*; do [ -r $d/class ] && "
        'echo "${d##*/} $(cat $d/vendor) $(cat $d/device) $(cat $d/class)"; done; true'
    )
    return gpu_decisions.parse_pci_devices(out)


@pytest.fixture
def pci(host):
    devices = nvidia_pci_devices(host)
    if not devices:
        pytest.skip("no NVIDIA display controller on this host's PCI bus: GPU checks do not apply")
    return devices


@pytest.fixture
def gpus(host, pci):
    smi = host.run(gpu_decisions.NVIDIA_SMI_QUERY)
    assert smi.rc == 0, (
        f"nvidia-smi fails on a host with {len(pci)} NVIDIA device(s): {smi.stderr or smi.stdout}"
        " - is the driver installed and loaded (nvidia_driver role, reboot)?"
    )
    return gpu_decisions.parse_nvidia_smi(smi.stdout)


def _expected_branch(host) -> str | None:
    pin = host.file(PIN)
    if pin.exists:
        match = re.search(r"^Pin: version (\d+)\.\*$", pin.content_string, re.M)
        if match:
            return match.group(1)
    return os.environ.get("KOKORO_DRIVER_BRANCH")


def test_driver_is_loaded_and_matches_the_pin(host, pci):
    loaded = host.file("/sys/module/nvidia/version")
    assert loaded.exists, "the nvidia kernel module is not loaded (reboot after install?)"
    version = loaded.content_string.strip()
    branch = _expected_branch(host)
    if branch is None:
        pytest.skip(f"driver {version} loaded; no pin file and no KOKORO_DRIVER_BRANCH to compare")
    assert version.startswith(f"{branch}."), (
        f"loaded driver {version} is not the pinned branch {branch}")


def test_nvidia_smi_sees_every_card(pci, gpus):
    assert len(gpus) == len(pci), (
        f"{len(pci)} NVIDIA device(s) on the PCI bus, nvidia-smi lists {len(gpus)}: "
        "a card fell off the bus or its driver does not support it (check `dmesg`)"
    )


def test_user_space_matches_the_kernel_module(host, gpus):
    module = host.file("/sys/module/nvidia/version")
    assert module.exists, "nvidia-smi answers but no nvidia module is loaded?"
    loaded = module.content_string.strip()
    assert {g["driver_version"] for g in gpus} == {loaded}, "libraries and module differ: reboot"


def test_containers_see_every_card(host, gpus):
    if not host.exists("docker"):
        pytest.skip("Docker is not installed on this host")
    run = host.run(
        "docker run --rm --gpus all -e NVIDIA_DRIVER_CAPABILITIES=utility %s nvidia-smi -L",
        TEST_IMAGE,
    )
    assert run.rc == 0, f"docker run --gpus all failed: {run.stderr} (nvidia_container_toolkit?)"
    listed = [line for line in run.stdout.splitlines() if line.startswith("GPU ")]
    assert len(listed) == len(gpus), run.stdout


def test_nouveau_is_not_loaded(host, pci):
    assert not host.file("/sys/module/nouveau").exists, (
        "nouveau is loaded: blacklist it (nvidia_driver_blacklist_nouveau), rebuild the "
        "initramfs and reboot"
    )


def test_persistence_mode_is_on(host, gpus):
    modes = host.check_output(
        "nvidia-smi --query-gpu=persistence_mode --format=csv,noheader").split()
    assert modes == ["Enabled"] * len(gpus), (
        f"persistence mode {modes}: enable nvidia-persistenced (nvidia_driver_persistenced)"
    )


def test_every_card_has_vram_headroom(gpus):
    headroom = gpu_decisions.vram_headroom_mib(gpus)
    short = [
        f"{g['name']} (GPU {g['index']}): {free} MiB free"
        for g, free in zip(gpus, headroom, strict=True)
        if free is not None and free < HEADROOM_MIB
    ]
    assert not short, f"less than {HEADROOM_MIB} MiB VRAM left: {'; '.join(short)}"


# The Kokoro smoke test runs on the host itself (so KOKORO_URL is as the host sees it):
# roles/stack/files/stack_smoke.py, the script the stack role's verify step runs, sends one
# sentence through the server's OpenAI-style /v1/audio/speech as WAV and checks it for
# 24 kHz and real signal; then the server must report a CUDA device and hold GPU memory.
KOKORO_URL = os.environ.get("KOKORO_URL", "http://127.0.0.1:8880")
KOKORO_API_KEY = os.environ.get("KOKORO_API_KEY", "")
SMOKE = (Path(__file__).resolve().parents[3] / "roles/stack/files/stack_smoke.py").read_text()


def test_kokoro_speaks_on_the_gpu(host, gpus):
    result = json.loads(host.check_output(
        "python3 -c %s --kokoro-url %s --kokoro-key %s", SMOKE, KOKORO_URL, KOKORO_API_KEY
    ))["kokoro"]
    if result.get("unreachable"):
        pytest.skip(f"no Kokoro server at {KOKORO_URL} ({result['error']}): start the "
                    "services or set KOKORO_URL")
    assert result["ok"], result  # /health ok, 24 kHz, not silent
    assert result["rate"] == 24000, f"audio at {result['rate']} Hz, Kokoro speaks at 24 kHz"
    assert result["audio_seconds"] > 0.5 and result["rms"] > 0.01, (
        f"silent or empty audio: {result}")
    device = str(result.get("device") or "")
    assert device.startswith("cuda"), (
        f"the server runs on {device or 'an unknown device'}, not the GPU")
    apps = host.check_output(
        "nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader")
    assert apps.strip(), "no process holds GPU memory after synthesis"
