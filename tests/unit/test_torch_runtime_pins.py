"""torch_runtime and nvidia_driver take their pins from manifest.yml (one source of truth):
the role defaults must name the same versions, and every flavour the roles accept must
be one the decision module knows."""

from pathlib import Path

import yaml
from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_decisions as kg

REPO = Path(__file__).resolve().parents[2]
MANIFEST = yaml.safe_load((REPO / "manifest.yml").read_text())["versions"]


def _yaml(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())


def test_torch_runtime_defaults_match_the_manifest():
    defaults = _yaml("roles/torch_runtime/defaults/main.yml")
    assert defaults["torch_runtime_torch_version"] == MANIFEST["torch"]
    packages = defaults["torch_runtime_packages"]
    assert f"kokoro=={MANIFEST['kokoro']}" in packages
    assert f"misaki[en]=={MANIFEST['misaki']}" in packages


def test_torch_runtime_flavour_choices_are_the_decision_module_flavours():
    spec = _yaml("roles/torch_runtime/meta/argument_specs.yml")
    choices = spec["argument_specs"]["main"]["options"]["torch_runtime_flavour"]["choices"]
    assert choices == ["auto", *kg.FLAVOURS]


def test_pinned_torch_has_a_wheel_table_and_blackwell_gets_the_manifest_flavour():
    assert kg.torch_minor(MANIFEST["torch"]) in kg.TORCH_WHEELS
    rtx5090 = kg.parse_nvidia_smi("NVIDIA GeForce RTX 5090, 32607, 0, 570.195.03, 12.0")
    plan = kg.plan_torch_flavour(MANIFEST["torch"], rtx5090)
    assert plan["flavour"] == MANIFEST["torch_cuda_flavour_blackwell"]


def test_nvidia_driver_default_branch_is_the_manifest_branch():
    for vars_file in sorted((REPO / "roles" / "nvidia_driver" / "vars").glob("*.yml")):
        data = yaml.safe_load(vars_file.read_text())
        assert str(data["__nvidia_driver_nvidia_default_branch"]) == MANIFEST[
            "nvidia_driver_branch"], vars_file.name
