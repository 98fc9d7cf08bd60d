"""Long input is never dropped: a several-thousand-word text is chunked whole, and every
chunk of a long text is spoken with audio in proportion to its text."""
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


# Speech: enough chunks (about 11 at ~55 words each) to cycle the pipeline's window of
# two queued chunks many times over; KOKORO_TEST_LONG_WORDS=3000 speaks a longer text
# (about 8 minutes on 2 cores). Chunking alone is checked on several thousand words.
WORDS = int(os.environ.get("KOKORO_TEST_LONG_WORDS", "600"))
CHUNKED_WORDS = 5000


def test_several_thousand_words_are_chunked_whole_and_in_order(onnx_server):
    """The speech path's chunker with the real G2P: every word of a long text is in
    exactly one chunk, in order, and no chunk is over the model's token limit."""
    state = onnx_server.state
    text = long_text(CHUNKED_WORDS)

    async def run():
        plan = await state.scheduler.plan(text, "a")
        return [plan.first, *plan.rest]

    chunks = asyncio.run(run())
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert " ".join(c.text for c in chunks).split() == text.split()
    assert all(0 < len(state.engine.token_ids(c.phonemes)) <= MAX_TOKENS for c in chunks)
    assert len(chunks) >= CHUNKED_WORDS // 100


@pytest.mark.slow
def test_a_long_text_is_all_spoken_in_proportion(onnx_server):
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
    assert len(spoken) >= WORDS // 100  # many more chunks than the two kept queued
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
