"""torch_runtime's torch source: PyTorch's wheel index is the default, every flavour the
plan can pick has an index URL with nothing to look up, and a mirror differs from it only
in scheme and host. The expressions are the role's own (vars/main.yml), rendered with
its defaults (defaults/main.yml)."""

from pathlib import Path
from urllib.parse import urlsplit

import jinja2
import pytest
import yaml
from ansible_collections.kokoro.deploy.plugins.module_utils import gpu_decisions as kg

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "torch_runtime"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())

MIRROR_BASE = "http://pytorch-mirror.example.internal:8080/whl/"


def render(name: str, flavour: str = "cpu", **overrides) -> str:
    variables = {**DEFAULTS, "__torch_runtime_plan": {"flavour": flavour}, **overrides}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return env.from_string(VARS[name]).render(variables).strip()


def test_default_source_is_pytorchs_wheel_index():
    assert DEFAULTS["torch_runtime_index_base_url"] == "https://download.pytorch.org/whl"
    assert DEFAULTS["torch_runtime_index_url"] == ""
    assert DEFAULTS["torch_runtime_wheelhouse_src"] == ""
    assert render("__torch_runtime_source") == "index"


@pytest.mark.parametrize("flavour", kg.FLAVOURS)
def test_every_flavour_has_an_index_and_a_mirror_differs_only_in_scheme_and_host(flavour):
    upstream = urlsplit(render("__torch_runtime_index", flavour))
    mirror = urlsplit(
        render("__torch_runtime_index", flavour, torch_runtime_index_base_url=MIRROR_BASE)
    )
    assert upstream.geturl() == f"https://download.pytorch.org/whl/{flavour}"
    assert (mirror.path, mirror.query, mirror.fragment) == (
        upstream.path, upstream.query, upstream.fragment)
    assert (mirror.scheme, mirror.netloc) != (upstream.scheme, upstream.netloc)


@pytest.mark.parametrize("flavour", kg.FLAVOURS)
def test_an_explicit_index_url_is_used_as_given(flavour):
    explicit = "https://pypi.example.internal/pytorch-cu128/simple"
    assert render("__torch_runtime_index", flavour, torch_runtime_index_url=explicit) == explicit


def test_requirement_names_the_planned_build_by_its_local_label():
    assert render("__torch_runtime_requirement", "cu130") == (
        f"torch=={DEFAULTS['torch_runtime_torch_version']}+cu130")


@pytest.mark.parametrize(
    ("overrides", "source"),
    [
        ({"torch_runtime_wheelhouse_src": "/srv/wheels"}, "wheelhouse"),
        ({"torch_runtime_index_url": "https://mirror/whl/cu128"}, "index"),
        ({"torch_runtime_index_base_url": MIRROR_BASE}, "index"),
        ({"torch_runtime_index_base_url": "", "torch_runtime_index_url": ""}, "none"),
    ],
)
def test_source_first_match_wins(overrides, source):
    assert render("__torch_runtime_source", **overrides) == source
