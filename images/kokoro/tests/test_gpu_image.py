"""The GPU image (target `gpu`: torch cu128, LANGUAGE_EXTRAS=cjk), built here and run on
the CPU: its torch engine speaks with every stock voice in all nine languages.

No GPU here, so the container runs with KOKORO_DEVICE=cpu on a random-init checkpoint
in the real format (conftest's torch fixtures; the real one comes from Hugging Face):
the audio is noise, but its length is exactly what the duration predictor set (3 frames
per phoneme), so G2P, voice packs, the torch engine and the HTTP layer are all checked.
The build takes about 10 minutes and 3.5 GB of wheels, so these tests run only when
asked: `make test-gpu-image` (pytest -m gpu_image); conftest leaves them out otherwise.
"""
from __future__ import annotations

import os
import shutil

import pytest
from image_build import build_image, docker, running
from kokoro_testlib import (
    LANGUAGE_SAMPLES,
    RANDOM_CKPT_PATH,
    build_random_checkpoint,
    manifest_with,
    speak_every_voice,
)

pytestmark = [pytest.mark.container, pytest.mark.gpu_image]

IMAGE = "kokoro-deploy/kokoro:test-gpu"
KEY = "gpu-image-test-key"
SAMPLES_PER_FRAME = 600  # 24 kHz, 40 duration frames a second
FRAMES_PER_PHONEME = 3  # build_random_checkpoint's duration bias


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return build_image("gpu", IMAGE, tmp_path_factory.mktemp("ctx"))


@pytest.fixture(scope="module")
def models(model_dir, tmp_path_factory):
    """Real config and voices plus the random-init checkpoint, as plain files (a bind
    mount cannot follow symlinks out of it), readable by the image's user, and a manifest
    copy that pins the checkpoint."""
    pytest.importorskip("kokoro", reason="the random-init checkpoint is built with kokoro")
    root = tmp_path_factory.mktemp("gpu-models")
    (root / "kokoro").mkdir()
    shutil.copy(model_dir / "kokoro/config.json", root / "kokoro")
    shutil.copytree(model_dir / "kokoro/voices", root / "kokoro/voices")
    ckpt = build_random_checkpoint(root / "kokoro/config.json", root / RANDOM_CKPT_PATH)
    manifest_with({RANDOM_CKPT_PATH: ckpt}, root / "manifest.yml")
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return root


@pytest.fixture(scope="module")
def container(image, models):
    env = {"KOKORO_DEVICE": "cpu", "KOKORO_WORKERS": "1",
           "KOKORO_MANIFEST": "/models/manifest.yml", "KOKORO_TORCH_MODEL": RANDOM_CKPT_PATH}
    with running(image, models, KEY, env, timeout=300) as started:
        yield started


def test_gpu_image_carries_cuda_torch_for_blackwell_and_runs_as_non_root(image):
    r = docker("run", "--rm", "--entrypoint", "python", image, "-c",
               "import torch; print(torch.__version__, torch.version.cuda, "
               "torch._C._cuda_getArchFlags())")
    version, cuda, archs = r.stdout.split(maxsplit=2)
    assert "+cu" in version and cuda.startswith("12."), r.stdout
    assert "sm_120" in archs and "sm_80" in archs, archs
    env = docker("image", "inspect", "-f", "{{.Config.User}} {{json .Config.Env}}", image)
    assert env.stdout.startswith("10001:10001 ")
    assert "KOKORO_ENGINE=torch" in env.stdout and "KOKORO_DEVICE=cuda" in env.stdout


def test_all_54_stock_voices_speak_through_the_images_torch_engine(container):
    name, url = container
    logs = docker("logs", name)
    assert "cjk=j,z" in logs.stdout + logs.stderr  # both CJK G2Ps warmed at start
    spoken = speak_every_voice(url, KEY, phonemes=True)
    assert len(spoken) == 54
    assert {s["lang"] for s in spoken.values()} == set(LANGUAGE_SAMPLES)
    for voice, s in spoken.items():
        expected = (len(s["tokens"]) + 2) * FRAMES_PER_PHONEME * SAMPLES_PER_FRAME
        assert len(s["pcm"]) == expected, (voice, len(s["pcm"]), expected)


@pytest.mark.parametrize("lang", ["j", "z"])
def test_japanese_and_mandarin_stream_as_long_as_a_whole_response(container, lang):
    """The length, not the samples: the decoder's source adds random noise each pass."""
    _, url = container
    whole = speak_every_voice(url, KEY, only_lang=lang)
    streamed = speak_every_voice(url, KEY, stream=True, only_lang=lang)
    assert len(streamed) == (5 if lang == "j" else 8)
    for voice, s in streamed.items():
        assert len(s["pcm"]) == len(whole[voice]["pcm"]) > 0, voice
