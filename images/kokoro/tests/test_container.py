"""The CPU image: built on the local base image, run with the models mounted read-only,
spoken to over HTTP from the host with the official openai client.

Needs a Docker engine and the base image named by KOKORO_DEPLOY_BASE_IMAGE (default
kokoro-deploy/debian:12, made by tests/testbed/up.sh). Without them the test fails in CI
(CI=true) and is skipped elsewhere, with the reason.
"""
from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
from image_build import build_image, docker, running
from kokoro_testlib import LANGUAGE_SAMPLES, decode_audio, speak_every_voice

pytestmark = pytest.mark.container

IMAGE = "kokoro-deploy/kokoro:test-cpu"
KEY = "container-test-key"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return build_image("cpu", IMAGE, tmp_path_factory.mktemp("ctx"))


@pytest.fixture(scope="module")
def container(image, model_dir):
    with running(image, model_dir, KEY) as started:
        yield started


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


def test_all_54_stock_voices_speak_from_the_container(container):
    """Every voice in its own language (nine, Japanese and Mandarin included), at a rate
    people speak: 8-25 phonemes a second (test_cjk's bounds, which the espeak languages'
    8-25 characters a second become where a character is several phonemes)."""
    _, url = container
    spoken = speak_every_voice(url, KEY, phonemes=True)
    assert len(spoken) == 54
    assert {s["lang"] for s in spoken.values()} == set(LANGUAGE_SAMPLES)
    for voice, s in spoken.items():
        n, seconds = len(s["tokens"]), len(s["pcm"]) / 24000
        assert n / 25 < seconds < n / 8, (voice, n, seconds)
        assert np.sqrt(np.mean((s["pcm"] / 32768.0) ** 2)) > 0.01, voice


def test_the_image_answers_home_assistants_wyoming_describe(image, model_dir):
    """Wyoming is off in the image until asked for; asked for, it answers on 10200 (the
    port published here), and a public bind without the explicit opt-out is refused."""
    import asyncio

    from containers import wait_until_healthy
    from kokoro_testlib import free_port
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info
    from wyoming.tts import Synthesize

    wyoming = {"KOKORO_WYOMING_PORT": "10200", "KOKORO_API_KEYS": KEY}
    env = [arg for k, v in wyoming.items() for arg in ("-e", f"{k}={v}")]
    r = docker("run", "--rm", "-v", f"{model_dir}:/models:ro", *env, image, check=False)
    assert r.returncode != 0 and "KOKORO_WYOMING_UNAUTHENTICATED=true" in r.stderr + r.stdout

    port = free_port()
    name = f"kokoro-test-wyoming-{port}"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:10200",
           "-v", f"{model_dir}:/models:ro", *env,
           "-e", "KOKORO_WYOMING_UNAUTHENTICATED=true", image)

    async def talk():
        async with AsyncTcpClient("127.0.0.1", port) as c:
            await c.write_event(Describe().event())
            info = Info.from_event(await asyncio.wait_for(c.read_event(), 60))
            await c.write_event(Synthesize(text="Hello from the container.").event())
            types = []
            while not types or types[-1] not in ("audio-stop", "error"):
                types.append((await asyncio.wait_for(c.read_event(), 120)).type)
            return info, types

    try:
        wait_until_healthy(name, timeout=240)
        info, types = asyncio.run(talk())
    finally:
        docker("rm", "-f", name, check=False)
    assert len(info.tts[0].voices) == 54
    assert types[0] == "audio-start" and types[-1] == "audio-stop"
