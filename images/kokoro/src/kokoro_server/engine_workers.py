"""Engine worker threads that take every queued chunk they can into one engine call.

A worker takes the oldest queued job and, while the engine batches, more that are
already waiting, oldest first, as long as the pass stays within `engine.max_batch`
inputs and `batch_tokens` padded tokens (inputs x the longest input: what the pass's
VRAM grows with). A request's first chunk has the engine to itself as far as that
request goes: none of its later chunks joins that pass or starts on another worker
while it runs, since they would hold back the first audio (on an H100, two workers:
time to first audio 150-190 ms without this rule, 68 ms with it). Later chunks may
overlap, which keeps a single long request ahead of real time. Nothing waits for a
batch to fill, so a lone request is never slowed down; under load the queue fills
while a pass runs and the next pass takes what fits.

A failed pass of several inputs is run again input by input, so one input the engine
cannot take fails only its own request. After FAILURES_BEFORE_PROBE failed passes in a
row the engine is tried on a known-good input (the warm-up's): if that fails too, the
engine itself is broken (a lost GPU, a persistent CUDA error) and `broken` says why,
so /health stops answering ok; the next pass that succeeds clears it. A pass that never
returns (a hung driver) shows as `longest_pass`, which /health also reads.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from .engines.base import MAX_TOKENS, Engine, Synthesis
from .metrics import Metrics

FAILURES_BEFORE_PROBE = 3


@dataclass
class Job:
    phonemes: str
    pack: np.ndarray
    speed: float
    tokens: int
    owner: object  # the request
    first: bool  # the request's first chunk
    # Resolves to (Synthesis, seconds the engine call took).
    future: Future = field(default_factory=Future)


class EngineWorkers:
    def __init__(self, engine: Engine, metrics: Metrics, workers: int = 1,
                 batch_tokens: int = 0, clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self.clock = clock
        self.batch_tokens = batch_tokens or MAX_TOKENS * engine.max_batch
        self.metrics = metrics
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running = 0
        self._busy: set[int] = set()  # id() of the owners whose first chunk is running
        self._closed = False
        self.probe: tuple[str, np.ndarray, float] | None = None  # a known-good input
        self.broken: str | None = None  # why the engine counts as broken, if it does
        self._failures = 0  # failed passes in a row
        self._pass_started: dict[int, float] = {}  # worker thread -> its pass's start
        self.last_pass_end = clock()  # when a pass last ended, however it ended
        self._threads = [threading.Thread(target=self._run, name=f"engine-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    @property
    def queued(self) -> int:
        return len(self._jobs)

    @property
    def longest_pass(self) -> float:
        """Seconds the longest-running pass has run so far (0 when none runs)."""
        started = list(self._pass_started.values())
        return self.clock() - min(started) if started else 0.0

    @property
    def idle(self) -> bool:
        """No job queued or on a worker (a cancelled request's running job counts)."""
        with self._cond:
            return not self._jobs and self._running == 0

    def submit(self, phonemes: str, pack: np.ndarray, speed: float,
               owner: object = None, first: bool = True) -> Future:
        tokens = len(self.engine.token_ids(phonemes)) + 2  # with the pad tokens
        job = Job(phonemes, pack, speed, tokens,
                  owner if owner is not None else object(), first)
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine workers are closed")
            self._jobs.append(job)
            self.metrics.queue_depth.set(len(self._jobs))
            self._cond.notify()
        return job.future

    def cancel(self, future: Future) -> None:
        """Drop a job that has not started; one already running finishes unseen."""
        with self._cond:
            if future.cancel():
                for job in self._jobs:
                    if job.future is future:
                        self._jobs.remove(job)
                        break
            self.metrics.queue_depth.set(len(self._jobs))

    def _succeeded(self) -> None:
        self._failures = 0
        if self.broken is not None:
            self.broken = None
            self.metrics.ready.set(1)

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        if self._failures < FAILURES_BEFORE_PROBE or self.probe is None:
            return
        try:
            out = self.engine.synthesize_batch([self.probe])
            if len(out) == 1 and len(out[0].audio) > 0:
                self._succeeded()  # the inputs were at fault, not the engine
                return
            exc = RuntimeError("the engine returned no audio for a known-good input")
        except Exception as probe_exc:
            exc = probe_exc
        self.broken = f"{type(exc).__name__}: {exc}"[:300]
        self.metrics.ready.set(0)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            while self._jobs:
                self._jobs.popleft().future.cancel()
            self._cond.notify_all()

    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._closed:
                batch = self._fill()
                if batch:
                    self._running += 1
                    self._busy.update(id(job.owner) for job in batch if job.first)
                    self.metrics.queue_depth.set(len(self._jobs))
                    return batch
                self._cond.wait()
            return None

    def _fill(self) -> list[Job]:
        batch: list[Job] = []
        firsts: set[int] = set()  # owners whose first chunk is in this pass
        longest = 0
        for job in list(self._jobs):
            if job.future.cancelled():
                self._jobs.remove(job)
                continue
            if len(batch) == self.engine.max_batch:
                break
            if id(job.owner) in self._busy or id(job.owner) in firsts:
                continue
            if batch and (len(batch) + 1) * max(longest, job.tokens) > self.batch_tokens:
                continue
            self._jobs.remove(job)
            if job.future.set_running_or_notify_cancel():
                batch.append(job)
                if job.first:
                    firsts.add(id(job.owner))
                longest = max(longest, job.tokens)
        return batch

    def _run(self) -> None:
        me = threading.get_ident()
        while (batch := self._take()) is not None:
            self._pass_started[me] = self.clock()
            try:
                self._call(batch)
            finally:
                del self._pass_started[me]
                self.last_pass_end = self.clock()
                with self._cond:
                    self._running -= 1
                    self._busy.difference_update(id(job.owner) for job in batch if job.first)
                    self._cond.notify_all()  # the owners' next chunks may go now

    def _call(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        try:
            results: list[Synthesis] = self.engine.synthesize_batch(
                [(j.phonemes, j.pack, j.speed) for j in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the engine returned {len(results)} results for "
                                   f"{len(batch)} inputs")
        except Exception as exc:
            if len(batch) > 1:
                for job in batch:
                    self._call([job])
                return
            # The engine's state is settled before the request hears of its error, so
            # a client that then asks /health sees what this failure meant.
            self._failed(exc)
            batch[0].future.set_exception(exc)  # the request sees the engine's error
            return
        except BaseException as exc:  # the requests see it; the worker goes on
            for job in batch:
                job.future.set_exception(exc)
            return
        self._succeeded()
        took = time.perf_counter() - start
        self.metrics.batch_size.observe(len(batch))
        for job, result in zip(batch, results, strict=True):
            job.future.set_result((result, took))
