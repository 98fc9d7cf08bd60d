"""The manifest is the kit's one source of truth: these tests keep it well-formed."""

import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFEST = yaml.safe_load((REPO / "manifest.yml").read_text())
ARTIFACTS = MANIFEST["artifacts"]
KOKORO_LANG_CODES = set("abefhijpz")


def test_manifest_artifacts_have_unique_names_and_paths():
    names = [a["name"] for a in ARTIFACTS]
    paths = [a["path"] for a in ARTIFACTS]
    assert len(names) == len(set(names))
    assert len(paths) == len(set(paths))


@pytest.mark.parametrize("artifact", ARTIFACTS, ids=lambda a: a["name"])
def test_manifest_artifact_is_pinned_and_stays_inside_the_cache(artifact):
    assert re.fullmatch(r"[0-9a-f]{64}", artifact["sha256"])
    path = PurePosixPath(artifact["path"])
    assert not path.is_absolute() and ".." not in path.parts
    assert artifact["size"] is None or artifact["size"] > 0
    source = artifact["source"]
    if source["type"] == "huggingface":
        assert re.fullmatch(r"[0-9a-f]{40}", source["revision"]), "pin a commit, not a branch"
    else:
        assert source["type"] == "url" and source["url"].startswith("https://")


def test_manifest_huggingface_sources_use_the_pinned_kokoro_revision():
    pinned = MANIFEST["huggingface"]["kokoro"]
    for a in ARTIFACTS:
        if a["source"]["type"] == "huggingface" and a["source"]["repo"] == pinned["repo"]:
            assert a["source"]["revision"] == pinned["revision"], a["name"]


def test_manifest_lists_the_54_stock_voices_in_all_nine_languages():
    voices = [a for a in ARTIFACTS if a["group"] == "voices"]
    assert len(voices) == 54
    assert {v["voice"]["lang_code"] for v in voices} == KOKORO_LANG_CODES
    for v in voices:
        vid = v["voice"]["id"]
        assert v["path"] == f"kokoro/voices/{vid}.pt"
        assert vid[0] == v["voice"]["lang_code"]
        assert v["voice"]["gender"] == {"f": "female", "m": "male"}[vid[1]]
