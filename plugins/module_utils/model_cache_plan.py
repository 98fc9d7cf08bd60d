"""The model_cache role's plan: which manifest artifacts a host needs, and where each
comes from. Pure functions, standard library only: roles/model_cache's filters
(filter_plugins/model_cache.py) and tools/bundle.py import them, and
tests/unit/test_model_cache_plan.py covers them."""

from __future__ import annotations

# Which manifest groups each Kokoro engine needs besides the voices.
ENGINE_GROUPS = {
    "onnx": ["kokoro", "kokoro-onnx"],
    "torch": ["kokoro", "kokoro-torch"],
}
SOURCES = ("upstream", "mirror", "bundle")


class PlanError(ValueError):
    pass


def select_artifacts(manifest, engines, voices, extra_groups=(), extra_names=()):
    """The manifest's artifacts this host needs, in manifest order.

    engines: Kokoro engines served ("onnx", "torch"); voices: voice ids or ["all"];
    extra_groups: more manifest groups (e.g. "spacy"); extra_names: artifact names."""
    artifacts = manifest["artifacts"]
    unknown_engines = sorted(set(engines) - set(ENGINE_GROUPS))
    if unknown_engines:
        raise PlanError(
            f"unknown Kokoro engine(s) {unknown_engines}; choose from {sorted(ENGINE_GROUPS)}"
        )
    groups = {g for e in engines for g in ENGINE_GROUPS[e]} | set(extra_groups)
    known_groups = {a["group"] for a in artifacts}
    unknown_groups = sorted(set(extra_groups) - known_groups)
    if unknown_groups:
        raise PlanError(
            f"manifest has no artifact group(s) {unknown_groups}; it has {sorted(known_groups)}"
        )
    stock = {a["voice"]["id"] for a in artifacts if a["group"] == "voices"}
    wanted_voices = stock if "all" in voices else set(voices)
    unknown_voices = sorted(wanted_voices - stock)
    if unknown_voices:
        raise PlanError(
            f"unknown voice(s) {unknown_voices}; the manifest lists {len(stock)} stock voices "
            f"such as {sorted(stock)[:4]}"
        )
    names = {a["name"] for a in artifacts}
    unknown_names = sorted(set(extra_names) - names)
    if unknown_names:
        raise PlanError(f"manifest has no artifact(s) named {unknown_names}")
    chosen = []
    for a in artifacts:
        wanted = (
            a["voice"]["id"] in wanted_voices if a["group"] == "voices" else a["group"] in groups
        )
        if wanted or a["name"] in extra_names:
            chosen.append(a)
    return chosen


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def upstream_url(artifact, hf_endpoint="https://huggingface.co"):
    src = artifact["source"]
    if src["type"] == "huggingface":
        return _join(hf_endpoint, f"{src['repo']}/resolve/{src['revision']}/{src['file']}")
    if src["type"] == "url":
        return src["url"]
    raise PlanError(f"{artifact['name']}: unknown source type {src['type']!r} in the manifest")


def plan_sources(artifacts, source="upstream", mirror_url="", overrides=None,
                 hf_endpoint="https://huggingface.co", bundle_dir=""):
    """Each artifact as the fetch module wants it: path, sha256, size, and either a url
    or from_bundle (a path relative to the bundle folder), plus name and source kind.

    source: the global choice; overrides: {artifact name: "upstream" | "mirror" |
    "bundle" | a full http(s) URL for that one file}."""
    overrides = dict(overrides or {})
    names = {a["name"] for a in artifacts}
    stray = sorted(set(overrides) - names)
    if stray:
        raise PlanError(
            f"model_cache_source_overrides names artifact(s) {stray} that are not selected"
        )
    planned = []
    for a in artifacts:
        # Companions' mirror is an HF mirror (hf_endpoint): a plain mirror holds Kokoro's.
        default = "upstream" if "companion" in a and source == "mirror" else source
        choice = overrides.get(a["name"], default)
        if not a["sha256"] and choice != "upstream":
            raise PlanError(
                f"{a['name']} ({a['path']}) has no sha256 in manifest.yml or the lock file, so "
                f"a {choice if choice in SOURCES else 'URL'} copy cannot be checked: fetch it "
                "once from Hugging Face (model_cache_source_overrides: {"
                f"{a['name']}: upstream}}) so that its digest is locked, or pin it"
            )
        entry = {
            "name": a["name"],
            "path": a["path"],
            "sha256": a["sha256"],
            "size": a.get("size"),
            "huggingface": False,
        }
        if choice.startswith(("http://", "https://")):
            entry.update(kind="url", url=choice)
        elif choice == "upstream":
            entry.update(
                kind="upstream",
                url=upstream_url(a, hf_endpoint),
                huggingface=a["source"]["type"] == "huggingface",
            )
            if "companion" in a:
                # A companion's digest is pinned, locked, or learned from Hugging Face's
                # metadata at the revision (model_cache_lock.py).
                src = a["source"]
                entry["hf"] = {"endpoint": hf_endpoint, "repo": src["repo"],
                               "file": src["file"], "revision": src["revision"]}
                if a.get("pinned_by") not in (None, "manifest.yml"):
                    entry["lock"] = a["pinned_by"]
        elif choice == "mirror":
            if not mirror_url:
                raise PlanError(
                    f"{a['name']} is to come from the mirror but model_cache_mirror_url is "
                    "empty; set it to the mirror's base URL (a tree with the cache's layout)"
                )
            entry.update(kind="mirror", url=_join(mirror_url, a["path"]))
        elif choice == "bundle":
            if not bundle_dir:
                raise PlanError(
                    f"{a['name']} is to come from the bundle but model_cache_bundle_dir is "
                    "empty; set it to a folder on the controller with the cache's layout"
                )
            entry.update(kind="bundle", bundle_path=a["path"])
        else:
            raise PlanError(
                f"{a['name']}: source {choice!r} is not one of {list(SOURCES)} or an http(s) URL"
            )
        planned.append(entry)
    return planned


def cache_index(artifacts):
    """What the cache holds, for the services that mount it: name, path, sha256, size."""
    keys = ("name", "path", "group", "sha256", "size", "voice")
    return {
        "schema_version": 1,
        "artifacts": [{k: a[k] for k in keys if k in a} for a in artifacts],
    }
