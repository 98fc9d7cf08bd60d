"""The ComfyUI check of roles/stack/files/stack_smoke.py (the stack role's verify): served
here over real HTTP on loopback by a stand-in for ComfyUI's /system_stats and
/models/<folder>, so an empty or unmounted model folder fails verify, naming each file,
where ComfyUI's health check alone would pass."""

import re
from pathlib import Path

import pytest
import stack_smoke
import yaml
from loopback_standin import Request, standin

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles/stack/files/stack_smoke.py"

MANIFEST = yaml.safe_load((REPO / "manifest.yml").read_text())
DEFAULT_MODEL = yaml.safe_load((REPO / "roles/stack/defaults/main.yml").read_text())[
    "stack_comfyui_model"]
FILES = [f["path"].removeprefix("comfyui/")
         for f in MANIFEST["companions"]["comfyui"][DEFAULT_MODEL]["files"]]


@pytest.fixture
def comfyui():
    """A ComfyUI stand-in: `folders` is what /models/<folder> lists, `devices` /system_stats'."""
    state = {"folders": {}, "devices": [{"name": "cuda:0 NVIDIA H100", "type": "cuda"}]}

    def answer(request: Request):
        if request.path == "/system_stats":
            return 200, "application/json", {"system": {}, "devices": state["devices"]}
        if m := re.fullmatch(r"/models/(\w+)", request.path):
            return 200, "application/json", state["folders"].get(m.group(1), [])
        return 404, "text/plain", b"not found"

    with standin(answer) as url:
        yield url, state


def listing(files):
    folders = {}
    for f in files:
        folder, name = f.split("/", 1)
        folders.setdefault(folder, []).append(name)
    return folders


def test_the_kits_model_files_listed_by_comfyui_pass(comfyui):
    url, state = comfyui
    state["folders"] = listing(FILES)
    result = stack_smoke.check(stack_smoke.check_comfyui, url, "", FILES)
    assert result["ok"], result
    assert result["model_files"] == len(FILES) == 3


def test_an_empty_model_folder_fails_naming_each_missing_file(comfyui):
    url, state = comfyui
    state["folders"] = listing([f for f in FILES if not f.startswith("vae/")])
    result = stack_smoke.check(stack_smoke.check_comfyui, url, "", FILES)
    assert not result["ok"]
    vae = next(f for f in FILES if f.startswith("vae/"))
    assert vae in result["error"] and "models stage" in result["error"]
    assert all(f not in result["error"] for f in FILES if f != vae)


def test_no_device_fails_before_the_models(comfyui):
    url, state = comfyui
    state["devices"] = []
    state["folders"] = listing(FILES)
    result = stack_smoke.check(stack_smoke.check_comfyui, url, "", FILES)
    assert not result["ok"] and result["error"] == "no device listed"


def test_the_env_example_names_the_default_companions_files():
    env = (REPO / "compose/.env.example").read_text()
    line = re.search(r"^COMFYUI_MODEL_FILES=(.*)$", env, re.M).group(1)
    assert line.split(",") == FILES
