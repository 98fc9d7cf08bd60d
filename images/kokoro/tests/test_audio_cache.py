"""The audio cache (audio_cache.py, KOKORO_AUDIO_CACHE_*): the module alone (fast, no
model), then real servers with the real int8 model over HTTP on loopback."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from kokoro_server.app import open_audio_cache
from kokoro_server.audio_cache import SUFFIX, AudioCache, Entry
from kokoro_server.errors import StartupError
from kokoro_server.metrics import Metrics
from kokoro_server.settings import Settings, SettingsError
from kokoro_testlib import ServerThread, free_port

KEY = "cache-secret-4d1"
LONG = " ".join(f"This is sentence number {i}, spoken slowly and clearly." for i in range(40))


def entry(n: int, fill: bytes = b"a") -> Entry:
    return Entry(fill * n, "audio/mpeg", 1.5)


def files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*" + SUFFIX))


# ---- the module alone ---------------------------------------------------------------


def test_cache_miss_then_hit_returns_the_same_bytes(tmp_path):
    cache = AudioCache(tmp_path, 1 << 20)
    assert cache.get("k1") is None
    assert cache.put("k1", entry(1000, b"x"))
    got = cache.get("k1")
    assert got == entry(1000, b"x")
    assert not list(tmp_path.glob("*.tmp"))


def test_cache_evicts_least_recently_used_within_the_bound(tmp_path):
    evicted = []
    cache = AudioCache(tmp_path, 3500, on_evict=evicted.append)
    for k in ("a", "b", "c"):
        cache.put(k, entry(1000))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", entry(1000))
    assert cache.get("b") is None and cache.get("a") and cache.get("c") and cache.get("d")
    assert cache.total <= 3500 and sum(p.stat().st_size for p in files(tmp_path)) == cache.total
    assert sum(evicted) == 1


def test_cache_refuses_an_entry_larger_than_the_bound(tmp_path):
    cache = AudioCache(tmp_path, 500)
    assert not cache.put("big", entry(1000))
    assert files(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_cache_treats_a_corrupt_entry_as_a_miss_and_removes_it(tmp_path, damage):
    cache = AudioCache(tmp_path, 1 << 20)
    cache.put("k", entry(2000, b"z"))
    path = files(tmp_path)[0]
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:-10], "flip": data[:-1] + b"y",
                      "garbage": b"not an entry"}[damage])
    assert cache.get("k") is None
    assert not path.exists() and cache.total == 0


def test_cache_index_survives_a_restart_in_lru_order(tmp_path):
    cache = AudioCache(tmp_path, 3500)
    for k in ("a", "b", "c"):
        cache.put(k, entry(1000))
        time.sleep(0.01)
    time.sleep(0.01)
    cache.get("a")
    (tmp_path / "x.123.tmp").write_bytes(b"half")  # a write cut short
    again = AudioCache(tmp_path, 3500)
    assert len(again) == 3 and again.total == cache.total
    assert not (tmp_path / "x.123.tmp").exists()
    again.put("d", entry(1000))
    assert again.get("b") is None and again.get("a") is not None


def test_cache_restart_with_a_smaller_bound_evicts_at_once(tmp_path):
    cache = AudioCache(tmp_path, 1 << 20)
    for k in "abcd":
        cache.put(k, entry(1000))
    again = AudioCache(tmp_path, 2500)  # two entries with their headers
    assert len(again) == 2 and len(files(tmp_path)) == 2


def test_cache_concurrent_identical_puts_leave_one_whole_entry(tmp_path):
    cache = AudioCache(tmp_path, 1 << 20)
    threads = [threading.Thread(target=cache.put, args=("k", entry(50_000, b"q")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("k") == entry(50_000, b"q")
    assert len(files(tmp_path)) == 1 and not list(tmp_path.glob("*.tmp"))
    assert cache.total == files(tmp_path)[0].stat().st_size


def test_settings_refuse_a_bad_audio_cache_with_the_fix_named(tmp_path):
    with pytest.raises(SettingsError, match="KOKORO_AUDIO_CACHE_DIR must be an absolute"):
        Settings.from_env({"KOKORO_AUDIO_CACHE_DIR": "cache/audio"})
    with pytest.raises(SettingsError, match="KOKORO_AUDIO_CACHE_MAX_BYTES must be at least"):
        Settings.from_env({"KOKORO_AUDIO_CACHE_DIR": str(tmp_path),
                           "KOKORO_AUDIO_CACHE_MAX_BYTES": "100"})
    with pytest.raises(SettingsError, match="KOKORO_AUDIO_CACHE_MAX_BYTES"):
        Settings.from_env({"KOKORO_AUDIO_CACHE_MAX_BYTES": "1G"})
    assert Settings.from_env({}).audio_cache_dir == ""  # off unless set
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StartupError, match="not a writable folder"):
        open_audio_cache(Settings(audio_cache_dir=str(blocker)), Metrics())


# ---- real servers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_server(onnx_settings, tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio-cache")
    settings = replace(onnx_settings, port=free_port(), warmup=False,
                       api_keys=(f"alice:{KEY}",), quota_audio_seconds_per_day=100_000,
                       audio_cache_dir=str(folder))
    with ServerThread(settings) as server:
        yield server


def speak(server, **body):
    body = {"input": "Caching saves time.", "response_format": "mp3", "stream": False,
            **body}
    r = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=300,
                   headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    return r


def counter(server, name: str) -> float:
    return getattr(server.state.metrics, name)._value.get()


def test_speech_miss_then_hit_gives_identical_bytes_and_true_length(cache_server):
    hits, misses = counter(cache_server, "cache_hits"), counter(cache_server, "cache_misses")
    first = speak(cache_server, input="The first time is spoken.")
    second = speak(cache_server, input="The first time is spoken.")
    assert first.headers["x-cache"] == "miss" and second.headers["x-cache"] == "hit"
    assert second.content == first.content
    assert int(second.headers["content-length"]) == len(first.content)
    assert second.headers["content-type"] == first.headers["content-type"]
    assert counter(cache_server, "cache_hits") == hits + 1
    assert counter(cache_server, "cache_misses") == misses + 1
    metrics = httpx.get(cache_server.url + "/metrics",
                        headers={"Authorization": f"Bearer {KEY}"}).text
    assert "kokoro_audio_cache_bytes " in metrics
    assert cache_server.state.metrics.cache_bytes._value.get() > len(first.content)


@pytest.mark.parametrize("change", [
    {"voice": "am_adam"}, {"speed": 1.25}, {"response_format": "wav"},
    {"voice": "af_heart(1)+am_adam(1)"}, {"lang_code": "b"}, {"stream": True}])
def test_speech_any_output_affecting_change_is_a_miss(cache_server, change):
    text = f"Changes make new audio {sorted(change)[0]}."
    speak(cache_server, input=text)
    assert speak(cache_server, input=text).headers["x-cache"] == "hit"
    r = speak(cache_server, input=text, **change)
    assert r.headers["x-cache"] == "miss"
    assert speak(cache_server, input=text, **change).content == r.content


def test_speech_streamed_miss_is_stored_once_complete_and_hit_whole(cache_server):
    body = {"input": "Streams are stored whole.", "response_format": "pcm", "stream": True}
    with httpx.stream("POST", cache_server.url + "/v1/audio/speech", json=body, timeout=300,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.headers["x-cache"] == "miss"
        streamed = r.read()
    hit = speak(cache_server, **body)
    assert hit.headers["x-cache"] == "hit" and hit.content == streamed
    assert int(hit.headers["content-length"]) == len(streamed)
    sse = {**body, "stream_format": "sse"}
    assert speak(cache_server, **sse).headers["x-cache"] == "miss"
    again = speak(cache_server, **sse)
    assert again.headers["x-cache"] == "hit"
    assert again.text.endswith('data: {"type": "speech.audio.done"}\n\n')


def test_speech_disconnect_mid_stream_stores_nothing(cache_server):
    folder = Path(cache_server.state.settings.audio_cache_dir)
    before = files(folder)
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as c, \
            c.stream("POST", cache_server.url + "/v1/audio/speech",
                     json={"input": LONG, "response_format": "pcm", "stream": True}) as r:
        assert r.headers["x-cache"] == "miss"
        pieces = r.iter_raw()
        next(pieces)
    end = time.monotonic() + 120
    while cache_server.state.scheduler.admitted and time.monotonic() < end:
        time.sleep(0.05)
    assert cache_server.state.scheduler.admitted == 0
    assert files(folder) == before and not list(folder.glob("*.tmp"))


def test_speech_corrupt_entry_is_a_miss_and_is_replaced(cache_server):
    folder = Path(cache_server.state.settings.audio_cache_dir)
    before = set(files(folder))
    good = speak(cache_server, input="Corruption is detected.")
    (path,) = set(files(folder)) - before
    path.write_bytes(path.read_bytes()[:-100])
    r = speak(cache_server, input="Corruption is detected.")
    assert r.headers["x-cache"] == "miss" and r.content == good.content
    assert speak(cache_server, input="Corruption is detected.").headers["x-cache"] == "hit"


def test_speech_hit_still_counts_audio_against_the_key_quota(cache_server):
    quotas = cache_server.state.quotas
    used = quotas._keys["alice"].used
    speak(cache_server, input="Quotas count hits too.")
    spoken = quotas._keys["alice"].used - used
    assert spoken > 0.5
    assert speak(cache_server, input="Quotas count hits too.").headers["x-cache"] == "hit"
    assert quotas._keys["alice"].used - used == pytest.approx(2 * spoken)


def test_captioned_speech_is_not_cached(cache_server):
    folder = Path(cache_server.state.settings.audio_cache_dir)
    before = files(folder)
    for _ in range(2):
        r = httpx.post(cache_server.url + "/v1/audio/speech/captioned", timeout=300,
                       json={"input": "Captions are not cached.", "response_format": "mp3"},
                       headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and "x-cache" not in r.headers
    assert files(folder) == before


def test_speech_without_a_cache_sends_no_x_cache_header(client):
    r = client.post("/v1/audio/speech", json={"input": "No cache here.", "stream": False})
    assert r.status_code == 200 and "x-cache" not in r.headers


def test_small_cache_evicts_and_keeps_entries_across_a_restart(onnx_settings, tmp_path):
    settings = replace(onnx_settings, port=free_port(), warmup=False, api_keys=(),
                       audio_cache_dir=str(tmp_path), audio_cache_max_bytes=65_536)
    texts = [f"Entry number {i} is here." for i in range(8)]
    with ServerThread(settings) as server:
        bodies = {}
        for t in texts:
            r = httpx.post(server.url + "/v1/audio/speech", timeout=300,
                           json={"input": t, "response_format": "mp3", "stream": False})
            bodies[t] = r.content
        state = server.state
        assert state.metrics.cache_evictions._value.get() >= 1
        assert state.audio_cache.total <= 65_536
        assert sum(p.stat().st_size for p in files(tmp_path)) == state.audio_cache.total
        kept = len(state.audio_cache)
    with ServerThread(replace(settings, port=free_port())) as again:
        assert len(again.state.audio_cache) == kept
        r = httpx.post(again.url + "/v1/audio/speech", timeout=300,
                       json={"input": texts[-1], "response_format": "mp3", "stream": False})
        assert r.headers["x-cache"] == "hit" and r.content == bodies[texts[-1]]
        r = httpx.post(again.url + "/v1/audio/speech", timeout=300,
                       json={"input": texts[0], "response_format": "mp3", "stream": False})
        assert r.headers["x-cache"] == "miss"  # the oldest was evicted
