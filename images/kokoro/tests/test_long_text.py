"""Long input is never dropped: every chunk of a several-thousand-word text is spoken
and the audio's length is in proportion to the text."""
from __future__ import annotations

import asyncio
import os

import pytest
from kokoro_server.text.chunking import MAX_TOKENS

TOPICS = ["river", "mountain", "library", "garden", "harbour", "market", "station", "bridge"]


def long_text(words: int) -> str:
    out, n, i = [], 0, 0
    while n < words:
        t = TOPICS[i % len(TOPICS)]
        s = (f"In part {i + 1}, the old {t} was quiet in the morning, and people walked "
             f"past it slowly while talking about the weather.")
        out.append(s)
        n += len(s.split())
        i += 1
    return " ".join(out)


WORDS = int(os.environ.get("KOKORO_TEST_LONG_WORDS", "3000"))


@pytest.mark.slow
def test_several_thousand_words_are_all_spoken_in_proportion(onnx_server):
    """Through the real pipeline (G2P, chunking, scheduler, the int8 model): every
    chunk yields audio whose length is in proportion to its phoneme tokens, and the
    chunks' text is the whole input, in order. Speed 4 keeps the run short."""
    state = onnx_server.state
    text = long_text(WORDS)
    assert len(text.split()) >= WORDS

    async def run():
        plan = await state.scheduler.plan(text, "a")
        pack = state.voices.resolve("af_heart")[0]
        return [s async for s in state.scheduler.speak(plan, pack, 4.0)]

    spoken = asyncio.run(run())
    assert " ".join(s.chunk.text for s in spoken).split() == text.split()
    total_tokens = 0
    for s in spoken:
        n = len(state.engine.token_ids(s.chunk.phonemes))
        assert 0 < n <= MAX_TOKENS
        # Kokoro gives each token at least one 25 ms frame; at speed 4 real speech
        # averages about one frame per token, and never many more.
        assert n * 0.025 * 0.8 <= s.raw_seconds <= (n + 2) * 0.025 * 4, (s.chunk.index, n)
        total_tokens += n
    seconds = sum(s.raw_seconds for s in spoken)
    assert 0.8 <= seconds / (total_tokens * 0.025) <= 3.0
