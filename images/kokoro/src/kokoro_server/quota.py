"""Quotas per API key: requests per minute and seconds of audio per UTC day.

Requests per minute: a sliding window of the last 60 s. Each key keeps the times of its
admitted requests, at most its limit of them (older ones are dropped), so a request is
refused while the limit's worth were admitted in the last 60 s, and Retry-After is when
the oldest of them leaves the window.

Audio seconds per day: the seconds of audio actually produced for the key (streamed or
not, whole chunks as they are synthesized) since 00:00 UTC. A request that arrives when
the key has used its day's allowance is refused, with Retry-After the seconds to the next
00:00 UTC; a request already admitted finishes (so a day may end a little over).

Health, metrics and the web player are not counted (their routes take no quota). One
lock, held for a few O(1) steps per request or chunk; the clock (`time.time`) can be
injected, so tests move time instead of waiting.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ApiError
from .metrics import Metrics
from .settings import Settings

WINDOW = 60.0  # seconds of the requests-per-minute window
DAY = 86_400.0
LIMIT_RPM = "requests_per_minute"
LIMIT_AUDIO = "audio_seconds_per_day"


@dataclass
class _Key:
    rpm: int
    seconds_per_day: int
    rpm_var: str  # the setting that set each limit, named in the refusal
    day_var: str
    admitted: deque = field(default_factory=deque)  # times, at most `rpm` of them
    day: int = -1  # the UTC day (days since the epoch) `used` counts
    used: float = 0.0


class Quotas:
    def __init__(self, settings: Settings, metrics: Metrics,
                 clock: Callable[[], float] = time.time):
        self.clock = clock
        self.metrics = metrics
        self._lock = threading.Lock()
        overridden = {i.split(":", 1)[0].strip()
                      for i in settings.quota_overrides.split(",") if i.strip()}
        self._keys: dict[str, _Key] = {}
        for name, (rpm, secs) in settings.quota_limits().items():
            var = ("KOKORO_QUOTA_OVERRIDES" if name in overridden else None)
            self._keys[name] = _Key(rpm, secs, var or "KOKORO_QUOTA_REQUESTS_PER_MINUTE",
                                    var or "KOKORO_QUOTA_AUDIO_SECONDS_PER_DAY")
        self.refresh()

    def _today(self, key: _Key, now: float) -> None:
        day = int(now // DAY)
        if day != key.day:
            key.day, key.used = day, 0.0

    def admit(self, name: str | None) -> None:
        """Count one request for key `name`, or raise 429 naming the limit it is over."""
        key = self._keys.get(name) if name else None
        if key is None:
            return
        with self._lock:
            now = self.clock()
            self._today(key, now)
            refused = None
            if key.seconds_per_day and key.used >= key.seconds_per_day:
                refused = (LIMIT_AUDIO, math.ceil((key.day + 1) * DAY - now),
                           f"{key.seconds_per_day} seconds of audio per day (UTC)",
                           key.day_var)
            elif key.rpm:
                while key.admitted and key.admitted[0] <= now - WINDOW:
                    key.admitted.popleft()
                if len(key.admitted) >= key.rpm:
                    refused = (LIMIT_RPM, math.ceil(key.admitted[0] + WINDOW - now),
                               f"{key.rpm} requests per minute", key.rpm_var)
                else:
                    key.admitted.append(now)
        if refused:
            limit, wait, what, var = refused
            wait = max(1, wait)
            self.metrics.key_refused.labels(name, limit).inc()
            raise ApiError(429, "quota_exceeded",
                           f"API key {name!r} is over its quota of {what} ({var}); "
                           f"retry after {wait} s",
                           headers={"Retry-After": str(wait)})
        self.metrics.key_admitted.labels(name).inc()

    def add_audio(self, name: str | None, seconds: float) -> None:
        """Count `seconds` of audio produced for key `name`."""
        key = self._keys.get(name) if name else None
        if key is None or seconds <= 0:
            return
        with self._lock:
            self._today(key, self.clock())
            key.used += seconds
            left = max(0.0, key.seconds_per_day - key.used)
        self.metrics.key_audio_seconds.labels(name).inc(seconds)
        if key.seconds_per_day:
            self.metrics.key_audio_remaining.labels(name).set(left)

    def refresh(self) -> None:
        """Set the remaining-audio gauges (a new UTC day resets them): on every scrape."""
        with self._lock:
            now = self.clock()
            left = {}
            for name, key in self._keys.items():
                if key.seconds_per_day:
                    self._today(key, now)
                    left[name] = max(0.0, key.seconds_per_day - key.used)
        for name, value in left.items():
            self.metrics.key_audio_remaining.labels(name).set(value)
