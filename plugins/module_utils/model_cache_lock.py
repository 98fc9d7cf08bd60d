"""Companion models (manifest.yml's `companions:`) and the controller-side lock file
that pins what Hugging Face declared for them on first use.

Where manifest.yml pins no sha256 for a companion file, the first host to fetch it takes
the digest Hugging Face declares at the revision (its LFS metadata), checks the download
against it, and the controller records {repo, file, revision, commit, size, sha256} in
the lock. From then on every host, tools/bundle.py and the bundle's verify use the
lock's commit and digest: trust on first use. A digest pinned in manifest.yml always
wins over the lock. Pure functions, standard library only: roles/model_cache's filters
(filter_plugins/model_cache_lock.py), the stack role's model checks (stack_models.py)
and tools/bundle.py import them, and tests/unit/test_model_cache_lock.py covers them.
"""

from __future__ import annotations

import re

LOCK_SCHEMA = 1
HEX64 = re.compile(r"[0-9a-f]{64}")
HEX40 = re.compile(r"[0-9a-f]{40}")
LOCK_KEYS = ("repo", "file", "revision", "commit", "size", "sha256")


class LockError(ValueError):
    pass


def companion_names(companions: dict) -> list[str]:
    return [f"{svc}/{model}" for svc, models in (companions or {}).items() for model in models]


def _files(svc: str, model: str, entry: dict) -> list[tuple[str, dict]]:
    """(artifact name, file entry) for each file of one companion model."""
    if "files" in entry:
        return [(f"{svc}/{model}/{f.get('role') or f['path']}", f) for f in entry["files"]]
    return [(f"{svc}/{model}", entry)]


def lock_files(lock: dict | None, where: str = "the lock file") -> dict:
    """The lock's {path: entry}, checked: a malformed entry is an error naming it."""
    if not lock:
        return {}
    if not isinstance(lock, dict) or lock.get("schema_version") != LOCK_SCHEMA:
        raise LockError(
            f"{where} is not a model_cache lock of schema_version {LOCK_SCHEMA}; restore it "
            "from version control, or delete it to learn every digest again"
        )
    files = lock.get("files") or {}
    for path, e in files.items():
        bad = [k for k in LOCK_KEYS if k not in (e or {})]
        if not bad and not HEX64.fullmatch(str(e["sha256"])):
            bad = ["sha256"]
        if not bad and not HEX40.fullmatch(str(e["commit"])):
            bad = ["commit"]
        if bad:
            raise LockError(
                f"{where}: the entry for {path} lacks a valid {', '.join(bad)}; restore the "
                "file from version control, or delete that entry to learn it again"
            )
    return files


def companion_artifacts(manifest: dict, names, lock: dict | None = None,
                        lock_path: str = "the lock file") -> list[dict]:
    """The files of the named companions ("llm/qwen3-8b-q4_k_m", "comfyui/qwen-image-fp8")
    as model_cache artifacts: name, path, group, sha256, size, source, pinned_by.

    sha256 comes from manifest.yml where it pins one (pinned_by "manifest.yml"), else
    from the lock, whose commit then replaces the revision (pinned_by the lock's path),
    else it is None: the fetch learns it from Hugging Face (pinned_by None)."""
    companions = manifest.get("companions") or {}
    known = companion_names(companions)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LockError(
            f"model_cache_companions names {unknown}, which manifest.yml's companions do not "
            f"list; choose from {known}"
        )
    locked = lock_files(lock, lock_path)
    out = []
    for name in dict.fromkeys(names):
        svc, model = name.split("/", 1)
        for art_name, f in _files(svc, model, companions[svc][model]):
            src = dict(f["source"])
            if src.get("type") != "huggingface":
                raise LockError(f"{art_name}: only Hugging Face companions can be fetched")
            src["revision"] = src.get("revision") or "main"
            art = {"name": art_name, "path": f["path"], "group": svc, "companion": name,
                   "sha256": f.get("sha256"), "size": f.get("size"), "source": src,
                   "pinned_by": "manifest.yml" if f.get("sha256") else None}
            entry = locked.get(f["path"])
            same_source = entry and (entry["repo"], entry["file"]) == (src["repo"], src["file"])
            if same_source and not art["sha256"]:
                art.update(sha256=entry["sha256"], size=entry["size"], pinned_by=lock_path)
                art["source"] = {**src, "revision": entry["commit"]}
            out.append(art)
    return out


def stack_companions(llm_enabled, llm_model, llm_file, comfyui_enabled, comfyui_model):
    """The companions the stack's own settings need: the LLM's model unless a GGUF of
    one's own is named (stack_llm_model_file), and ComfyUI's model."""
    wanted = []
    if _truthy(llm_enabled) and not llm_file:
        wanted.append(f"llm/{llm_model}")
    if _truthy(comfyui_enabled):
        wanted.append(f"comfyui/{comfyui_model}")
    return wanted


def _truthy(value) -> bool:
    """Ansible's `| bool` for the usual spellings, without importing Ansible: this module
    is also imported by tools/bundle.py, which needs only the standard library and PyYAML."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def merge_lock(lock: dict | None, learned: list, lock_path: str = "the lock file") -> dict:
    """The lock with what hosts learned added: learned is a list (one per host) of lists
    of {path, repo, file, revision, commit, size, sha256}. Hosts that learned different
    digests for one file, or a learned digest that contradicts the lock for the same
    commit, are an error naming the file, the revision and both digests."""
    files = {p: dict(e) for p, e in lock_files(lock, lock_path).items()}
    seen: dict[str, dict] = {}
    for host_entries in learned or []:
        for e in host_entries or []:
            path = e["path"]
            entry = {k: e[k] for k in LOCK_KEYS}
            first = seen.setdefault(path, entry)
            if (first["commit"], first["sha256"]) != (entry["commit"], entry["sha256"]):
                raise LockError(
                    f"{path}: Hugging Face declared two files in one run ({first['repo']} "
                    f"{first['file']}: commit {first['commit']} sha256 {first['sha256']}, "
                    f"and commit {entry['commit']} sha256 {entry['sha256']}); the lock was "
                    "not written. Run again once the upstream repository is settled."
                )
            old = files.get(path)
            if (old and old["commit"] == entry["commit"] and old["sha256"] != entry["sha256"]):
                raise LockError(
                    f"{path}: {lock_path} records sha256 {old['sha256']} for {old['repo']} "
                    f"{old['file']} at revision {old['commit']}, Hugging Face now declares "
                    f"{entry['sha256']}; the lock was not changed"
                )
            files[path] = entry
    return {"schema_version": LOCK_SCHEMA, "files": dict(sorted(files.items()))}


def with_learned(artifacts: list[dict], learned: list[dict]) -> list[dict]:
    """The artifacts with the sha256 and size a fetch learned filled in (for the index)."""
    got = {e["path"]: e for e in learned or []}
    out = []
    for a in artifacts:
        e = got.get(a["path"])
        out.append({**a, "sha256": e["sha256"], "size": e["size"]} if e and not a["sha256"]
                   else a)
    return out
