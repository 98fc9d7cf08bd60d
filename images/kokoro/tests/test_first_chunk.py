"""A long streamed paragraph starts with a short first chunk (structure, not timing),
and what is streamed is exactly the chunks' audio joined."""
from __future__ import annotations

import asyncio

import numpy as np
from kokoro_server.text.chunking import HEAD_MIN_WORDS, HEAD_PHONEMES

PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling in the "
    "salty wind. Every evening the keeper climbed the spiral stairs to light the lamp. "
    "Ships passing in the night relied on its steady beam to find their way home. "
    "Nobody in the village could remember a single night when the light had failed.")
LONG = " ".join([PARAGRAPH] * 3)


def test_a_long_paragraphs_first_chunk_is_a_short_phrase(onnx_server):
    state = onnx_server.state

    async def run():
        plan = await state.scheduler.plan(LONG, "a")
        return [plan.first, *plan.rest]

    chunks = asyncio.run(run())
    first = chunks[0]
    assert len(first.text.split()) >= HEAD_MIN_WORDS
    assert len(first.phonemes) <= HEAD_PHONEMES
    assert LONG.startswith(first.text)
    # a few words' phonemes: a fraction of the first sentence's
    assert len(first.phonemes) < len(state.phonemizer(LONG.split(". ")[0], "a")) / 2
    assert " ".join(c.text for c in chunks).split() == LONG.split()


def test_streamed_audio_is_the_chunks_joined(onnx_server, client):
    state = onnx_server.state
    pack = state.voices.resolve("af_heart")[0]

    async def run():
        plan = await state.scheduler.plan(LONG, "a")
        return [s async for s in state.scheduler.speak(plan, pack, 1.0)]

    spoken = asyncio.run(run())
    joined = np.concatenate([s.audio for s in spoken])
    # each chunk's length in seconds is its audio's (captions add them up)
    assert abs(len(joined) / 24000 - sum(s.seconds for s in spoken)) < 1e-6
    with client.stream("POST", "/v1/audio/speech",
                       json={"input": LONG, "voice": "af_heart", "response_format": "pcm",
                             "stream": True}) as r:
        assert r.status_code == 200
        pieces = [p for p in r.iter_bytes() if p]
    pcm = np.frombuffer(b"".join(pieces), "<i2").astype(np.float32) / 32767
    assert len(pcm) == len(joined)
    # the same samples, up to 16-bit rounding (one step, 1/32767)
    assert np.abs(pcm - joined).max() <= 1.5 / 32767
