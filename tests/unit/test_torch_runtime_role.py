"""torch_runtime run for real by ansible-playbook on this machine (nothing is installed:
each case ends before the first install task). Off by default, it installs nothing and
says so in one line; on, a host it cannot serve fails before anything is installed,
with a message naming the problem and the fix."""

import subprocess
from pathlib import Path

from local_play import run_local_play

PLAY = """
- hosts: localhost
  gather_facts: true
  roles:
    - role: torch_runtime
"""
# An RTX 5090 on a 580 driver: the plan is cu130, which the default pip index never had.
RTX5090_PCI = "0000:01:00.0 0x10de 0x2b85 0x030000"
RTX5090_SMI = "NVIDIA GeForce RTX 5090, 32607, 0, 580.95.05, 12.0"
# The first task that changes the host (tasks/setup-Debian.yml).
FIRST_INSTALL_TASK = "Ensure venv support for the system Python is installed."


def run(tmp_path: Path, **extra) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(PLAY)
    variables = {
        "gpu_facts_write_local_facts": False,
        "gpu_facts_test_seam_pci_devices": "",
        "gpu_facts_test_seam_nvidia_smi": "",
        "torch_runtime_venv": str(tmp_path / "venv"),
        **extra,
    }
    return run_local_play(tmp_path / "play.yml", variables)


def python_reporting(tmp_path: Path, version: str) -> str:
    """An interpreter stand-in that answers the role's version probe with `version`."""
    fake = tmp_path / f"python{version}"
    fake.write_text(f"#!/bin/sh\necho {version}\n")
    fake.chmod(0o755)
    return str(fake)


def test_disabled_default_installs_nothing_and_says_so(tmp_path):
    result = run(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torch_runtime is off: nothing installed" in result.stdout
    assert "torch_runtime_enabled: true" in result.stdout
    role_tasks = [line.removeprefix("TASK [torch_runtime : ").rstrip("] *")
                  for line in result.stdout.splitlines()
                  if line.startswith("TASK [torch_runtime : ") and "arg spec" not in line]
    assert role_tasks == [  # the one debug line, and the install left out
        "Leave the host out of the PyTorch venv (torch_runtime_enabled is false).",
        "Ensure the host venv holds the planned torch build, kokoro, misaki and soundfile.",
    ]
    assert "skipping: [localhost]" in result.stdout.split(role_tasks[1])[1].split("TASK")[0]
    assert "changed=0" in result.stdout and "failed=0" in result.stdout
    assert not (tmp_path / "venv").exists()


def test_enabled_on_python_313_fails_before_installing_naming_the_fix(tmp_path):
    result = run(
        tmp_path,
        torch_runtime_enabled=True,
        torch_runtime_python=python_reporting(tmp_path, "3.13"),
        gpu_facts_test_seam_pci_devices=RTX5090_PCI,
        gpu_facts_test_seam_nvidia_smi=RTX5090_SMI,
    )
    out = result.stdout
    assert result.returncode != 0
    # The cu130 plan has a source with nothing configured: PyTorch's own index.
    assert "torch==2.9.1+cu130" in out and "https://download.pytorch.org/whl/cu130" in out
    assert "is Python 3.13" in out and "< 3.13" in out
    assert "set torch_runtime_python to a 3.10-3.12" in out
    assert "torch_runtime_enabled false" in out
    assert FIRST_INSTALL_TASK not in out
    assert not (tmp_path / "venv").exists()


def test_enabled_with_no_torch_source_fails_before_installing_naming_the_fix(tmp_path):
    result = run(
        tmp_path,
        torch_runtime_enabled=True,
        torch_runtime_index_base_url="",
        torch_runtime_python=python_reporting(tmp_path, "3.11"),
    )
    out = result.stdout
    assert result.returncode != 0
    assert "no source for torch 2.9.1+cpu" in out
    assert "https://download.pytorch.org/whl" in out and "torch_runtime_wheelhouse_src" in out
    assert FIRST_INSTALL_TASK not in out
    assert not (tmp_path / "venv").exists()


def test_enabled_with_a_missing_interpreter_fails_naming_it(tmp_path):
    missing = str(tmp_path / "no-such-python3.12")
    result = run(tmp_path, torch_runtime_enabled=True, torch_runtime_python=missing)
    assert result.returncode != 0
    assert f"{missing} is not a working interpreter" in result.stdout
    assert FIRST_INSTALL_TASK not in result.stdout
