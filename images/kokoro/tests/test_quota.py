"""Quotas per API key (quota.py): requests per minute, audio seconds per UTC day, the
429 that names the limit, the metrics by key name. A real server with the real ONNX
model; the quotas' clock is a settable one, so windows move without waiting."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import httpx
import pytest
from kokoro_server.quota import DAY
from kokoro_server.settings import Settings, SettingsError
from kokoro_testlib import ServerThread, assert_error, free_port

PLAIN = "plain-secret-7c1e"
KEYS = {"alice": "alice-secret-91a", "carol": "carol-secret-3b2", "dave": "dave-secret-44d",
        "erin": "erin-secret-0f8"}
PLAIN_NAME = "key-" + hashlib.sha256(PLAIN.encode()).hexdigest()[:6]
START = 20_000 * DAY + 3_600.0  # 01:00 UTC
SENTENCE = "The weather is nice today and the children are playing in the park."


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def quota_server(onnx_settings):
    settings = replace(
        onnx_settings, port=free_port(), warmup=False,
        api_keys=(*(f"{n}:{k}" for n, k in KEYS.items()), PLAIN),
        quota_requests_per_minute=2, quota_overrides="carol:0:2, dave:0:1,erin:0:0")
    from kokoro_server.app import AppState

    state = AppState(settings)
    state.quotas.clock = Clock(START)
    with ServerThread(settings, state) as server:
        yield server


def call(server, key: str, path: str = "/v1/models", body: dict | None = None):
    headers = {"Authorization": f"Bearer {key}"}
    if body is None:
        return httpx.get(server.url + path, headers=headers, timeout=300)
    return httpx.post(server.url + path, headers=headers, json=body, timeout=300)


def test_requests_per_minute_refused_with_retry_after_and_named_limit(quota_server):
    clock = quota_server.state.quotas.clock
    assert call(quota_server, KEYS["alice"]).status_code == 200
    clock.now += 10
    assert call(quota_server, KEYS["alice"], "/v1/audio/voices").status_code == 200
    clock.now += 2
    r = call(quota_server, KEYS["alice"])
    err = assert_error(r, 429, "quota_exceeded")
    assert err["type"] == "rate_limit_error"
    assert r.headers["Retry-After"] == "48"  # the first request leaves the window then
    assert err["message"] == ("API key 'alice' is over its quota of 2 requests per minute "
                              "(KOKORO_QUOTA_REQUESTS_PER_MINUTE); retry after 48 s")
    assert KEYS["alice"] not in r.text
    # health is not counted; another key has its own window
    assert httpx.get(quota_server.url + "/health").status_code == 200
    assert call(quota_server, PLAIN).status_code == 200
    # a refused speech request gets the 429 before any work
    r = call(quota_server, KEYS["alice"], "/v1/audio/speech",
             {"input": SENTENCE, "response_format": "pcm"})
    assert_error(r, 429, "quota_exceeded")
    clock.now += 48  # the first request's minute is over: one place again
    assert call(quota_server, KEYS["alice"]).status_code == 200
    r = call(quota_server, KEYS["alice"])
    assert_error(r, 429, "quota_exceeded")
    assert r.headers["Retry-After"] == "10"


def test_audio_seconds_per_day_counted_from_speech_produced(quota_server):
    clock = quota_server.state.quotas.clock
    body = {"input": SENTENCE, "response_format": "pcm", "stream": False}
    r = call(quota_server, KEYS["carol"], "/v1/audio/speech", body)
    assert r.status_code == 200, r.text
    spoken = len(r.content) / 2 / 24_000
    assert spoken > 2  # the sentence alone is over carol's 2 s: the next is refused
    r = call(quota_server, KEYS["carol"], "/v1/audio/speech", body)
    err = assert_error(r, 429, "quota_exceeded")
    to_midnight = int((20_001 * DAY) - clock.now)
    assert r.headers["Retry-After"] == str(to_midnight)
    assert "'carol' is over its quota of 2 seconds of audio per day (UTC) " \
        "(KOKORO_QUOTA_OVERRIDES)" in err["message"]
    # the rpm quota does not apply to carol (0 overrides it): the day's audio does
    assert_error(call(quota_server, KEYS["carol"]), 429, "quota_exceeded")
    # streamed audio counts as well (dave: 1 s a day)
    r = call(quota_server, KEYS["dave"], "/v1/audio/speech", {**body, "stream": True})
    assert r.status_code == 200 and len(r.content) > 24_000 * 2
    assert_error(call(quota_server, KEYS["dave"], "/v1/audio/speech", body), 429,
                 "quota_exceeded")
    # erin (0:0) is unlimited; the next UTC day gives carol her 2 s back
    assert call(quota_server, KEYS["erin"], "/v1/audio/speech", body).status_code == 200
    clock.now = 20_001 * DAY + 1
    assert call(quota_server, KEYS["carol"], "/v1/audio/speech", body).status_code == 200


def test_metrics_by_key_name_never_the_key(quota_server):
    r = call(quota_server, PLAIN, "/metrics")
    assert r.status_code == 200
    text = r.text
    for secret in (*KEYS.values(), PLAIN):
        assert secret not in text
    assert 'kokoro_key_requests_refused_total{key="alice",limit="requests_per_minute"}' \
        in text
    assert 'kokoro_key_requests_refused_total{key="carol",limit="audio_seconds_per_day"}' \
        in text
    assert f'kokoro_key_requests_total{{key="{PLAIN_NAME}"}}' in text
    assert 'kokoro_key_audio_seconds_total{key="carol"}' in text
    assert 'kokoro_key_audio_seconds_remaining{key="dave"} 1.0' in text
    # a new UTC day: dave has his 1 s again; carol spent hers on one sentence
    line = next(x for x in text.splitlines()
                if x.startswith('kokoro_key_audio_seconds_remaining{key="carol"}'))
    assert float(line.split()[-1]) == 0.0


def test_named_and_plain_keys():
    s = Settings.from_env({"KOKORO_API_KEYS": "alice:k-1, plain-key,bob:k:with:colons"})
    names = dict(s.named_keys())
    assert names["alice"] == "k-1"
    assert names["bob"] == "k:with:colons"
    plain_name = "key-" + hashlib.sha256(b"plain-key").hexdigest()[:6]
    assert names[plain_name] == "plain-key"
    assert "k-1" not in repr(s)
    # a prefix that is no name (a space, a slash) leaves the entry a plain key
    assert dict(Settings.from_env({"KOKORO_API_KEYS": "a/b:c"}).named_keys()) == {
        "key-" + hashlib.sha256(b"a/b:c").hexdigest()[:6]: "a/b:c"}
    # default: no quotas
    assert Settings.from_env({"KOKORO_API_KEYS": "x"}).quota_limits() == {
        "key-" + hashlib.sha256(b"x").hexdigest()[:6]: (0, 0)}


@pytest.mark.parametrize("env, match", [
    ({"KOKORO_QUOTA_REQUESTS_PER_MINUTE": "-1", "KOKORO_API_KEYS": "k"},
     "KOKORO_QUOTA_REQUESTS_PER_MINUTE must be >= 0"),
    ({"KOKORO_QUOTA_AUDIO_SECONDS_PER_DAY": "lots", "KOKORO_API_KEYS": "k"},
     "KOKORO_QUOTA_AUDIO_SECONDS_PER_DAY"),
    ({"KOKORO_QUOTA_REQUESTS_PER_MINUTE": "60"},
     "no keys are set: set KOKORO_API_KEYS"),
    ({"KOKORO_API_KEYS": "a:k1,a:k2"}, "two keys are named 'a'"),
    ({"KOKORO_API_KEYS": "a:"}, "named 'a' has no key"),
    ({"KOKORO_API_KEYS": "a:k1", "KOKORO_QUOTA_OVERRIDES": "a:60"},
     "KOKORO_QUOTA_OVERRIDES: 'a:60' is not name:requests_per_minute:audio_seconds"),
    ({"KOKORO_API_KEYS": "a:k1", "KOKORO_QUOTA_OVERRIDES": "b:60:0"},
     "KOKORO_QUOTA_OVERRIDES names 'b', which is no key's name"),
])
def test_bad_quota_settings_refused_naming_the_variable(env, match):
    with pytest.raises(SettingsError, match=match):
        Settings.from_env(env)
