"""Idle release (residency.py): after `idle_unload_seconds` without speech requests the
engine frees its model, and the next request loads it again and is answered.

The real int8 ONNX model behind a real server; the quiet spell is measured on a clock
the test moves by hand, so nothing waits for wall time except the one test that proves
the watcher thread acts by itself (with a 0.2 s timeout). A watcher thread also runs in
the hand-clock tests: they check what happened (the model is gone, one release is
counted), never which thread did it.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import numpy as np
import pytest
from kokoro_server.app import AppState, load
from kokoro_server.engines.base import Engine, Synthesis
from kokoro_server.metrics import Metrics
from kokoro_server.scheduler import Scheduler
from kokoro_testlib import API_KEY, ServerThread, assert_error, decode_audio, free_port

TEXT = "The weather is nice today and the children are playing in the park."
IDLE = 60.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def idle_server(onnx_settings):
    """A real server whose scheduler each test replaces with one of its own."""
    settings = replace(onnx_settings, port=free_port(), warmup=False)
    state = AppState(settings)
    load(state)
    with ServerThread(settings, state) as server:
        server.probe = state.scheduler._workers.probe[:2]  # the warm-up's input
        yield server


@pytest.fixture
def make_scheduler(idle_server):
    """Put a scheduler with idle release (and its own metrics) into the server."""
    state = idle_server.state
    made: list[Scheduler] = []

    def make(idle: float = IDLE, clock=None) -> Scheduler:
        state.scheduler.close()
        extra = {"clock": clock} if clock else {}
        scheduler = Scheduler(state.engine, state.phonemizer, Metrics(),
                              workers=state.scheduler.workers,
                              max_queue=state.settings.max_queue,
                              idle_unload_seconds=idle, **extra)
        scheduler.set_probe(*idle_server.probe)
        state.scheduler = scheduler
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close()
    if not state.engine.loaded:  # the next test starts with the model in memory
        state.engine.load()
    state.scheduler = Scheduler(state.engine, state.phonemizer, state.metrics,
                                workers=state.scheduler.workers,
                                max_queue=state.settings.max_queue)
    state.scheduler.set_probe(*idle_server.probe)


@pytest.fixture
def client(idle_server):
    with httpx.Client(base_url=idle_server.url, timeout=300,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        yield c


def speak(client, text: str = TEXT) -> httpx.Response:
    return client.post("/v1/audio/speech",
                       json={"input": text, "voice": "af_heart", "response_format": "wav"})


def audio_of(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    pcm, rate = decode_audio(resp.content)
    assert rate == 24000 and len(pcm) > rate // 2
    return pcm


def value(metrics: Metrics, name: str) -> float:
    got = metrics.registry.get_sample_value(name)
    assert got is not None, name
    return got


def test_model_is_released_after_the_idle_time_and_the_next_request_is_answered(
        make_scheduler, client, idle_server, caplog):
    clock = Clock()
    scheduler = make_scheduler(clock=clock)
    engine, metrics = idle_server.state.engine, scheduler.metrics
    before = audio_of(speak(client))

    clock.now += IDLE - 1
    scheduler.residency.release_if_idle()
    assert engine.loaded, "released before the idle time was over"
    assert value(metrics, "kokoro_model_loaded") == 1

    with caplog.at_level(logging.INFO, logger="kokoro_server.residency"):
        clock.now += 2
        scheduler.residency.release_if_idle()
        assert not engine.loaded and engine.session is None
        assert value(metrics, "kokoro_model_loaded") == 0
        assert value(metrics, "kokoro_model_releases_total") == 1

        health = client.get("/health")  # reloadable on demand: still in service
        assert health.status_code == 200 and health.json()["status"] == "ok"

        after = audio_of(speak(client))
    assert engine.loaded
    assert value(metrics, "kokoro_model_loaded") == 1
    assert value(metrics, "kokoro_model_reload_seconds_count") == 1
    assert value(metrics, "kokoro_model_reload_seconds_sum") > 0
    assert value(metrics, "kokoro_model_reload_failures_total") == 0
    # the same model speaks the same sentence: same length, same waveform shape
    assert len(after) == len(before)
    assert np.corrcoef(before, after)[0, 1] > 0.99
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("model released after 61 s") and "took" in m for m in logged)
    assert any(m.startswith("model loaded again in") for m in logged), logged


def test_the_watcher_thread_releases_by_itself_and_close_stops_it(make_scheduler, client,
                                                                  idle_server):
    engine = idle_server.state.engine
    scheduler = make_scheduler(idle=0.2)
    assert scheduler.residency.watching
    audio_of(speak(client))
    deadline = time.monotonic() + 60  # a bound on a hang, not a timing check
    # the counter moves once the release is over (the engine's flag drops as it starts)
    while (value(scheduler.metrics, "kokoro_model_releases_total") < 1
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert value(scheduler.metrics, "kokoro_model_releases_total") == 1
    assert not engine.loaded
    audio_of(speak(client))  # loaded again
    scheduler.close()
    assert not scheduler.residency.watching


def test_no_watcher_without_an_idle_time(make_scheduler):
    scheduler = make_scheduler(idle=0)
    assert not scheduler.residency.watching
    assert not scheduler.residency.release_if_idle()


def test_no_release_while_a_request_is_admitted(make_scheduler, idle_server):
    clock = Clock()
    scheduler = make_scheduler(clock=clock)
    engine = idle_server.state.engine
    release = scheduler.admit()
    clock.now += 10 * IDLE
    scheduler.residency.release_if_idle()
    assert engine.loaded
    release()  # the quiet spell starts when the last request leaves
    clock.now += IDLE - 1
    scheduler.residency.release_if_idle()
    assert engine.loaded
    clock.now += 2
    scheduler.residency.release_if_idle()
    assert not engine.loaded


def test_requests_arriving_during_a_reload_wait_for_one_load(make_scheduler, client,
                                                              idle_server, monkeypatch):
    clock = Clock()
    scheduler = make_scheduler(clock=clock)
    engine = idle_server.state.engine
    before = audio_of(speak(client))
    clock.now += IDLE + 1
    scheduler.residency.release_if_idle()
    assert not engine.loaded

    real_load, calls, go = engine.load, [], threading.Event()

    def held_load():
        calls.append(threading.current_thread().name)
        assert go.wait(300), "the test never let the load go"
        real_load()

    monkeypatch.setattr(engine, "load", held_load)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(speak, client) for _ in range(3)]
        deadline = time.monotonic() + 120
        while scheduler.admitted < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scheduler.admitted == 3 and len(calls) == 1  # all three wait for the load
        go.set()
        answers = [f.result(300) for f in futures]
    assert len(calls) == 1
    for resp in answers:
        assert len(audio_of(resp)) == len(before)
    assert value(scheduler.metrics, "kokoro_model_reload_seconds_count") == 1


def test_a_failed_reload_answers_503_and_the_next_request_loads_it(make_scheduler, client,
                                                                    idle_server, monkeypatch):
    clock = Clock()
    scheduler = make_scheduler(clock=clock)
    engine = idle_server.state.engine
    before = audio_of(speak(client))
    clock.now += IDLE + 1
    scheduler.residency.release_if_idle()
    assert not engine.loaded

    def failing_load():
        raise RuntimeError("CUDA out of memory (the test's)")

    monkeypatch.setattr(engine, "load", failing_load)
    resp = speak(client)
    error = assert_error(resp, 503, "model_unavailable")
    assert "CUDA out of memory (the test's)" in error["message"]
    assert resp.headers["Retry-After"] == "5"
    assert not engine.loaded and scheduler.admitted == 0  # its place is given back
    assert value(scheduler.metrics, "kokoro_model_reload_failures_total") == 1
    assert value(scheduler.metrics, "kokoro_model_loaded") == 0

    monkeypatch.undo()  # the model's files are fine again
    assert len(audio_of(speak(client))) == len(before)
    assert engine.loaded
    assert value(scheduler.metrics, "kokoro_model_loaded") == 1
    assert value(scheduler.metrics, "kokoro_model_reload_seconds_count") == 1


class HeldEngine(Engine):
    """A releasable engine whose passes wait for `go`: a pass on a worker, its request
    gone, must hold the release off like a request does."""

    releasable = True

    def __init__(self):
        self.vocab = {"a": 1}
        self.started, self.go = threading.Event(), threading.Event()
        self.loaded = True

    def infer(self, ids, style, speed) -> Synthesis:
        self.started.set()
        assert self.go.wait(300), "the test never let the pass go"
        return Synthesis(np.zeros(600, np.float32))

    def load(self) -> None:
        self.loaded = True

    def unload(self) -> None:
        self.loaded = False


def test_no_release_while_a_pass_runs_for_a_request_that_left():
    clock = Clock()
    engine = HeldEngine()
    scheduler = Scheduler(engine, phonemizer=None, metrics=Metrics(), workers=1,
                          max_queue=1, clock=clock, idle_unload_seconds=IDLE)
    try:
        running = scheduler._workers.submit("a", np.zeros((510, 1, 256), np.float32), 1.0)
        assert engine.started.wait(300)
        clock.now += 10 * IDLE
        scheduler.residency.release_if_idle()
        assert engine.loaded
        engine.go.set()
        running.result(300)
        deadline = time.monotonic() + 60
        while not scheduler.idle and time.monotonic() < deadline:
            time.sleep(0.01)
        scheduler.residency.release_if_idle()
        assert not engine.loaded
    finally:
        scheduler.close()


def test_no_release_while_the_warm_up_uses_the_model():
    clock = Clock()
    engine = HeldEngine()
    engine.go.set()
    scheduler = Scheduler(engine, phonemizer=None, metrics=Metrics(), workers=1,
                          max_queue=1, clock=clock, idle_unload_seconds=IDLE)
    try:
        with engine.in_use():  # what Engine.warm_up holds around its passes
            clock.now += 10 * IDLE
            scheduler.residency.release_if_idle()
            assert engine.loaded
        scheduler.residency.release_if_idle()
        assert not engine.loaded
        assert value(scheduler.metrics, "kokoro_model_loaded") == 0
        with engine.in_use():  # a released model is loaded again for its user
            assert engine.loaded
    finally:
        scheduler.close()


class SlowReleaseEngine(HeldEngine):
    """Its release waits for `free` (a torch module and the CUDA cache take a while) and
    notes whether a load ever overlapped it."""

    def __init__(self):
        super().__init__()
        self.go.set()
        self.unloading, self.free = threading.Event(), threading.Event()
        self.loads, self.overlapped = 0, False

    def load(self) -> None:
        self.overlapped |= self.unloading.is_set() and not self.free.is_set()
        self.loads += 1
        self.loaded = True

    def unload(self) -> None:
        self.unloading.set()
        assert self.free.wait(300), "the test never let the release end"
        self.loaded = False


def test_a_release_in_progress_holds_no_lock_and_a_request_then_waits_for_it_and_loads():
    """The event loop admits under the residency lock: a slow release must not hold it.
    A request admitted meanwhile waits for the release to end, then loads the model."""
    clock = Clock()
    engine = SlowReleaseEngine()
    scheduler = Scheduler(engine, phonemizer=None, metrics=Metrics(), workers=1,
                          max_queue=1, clock=clock, idle_unload_seconds=IDLE)
    try:
        clock.now += 10 * IDLE
        with ThreadPoolExecutor(2) as pool:
            releasing = pool.submit(scheduler.residency.release_if_idle)
            assert engine.unloading.wait(300)
            assert scheduler.residency.lock.acquire(timeout=60), "the release holds the lock"
            scheduler.residency.lock.release()
            loading = pool.submit(asyncio.run, scheduler.residency.ensure_loaded())
            time.sleep(0.2)  # let the request reach its wait (the order is checked below)
            engine.free.set()
            assert releasing.result(300) is True
            loading.result(300)
        assert engine.loaded and engine.loads == 1 and not engine.overlapped
        assert value(scheduler.metrics, "kokoro_model_releases_total") == 1
    finally:
        scheduler.close()


def test_the_torch_engine_frees_its_module_and_speaks_alike_once_loaded_again(torch_settings):
    from kokoro_server.assets import verify
    from kokoro_server.engines import load_engine
    from kokoro_server.voices import VoiceStore

    found = verify(torch_settings)
    engine = load_engine(torch_settings, found)
    pack, _ = VoiceStore.from_files({"af_heart": found.voices["af_heart"]}).resolve("af_heart")
    phonemes = "ðə wˈɛðəɹ ɪz nˈIs tədˈA."
    before = engine.synthesize_timed(phonemes, pack)
    assert engine.releasable and engine.loaded
    assert engine.unload_if_unused()
    assert not engine.loaded and engine.model is None
    with pytest.raises(RuntimeError, match="released"):
        engine.synthesize(phonemes, pack)
    engine.load()
    after = engine.synthesize_timed(phonemes, pack)
    # the same checkpoint again: the same durations, so the same length
    assert np.array_equal(after.durations, before.durations)
    assert len(after.audio) == len(before.audio) > 0
