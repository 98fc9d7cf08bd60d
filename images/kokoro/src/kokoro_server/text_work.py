"""CPU-bound text work (cleaning, normalisation, voice blends) off the event loop.

Each request's text is read on a small thread pool before it is admitted, so other
requests and /health go on meanwhile. The pool is bounded twice: jobs beyond `capacity`
(waiting or running) are refused with 503 like a full queue, and a job that takes longer
than `budget` seconds is answered with 422 (the thread finishes it unseen: every text
rule is linear time, so no input holds a thread for long).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import ApiError

T = TypeVar("T")


class TextWork:
    def __init__(self, threads: int, capacity: int, budget: float):
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="text")
        self.capacity = capacity
        self.budget = budget
        self._pending = 0

    async def run(self, fn: Callable[..., T], *args) -> T:
        if self._pending >= self.capacity:
            raise ApiError(503, "server_busy",
                           f"the server is reading {self._pending} texts; retry later",
                           headers={"Retry-After": "1"})
        self._pending += 1
        try:
            job = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
            return await asyncio.wait_for(job, self.budget)
        except TimeoutError:
            raise ApiError(422, "input_too_complex",
                           f"reading this input took over {self.budget:g} s "
                           "(KOKORO_TEXT_BUDGET); send shorter text or split it",
                           "input") from None
        finally:
            self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
