"""Admission control, engine workers, and the per-request synthesis pipeline.

* Admission: at most `workers + max_queue` speech requests are in the server at once;
  one more is refused with 503 and a Retry-After estimate, never queued without bound.
* Work unit: one text chunk. Chunks of all admitted requests share one FIFO of engine
  workers, each request keeping at most one chunk queued ahead of the one running,
  so concurrent requests interleave chunk by chunk instead of waiting in line; an
  engine that batches takes every waiting chunk into one forward pass
  (engine_workers.py).
* Cancellation: when the consumer stops (client disconnect cancels the response
  task), queued chunk jobs are cancelled and no further chunks are submitted.
* Idle release: with `idle_unload_seconds`, the model is freed after that long without
  speech requests and loaded again by the next one before its first chunk is planned
  (residency.py).
* Stalls: `stalled()` says why the server is stuck, if it is: requests are admitted but
  neither an engine pass nor a response has moved for a while, or one pass has run for
  that long. /health reports it, so a server whose places leaked or whose engine hung
  is taken out of service instead of answering 503 to everyone while "healthy".
"""
from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .audio.stitch import stitch_chunk
from .engine_workers import EngineWorkers
from .engines.base import FRAME_SAMPLES, Engine
from .errors import ApiError
from .metrics import Metrics
from .residency import Residency
from .text.align import phoneme_words
from .text.chunking import Chunk, chunk_text
from .text.g2p import Phonemizer


def _start_pad(durations: np.ndarray | None) -> int | None:
    return None if durations is None else int(durations[0]) * FRAME_SAMPLES


def _fit_durations(durations: np.ndarray | None, samples: int) -> np.ndarray | None:
    """The durations with frames taken off the end (pad first, each word token keeping
    one) until they fit `samples`: the captions' last word then ends within the chunk
    whose trailing silence was cut, which may reach into its last sound's frames (the
    model stretches them past where the sound fades)."""
    if durations is None:
        return None
    out = np.asarray(durations, dtype=np.int64).copy()
    excess = int(out.sum()) - samples // FRAME_SAMPLES
    for k in range(len(out) - 1, -1, -1):
        if excess <= 0:
            break
        take = min(excess, out[k] - (0 if k in (0, len(out) - 1) else 1))
        out[k] -= take
        excess -= take
    return out


@dataclass
class Plan:
    first: Chunk | None
    rest: Iterator[Chunk]


@dataclass
class SpokenChunk:
    chunk: Chunk
    audio: np.ndarray  # stitched (silent edges cut to the join's pause, faded)
    raw_seconds: float  # of the model's audio from its start to where it was cut
    durations: np.ndarray | None = None  # frames per model token, pads included
    # where the model's audio starts in `audio` (negative: its leading silence was cut)
    lead_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.raw_seconds + self.lead_seconds


