"""The rules by which engine workers form forward passes, on real threads with an
engine that records each pass (the model itself is beside the point here; the torch
engine's passes are tested in test_torch_batch.py)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from kokoro_server.engine_workers import EngineWorkers
from kokoro_server.engines.base import Engine, Synthesis
from kokoro_server.metrics import Metrics

PACK = np.zeros((510, 1, 256), np.float32)


class RecordingEngine(Engine):
    """Each pass is recorded as the list of its inputs' phonemes; the first pass
    waits for `release` so that the queue can fill behind it."""

    def __init__(self, max_batch: int):
        self.vocab = {c: i + 1 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
        self.max_batch = max_batch
        self.passes: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def infer(self, ids, style, speed) -> Synthesis:
        return self.infer_batch([(ids, style, speed)])[0]

    def infer_batch(self, items) -> list[Synthesis]:
        self.passes.append(["".join(chr(96 + i) for i in ids) for ids, _, _ in items])
        self.started.set()
        # A held pass that timed out would end early and show a wrong layout, not a hang.
        assert self.release.wait(600), "the test never released the held pass"
        return [Synthesis(np.zeros(len(ids) * 600, np.float32)) for ids, _, _ in items]


@pytest.fixture
def engine_and_workers(request):
    engine = RecordingEngine(request.param)
    workers = EngineWorkers(engine, Metrics(), workers=1, batch_tokens=24)
    yield engine, workers
    workers.close()


def run(workers, engine, jobs) -> list:
    """Occupy the worker with a blocker, queue `jobs` behind it, then let it all go."""
    blocker = workers.submit("z", PACK, 1.0)
    assert engine.started.wait(600)
    futures = [workers.submit(text, PACK, 1.0, owner, first) for text, owner, first in jobs]
    engine.release.set()
    blocker.result(600)
    return [f.result(600) for f in futures]


@pytest.mark.parametrize("engine_and_workers", [4], indirect=True)
def test_waiting_chunks_of_different_requests_share_one_pass(engine_and_workers):
    engine, workers = engine_and_workers
    a, b, c = object(), object(), object()
    run(workers, engine, [("aa", a, True), ("bb", b, True), ("cc", c, True)])
    assert engine.passes == [["z"], ["aa", "bb", "cc"]]


@pytest.mark.parametrize("engine_and_workers", [2], indirect=True)
def test_a_pass_holds_at_most_max_batch_inputs(engine_and_workers):
    engine, workers = engine_and_workers
    run(workers, engine, [(t, object(), True) for t in ("aa", "bb", "cc")])
    assert engine.passes == [["z"], ["aa", "bb"], ["cc"]]


@pytest.mark.parametrize("engine_and_workers", [16], indirect=True)
def test_a_pass_stays_within_the_padded_token_budget(engine_and_workers):
    engine, workers = engine_and_workers
    # batch_tokens=24: with the two pad tokens, 10 letters are 12 tokens, so two fit
    # (2 x 12) but not a third; a shorter later input may still join the first pass.
    ten, three = "abcdefghij", "abc"
    run(workers, engine, [(ten, object(), True), (ten, object(), True),
                          (ten, object(), True)])
    assert engine.passes[1:] == [[ten, ten], [ten]]
    engine.passes.clear()
    engine.started.clear()
    engine.release.clear()
    run(workers, engine, [(ten, object(), True), ("abcdefghijklmnopqrstuvw", object(), True),
                          (three, object(), True)])
    assert engine.passes[1:] == [[ten, three], ["abcdefghijklmnopqrstuvw"]]


@pytest.mark.parametrize("engine_and_workers", [4], indirect=True)
def test_a_requests_first_chunk_runs_without_its_later_chunks(engine_and_workers):
    engine, workers = engine_and_workers
    req, other = object(), object()
    run(workers, engine, [("aa", req, True), ("bb", req, False), ("cc", other, True),
                          ("dd", req, False)])
    # The first chunk's pass takes the other request's chunk, not its own later ones;
    # those may then share a pass.
    assert engine.passes == [["z"], ["aa", "cc"], ["bb", "dd"]]


@pytest.mark.parametrize("engine_and_workers", [4], indirect=True)
def test_a_cancelled_chunk_never_reaches_the_engine(engine_and_workers):
    engine, workers = engine_and_workers
    blocker = workers.submit("z", PACK, 1.0)
    assert engine.started.wait(600)
    dropped = workers.submit("aa", PACK, 1.0)
    kept = workers.submit("bb", PACK, 1.0)
    workers.cancel(dropped)
    assert workers.queued == 1
    engine.release.set()
    blocker.result(600)
    kept.result(600)
    assert dropped.cancelled()
    assert engine.passes == [["z"], ["bb"]]


def test_warm_up_runs_its_passes_before_releasing_the_engines_cache():
    engine = RecordingEngine(1)
    engine.release.set()
    order = []
    engine.release_cache = lambda: order.append(len(engine.passes))
    engine.warm_up("hello", PACK)
    assert engine.passes == [["hello"], ["hello"]]
    assert order == [2], "the cache must be released once, after the last warm-up pass"
