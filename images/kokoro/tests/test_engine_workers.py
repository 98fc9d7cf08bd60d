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


class FaultyEngine(RecordingEngine):
    """Fails every pass that holds an input containing 'x'; `fail_all` breaks it whole
    (a lost GPU); `short` makes it return one result too few."""

    def __init__(self, max_batch: int):
        super().__init__(max_batch)
        self.release.set()
        self.fail_all = False
        self.short = False

    def infer_batch(self, items) -> list[Synthesis]:
        out = super().infer_batch(items)
        if self.fail_all or any(24 in ids for ids, _, _ in items):  # 'x' is token 24
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return out[:-1] if self.short else out


def faulty(max_batch: int = 4) -> tuple[FaultyEngine, EngineWorkers]:
    engine = FaultyEngine(max_batch)
    workers = EngineWorkers(engine, Metrics(), workers=1, batch_tokens=64)
    workers.probe = ("hello", PACK, 1.0)
    return engine, workers


def test_one_bad_input_fails_only_its_own_request_in_a_batch():
    engine, workers = faulty()
    engine.release.clear()  # hold the first pass so the three queue behind it
    blocker = workers.submit("z", PACK, 1.0)
    assert engine.started.wait(600)
    good, bad, also_good = (workers.submit(t, PACK, 1.0, object()) for t in ("aa", "xx", "bb"))
    engine.release.set()
    blocker.result(600)
    assert good.result(600) and also_good.result(600)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        bad.result(600)
    assert engine.passes == [["z"], ["aa", "xx", "bb"], ["aa"], ["xx"], ["bb"]]
    assert workers.broken is None
    workers.close()


def test_a_result_count_mismatch_fails_the_request_and_the_worker_goes_on():
    engine, workers = faulty()
    engine.short = True
    # the base engine's own check, or the workers' one for an engine that skips it
    with pytest.raises((ValueError, RuntimeError), match=r"shorter|returned 0 results"):
        workers.submit("aa", PACK, 1.0).result(600)
    engine.short = False
    assert workers.submit("bb", PACK, 1.0).result(600)  # the same worker thread
    workers.close()


def test_bad_inputs_alone_do_not_mark_the_engine_broken():
    engine, workers = faulty()
    for _ in range(5):
        with pytest.raises(RuntimeError):
            workers.submit("xx", PACK, 1.0).result(600)
    assert workers.broken is None  # the known-good probe passed each time
    assert engine.passes.count(["hello"]) >= 1
    workers.close()


def test_an_engine_that_fails_a_known_good_input_is_broken_until_a_pass_succeeds():
    engine, workers = faulty()
    engine.fail_all = True
    for _ in range(3):
        with pytest.raises(RuntimeError):
            workers.submit("aa", PACK, 1.0).result(600)
    assert workers.broken == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert workers.metrics.ready._value.get() == 0
    engine.fail_all = False
    assert workers.submit("aa", PACK, 1.0).result(600)
    assert workers.broken is None and workers.metrics.ready._value.get() == 1
    workers.close()


def test_health_says_the_engine_is_failing_while_it_is_broken():
    from types import SimpleNamespace

    from kokoro_server.api.ops import health

    scheduler = SimpleNamespace(engine_broken="RuntimeError: CUDA error")
    r = health(SimpleNamespace(ready=True, scheduler=scheduler))
    assert r.status_code == 503
    assert r.body == b'{"status":"engine_failing","error":"RuntimeError: CUDA error"}'


class Clock:
    """A clock the test moves by hand: stall rules are about durations, not timing."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stall_scheduler(clock: Clock):
    from kokoro_server.scheduler import Scheduler

    engine = RecordingEngine(max_batch=1)
    return engine, Scheduler(engine, phonemizer=None, metrics=Metrics(), workers=1,
                             max_queue=1, clock=clock)


def test_an_engine_pass_that_never_returns_is_a_stall():
    clock = Clock()
    engine, scheduler = stall_scheduler(clock)
    held = scheduler._workers.submit("aa", PACK, 1.0)
    assert engine.started.wait(600)
    clock.now += 120
    assert scheduler.stalled(after=120) is None  # not past the deadline yet
    clock.now += 1
    assert scheduler.stalled(after=120) == "an engine pass has run for 121 s"
    engine.release.set()
    held.result(600)
    assert scheduler.stalled(after=120) is None  # the pass ended: progress
    scheduler.close()


def test_admitted_requests_that_never_move_are_a_stall_and_an_idle_server_is_not():
    clock = Clock()
    _, scheduler = stall_scheduler(clock)
    clock.now += 3600  # an hour with no requests is not a stall
    release = scheduler.admit()  # a place taken, and then nothing happens (a leak)
    assert scheduler.stalled(after=120) is None
    clock.now += 121
    assert scheduler.stalled(after=120) == "1 requests admitted, none has moved for 121 s"
    release()
    assert scheduler.stalled(after=120) is None
    scheduler.close()


def test_health_says_the_server_is_stalled():
    from types import SimpleNamespace

    from kokoro_server.api.ops import health

    scheduler = SimpleNamespace(engine_broken=None, stalled=lambda after: f"stuck {after:g}")
    r = health(SimpleNamespace(ready=True, scheduler=scheduler,
                               settings=SimpleNamespace(stall_timeout=120.0)))
    assert r.status_code == 503
    assert r.body == b'{"status":"stalled","error":"stuck 120"}'
