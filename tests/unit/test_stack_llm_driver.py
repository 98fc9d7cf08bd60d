"""The kit's CUDA LLM image is compiled with CUDA 13 (manifest.yml llm_cuda_wheels), which
no driver below the R580 branch runs. roles/stack/tasks/plan.yml (the preflight) refuses
such a host before anything is built, naming the driver and the fixes; it reads the
loaded driver, or else the branch nvidia_driver is told to install."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_decisions
from local_play import run_role_tasks

REPO = Path(__file__).resolve().parents[2]
VARS = yaml.safe_load((REPO / "roles/stack/vars/main.yml").read_text())
WHEELS = yaml.safe_load((REPO / "manifest.yml").read_text())["build_sources"]["llm_cuda_wheels"]

H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
        "memory_used_mib": 0}


def test_the_floor_is_the_driver_gpu_facts_knows_for_the_pinned_compiler():
    nvcc = next(w for w in WHEELS if w["name"] == "nvidia-cuda-nvcc")
    cuda = ".".join(nvcc["version"].split(".")[:2])
    assert VARS["__stack_llm_cuda_min_driver_branch"] == gpu_decisions.CUDA_MIN_DRIVER[cuda][0]


def plan(tmp_path, **settings):
    """roles/stack/tasks/plan.yml, as site.yml's preflight runs it."""
    variables = {"gpu_facts_gpus": [H100], "gpu_facts_nvidia_present": True,
                 "gpu_facts_pci_devices": [], "gpu_facts_driver_version": "",
                 "stack_llm_enabled": True, **settings}
    return run_role_tasks(tmp_path, "stack", "plan", variables)


@pytest.mark.parametrize("settings,named", [
    ({"gpu_facts_driver_version": "570.195.03"}, "runs driver 570.195.03"),
    ({"nvidia_driver_branch": "570"}, "is set to install branch 570"),
    ({"nvidia_driver_branch": 570}, "is set to install branch 570"),
], ids=["loaded-570", "planned-570", "planned-570-as-number"])
def test_an_older_driver_is_refused_naming_it_and_the_fixes(tmp_path, settings, named):
    r = plan(tmp_path, **settings)
    assert r.returncode != 0
    out = r.stdout
    assert named in out and "driver branch 580 or newer" in out
    for fix in ("nvidia_driver_branch to 580", "stack_images_source archive or present",
                "stack_llm_enabled=false"):
        assert fix in out, fix


@pytest.mark.parametrize("settings", [
    {"gpu_facts_driver_version": "580.95.05"},
    {"gpu_facts_driver_version": "590.44.01", "nvidia_driver_branch": "570"},
    {"nvidia_driver_branch": "auto"},
    {},
    {"gpu_facts_driver_version": "570.195.03", "stack_llm_enabled": False},
    {"gpu_facts_driver_version": "570.195.03", "stack_images_source": "present"},
    {"gpu_facts_driver_version": "570.195.03", "stack_device": "cpu"},
], ids=["loaded-580", "loaded-wins-over-planned", "auto", "unset", "no-llm",
        "own-image", "cpu"])
def test_the_check_passes_or_stays_out_of_the_way(tmp_path, settings):
    r = plan(tmp_path, **settings)
    assert r.returncode == 0, r.stdout + r.stderr
