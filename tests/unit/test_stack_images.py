"""stack_images_source=build: the recipe digest that names each image built on the host
(plugins/module_utils/stack_images.py), and the recipes themselves
(roles/stack/vars/main.yml) against the Dockerfiles they build."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.kokoro.deploy.plugins.module_utils import stack_images as images

REPO = Path(__file__).resolve().parents[2]

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
        # A folder (src/) is copied with whatever of it the recipe's context carries.
        inside = source.endswith("/") and any(c.startswith(path + "/") for c in context)
        assert inside or any(path == c or path.startswith(c + "/") for c in context), (
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


@pytest.mark.parametrize("image,targets", [
    ("kokoro", {"kokoro_cpu": "cpu", "kokoro_gpu": "gpu"}),
    ("llm", {"llm_cpu": "cpu", "llm_cuda": "cuda"}),
])
def test_each_images_variants_are_the_targets_of_one_dockerfile(image, targets):
    dockerfile = (REPO / f"images/{image}/Dockerfile").read_text()
    for variant, target in targets.items():
        assert RECIPES[variant]["dockerfile"] == f"images/{image}/Dockerfile"
        assert RECIPES[variant]["target"] == target
        assert re.search(rf"^FROM \S+ AS {target}$", dockerfile, re.M)


def test_the_cuda_llm_recipe_builds_from_the_wheels_folder_with_no_nvidia_image():
    """fetch-source.sh --cuda fills images/llm/src/cuda with the manifest's wheels; the
    recipe carries that folder and builds on the kit's Debian base, not nvidia/cuda."""
    recipe = RECIPES["llm_cuda"]
    assert "images/llm/src/cuda" in recipe["context"]
    assert recipe["args"]["GGML_CUDA"] == "ON"
    assert not {"BUILD_IMAGE", "BASE_IMAGE"} & set(recipe["args"])
    assert "images/llm/src/cuda" not in RECIPES["llm_cpu"]["context"]


# ------------------------------------------------- a fleet: build once, pull by digest

REGISTRY = "registry.example.internal:5000/kokoro-deploy"
DIGEST = "sha256:" + "ab" * 32


def app_plan(kit):
    recipes = {"app_cpu": {**SPEC, "args": {}}}
    return images.stack_image_plan(
        {"app": "kit/app:cpu"}, {"app": "app_cpu"}, recipes, {"app_cpu": "images/app"},
        str(kit), "base", {}, [])


@pytest.mark.parametrize(("name", "pushed"), [
    ("kokoro-deploy/kokoro:gpu", f"{REGISTRY}/kokoro:gpu-0123456789abcdef"),
    ("kokoro-deploy/proxy", f"{REGISTRY}/proxy:0123456789abcdef"),
    ("localhost:5000/x/llm:cuda", f"{REGISTRY}/llm:cuda-0123456789abcdef"),
])
def test_the_pushed_name_is_the_registry_path_the_image_and_its_recipe_tag(name, pushed):
    assert images.stack_image_push_name(name, REGISTRY + "/", "0123456789abcdef") == pushed


@pytest.mark.parametrize("registry", ["", "https://registry.example.internal", "r@sha256:00"])
def test_a_registry_that_is_not_host_and_path_is_named(registry):
    with pytest.raises(AnsibleFilterError, match="stack_image_registry"):
        images.stack_image_push_name("kit/app:cpu", registry, "0123456789abcdef")


def test_the_digest_is_the_one_of_the_registry_pushed_to():
    digests = [f"mirror.example.internal/kokoro@{'sha256:' + 'cd' * 32}",
               f"{REGISTRY}/kokoro@{DIGEST}"]
    pushed = f"{REGISTRY}/kokoro:gpu-0123456789abcdef"
    assert images.stack_image_repo_digest(digests, pushed) == f"{REGISTRY}/kokoro@{DIGEST}"
    with pytest.raises(AnsibleFilterError, match=r"push \S+ again"):
        images.stack_image_repo_digest(digests[:1], pushed)


def pushed_lock(plan, lock=None, registry=REGISTRY):
    """The lock after publishing `plan` as ansible/build_images.yml does, its inspect
    results as Ansible registers them."""
    todo = images.stack_publish_todo(plan, lock, registry)
    inspected = [{"item": {"key": key, "value": entry},
                  "stdout": json.dumps([f"{registry}/app@{DIGEST}"])}
                 for key, entry in todo.items()]
    return todo, images.stack_image_lock_update(lock, todo, inspected, registry)


