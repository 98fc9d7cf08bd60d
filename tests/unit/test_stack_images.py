"""stack_images_source=build: the recipe digest that names each image built on the host
(roles/stack/filter_plugins/stack_images.py), and the recipes themselves
(roles/stack/vars/main.yml) against the Dockerfiles they build."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "stack_images", REPO / "roles/stack/filter_plugins/stack_images.py")
images = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(images)

VARS = yaml.safe_load((REPO / "roles/stack/vars/main.yml").read_text())
MANIFEST = yaml.safe_load((REPO / "manifest.yml").read_text())
RECIPES = VARS["__stack_image_recipes"]


def context_of(variant: str) -> list[str]:
    """A recipe's context paths, its Jinja resolved as the role resolves it."""
    context = RECIPES[variant]["context"]
    if context == "{{ __stack_kokoro_context }}":
        context = VARS["__stack_kokoro_context"]
    version = MANIFEST["versions"]["llama_cpp_python"]
    sdist = VARS["__stack_llm_sdist"].replace(
        "{{ __stack_manifest_versions.llama_cpp_python }}", version)
    return [sdist if c == "{{ __stack_llm_sdist }}" else c for c in context]


@pytest.fixture()
def kit(tmp_path) -> Path:
    """A small kit: one image folder with a Dockerfile, a source tree and a CA folder."""
    (tmp_path / "images/app/src/pkg/__pycache__").mkdir(parents=True)
    (tmp_path / "images/app/extra-ca").mkdir()
    (tmp_path / "images/app/Dockerfile").write_text("FROM base\nCOPY src /src\n")
    (tmp_path / "images/app/src/pkg/main.py").write_text("print('hi')\n")
    (tmp_path / "images/app/src/pkg/__pycache__/main.cpython-311.pyc").write_bytes(b"\0")
    return tmp_path


SPEC = {"dockerfile": "images/app/Dockerfile",
        "context": ["images/app/Dockerfile", "images/app/src"]}


def test_the_same_recipe_gives_the_same_digest_and_caches_are_not_part_of_it(kit):
    first = images.stack_image_recipe(SPEC, str(kit), {"A": "1"})
    (kit / "images/app/src/pkg/__pycache__/other.pyc").write_bytes(b"\1")
    again = images.stack_image_recipe(SPEC, str(kit), {"A": "1"})
    assert first == again
    assert first["files"] == ["images/app/Dockerfile", "images/app/src/pkg/main.py"]
    assert re.fullmatch(r"[0-9a-f]{16}", first["hash"])


@pytest.mark.parametrize("change", ["content", "new file", "argument", "dockerfile", "target"])
def test_any_change_to_the_recipe_changes_the_digest(kit, change):
    before = images.stack_image_recipe(SPEC, str(kit), {"A": "1"})["hash"]
    spec, args = SPEC, {"A": "1"}
    if change == "content":
        (kit / "images/app/src/pkg/main.py").write_text("print('bye')\n")
    elif change == "new file":
        (kit / "images/app/src/pkg/more.py").write_text("")
    elif change == "argument":
        args = {"A": "2"}
    elif change == "target":
        spec = {**SPEC, "target": "gpu"}
    else:
        (kit / "images/app/Dockerfile.slim").write_text("FROM base\nCOPY src /src\n")
        spec = {"dockerfile": "images/app/Dockerfile.slim",
                "context": [*SPEC["context"], "images/app/Dockerfile.slim"]}
    assert images.stack_image_recipe(spec, str(kit), args)["hash"] != before


def test_a_missing_context_path_is_named(kit):
    spec = {**SPEC, "context": [*SPEC["context"], "images/app/wheels"]}
    with pytest.raises(AnsibleFilterError, match="images/app/wheels is missing"):
        images.stack_image_recipe(spec, str(kit))


def test_a_dockerfile_outside_its_context_is_refused(kit):
    with pytest.raises(AnsibleFilterError, match="not in the build context"):
        images.stack_image_recipe({**SPEC, "context": ["images/app/src"]}, str(kit))


@pytest.mark.parametrize("name,ref", [
    ("kokoro-deploy/kokoro:cpu", "kokoro-deploy/kokoro:cpu-0123456789abcdef"),
    ("registry.example:5000/kokoro", "registry.example:5000/kokoro:0123456789abcdef"),
    ("registry.example:5000/kokoro:gpu", "registry.example:5000/kokoro:gpu-0123456789abcdef"),
])
def test_the_tag_carries_the_digest(name, ref):
    assert images.stack_image_ref(name, "0123456789abcdef") == ref


def test_an_image_named_by_digest_cannot_be_built():
    with pytest.raises(AnsibleFilterError, match="by digest"):
        images.stack_image_ref("kokoro@sha256:" + "0" * 64, "0123456789abcdef")


