"""The model cache as the services need it: every file the cache index lists is there,
read-only, with the size and sha256 that the repository's manifest pins (a companion
model's: the manifest's, else the controller's lock, MODEL_CACHE_LOCK), and nothing
half-written (no temporary or staging files) is left.

Runs from Molecule against test hosts, and against real hosts as part of the acceptance
suite. The cache folder is MODEL_CACHE_DIR, else the host's inventory variable
model_cache_dir, else the role's default.
"""

import json
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
_MANIFEST = yaml.safe_load((REPO / "manifest.yml").read_text())
MANIFEST = {a["path"]: a for a in _MANIFEST["artifacts"]}
# Companion files: manifest.yml's pin, else the controller's lock (trust on first use).
COMPANIONS = {f["path"]: f for svc in (_MANIFEST.get("companions") or {}).values()
              for m in svc.values() for f in m.get("files", [m])}
DEFAULTS = yaml.safe_load((REPO / "roles/model_cache/defaults/main.yml").read_text())


@pytest.fixture(scope="module")
def cache_dir(host):
    if os.environ.get("MODEL_CACHE_DIR"):
        return os.environ["MODEL_CACHE_DIR"]
    try:
        return host.ansible.get_variables().get("model_cache_dir", DEFAULTS["model_cache_dir"])
    except (AttributeError, RuntimeError):  # local:// backend: no inventory
        return DEFAULTS["model_cache_dir"]


@pytest.fixture(scope="module")
def index(host, cache_dir):
    f = host.file(f"{cache_dir}/cache-index.json")
    assert f.is_file, f"{cache_dir}/cache-index.json is missing: run the model_cache role"
    data = json.loads(f.content_string)
    assert data["artifacts"], "the cache index lists no files"
    return data["artifacts"]


@pytest.fixture(scope="module")
def lock(host):
    """The companions' lock on the controller: MODEL_CACHE_LOCK, else the inventory's
    model_cache_lock_path; empty where there is none."""
    path = os.environ.get("MODEL_CACHE_LOCK")
    if not path:
        try:
            path = host.ansible.get_variables().get("model_cache_lock_path")
        except (AttributeError, RuntimeError):
            path = None
    if not path or not Path(path).is_file():
        return {}
    return (yaml.safe_load(Path(path).read_text()) or {}).get("files") or {}


def test_model_cache_index_matches_the_manifest(index, lock):
    for entry in index:
        path = entry["path"]
        if path in COMPANIONS:
            want = COMPANIONS[path].get("sha256") or lock.get(path, {}).get("sha256")
            assert want, f"{path}: neither manifest.yml nor the lock (MODEL_CACHE_LOCK) pins it"
            assert entry["sha256"] == want, f"{path}: index has {entry['sha256']}, pinned {want}"
            continue
        pinned = MANIFEST.get(entry["path"])
        assert pinned, f"{entry['path']} is cached but not in manifest.yml"
        assert entry["sha256"] == pinned["sha256"], f"{entry['path']}: stale pin in the index"


def test_model_cache_files_have_the_pinned_size_and_sha256(host, cache_dir, index):
    paths = " ".join(f"'{e['path']}'" for e in index)
    out = host.check_output(f"cd '{cache_dir}' && sha256sum {paths}")
    actual = {line.split(None, 1)[1].lstrip("*"): line.split()[0] for line in out.splitlines()}
    for entry in index:
        path = entry["path"]
        assert actual[path] == entry["sha256"], (
            f"{path}: sha256 {actual[path]}, manifest pins {entry['sha256']}; "
            "rerun the model_cache role to replace it"
        )
        if entry.get("size"):
            assert host.file(f"{cache_dir}/{path}").size == entry["size"]


def test_model_cache_files_are_read_only(host, cache_dir, index):
    for entry in index:
        f = host.file(f"{cache_dir}/{entry['path']}")
        assert f.mode & 0o222 == 0, f"{entry['path']} is writable (mode {oct(f.mode)})"
        assert f.mode & 0o444 == 0o444, f"{entry['path']} is not readable by the services"


def test_model_cache_holds_no_partial_or_staged_files(host, cache_dir):
    leftovers = host.check_output(
        f"find '{cache_dir}' -name '.*.part' -o -path '{cache_dir}/.incoming'"
    )
    assert leftovers == "", f"half-written files in the cache: {leftovers}"


def test_model_cache_has_a_kokoro_model_and_config(index):
    paths = {e["path"] for e in index}
    assert "kokoro/config.json" in paths
    assert paths & {"kokoro/onnx/kokoro-v1.0.int8.onnx", "kokoro/kokoro-v1_0.pth"}, (
        "no Kokoro model in the cache: set model_cache_kokoro_engines"
    )


def test_model_cache_config_is_kokoro_82m(host, cache_dir):
    config = json.loads(host.file(f"{cache_dir}/kokoro/config.json").content_string)
    assert config["istftnet"]["upsample_rates"], "not a Kokoro config"
    assert len(config["vocab"]) > 100
