"""torch_runtime: the host venv holds a torch whose CUDA build matches the host (CPU
build without an NVIDIA GPU; on a GPU host one with kernels for every card, computing
on each), and kokoro, misaki and soundfile import beside it.

The venv is opt-in (torch_runtime_enabled: true): run these checks against hosts that
have it on. Runs from Molecule against test hosts and against real hosts
(tests/acceptance/README.md). Set KOKORO_TORCH_VENV when the venv is not at the role's
default path.
"""

import json
import os

import pytest

VENV = os.environ.get("KOKORO_TORCH_VENV", "/opt/kokoro/venv")
PY = f"{VENV}/bin/python"


def _nvidia_gpus(host) -> int:
    smi = host.run("nvidia-smi --query-gpu=name --format=csv,noheader")
    return len(smi.stdout.strip().splitlines()) if smi.rc == 0 else 0


@pytest.fixture(scope="module")
def report(host):
    assert host.file(PY).exists, (
        f"{PY} missing: run the torch_runtime role with torch_runtime_enabled: true "
        "(it is off by default), or leave this host out of these checks")
    out = host.check_output(f"{PY} {VENV}/bin/kokoro-torch-check")
    return json.loads(out)


def test_torch_build_matches_the_host(host, report):
    if _nvidia_gpus(host) == 0:
        assert report["cuda"] is None, (
            f"no NVIDIA GPU here but torch {report['torch_version']} is a CUDA build: "
            "it wastes ~3 GB; rerun torch_runtime (plan: cpu)"
        )
        assert report["torch_version"].endswith("+cpu") or report["cuda"] is None
    else:
        assert report["cuda"], f"GPU host with a CPU-only torch {report['torch_version']}"


def test_torch_runs_on_every_gpu(host, report):
    count = _nvidia_gpus(host)
    if count == 0:
        pytest.skip("no NVIDIA GPU on this host (nvidia-smi finds none)")
    assert report["cuda_available"], report["error"]
    assert report["device_count"] == count
    assert report["gpu_ops"] == [True] * count, report["error"]


def test_torch_arch_list_covers_every_gpu(host, report):
    if _nvidia_gpus(host) == 0:
        pytest.skip("no NVIDIA GPU on this host (nvidia-smi finds none)")
    caps = host.check_output(
        "nvidia-smi --query-gpu=compute_cap --format=csv,noheader").split()
    for cap in caps:
        major, minor = (int(x) for x in cap.split("."))
        sass = [a for a in report["arch_list"] if a.startswith("sm_")]
        ok = any(
            int(a[3:-1]) == major and int(a[-1]) <= minor for a in sass
        ) or any(
            a.startswith("compute_") and (int(a[8:-1]), int(a[-1])) <= (major, minor)
            for a in report["arch_list"]
        )
        assert ok, f"torch arch list {report['arch_list']} has no code for sm_{major}{minor}"


def test_cpu_tensor_op_and_kokoro_stack_import(host):
    code = (
        "import torch, kokoro, misaki, soundfile, importlib.metadata as m;"
        "a = torch.ones(8, 8); assert float((a @ a).sum()) == 512.0;"
        "print(m.version(\"kokoro\"))"
    )
    version = host.check_output(f"{PY} -c '{code}'").strip()
    major, minor, *_ = (int(x) for x in version.split("."))
    assert (major, minor) >= (0, 9), f"kokoro {version} is older than 0.9.2"


def test_soundfile_writes_24khz_wav(host):
    code = (
        "import numpy as np, soundfile as sf, io;"
        "b = io.BytesIO(); sf.write(b, np.zeros(2400, dtype='float32'), 24000, format='WAV');"
        "b.seek(0); d, sr = sf.read(b); print(sr, len(d))"
    )
    assert host.check_output(f"{PY} -c \"{code}\"").split() == ["24000", "2400"]
