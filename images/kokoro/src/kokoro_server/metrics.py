"""Prometheus metrics, one registry per app (no process-global state)."""
from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("kokoro_requests_total",
                                "Requests by route (HTTP paths; wyoming for Wyoming) and status",
                                ["route", "status"], registry=r)
        self.audio_seconds = Counter("kokoro_audio_seconds_total",
                                     "Seconds of audio produced", registry=r)
        self.chunks = Counter("kokoro_chunks_total", "Text chunks synthesized", registry=r)
        self.cancelled = Counter("kokoro_requests_cancelled_total",
                                 "Speech requests whose client went away mid-generation",
                                 registry=r)
        self.rejected = Counter("kokoro_requests_rejected_total",
                                "Speech requests refused because the queue was full",
                                registry=r)
        self.latency = Histogram(
            "kokoro_synthesis_seconds", "Wall time to synthesize one request",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300), registry=r)
        self.first_audio = Histogram(
            "kokoro_time_to_first_audio_seconds", "Request start to first audio chunk",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r)
        self.rtf = Histogram(
            "kokoro_real_time_factor", "Synthesis wall time / audio duration, per chunk",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5), registry=r)
        self.batch_size = Histogram(
            "kokoro_batch_size", "Text chunks synthesized together in one engine call",
            buckets=(1, 2, 4, 8, 16, 32), registry=r)
        self.queue_depth = Gauge("kokoro_queue_depth",
                                 "Chunk jobs waiting for an engine worker", registry=r)
        self.inflight = Gauge("kokoro_requests_inflight", "Speech requests admitted",
                              registry=r)
        # per API key, by its name (never the key): quota.py
        self.key_admitted = Counter("kokoro_key_requests_total",
                                    "Requests admitted by quota, per API key name", ["key"],
                                    registry=r)
        self.key_refused = Counter(
            "kokoro_key_requests_refused_total",
            "Requests refused (429) because the API key is over a quota, by limit",
            ["key", "limit"], registry=r)
        self.key_audio_seconds = Counter("kokoro_key_audio_seconds_total",
                                         "Seconds of audio produced, per API key name",
                                         ["key"], registry=r)
        self.key_audio_remaining = Gauge(
            "kokoro_key_audio_seconds_remaining",
            "Seconds of audio left in the key's quota for this UTC day (keys with one)",
            ["key"], registry=r)
        self.ready = Gauge("kokoro_ready", "1 once the model is loaded and warmed up",
                           registry=r)
        # idle release (residency.py): the model leaves memory while no one speaks
        self.model_loaded = Gauge(
            "kokoro_model_loaded",
            "1 while the model is in memory, 0 while released for being idle", registry=r)
        self.model_releases = Counter(
            "kokoro_model_releases_total",
            "Times the model was freed after KOKORO_IDLE_UNLOAD_SECONDS without requests",
            registry=r)
        self.model_reload_seconds = Histogram(
            "kokoro_model_reload_seconds",
            "Time to load the model again after an idle release (successful loads)",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=r)
        self.model_reload_failures = Counter(
            "kokoro_model_reload_failures_total",
            "Loads after an idle release that failed (their requests got 503)", registry=r)
        # the audio cache (audio_cache.py; KOKORO_AUDIO_CACHE_DIR)
        self.cache_hits = Counter("kokoro_audio_cache_hits_total",
                                  "Speech responses served from the audio cache", registry=r)
        self.cache_misses = Counter("kokoro_audio_cache_misses_total",
                                    "Speech requests the audio cache did not hold",
                                    registry=r)
        self.cache_bytes = Gauge("kokoro_audio_cache_bytes",
                                 "Bytes the audio cache's entries take on disk", registry=r)
        self.cache_evictions = Counter(
            "kokoro_audio_cache_evictions_total",
            "Entries removed, least recently used first, to stay within "
            "KOKORO_AUDIO_CACHE_MAX_BYTES", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
