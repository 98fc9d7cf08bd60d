"""Fixtures: one per real component (model cache from the mirror, servers, recogniser)."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from kokoro_server.settings import Settings
from kokoro_testlib import (
    API_KEY,
    DEFAULT_CACHE,
    MANIFEST,
    RANDOM_CKPT_PATH,
    ServerThread,
    build_random_checkpoint,
    fetch_models,
    free_port,
    manifest_with,
    voice_paths,
)


@pytest.fixture(scope="session")
def mirror() -> str:
    url = os.environ.get("KOKORO_DEPLOY_MIRROR")
    if not url:
        pytest.fail("KOKORO_DEPLOY_MIRROR is not set: point it at a model mirror (a plain "
                    "HTTP tree with the model cache's layout, e.g. the test bed's "
                    "http://127.0.0.1:18080/ from tests/testbed/mirror.py serve)",
                    pytrace=False)
    return url


@pytest.fixture(scope="session")
def model_dir(mirror) -> Path:
    """The model cache, filled from the mirror and checked against manifest.yml."""
    cache = Path(os.environ.get("KOKORO_DEPLOY_MODEL_CACHE", DEFAULT_CACHE))
    paths = ["kokoro/config.json", "kokoro/onnx/kokoro-v1.0.int8.onnx", *voice_paths()]
    return fetch_models(mirror, paths, cache)


@pytest.fixture(scope="session")
def onnx_settings(model_dir) -> Settings:
    # device="cpu": on a host with onnxruntime-gpu the same suite would otherwise run on
    # CUDA, whose repeated runs need not be bit-identical as the exact checks expect.
    return Settings(engine="onnx", device="cpu", model_dir=model_dir, manifest=MANIFEST,
                    port=free_port(), api_keys=(API_KEY,), max_queue=8)


@pytest.fixture(scope="session")
def onnx_server(onnx_settings):
    with ServerThread(onnx_settings) as server:
        yield server


@pytest.fixture()
def client(onnx_server):
    import httpx

    with httpx.Client(base_url=onnx_server.url, timeout=300,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        yield c


@pytest.fixture(scope="session")
def torch_model_dir(model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A model dir holding the real config and voices plus a random-init checkpoint
    (about 3 frames per phoneme), and a manifest copy that pins that checkpoint."""
    pytest.importorskip("kokoro", reason="the torch engine needs the kokoro package")
    root = tmp_path_factory.mktemp("torch-models")
    (root / "kokoro").mkdir()
    for name in ("config.json", "voices"):
        (root / "kokoro" / name).symlink_to(model_dir / "kokoro" / name)
    ckpt = build_random_checkpoint(model_dir / "kokoro/config.json", root / RANDOM_CKPT_PATH)
    manifest = manifest_with({RANDOM_CKPT_PATH: ckpt}, root / "manifest.yml")
    return root, manifest


@pytest.fixture(scope="session")
def torch_settings(torch_model_dir) -> Settings:
    root, manifest = torch_model_dir
    return Settings(engine="torch", device="cpu", model_dir=root, manifest=manifest,
                    torch_model=RANDOM_CKPT_PATH, port=free_port(), warmup=False)


@pytest.fixture(scope="session")
def torch_server(torch_settings):
    with ServerThread(torch_settings) as server:
        yield server


@pytest.fixture(scope="session")
def small_server(onnx_settings):
    """One worker and no queue: the second concurrent request must be refused."""
    settings = replace(onnx_settings, port=free_port(), workers=1, max_queue=0, api_keys=(),
                       warmup=False)
    with ServerThread(settings) as server:
        yield server


@pytest.fixture(scope="session")
def recognise():
    """pocketsphinx's US-English model: audio (float32, 24 kHz) -> lower-case words."""
    ps = pytest.importorskip("pocketsphinx")

    decoder = ps.Decoder(samprate=16000, loglevel="FATAL")

    def run(audio: np.ndarray, rate: int = 24000) -> list[str]:
        import av

        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        frame = av.AudioFrame.from_ndarray(
            (np.clip(audio, -1, 1) * 32767).astype("<i2").reshape(1, -1),
            format="s16", layout="mono")
        frame.sample_rate = rate
        pcm = b"".join(bytes(f.planes[0])[: f.samples * 2]
                       for f in [*resampler.resample(frame), *resampler.resample(None)])
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr.lower().split() if hyp else []

    return run


def pytest_collection_modifyitems(config, items):
    """Leave the GPU image's tests out unless the marker expression names them
    (`pytest -m gpu_image`, `make test-gpu-image`): building that image takes about
    10 minutes and 3.5 GB of wheels, too much for every run."""
    if "gpu_image" in (config.getoption("markexpr") or ""):
        return
    chosen = [i for i in items if i.get_closest_marker("gpu_image") is None]
    if len(chosen) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
        items[:] = chosen