def plan(kit, build_args=None, extra_ca=(), context_root="images/app"):
    recipes = {"app_cpu": {**SPEC, "context": [*SPEC["context"], "images/app/extra-ca"],
                           "args": {"BASE_IMAGE": "recipe-base", "X": "recipe"}}}
    return images.stack_image_plan(
        {"app": "kit/app:cpu"}, {"app": "app_cpu"}, recipes, {"app_cpu": context_root},
        str(kit), "inventory-base", build_args or {}, list(extra_ca))["app"]


def test_build_arguments_stack_in_order_kit_base_recipe_inventory(kit):
    assert plan(kit)["recipe"]["args"] == {"BASE_IMAGE": "recipe-base", "X": "recipe"}
    mine = plan(kit, {"app_cpu": {"X": "mine"}})["recipe"]["args"]
    assert mine == {"BASE_IMAGE": "recipe-base", "X": "mine"}


def test_an_unknown_recipe_in_the_build_arguments_is_named(kit):
    with pytest.raises(AnsibleFilterError, match="app_gpu is not an image recipe"):
        plan(kit, {"app_gpu": {"X": "1"}})


def test_paths_in_the_context_are_relative_to_the_build_folder(kit):
    entry = plan(kit)
    assert entry["recipe"]["context"] == ["Dockerfile", "src/pkg/main.py"]
    assert entry["recipe"]["dockerfile_in_context"] == "Dockerfile"
    assert entry["ref"] == f"kit/app:cpu-{entry['recipe']['hash']}"


def test_extra_ca_files_join_the_context_and_the_digest(kit, tmp_path_factory):
    ca = tmp_path_factory.mktemp("ca") / "corp.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nA\n")
    with_ca = plan(kit, extra_ca=[ca])
    assert with_ca["recipe"]["extra_context"] == {"extra-ca/corp.crt": str(ca)}
    assert with_ca["recipe"]["hash"] != plan(kit)["recipe"]["hash"]
    ca.write_text("-----BEGIN CERTIFICATE-----\nB\n")
    assert plan(kit, extra_ca=[ca])["recipe"]["hash"] != with_ca["recipe"]["hash"]


def test_a_context_file_outside_the_build_folder_is_refused(kit):
    with pytest.raises(AnsibleFilterError, match="outside its build folder"):
        plan(kit, context_root="images/other")


# The kit's own recipes.

def copy_sources(dockerfile: Path) -> set[str]:
    """The paths a Dockerfile COPYs from its build context (not --from a stage)."""
    sources = set()
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources.update(w for w in words[1:-1] if not w.startswith("--"))
    return sources


@pytest.mark.parametrize("variant", sorted(RECIPES))
def test_each_recipe_holds_everything_its_dockerfile_copies(variant):
    recipe = RECIPES[variant]
    root = VARS["__stack_image_context_root"][variant]
    prefix = "" if root == "." else root + "/"
    version = MANIFEST["versions"]["llama_cpp_python"]
    context = [c.rstrip("/") for c in context_of(variant)]
    for source in copy_sources(REPO / recipe["dockerfile"]):
        path = prefix + source.replace("${LLAMA_CPP_PYTHON_VERSION}", version).rstrip("/")
        assert any(path == c or path.startswith(c + "/") for c in context), (
            f"{variant}: {recipe['dockerfile']} copies {source}")
    assert recipe["dockerfile"] in context and all(c.startswith(prefix) for c in context)


def test_the_kits_recipes_cover_every_image_variant_the_stack_runs():
    variants = VARS["__stack_image_variant"]
    named = {v for value in variants.values() for v in re.findall(r"'(\w+)'", value) or [value]}
    assert named == set(RECIPES) == set(VARS["__stack_image_context_root"])


def test_the_kokoro_cpu_recipe_digest_is_computed_from_the_checkout(tmp_path):
    """The real recipe on a copy of the kit: the digest changes with a source file."""
    for entry in context_of("kokoro_cpu"):
        src, dest = REPO / entry, tmp_path / entry
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, dest)
    spec = {**RECIPES["kokoro_cpu"], "context": context_of("kokoro_cpu"), "args": {}}
    before = images.stack_image_recipe(spec, str(tmp_path))
    assert "images/kokoro/src/kokoro_server/app.py" in before["files"]
    (tmp_path / "images/kokoro/src/kokoro_server/app.py").write_text("# changed\n")
    assert images.stack_image_recipe(spec, str(tmp_path))["hash"] != before["hash"]


def test_the_kokoro_images_are_the_two_targets_of_one_dockerfile():
    dockerfile = (REPO / "images/kokoro/Dockerfile").read_text()
    for variant, target in (("kokoro_cpu", "cpu"), ("kokoro_gpu", "gpu")):
        assert RECIPES[variant]["dockerfile"] == "images/kokoro/Dockerfile"
        assert RECIPES[variant]["target"] == target
        assert re.search(rf"^FROM \S+ AS {target}$", dockerfile, re.M)
