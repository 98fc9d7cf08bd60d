"""Image recipes for stack_images_source=build and registry: what each service image is
built from (a Dockerfile, the files of its build context, its build arguments) reduced to
one digest on the controller, which names the image on the host. The same recipe gives the
same tag, so a host builds an image once and again only when the recipe changes
(tests/unit/test_stack_images.py). The stack role's filters (filter_plugins/stack_images.py)
expose these functions under their own names; only Ansible's controller imports this."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean


def _bool(value) -> bool:
    """An inventory flag as Ansible's `| bool` reads it."""
    return boolean(value, strict=False)


# Not part of any image: interpreter caches and packaging leftovers on the controller.
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIPPED_SUFFIXES = (".pyc", ".egg-info")


def _files(root: Path, entry: str) -> list[str]:
    path = root / entry
    if path.is_file():
        return [entry]
    if not path.is_dir():
        raise AnsibleFilterError(
            f"stack_image_recipe: {path} is missing on the controller; the image's build "
            "context needs it (run the play from a full checkout of the kit)")
    found = []
    for folder, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs
                         if d not in SKIPPED_DIRS and not d.endswith(SKIPPED_SUFFIXES))
        for name in names:
            if not name.endswith(SKIPPED_SUFFIXES):
                found.append((Path(folder) / name).relative_to(root).as_posix())
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stack_image_recipe(spec: dict, root: str, args: dict | None = None,
                       extra: dict | None = None) -> dict:
    """{dockerfile, target, files, extra, args, hash}: `spec` is {dockerfile, context:
    [paths], target (a stage; optional)} relative to `root` (the kit's checkout); `extra`
    maps more context paths to files elsewhere on the controller (the build's extra CA
    certificates). `hash` is 16 hex digits over the Dockerfile's path and target, every
    context file's path and content, and the build arguments."""
    root_path = Path(root).resolve()
    args = {str(k): str(v) for k, v in (spec.get("args") or {} if args is None else args).items()}
    files = sorted({f for entry in spec["context"] for f in _files(root_path, entry)})
    if spec["dockerfile"] not in files:
        raise AnsibleFilterError(
            f"stack_image_recipe: the Dockerfile {spec['dockerfile']} is not in the build "
            f"context {spec['context']}")
    extra = {str(k): str(v) for k, v in (extra or {}).items()}
    for dest, src in extra.items():
        if not Path(src).is_file():
            raise AnsibleFilterError(f"stack_image_recipe: {src} (for {dest}) is not a file "
                                     "on the controller")
    digest = hashlib.sha256()
    target = str(spec.get("target") or "")
    digest.update(f"dockerfile {spec['dockerfile']} target {target}\n".encode())
    for name in files:
        digest.update(f"file {name} {_sha256(root_path / name)}\n".encode())
    for dest in sorted(extra):
        digest.update(f"file {dest} {_sha256(Path(extra[dest]))}\n".encode())
    digest.update(f"args {json.dumps(args, sort_keys=True)}\n".encode())
    return {"dockerfile": spec["dockerfile"], "target": target, "files": files,
            "extra": extra, "args": args, "hash": digest.hexdigest()[:16]}


def stack_image_plan(names: dict, variants: dict, recipes: dict, context_roots: dict,
                     root: str, base_image: str, build_args: dict,
                     extra_ca_files: list) -> dict:
    """{service: {name, ref, variant, context_root, recipe}} for stack_images_source=build:
    each enabled service's image (`names`), the recipe of its variant with the build
    arguments in order of precedence (BASE_IMAGE, the recipe's own, the inventory's
    stack_build_args[variant]) and the extra CA files where the context has their
    folder; `ref` is the name tagged with the recipe's hash."""
    unknown = sorted(set(build_args or {}) - set(recipes))
    if unknown:
        raise AnsibleFilterError(
            f"stack_build_args: {', '.join(unknown)} is not an image recipe; the recipes are "
            f"{', '.join(sorted(recipes))}")
    plan = {}
    for service, name in names.items():
        variant = variants[service]
        spec = recipes[variant]
        args = {"BASE_IMAGE": base_image, **(spec.get("args") or {}),
                **((build_args or {}).get(variant) or {})}
        # The Dockerfiles that take extra CA certificates copy them from an extra-ca folder.
        ca_dirs = [e.rstrip("/") for e in spec["context"] if e.rstrip("/").endswith("/extra-ca")]
        extra = {f"{ca_dirs[0]}/{Path(f).name}": f for f in extra_ca_files or []} if ca_dirs else {}
        recipe = stack_image_recipe(spec, root, args, extra)
        context_root = context_roots[variant].rstrip("/")
        prefix = "" if context_root in ("", ".") else context_root + "/"
        outside = [f for f in [*recipe["files"], *recipe["extra"]] if not f.startswith(prefix)]
        if outside:
            raise AnsibleFilterError(
                f"stack_image_plan: {variant}'s context files {outside} are outside its "
                f"build folder {context_root}")
        recipe["context"] = [f[len(prefix):] for f in recipe["files"]]
        recipe["dockerfile_in_context"] = recipe["dockerfile"][len(prefix):]
        recipe["extra_context"] = {d[len(prefix):]: s for d, s in recipe["extra"].items()}
        plan[service] = {"name": name, "ref": stack_image_ref(name, recipe["hash"]),
                         "variant": variant, "context_root": context_root or ".",
                         "recipe": recipe}
    return plan


