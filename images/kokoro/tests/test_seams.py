"""The joins between streamed chunks, on the real int8 model's waveform: no click and
no pause longer than the model makes itself for the same mark within one pass."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
from kokoro_server.audio.stitch import SILENCE
from kokoro_server.engines.base import FRAME_SAMPLES

RATE = 24000
# A paragraph that fits one pass (under 510 phonemes), so the model's own pauses at its
# commas and full stops can be read from a single rendering.
PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling in the "
    "salty wind. Every evening the keeper climbed the spiral stairs to light the lamp. "
    "Ships passing in the night relied on its steady beam to find their way home.")
# A 5 ms window's largest step: the unit clicks are judged in (a click is one large step)
WINDOW = RATE // 200
# Pauses are measured in samples below SILENCE; a quiet sound's edge may cross it a few
# ms earlier or later in one rendering than in another
EDGE_MS = 10.0
# The decoder does not hold to the duration frames exactly: a pause may start or end a
# few frames (25 ms each) off its mark's
MARK_FRAMES = 4


def silence_runs(audio: np.ndarray) -> np.ndarray:
    """For each sample, the length of the run of silent samples it is in (0 if loud)."""
    quiet = np.concatenate([[False], np.abs(audio) < SILENCE, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    out = np.zeros(len(audio), np.int64)
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        out[start:end] = end - start
    return out


def model_pauses(engine, phonemes: str, pack) -> dict[str, float]:
    """The longest silence (ms) the model makes in one pass after a full stop, after a
    clause mark, and elsewhere between its first and last sound."""
    result = engine.synthesize_timed(phonemes, pack)
    runs, frames = silence_runs(result.audio), np.cumsum(result.durations)
    chars = [c for c in phonemes if c in engine.vocab]
    out = {"sentence": 0.0, "clause": 0.0}
    marked = np.zeros(len(runs), bool)
    for i, c in enumerate(chars[:-1]):  # token i spans frames[i] .. frames[i + 1]
        kind = "sentence" if c in ".!?" else "clause" if c in ",;:" else None
        if kind:  # the mark's and the space's frames, give or take MARK_FRAMES
            lo = max(0, frames[i] - MARK_FRAMES) * FRAME_SAMPLES
            hi = (frames[i + 2] + MARK_FRAMES) * FRAME_SAMPLES
            marked[lo:hi] = True
            out[kind] = max(out[kind], 1000 * runs[lo:hi].max() / RATE)
    # elsewhere: runs none of whose samples is in a mark's frames, between the edges
    starts = np.flatnonzero(np.diff(np.concatenate([[0], runs])) > 0)
    out["word"] = 0.0
    for start in starts:
        end = start + runs[start]
        if start > 0 and end < len(runs) and not marked[start:end].any():
            out["word"] = max(out["word"], 1000 * runs[start] / RATE)
    return out


@pytest.fixture(scope="module")
def streamed(onnx_server):
    """The paragraph as the server speaks it (short first chunk, growing chunks)."""
    state = onnx_server.state
    pack = state.voices.resolve("af_heart")[0]

    async def run():
        plan = await state.scheduler.plan(PARAGRAPH, "a")
        return [s async for s in state.scheduler.speak(plan, pack, 1.0)]

    spoken = asyncio.run(run())
    one_pass = state.phonemizer(PARAGRAPH, "a")
    return spoken, model_pauses(state.engine, one_pass, pack)


def joins(spoken) -> list[tuple[int, str]]:
    """(sample index of each join in the joined audio, the earlier chunk's text)."""
    ends = np.cumsum([len(s.audio) for s in spoken])
    return [(int(e), s.chunk.text) for e, s in zip(ends[:-1], spoken, strict=False)]


def test_the_paragraph_is_spoken_in_several_chunks_starting_short(streamed):
    spoken, _ = streamed
    assert len(spoken) >= 3
    assert len(spoken[0].chunk.text.split()) < len(PARAGRAPH.split(".")[0].split())


def test_joins_pause_no_longer_than_the_model_does_for_the_same_mark(streamed):
    spoken, pauses = streamed
    runs = silence_runs(np.concatenate([s.audio for s in spoken]))
    for at, text in joins(spoken):
        mark = text.rstrip()[-1]
        kind = "sentence" if mark in ".!?" else "clause" if mark in ",;:" else "word"
        gap = 1000 * runs[at] / RATE
        assert gap <= pauses[kind] + EDGE_MS, (text, kind, gap, pauses)


def test_joins_step_no_more_than_the_speech_inside_chunks(streamed):
    """A click is a step between two samples larger than speech makes: the largest step
    within 5 ms of a join must stay under the median of the 5 ms windows' largest steps
    inside the chunks' speech (a typical stretch of speech, not its sharpest edge)."""
    spoken, _ = streamed
    audio = np.concatenate([s.audio for s in spoken])
    step = np.abs(np.diff(audio))
    near = np.zeros(len(step), bool)
    for at, _ in joins(spoken):
        near[max(0, at - WINDOW):at + WINDOW] = True
    n = len(step) // WINDOW
    windows = step[:n * WINDOW].reshape(n, WINDOW)
    speech = windows.max(1)[~near[:n * WINDOW].reshape(n, WINDOW).any(1)]
    typical = np.median(speech[speech > SILENCE])
    for at, text in joins(spoken):
        assert step[max(0, at - WINDOW):at + WINDOW].max() < typical, (text, typical)
