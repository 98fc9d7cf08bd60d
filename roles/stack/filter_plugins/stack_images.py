"""Image recipes for stack_images_source=build: what each service image is built from
(a Dockerfile, the files of its build context, its build arguments) reduced to one
digest on the controller, which names the image on the host. The same recipe gives the
same tag, so a host builds an image once and again only when the recipe changes
(tests/unit/test_stack_images.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ansible.errors import AnsibleFilterError

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
    repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    return f"{repo}:{tag}-{recipe_hash}" if tag else f"{name}:{recipe_hash}"


class FilterModule:
    def filters(self):
        return {"stack_image_recipe": stack_image_recipe, "stack_image_ref": stack_image_ref,
                "stack_image_plan": stack_image_plan}
