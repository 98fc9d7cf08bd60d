"""The model files the stack checks before it touches images or containers
(plugins/module_utils/stack_models.py, the filters of tasks/models.yml), from the real
manifest's companions."""

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.kokoro.deploy.plugins.module_utils import stack_models as sm

REPO = Path(__file__).resolve().parents[2]

COMPANIONS = yaml.safe_load((REPO / "manifest.yml").read_text())["companions"]
MODELS = "/opt/kokoro-deploy/models/"
OFF = {"enabled": False}


def files(llm=OFF, comfyui=OFF):
    return sm.model_files(COMPANIONS, MODELS, llm, comfyui)


def test_kokoro_alone_needs_nothing_checked_here():
    assert files() == []


def test_the_llm_companion_is_its_manifest_path_with_where_to_download_it():
    (f,) = files(llm={"enabled": True, "model": "qwen3-8b-q4_k_m", "file": ""})
    entry = COMPANIONS["llm"]["qwen3-8b-q4_k_m"]
    assert f["path"] == "/opt/kokoro-deploy/models/" + entry["path"]
    assert f["sha256"] == entry["sha256"]
    source = entry["source"]
    assert f"download {source['file']} from Hugging Face {source['repo']}" in f["hint"]


def test_a_gguf_of_ones_own_is_checked_under_the_llm_folder():
    (f,) = files(llm={"enabled": True, "model": "qwen3-8b-q4_k_m", "file": "tiny-test.gguf"})
    assert f["path"] == "/opt/kokoro-deploy/models/llm/tiny-test.gguf"
    assert "stack_llm_model_file" in f["hint"]


def test_comfyui_needs_every_file_of_its_model():
    got = files(comfyui={"enabled": True, "model": "qwen-image-fp8"})
    want = [MODELS + f["path"] for f in COMPANIONS["comfyui"]["qwen-image-fp8"]["files"]]
    assert [f["path"] for f in got] == want
    assert {f["service"] for f in got} == {"comfyui"}


def test_an_unknown_companion_is_refused_naming_the_known_ones():
    with pytest.raises(AnsibleFilterError, match="qwen3-8b-q4_k_m"):
        files(llm={"enabled": True, "model": "llama-70b", "file": ""})


def test_each_missing_empty_or_wrong_file_is_named_with_how_to_get_it():
    def entry(service, path, sha256, hint):
        return {"service": service, "path": path, "sha256": sha256, "hint": hint}

    listed = [
        entry("llm", "/m/llm/a.gguf", None, "get a"),
        entry("comfyui", "/m/comfyui/vae/v.safetensors", None, "get v"),
        entry("comfyui", "/m/comfyui/x.safetensors", "ab" * 32, "get x"),
        entry("comfyui", "/m/comfyui/ok.safetensors", "cd" * 32, "-"),
    ]
    stats = [
        {"exists": False},
        {"exists": True, "isreg": True, "size": 0},
        {"exists": True, "isreg": True, "size": 10, "checksum": "00" * 32},
        {"exists": True, "isreg": True, "size": 10, "checksum": "cd" * 32},
    ]
    assert sm.model_problems(listed, stats) == [
        "llm: /m/llm/a.gguf is missing: get a",
        "comfyui: /m/comfyui/vae/v.safetensors is empty or not a file: get v",
        f"comfyui: /m/comfyui/x.safetensors is not the pinned file (sha256 {'00' * 32}, "
        f"manifest.yml says {'ab' * 32}): get x",
    ]


LOCKED_SHA, COMMIT = "d" * 64, "e" * 40


def _lock_for(entry):
    src = entry["source"]
    return {"schema_version": 1, "files": {entry["path"]: {
        "repo": src["repo"], "file": src["file"], "revision": "main", "commit": COMMIT,
        "size": 5, "sha256": LOCKED_SHA}}}


def test_an_unpinned_companion_is_held_to_the_digest_model_cache_locked():
    entry = COMPANIONS["llm"]["qwen3-8b-q4_k_m"]
    assert entry["sha256"] is None  # trust on first use: the lock has the digest
    llm = {"enabled": True, "model": "qwen3-8b-q4_k_m", "file": ""}
    (f,) = sm.model_files(COMPANIONS, MODELS, llm, OFF, _lock_for(entry), "inv/models.lock.yml")
    assert (f["sha256"], f["pinned_by"]) == (LOCKED_SHA, "inv/models.lock.yml")
    (problem,) = sm.model_problems([f], [{"exists": True, "isreg": True, "size": 5,
                                          "checksum": "f" * 64}])
    assert "inv/models.lock.yml says " + LOCKED_SHA in problem and "f" * 64 in problem


def test_a_manifest_pin_wins_over_the_lock_in_the_stacks_check():
    companions = yaml.safe_load((REPO / "manifest.yml").read_text())["companions"]
    entry = companions["llm"]["qwen3-8b-q4_k_m"]
    entry["sha256"] = "a" * 64
    (f,) = sm.model_files(companions, MODELS, {"enabled": True, "model": "qwen3-8b-q4_k_m",
                                               "file": ""}, OFF, _lock_for(entry))
    assert (f["sha256"], f["pinned_by"]) == ("a" * 64, "manifest.yml")


def test_a_malformed_lock_stops_the_stacks_check_naming_it():
    entry = COMPANIONS["llm"]["qwen3-8b-q4_k_m"]
    bad = _lock_for(entry)
    bad["files"][entry["path"]]["commit"] = "main"
    with pytest.raises(AnsibleFilterError, match="lacks a valid commit"):
        sm.model_files(COMPANIONS, MODELS, {"enabled": True, "model": "qwen3-8b-q4_k_m",
                                            "file": ""}, OFF, bad)
