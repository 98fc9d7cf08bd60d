"""The torch engine through the real kokoro.KModel loading code, on a random-init
checkpoint in the real on-disk format (about 3 frames per phoneme, see conftest)."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
from kokoro_server.assets import verify
from kokoro_server.errors import StartupError
from kokoro_testlib import RANDOM_CKPT_PATH

SAMPLES_PER_FRAME = 600  # Kokoro: 24 kHz audio, 40 duration frames a second


def test_torch_server_serves_speech_from_the_real_checkpoint_format(torch_server):
    r = httpx.post(torch_server.url + "/v1/audio/speech",
                   json={"input": "Hi there.", "voice": "am_adam", "response_format": "pcm",
                         "stream": False}, timeout=300)
    assert r.status_code == 200, r.text
    state = torch_server.state
    phonemes = state.phonemizer("Hi there.", "a")
    n_tokens = len(state.engine.token_ids(phonemes)) + 2  # with the two pad tokens
    pcm = np.frombuffer(r.content, "<i2")
    assert len(pcm) == n_tokens * 3 * SAMPLES_PER_FRAME  # the duration the predictor set
    assert state.engine.describe() == {"engine": "torch", "device": "cpu", "precision": "fp32"}


def test_torch_engine_divides_duration_by_speed(torch_server):
    engine = torch_server.state.engine
    pack, _ = torch_server.state.voices.resolve("af_heart")
    ids = engine.token_ids("hˈɛlO")
    slow = engine.synthesize_ids(ids, engine.style_for(pack, len(ids)), 1.0)
    fast = engine.synthesize_ids(ids, engine.style_for(pack, len(ids)), 3.0)
    assert len(slow) == (len(ids) + 2) * 3 * SAMPLES_PER_FRAME
    assert len(fast) == (len(ids) + 2) * 1 * SAMPLES_PER_FRAME


def test_torch_checkpoint_not_matching_the_manifest_is_refused(torch_settings, tmp_path):
    root = tmp_path / "models"
    (root / "kokoro" / "test").mkdir(parents=True)
    for name in ("config.json", "voices"):
        (root / "kokoro" / name).symlink_to(torch_settings.model_dir / "kokoro" / name)
    (root / RANDOM_CKPT_PATH).write_bytes(b"not a checkpoint")
    from dataclasses import replace

    with pytest.raises(StartupError, match=r"sha256 mismatch for .*random-init-kokoro\.pth"):
        verify(replace(torch_settings, model_dir=root))


def test_torch_engine_times_words_by_its_predicted_durations(torch_server):
    """KModel returns pred_dur with the audio; with every token biased to 3 frames
    (75 ms) the word times are known exactly: "hˈI ðˈɛɹ." is pad, h ˈ I, space,
    ð ˈ ɛ ɹ, ".", pad."""
    r = httpx.post(torch_server.url + "/v1/audio/speech/captioned",
                   json={"input": "Hi there.", "voice": "am_adam", "response_format": "pcm"},
                   timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    assert torch_server.state.phonemizer("Hi there.", "a") == "hˈI ðˈɛɹ."
    token_s = 3 * SAMPLES_PER_FRAME / 24000
    assert body["words"] == [
        {"word": "Hi", "start": round(1 * token_s, 3), "end": round(4 * token_s, 3)},
        {"word": "there.", "start": round(5 * token_s, 3), "end": round(9 * token_s, 3)}]
    assert body["duration"] == round(11 * token_s, 3)