def test_publishing_records_each_recipe_and_a_second_run_has_nothing_to_do(kit):
    plan = app_plan(kit)
    todo, lock = pushed_lock(plan)
    assert list(todo) == ["app"]
    recipe = plan["app"]["recipe"]["hash"]
    assert lock == {"registry": REGISTRY, "images": {"app_cpu": {
        "recipe": recipe, "image": f"{REGISTRY}/app:cpu-{recipe}",
        "ref": f"{REGISTRY}/app@{DIGEST}"}}}
    assert images.stack_publish_todo(plan, lock, REGISTRY) == {}


def test_a_changed_recipe_or_another_registry_is_published_again(kit):
    plan = app_plan(kit)
    _, lock = pushed_lock(plan)
    (kit / "images/app/src/pkg/main.py").write_text("print('changed')\n")
    assert list(images.stack_publish_todo(app_plan(kit), lock, REGISTRY)) == ["app"]
    other = "registry2.example.internal/kd"
    assert list(images.stack_publish_todo(plan, lock, other)) == ["app"]
    _, moved = pushed_lock(plan, lock, other)
    assert moved["registry"] == other and moved["images"]["app_cpu"]["ref"].startswith(other)


def test_a_host_runs_each_service_by_the_digest_the_lock_records(kit):
    plan = app_plan(kit)
    _, lock = pushed_lock(plan)
    assert images.stack_image_locked(plan, lock, "lock.yml") == {"app": f"{REGISTRY}/app@{DIGEST}"}


def test_a_lock_without_the_recipe_or_from_another_recipe_stops_the_host(kit):
    plan = app_plan(kit)
    with pytest.raises(AnsibleFilterError,
                       match=r"lock\.yml has no app_cpu image .*build_images\.yml"):
        images.stack_image_locked(plan, {"images": {}}, "lock.yml")
    _, lock = pushed_lock(plan)
    (kit / "images/app/Dockerfile").write_text("FROM base\nCOPY src /srv\n")
    changed = app_plan(kit)
    old, new = plan["app"]["recipe"]["hash"], changed["app"]["recipe"]["hash"]
    with pytest.raises(AnsibleFilterError, match=f"recipe {old}, this checkout's is {new}"):
        images.stack_image_locked(changed, lock, "lock.yml")
    lock["images"]["app_cpu"]["ref"] = f"{REGISTRY}/app:cpu"
    with pytest.raises(AnsibleFilterError, match="not <repository>@sha256"):
        images.stack_image_locked(plan, lock, "lock.yml")


def test_the_fleet_builds_the_variants_its_hosts_run():
    hostvars = {
        "gpu-1": {"stack_llm_enabled": True, "stack_proxy_enabled": "true"},
        "gpu-2": {"stack_device": "cpu"},
        "cpu-1": {"stack_comfyui_enabled": False},
    }
    assert images.stack_fleet_recipes(hostvars, list(hostvars), ["gpu-1", "gpu-2"]) == [
        "kokoro_cpu", "kokoro_gpu", "llm_cuda", "proxy"]
    assert images.stack_fleet_recipes({"c": {"stack_device": "gpu", "stack_comfyui_enabled": True}},
                                      ["c"], []) == ["comfyui", "kokoro_gpu"]


def test_the_fleet_recipes_default_what_the_role_defaults():
    """stack_fleet_recipes reads hostvars, which lack the role's defaults: its fallbacks
    must be those defaults."""
    defaults = yaml.safe_load((REPO / "roles/stack/defaults/main.yml").read_text())
    assert defaults["stack_device"] == "auto"
    for flag in ("stack_llm_enabled", "stack_comfyui_enabled", "stack_proxy_enabled"):
        assert defaults[flag] is False, flag


def test_every_recipe_names_the_image_the_stack_runs_for_it():
    assert set(VARS["__stack_recipe_images"]) == set(RECIPES)
    assert set(VARS["__stack_recipe_images"]) == set(VARS["__stack_image_context_root"])


def test_the_webui_recipe_builds_the_manifests_open_webui_as_its_dockerfile_defaults_say():
    pinned = MANIFEST["build_sources"]["open_webui"]
    dockerfile = (REPO / "images/webui/Dockerfile").read_text()
    defaults = dict(re.findall(r"^ARG (OPEN_WEBUI_\w+)=(\S+)$", dockerfile, re.M))
    assert defaults == {"OPEN_WEBUI_VERSION": pinned["version"],
                        "OPEN_WEBUI_SHA256": pinned["sha256"]}
    assert pinned["file"] == f"open_webui-{pinned['version']}-py3-none-any.whl"
    args = RECIPES["webui"]["args"]
    assert "build_sources.open_webui.version" in args["OPEN_WEBUI_VERSION"]
    assert "build_sources.open_webui.sha256" in args["OPEN_WEBUI_SHA256"]
