"""The CPU image: built on the local base image, run with the models mounted read-only,
spoken to over HTTP from the host with the official openai client.

Needs a Docker engine and the base image named by KOKORO_DEPLOY_BASE_IMAGE (default
kokoro-deploy/debian:12, made by tests/testbed/up.sh). Without them the test fails in CI
(CI=true) and is skipped elsewhere, with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from kokoro_testlib import REPO, decode_audio, free_port

sys.path.insert(0, str(REPO / "tests" / "testbed"))
from containers import docker, docker_missing, wait_until_healthy

pytestmark = pytest.mark.container

IMAGE = "kokoro-deploy/kokoro:test-cpu"
BASE = os.environ.get("KOKORO_DEPLOY_BASE_IMAGE", "kokoro-deploy/debian:12")
KEY = "container-test-key"
HOST_CA = Path(os.environ.get("KOKORO_DEPLOY_EXTRA_CA", "/etc/ssl/certs/ca-certificates.crt"))


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"container test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def build_context(dest: Path) -> Path:
    """The build context the image needs, nothing more (the repo root holds venvs and
    model caches): manifest, package, Dockerfile, this machine's CA for the proxy, and
    the en_core_web_sm wheel if the test bed built one."""
    kokoro = dest / "images" / "kokoro"
    kokoro.mkdir(parents=True)
    shutil.copy(REPO / "manifest.yml", dest)
    src = REPO / "images" / "kokoro"
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        shutil.copy(src / name, kokoro)
    shutil.copytree(src / "src", kokoro / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    extra_ca = dest / "images" / "extra-ca"
    extra_ca.mkdir()
    shutil.copy(REPO / "images" / "extra-ca" / "trust.sh", extra_ca)
    (kokoro / "wheels").mkdir()
    if HOST_CA.is_file():
        shutil.copy(HOST_CA, extra_ca / "host.crt")
    for whl in (REPO / ".cache" / "wheels").glob("en_core_web_sm-*.whl"):
        shutil.copy(whl, kokoro / "wheels")
    return dest


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    reason = docker_missing(BASE)
    if reason:
        _unavailable(reason)
    ctx = build_context(tmp_path_factory.mktemp("ctx"))
    # The test bed's spaCy model is in the context's wheels/ (its release is out of reach).
    r = docker("build", "-q", "--target", "cpu", "--build-arg", f"BASE_IMAGE={BASE}",
               "--build-arg", "SPACY_MODEL_WHEEL=", "-t", IMAGE,
               "-f", str(ctx / "images/kokoro/Dockerfile"), str(ctx), check=False)
    assert r.returncode == 0, f"docker build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return IMAGE


@pytest.fixture(scope="module")
def container(image, model_dir):
    port = free_port()
    name = f"kokoro-test-{port}"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8880",
           "-v", f"{model_dir}:/models:ro", "-e", f"KOKORO_API_KEYS={KEY}", image)
    try:
        wait_until_healthy(name, timeout=240)
        yield name, f"http://127.0.0.1:{port}"
    finally:
        docker("rm", "-f", name, check=False)


def test_image_runs_as_non_root_and_turns_healthy(container):
    name, url = container
    assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
    with urllib.request.urlopen(url + "/health", timeout=10) as r:
        assert r.status == 200


def test_openai_client_synthesizes_from_the_container(container):
    openai = pytest.importorskip("openai")
    _, url = container
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY)
    resp = client.audio.speech.create(model="tts-1", voice="af_heart",
                                      input="Hello from inside the container.",
                                      response_format="mp3")
    pcm, rate = decode_audio(resp.content)
    assert 1.0 < len(pcm) / rate < 6.0
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong").models.list()


def test_image_has_no_torch_and_models_are_read_only(container):
    name, _ = container
    r = docker("exec", name, "python3", "-c", "import torch", check=False)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    r = docker("exec", name, "touch", "/models/kokoro/x", check=False)
    assert r.returncode != 0


def test_container_refuses_to_start_on_a_public_bind_without_keys(image, model_dir):
    r = docker("run", "--rm", "-v", f"{model_dir}:/models:ro", image, check=False)
    assert r.returncode != 0
    assert "needs API keys" in r.stderr + r.stdout


@pytest.mark.parametrize("voice,text", [("jf_alpha", "こんにちは、世界。今日はいい天気です。"),
                                        ("zf_xiaobei", "你好，世界。今天天气很好。")])
def test_japanese_and_mandarin_stream_from_the_container(container, voice, text):
    """The image's default LANGUAGE_EXTRAS=cjk: both G2Ps work in it, warmed at start,
    and jieba writes no cache file into the container."""
    name, url = container
    req = urllib.request.Request(
        url + "/v1/audio/speech", method="POST",
        data=json.dumps({"input": text, "voice": voice, "response_format": "pcm",
                         "stream": True}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        pcm = np.frombuffer(r.read(), "<i2")
    assert 1.0 < len(pcm) / 24000 < 10.0
    logs = docker("logs", name)
    assert "cjk=j,z" in logs.stdout + logs.stderr
    r = docker("exec", name, "sh", "-c", "ls -a /tmp", check=False)
    assert "jieba" not in r.stdout
