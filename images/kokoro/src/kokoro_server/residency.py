"""Idle release: the model leaves memory after a quiet spell and comes back on demand.

On a card shared with ComfyUI, a resident speech model is VRAM that image generation
could use at night. After `idle_seconds` with no speech request admitted and no engine
pass queued or running, the engine frees its model (Engine.unload(): the onnxruntime
session, or the torch module and torch's CUDA cache). The next request loads it again
before its first chunk is planned (Scheduler.plan), so it waits for that load and is
then answered as usual; requests arriving during a load wait for the same load (one
load, however many wait). A load that fails answers every request waiting for it with
503 model_unavailable, and the next request tries again.

`lock` orders admissions against a release: the Scheduler admits under it, and a
release is decided under it only while no request is admitted, so a request is either
admitted before the release (which then does not happen) or finds the release begun and
waits for it to end, then loads the model. Neither the release itself (freeing a torch
module and the CUDA cache can take a while) nor a load runs under the lock: the event
loop admits under it and must never wait on either.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from .engines.base import Engine
from .errors import ApiError
from .metrics import Metrics

log = logging.getLogger(__name__)

RETRY_AFTER_FAILED_LOAD = "5"  # seconds, for the 503 of a failed load


class Residency:
    def __init__(self, engine: Engine, metrics: Metrics, idle_seconds: float,
                 busy: Callable[[], bool], clock: Callable[[], float] = time.monotonic,
                 poll: float | None = None):
        """`busy()`: a request is admitted or an engine pass is queued or running.
        `poll`: how often the watcher thread looks (by default a tenth of
        `idle_seconds`, between 10 ms and 5 s)."""
        if idle_seconds > 0 and not engine.releasable:
            log.warning("idle release is off: the %s engine cannot free its model",
                        engine.name)
            idle_seconds = 0
        self.engine = engine
        self.metrics = metrics
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.lock = threading.Lock()
        self._busy = busy
        self._loading: Future | None = None  # the load in progress, if one is
        self._releasing: Future | None = None  # the release in progress, if one is
        self._last_used = clock()
        self._released_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # read at each scrape: the engine's own state, however it got there
        metrics.model_loaded.set_function(lambda: 1 if engine.loaded else 0)
        if idle_seconds > 0:
            self._poll = poll or min(max(idle_seconds / 10, 0.01), 5.0)
            self._thread = threading.Thread(target=self._watch, name="idle-release",
                                            daemon=True)
            self._thread.start()

    @property
    def loaded(self) -> bool:
        return self.engine.loaded

    @property
    def watching(self) -> bool:
        """The watcher thread runs (idle release is on and not closed)."""
        return self._thread is not None and self._thread.is_alive()

    def used(self) -> None:
        """A request came or went: the quiet spell starts again."""
        self._last_used = self.clock()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self.release_if_idle()
            except Exception:  # the next look tries again; serving goes on regardless
                log.exception("idle release failed")

    def release_if_idle(self) -> bool:
        """Free the model if it has been idle for `idle_seconds`; True if it did."""
        if self.idle_seconds <= 0 or self._stop.is_set():
            return False
        with self.lock:
            idle_for = self.clock() - self._last_used
            if (not self.engine.loaded or self._loading is not None
                    or self._releasing is not None
                    or idle_for < self.idle_seconds or self._busy()):
                return False
            releasing = self._releasing = Future()
            releasing.set_running_or_notify_cancel()
        start = time.perf_counter()
        try:
            released = self.engine.unload_if_unused()  # False: the warm-up still uses it
        finally:
            with self.lock:
                self._releasing = None
            releasing.set_result(None)
        if not released:
            return False
        took = time.perf_counter() - start
        self.metrics.model_releases.inc()
        self._released_at = self.clock()
        log.info("model released after %.0f s without speech requests (took %.2f s); "
                 "the next request loads it again", idle_for, took)
        return True

    async def ensure_loaded(self) -> None:
        """Return once the model is loaded, loading it if it was released (one load for
        every request waiting); raise 503 model_unavailable if that load fails. Only for
        an admitted request: admission keeps the model from being released again."""
        while True:
            if self._releasing is None and self.engine.loaded:
                return
            with self.lock:
                releasing = self._releasing
                if releasing is None:
                    if self.engine.loaded:
                        return
                    fut = self._loading
                    if fut is None:
                        fut = self._loading = Future()
                        # running from the start: a waiter that goes away cannot cancel it
                        fut.set_running_or_notify_cancel()
                        threading.Thread(target=self._load, args=(fut,), name="model-load",
                                         daemon=True).start()
                    break
            # a release begun before this request was admitted: once it ends, load
            await asyncio.wrap_future(releasing)
        try:
            await asyncio.wrap_future(fut)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"[:300]
            raise ApiError(503, "model_unavailable",
                           "the model was released while the server was idle and loading "
                           f"it again failed ({why}); retry later",
                           headers={"Retry-After": RETRY_AFTER_FAILED_LOAD}) from exc

    def _load(self, fut: Future) -> None:
        start = time.perf_counter()
        try:
            self.engine.load()
        except BaseException as exc:
            took = time.perf_counter() - start
            log.error("loading the model again after an idle release failed after %.2f s: "
                      "%s: %s; the next request tries again", took, type(exc).__name__, exc)
            self.metrics.model_reload_failures.inc()
            try:
                self.engine.release_cache()  # what a half-made model left behind
            except Exception:
                log.exception("releasing the cache after a failed load")
            with self.lock:
                self._loading = None
            fut.set_exception(exc)
            return
        took = time.perf_counter() - start
        self.metrics.model_reload_seconds.observe(took)
        if self._released_at:
            log.info("model loaded again in %.2f s (released %.0f s before)", took,
                     self.clock() - self._released_at)
        else:
            log.info("model loaded again in %.2f s", took)
        with self.lock:
            self._loading = None
            self._last_used = self.clock()
        fut.set_result(took)
