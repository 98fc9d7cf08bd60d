"""Batched forward passes of the torch engine: each item of a padded batch sounds as if
it ran alone, and concurrent requests share passes. On the CPU with a random-init
checkpoint in the real format whose duration head varies by token (so items of one
batch differ in length frame by frame, not just in tokens)."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest
import torch
from kokoro_testlib import RANDOM_CKPT_PATH, ServerThread, free_port

SAMPLES_PER_FRAME = 600


@pytest.fixture(scope="module")
def varied_model(torch_model_dir):
    """KModel with a duration head that gives each token its own length, and with the
    vocoder's random phase noise off so two runs of one input can be compared."""
    from kokoro import KModel
    from kokoro_server.engines import torch_batch

    root, _ = torch_model_dir
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=str(root / "kokoro/config.json"),
                   model=str(root / RANDOM_CKPT_PATH)).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        proj = model.predictor.duration_proj.linear_layer
        proj.weight.copy_(torch.randn(proj.weight.shape, generator=gen) * 0.15)
    torch_batch.enable(model)
    return model


@pytest.fixture
def no_phase_noise(monkeypatch):
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros(*a, **k))
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)


def test_each_item_of_a_padded_batch_matches_its_lone_run(varied_model, no_phase_noise):
    from kokoro_server.engines.torch_batch import forward_batch

    rng = np.random.default_rng(0)
    ids = [[0, *map(int, rng.integers(1, 170, n)), 0] for n in (24, 5, 13)]
    ref_s = torch.from_numpy(rng.standard_normal((3, 256)).astype(np.float32))
    speeds = [1.0, 1.3, 0.8]
    batched = forward_batch(varied_model, ids, ref_s, speeds)
    frame_counts, token_frames = set(), set()
    for b, (audio, durations) in enumerate(batched):
        with torch.inference_mode():
            lone, lone_dur = varied_model.forward_with_tokens(
                torch.tensor([ids[b]]), ref_s[b:b + 1], speeds[b])
        assert durations.tolist() == lone_dur.tolist()
        token_frames |= set(durations.tolist()[1:-1])
        frame_counts.add(int(durations.sum()))
        assert len(audio) == len(lone) == int(durations.sum()) * SAMPLES_PER_FRAME
        # All but the last frame: the vocoder's STFT pads a lone item's end by reflection.
        body = slice(0, len(lone) - SAMPLES_PER_FRAME)
        err = (audio[body] - lone[body]).abs().max() / lone[body].abs().max()
        assert err < 5e-3, f"item {b}: relative error {err:.2e}"  # naive padding: 1e-2 to 0.7
    assert len(frame_counts) == 3  # padded to the longest, in tokens and in frames
    assert len(token_frames) > 2, "the duration head must vary by token"


def test_a_lone_forward_is_unchanged_by_enabling_batches(varied_model, no_phase_noise,
                                                          torch_model_dir):
    from kokoro import KModel

    root, _ = torch_model_dir
    plain = KModel(repo_id="hexgrad/Kokoro-82M", config=str(root / "kokoro/config.json"),
                   model=str(root / RANDOM_CKPT_PATH)).eval()
    plain.load_state_dict(varied_model.state_dict())
    ids = torch.tensor([[0, 50, 83, 156, 43, 0]])
    ref_s = torch.ones(1, 256) * 0.1
    with torch.inference_mode():
        a, _ = plain.forward_with_tokens(ids, ref_s, 1.0)
        b, _ = varied_model.forward_with_tokens(ids, ref_s, 1.0)
    assert torch.equal(a, b)


def test_concurrent_requests_share_forward_passes(torch_settings):
    """The first request is sent alone and its pass held until the other four are queued
    behind it (on a fast host it could otherwise end before the next one arrives; sent
    together, two could share the first pass), so the layout is fixed: one pass alone,
    then one pass of the four that waited."""
    settings = replace(torch_settings, port=free_port(), batch_size=4, workers=1)
    texts = ["Hi there.", "Good morning to you.", "See you soon.", "Thanks a lot.",
             "Well done."]
    results: dict[str, httpx.Response] = {}
    with ServerThread(settings) as server:
        state = server.state
        assert state.engine.max_batch == 4
        engine_pass = state.engine.synthesize_batch
        held, release = threading.Event(), threading.Event()

        def first_pass_held(items):
            if not held.is_set():
                held.set()
                assert release.wait(600), "the test never let the first pass go"
            return engine_pass(items)

        state.engine.synthesize_batch = first_pass_held

        def speak(text: str) -> None:
            results[text] = httpx.post(
                server.url + "/v1/audio/speech", timeout=600,
                json={"input": text, "voice": "af_heart", "response_format": "pcm"})

        threads = [threading.Thread(target=speak, args=(t,)) for t in texts]
        threads[0].start()
        try:
            assert held.wait(600)
            for t in threads[1:]:
                t.start()
            deadline = time.monotonic() + 600
            while state.scheduler._workers.queued < len(texts) - 1:
                assert time.monotonic() < deadline, "the other requests never queued"
                time.sleep(0.05)
        finally:
            release.set()
        for t in threads:
            t.join()
        metrics = httpx.get(server.url + "/metrics", timeout=60).text
        for text in texts:
            assert results[text].status_code == 200, results[text].text
            n_tokens = len(state.engine.token_ids(state.phonemizer(text, "a"))) + 2
            # Each request gets its own audio: the length its own tokens set.
            assert len(np.frombuffer(results[text].content, "<i2")) == \
                n_tokens * 3 * SAMPLES_PER_FRAME
    assert _sample(metrics, "kokoro_batch_size_sum") == len(texts)
    assert _sample(metrics, "kokoro_batch_size_count") == 2, metrics
    assert _sample(metrics, 'kokoro_batch_size_bucket{le="1.0"}') == 1, metrics


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")
