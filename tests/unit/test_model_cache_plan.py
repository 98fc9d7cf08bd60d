"""The model_cache role's planning filters over the real manifest: which artifacts a
host needs for its engines and voices, and the URL or bundle path each comes from."""

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.kokoro.deploy.plugins.module_utils import model_cache_plan as plan
from role_filters import role_filters

REPO = Path(__file__).resolve().parents[2]

MANIFEST = yaml.safe_load((REPO / "manifest.yml").read_text())


def paths(artifacts):
    return [a["path"] for a in artifacts]


def test_select_onnx_with_all_voices_takes_config_int8_model_and_54_voices():
    chosen = plan.select_artifacts(MANIFEST, ["onnx"], ["all"])
    assert "kokoro/config.json" in paths(chosen)
    assert "kokoro/onnx/kokoro-v1.0.int8.onnx" in paths(chosen)
    assert "kokoro/kokoro-v1_0.pth" not in paths(chosen)
    assert sum(a["group"] == "voices" for a in chosen) == 54
    assert not any(a["group"] == "spacy" for a in chosen)


def test_select_torch_takes_the_pth_weights_not_the_onnx_model():
    chosen = paths(plan.select_artifacts(MANIFEST, ["torch"], ["af_heart"]))
    assert chosen == ["kokoro/config.json", "kokoro/kokoro-v1_0.pth", "kokoro/voices/af_heart.pt"]


def test_select_both_engines_lists_the_config_once():
    chosen = paths(plan.select_artifacts(MANIFEST, ["onnx", "torch"], []))
    assert chosen.count("kokoro/config.json") == 1 and len(chosen) == 3


def test_select_extra_group_and_artifact_by_name():
    chosen = paths(
        plan.select_artifacts(MANIFEST, ["onnx"], [], ["spacy"], ["voice-jf_alpha"])
    )
    assert "spacy/en_core_web_sm-3.8.0-py3-none-any.whl" in chosen
    assert "kokoro/voices/jf_alpha.pt" in chosen


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((["onnx"], ["af_nobody"]), "unknown voice(s) ['af_nobody']"),
        ((["tensorrt"], ["all"]), "unknown Kokoro engine(s) ['tensorrt']"),
        ((["onnx"], [], ["llm"]), "no artifact group(s) ['llm']"),
        ((["onnx"], [], [], ["nope"]), "no artifact(s) named ['nope']"),
    ],
)
def test_select_rejects_what_the_manifest_does_not_have(args, message):
    with pytest.raises(plan.PlanError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        plan.select_artifacts(MANIFEST, *args)


def test_upstream_resolves_hugging_face_at_the_pinned_revision_and_urls_as_given():
    chosen = plan.select_artifacts(MANIFEST, ["onnx"], ["af_heart"])
    planned = {p["name"]: p for p in plan.plan_sources(chosen)}
    rev = MANIFEST["huggingface"]["kokoro"]["revision"]
    assert planned["voice-af_heart"]["url"] == (
        f"https://huggingface.co/hexgrad/Kokoro-82M/resolve/{rev}/voices/af_heart.pt"
    )
    assert planned["voice-af_heart"]["huggingface"] is True
    onnx = planned["kokoro-onnx-int8"]
    assert onnx["url"].endswith("/kokoro-v1.0.int8.onnx") and onnx["huggingface"] is False


def test_an_hf_endpoint_mirror_replaces_the_host_only():
    chosen = plan.select_artifacts(MANIFEST, ["onnx"], [])
    planned = plan.plan_sources(chosen, hf_endpoint="https://hf.example.internal/")
    config = next(p for p in planned if p["name"] == "kokoro-config")
    assert config["url"].startswith("https://hf.example.internal/hexgrad/Kokoro-82M/resolve/")


def test_mirror_source_uses_the_cache_layout_under_the_base_url():
    chosen = plan.select_artifacts(MANIFEST, ["onnx"], ["bf_emma"])
    planned = plan.plan_sources(chosen, "mirror", "http://127.0.0.1:18080")
    assert [p["url"] for p in planned] == [
        "http://127.0.0.1:18080/kokoro/config.json",
        "http://127.0.0.1:18080/kokoro/onnx/kokoro-v1.0.int8.onnx",
        "http://127.0.0.1:18080/kokoro/voices/bf_emma.pt",
    ]
    assert all(p["sha256"] and p["path"] for p in planned)


def test_per_artifact_overrides_pick_bundle_mirror_or_a_full_url():
    chosen = plan.select_artifacts(MANIFEST, ["onnx"], ["af_heart"])
    planned = {
        p["name"]: p
        for p in plan.plan_sources(
            chosen,
            "upstream",
            "http://mirror.local/models/",
            {
                "kokoro-onnx-int8": "bundle",
                "kokoro-config": "mirror",
                "voice-af_heart": "https://files.local/af_heart.pt",
            },
            bundle_dir="/srv/bundle",
        )
    }
    assert planned["kokoro-onnx-int8"]["bundle_path"] == "kokoro/onnx/kokoro-v1.0.int8.onnx"
    assert "url" not in planned["kokoro-onnx-int8"]
    assert planned["kokoro-config"]["url"] == "http://mirror.local/models/kokoro/config.json"
    assert planned["voice-af_heart"]["url"] == "https://files.local/af_heart.pt"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "mirror"}, "model_cache_mirror_url is empty"),
        ({"source": "bundle"}, "model_cache_bundle_dir is empty"),
        ({"source": "ftp"}, "is not one of"),
        ({"overrides": {"voice-zz_nobody": "mirror"}}, "not selected"),
    ],
)
def test_plan_sources_fails_naming_the_setting_to_fix(kwargs, message):
    chosen = plan.select_artifacts(MANIFEST, ["onnx"], [])
    with pytest.raises(plan.PlanError, match=message):
        plan.plan_sources(chosen, **kwargs)


def test_the_role_filters_fail_with_the_plans_message_not_a_traceback():
    filters = role_filters("model_cache", ["model_cache_select", "model_cache_plan_sources"])
    select, sources = filters["model_cache_select"], filters["model_cache_plan_sources"]
    assert select(MANIFEST, ["onnx"], ["af_heart"]) == plan.select_artifacts(
        MANIFEST, ["onnx"], ["af_heart"])
    with pytest.raises(AnsibleFilterError, match=r"^model_cache: unknown voice"):
        select(MANIFEST, ["onnx"], ["af_nobody"])
    with pytest.raises(AnsibleFilterError, match=r"^model_cache: .*model_cache_mirror_url"):
        sources(select(MANIFEST, ["onnx"], []), source="mirror")


def test_cache_index_carries_name_path_and_digest_of_each_file():
    chosen = plan.select_artifacts(MANIFEST, ["onnx"], ["af_heart"])
    index = plan.cache_index(chosen)
    assert index["schema_version"] == 1
    heart = index["artifacts"][-1]
    assert heart["voice"]["id"] == "af_heart" and len(heart["sha256"]) == 64
    assert "source" not in heart