def stack_image_ref(name: str, recipe_hash: str) -> str:
    """kokoro-deploy/kokoro:cpu + hash -> kokoro-deploy/kokoro:cpu-<hash>; an untagged
    name gets the hash as its tag."""
    if "@" in name:
        raise AnsibleFilterError(
            f"stack_image_ref: {name} names an image by digest; with stack_images_source=build "
            "name it repository:tag (the kit tags what it builds)")
    repo, tag = _split_tag(name)
    return f"{repo}:{tag}-{recipe_hash}" if tag else f"{name}:{recipe_hash}"


def _split_tag(name: str) -> tuple[str, str]:
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = name.rpartition(":")
        return repo, tag
    return name, ""


def stack_image_push_name(name: str, registry: str, recipe_hash: str) -> str:
    """Where ansible/build_images.yml pushes an image: the registry's path, the name's last
    part, the recipe tag (kokoro-deploy/kokoro:gpu -> <registry>/kokoro:gpu-<hash>)."""
    registry = (registry or "").strip().rstrip("/")
    if not registry or "://" in registry or "@" in registry:
        raise AnsibleFilterError(
            f"stack_image_registry is {registry!r}: set it to the registry's host:port and "
            "path the fleet pulls from, e.g. registry.example.internal:5000/kokoro-deploy "
            "(no scheme)")
    ref = stack_image_ref(name, recipe_hash)
    repo, tag = _split_tag(ref)
    return f"{registry}/{repo.rsplit('/', 1)[-1]}:{tag}"


def stack_image_repo_digest(repo_digests: list, push_name: str) -> str:
    """The pushed image's name by digest (<repo>@sha256:...) from `docker image inspect`'s
    RepoDigests, which list every registry the image was pushed to."""
    repo, _ = _split_tag(push_name)
    found = [d for d in repo_digests or [] if d.split("@", 1)[0] == repo]
    if not found:
        raise AnsibleFilterError(
            f"stack_image_repo_digest: the engine records no digest of {repo} after the push "
            f"(it has {list(repo_digests or [])}); push {push_name} again")
    return found[0]


def stack_image_locked(plan: dict, lock: dict, lock_path: str) -> dict:
    """{service: <repo>@sha256:...} for stack_images_source=registry: each service's image
    as ansible/build_images.yml recorded it in the lock, refused when the lock lacks the
    variant or holds an image built from another recipe (the kit or its build arguments
    changed since the push)."""
    images = (lock or {}).get("images") or {}
    refs = {}
    for service, entry in plan.items():
        variant, recipe = entry["variant"], entry["recipe"]["hash"]
        locked = images.get(variant)
        if not locked:
            raise AnsibleFilterError(
                f"{lock_path} has no {variant} image (for {service}): run "
                "ansible/build_images.yml, which builds and pushes the images the "
                "inventory's hosts need and records them there")
        if locked.get("recipe") != recipe:
            raise AnsibleFilterError(
                f"{lock_path}: the registry's {variant} image was built from recipe "
                f"{locked.get('recipe')}, this checkout's is {recipe} (its Dockerfile, "
                "files or build arguments changed): run ansible/build_images.yml again")
        ref = str(locked.get("ref") or "")
        if "@sha256:" not in ref:
            raise AnsibleFilterError(
                f"{lock_path}: {variant}'s ref {ref!r} is not <repository>@sha256:<digest>; "
                "run ansible/build_images.yml again")
        refs[service] = ref
    return refs


def stack_publish_todo(plan: dict, lock: dict, registry: str) -> dict:
    """The part of a recipe plan ansible/build_images.yml still has to build and push: the
    recipes the lock lacks, or records from another recipe or registry."""
    lock = lock or {}
    images = lock.get("images") or {}
    same_registry = lock.get("registry") == registry

    def locked(entry: dict) -> bool:
        recorded = images.get(entry["variant"]) or {}
        return same_registry and recorded.get("recipe") == entry["recipe"]["hash"]

    return {key: entry for key, entry in plan.items() if not locked(entry)}


def stack_image_lock_update(lock: dict, todo: dict, inspected: list, registry: str) -> dict:
    """The lock after a push, keyed by recipe: each pushed recipe's digest, the image's
    name and its <repo>@sha256 from `docker image inspect --format '{{json .RepoDigests}}'`
    (`inspected`: the registered loop results over `todo | dict2items`); other entries
    kept when the registry is the same, dropped when it changed."""
    lock = lock or {}
    images = dict(lock.get("images") or {}) if lock.get("registry") == registry else {}
    for result in inspected:
        entry = todo[result["item"]["key"]]
        push = stack_image_push_name(entry["name"], registry, entry["recipe"]["hash"])
        images[entry["variant"]] = {
            "recipe": entry["recipe"]["hash"], "image": push,
            "ref": stack_image_repo_digest(json.loads(result["stdout"]), push)}
    return {"registry": registry, "images": images}


def stack_fleet_recipes(hostvars: dict, hosts: list, gpu_hosts: list) -> list:
    """The recipes the inventory's hosts run, for ansible/build_images.yml: a host in
    gpu_hosts (or with stack_device: gpu) runs the GPU variants unless stack_device is cpu;
    the LLM, ComfyUI and the proxy where enabled (the role's defaults: off)."""
    needed = set()
    for host in hosts:
        hv = hostvars[host]
        device = str(hv.get("stack_device", "auto"))
        gpu = device == "gpu" or (device == "auto" and host in gpu_hosts)
        needed.add("kokoro_gpu" if gpu else "kokoro_cpu")
        if _bool(hv.get("stack_llm_enabled", False)):
            needed.add("llm_cuda" if gpu else "llm_cpu")
        if _bool(hv.get("stack_comfyui_enabled", False)):
            needed.add("comfyui")
        if _bool(hv.get("stack_proxy_enabled", False)):
            needed.add("proxy")
    return sorted(needed)
