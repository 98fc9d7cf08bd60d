"""The model files each enabled service needs on the host, and where to get each one.

The stack checks them before any image or container is touched (tasks/models.yml), so a
missing GGUF is "llm: <path> is missing: <how to get it>" and not llama-server's
"failed to load model" after `up --wait` has timed out. Kokoro is not listed: its server
checks its own files against manifest.yml at start and names any that are wrong.
The stack role's filters (filter_plugins/stack_models.py) expose these functions.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

# The lock is read as model_cache reads it (one home for its format).
from ansible_collections.kokoro.deploy.plugins.module_utils import model_cache_lock as _lock


def _digest(f: dict, locked: dict, lock_path: str) -> tuple[str | None, str]:
    """The sha256 a companion file must have and who says so: manifest.yml's pin, else
    the lock's entry for the same repository file, else none (not fetched yet)."""
    if f.get("sha256"):
        return f["sha256"], "manifest.yml"
    entry = locked.get(f["path"])
    src = f.get("source") or {}
    if entry and (entry["repo"], entry["file"]) == (src.get("repo"), src.get("file")):
        return entry["sha256"], lock_path
    return None, ""


def _hint(source: dict | None, path: str) -> str:
    if not source:
        return "put the file there"
    if source.get("type") == "huggingface":
        revision = source.get("revision") or "main"
        return (f"run site.yml's models stage (model_cache fetches it when the stack "
                f"enables it), or download {source['file']} from Hugging Face "
                f"{source['repo']} (revision {revision}) to that path")
    return f"fetch it from {source} to that path"


def model_files(companions: dict, model_dir: str, llm: dict, comfyui: dict,
                lock: dict | None = None, lock_path: str = "the lock file") -> list[dict]:
    """[{service, path, sha256, pinned_by, hint}] for the enabled LLM and ComfyUI.

    llm: {enabled, model (companion key), file (stack_llm_model_file, may be empty)};
    comfyui: {enabled, model (companion key)}; lock: model_cache's lock file (the digests
    Hugging Face declared on first use), used where manifest.yml pins none.
    """
    try:
        locked = _lock.lock_files(lock, lock_path)
    except _lock.LockError as err:
        raise AnsibleFilterError(str(err)) from None
    root = model_dir.rstrip("/")
    files = []
    if llm.get("enabled"):
        if llm.get("file"):
            files.append({"service": "llm", "path": f"{root}/llm/{llm['file']}", "sha256": None,
                          "hint": "put the GGUF named by stack_llm_model_file there"})
        else:
            entry = (companions.get("llm") or {}).get(llm.get("model"))
            if not entry:
                raise AnsibleFilterError(
                    f"stack_llm_model {llm.get('model')!r} is not a companion in manifest.yml; "
                    "set it to one of " + ", ".join(companions.get("llm") or {}))
            sha, by = _digest(entry, locked, lock_path)
            files.append({"service": "llm", "path": f"{root}/{entry['path']}",
                          "sha256": sha, "pinned_by": by,
                          "hint": _hint(entry.get("source"), entry["path"])})
    if comfyui.get("enabled"):
        entry = (companions.get("comfyui") or {}).get(comfyui.get("model"))
        if not entry:
            raise AnsibleFilterError(
                f"stack_comfyui_model {comfyui.get('model')!r} is not a companion in "
                "manifest.yml; set it to one of " + ", ".join(companions.get("comfyui") or {}))
        for f in entry["files"]:
            sha, by = _digest(f, locked, lock_path)
            files.append({"service": "comfyui", "path": f"{root}/{f['path']}",
                          "sha256": sha, "pinned_by": by,
                          "hint": _hint(f.get("source"), f["path"])})
    return files


def model_problems(files: list[dict], stats: list[dict]) -> list[str]:
    """One line per file that is missing, empty or not the pinned file; stats are the
    stat module's results, in the same order (checksum present where a digest is pinned)."""
    problems = []
    for f, st in zip(files, stats, strict=True):
        if not st.get("exists"):
            problems.append(f"{f['service']}: {f['path']} is missing: {f['hint']}")
        elif not st.get("isreg") or not st.get("size"):
            problems.append(f"{f['service']}: {f['path']} is empty or not a file: {f['hint']}")
        elif f["sha256"] and st.get("checksum") != f["sha256"]:
            problems.append(
                f"{f['service']}: {f['path']} is not the pinned file (sha256 "
                f"{st.get('checksum')}, {f.get('pinned_by') or 'manifest.yml'} says "
                f"{f['sha256']}): {f['hint']}")
    return problems