class Scheduler:
    def __init__(self, engine: Engine, phonemizer: Phonemizer, metrics: Metrics,
                 workers: int = 1, max_queue: int = 32, batch_tokens: int = 0,
                 clock: Callable[[], float] = time.monotonic,
                 idle_unload_seconds: float = 0):
        self.engine = engine
        self.phonemizer = phonemizer
        self.metrics = metrics
        self.workers = workers
        self.capacity = workers + max_queue
        self.clock = clock
        self._workers = EngineWorkers(engine, metrics, workers, batch_tokens, clock)
        self._g2p_pool = ThreadPoolExecutor(1, thread_name_prefix="g2p")
        self._admitted = 0
        self._avg_request_s = 1.0
        self._last_progress = self.clock()  # a chunk spoken, or the first admission
        self.residency = Residency(engine, metrics, idle_unload_seconds, self._busy, clock)

    def _busy(self) -> bool:
        return self._admitted > 0 or not self._workers.idle

    def close(self) -> None:
        self.residency.close()
        self._workers.close()
        self._g2p_pool.shutdown(wait=False, cancel_futures=True)

    def set_probe(self, phonemes: str, pack: np.ndarray) -> None:
        """A known-good input, to tell a broken engine from bad inputs (engine_workers)."""
        self._workers.probe = (phonemes, pack, 1.0)

    @property
    def engine_broken(self) -> str | None:
        """Why the engine counts as broken (it failed a known-good input), else None."""
        return self._workers.broken

    @property
    def admitted(self) -> int:
        return self._admitted

    def stalled(self, after: float) -> str | None:
        """Why the server has made no progress for `after` seconds, or None."""
        longest = self._workers.longest_pass
        if longest > after:
            return f"an engine pass has run for {longest:.0f} s"
        if not self._admitted:
            return None
        quiet = self.clock() - max(self._last_progress, self._workers.last_pass_end)
        if quiet > after:
            return (f"{self._admitted} requests admitted, none has moved for "
                    f"{quiet:.0f} s")
        return None

    @property
    def idle(self) -> bool:
        """No chunk queued or on a worker (a cancelled request's running chunk counts)."""
        return self._workers.idle

    def admit(self) -> Callable[[], None]:
        """Take a place or raise 503; return the (idempotent) release function.

        Not a context manager: a streamed response holds its place until the last
        byte is sent, long after the route function returned."""
        if self._admitted >= self.capacity:
            self.metrics.rejected.inc()
            wait = max(1, math.ceil(self._avg_request_s * self._admitted / self.workers))
            raise ApiError(503, "server_busy",
                           f"the server is at capacity ({self.capacity} requests); retry later",
                           headers={"Retry-After": str(wait)})
        with self.residency.lock:  # ordered against an idle release (residency.py)
            if not self._admitted:
                self._last_progress = self.clock()  # an idle spell is not a stall
            self._admitted += 1
            self.residency.used()
        self.metrics.inflight.set(self._admitted)
        start = time.monotonic()
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.residency.used()
            self._admitted -= 1
            self.metrics.inflight.set(self._admitted)
            took = time.monotonic() - start
            self._avg_request_s = 0.8 * self._avg_request_s + 0.2 * took

        return release

    def _submit(self, chunk: Chunk, pack: np.ndarray, speed: float, owner: object) -> Future:
        return self._workers.submit(chunk.phonemes, pack, speed, owner, chunk.index == 0)

    async def plan(self, text: str, lang: str, phonemes: bool = False) -> Plan:
        """Phonemize up to the first chunk now (so errors come before any audio);
        the rest is phonemized lazily while audio is produced. With `phonemes` the text
        is already phonemes (checked by the caller) and is only chunked. A model released
        for idleness is loaded again first (503 model_unavailable if that fails)."""
        await self.residency.ensure_loaded()
        if phonemes:
            it = chunk_text(text, lambda t: (t, phoneme_words(t)))
        else:
            it = chunk_text(text, lambda t: self.phonemizer.align(t, lang))
        loop = asyncio.get_running_loop()
        first = await loop.run_in_executor(self._g2p_pool, next, it, None)
        if first is None:
            raise ApiError(400, "no_speakable_text",
                           "the input has no text that can be spoken in this language",
                           "input")
        return Plan(first, it)

    async def phonemize(self, text: str, lang: str) -> list[Chunk]:
        """All chunks of a text, phonemized on the G2P thread that speech uses."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._g2p_pool, lambda: list(chunk_text(text, lambda t: self.phonemizer(t, lang))))

    async def _next_chunk(self, plan: Plan) -> Chunk | None:
        if plan.first is not None:
            first, plan.first = plan.first, None
            return first
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._g2p_pool, next, plan.rest, None)

    async def speak(self, plan: Plan, pack: np.ndarray,
                    speed: float) -> AsyncIterator[SpokenChunk]:
        """Yield each chunk's audio in order, keeping one chunk queued ahead."""
        pending: list[tuple[Chunk, Future]] = []
        exhausted = False
        owner = object()
        try:
            while not exhausted or pending:
                while not exhausted and len(pending) < 2:
                    chunk = await self._next_chunk(plan)
                    if chunk is None:
                        exhausted = True
                    else:
                        pending.append((chunk, self._submit(chunk, pack, speed, owner)))
                if not pending:
                    break
                chunk, fut = pending[0]
                last = exhausted and len(pending) == 1
                result, took = await asyncio.wrap_future(fut)
                pending.pop(0)
                rate = self.engine.sample_rate
                seconds = len(result.audio) / rate
                self.metrics.chunks.inc()
                self.metrics.audio_seconds.inc(seconds)
                if seconds > 0:
                    self.metrics.rtf.observe(took / seconds)
                audio, head = stitch_chunk(result.audio, _start_pad(result.durations),
                                           chunk.text, chunk.index == 0, last, speed, rate)
                # the response pulls the next chunk only once it has sent this one
                self._last_progress = self.clock()
                yield SpokenChunk(chunk, audio, (len(audio) + head) / rate,
                                  _fit_durations(result.durations, len(audio) + head),
                                  -head / rate)
        finally:
            # On cancellation: jobs not yet started are dropped (and leave the queue
            # count); one already running finishes on its worker and is discarded.
            for _, fut in pending:
                self._workers.cancel(fut)
