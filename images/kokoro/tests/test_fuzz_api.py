"""Property-based fuzzing of every endpoint from the server's own OpenAPI schema
(schemathesis), against the real server and model on loopback.

Each operation gets a bounded, derandomised set of cases (the same on every run, so a
failure is a code change, not luck): valid bodies and ones that break the schema.
Every answer must be below 500, and every 4xx must be the one JSON error shape; after
all of it the server must still speak.
"""
from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kokoro_server.app import create_app
from kokoro_server.audio.encode import FORMATS
from kokoro_server.settings import Settings
from kokoro_testlib import API_KEY, decode_audio

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# The schema the server serves at /openapi.json, built without loading a model.
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
OPERATIONS = {r.ok().label: r.ok() for r in SCHEMA.get_all_operations()}
MODES = {"valid": schemathesis.GenerationMode.POSITIVE,
         "invalid": schemathesis.GenerationMode.NEGATIVE}


def test_the_schema_lists_every_api_route():
    assert set(OPERATIONS) >= {"POST /v1/audio/speech", "POST /v1/audio/speech/captioned",
                               "POST /v1/audio/phonemize", "GET /v1/audio/voices",
                               "GET /v1/models", "GET /health", "GET /metrics"}


# Invalid cases only where there is input to break (the GET routes take none).
CASES = [(label, mode) for label, op in OPERATIONS.items() for mode in MODES
         if mode == "valid" or op.body]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_no_input_gets_a_server_error_and_every_refusal_is_one_shape(label, mode,
                                                                       onnx_server):
    operation = OPERATIONS[label]
    seen: dict[int, int] = {}

    @given(case=operation.as_strategy(MODES[mode]))
    @settings(max_examples=20, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call(base_url=onnx_server.url, headers=AUTH, timeout=300)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        where = f"{label} {case.body!r:.300}"
        assert response.status_code < 500, f"{where}: {response.status_code} {response.text:.300}"
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "code", "param"}, where
            assert error["message"] and error["code"] and error["type"], where

    check()
    if mode == "valid" and label.startswith("GET"):
        assert seen.get(200), f"{label} was never served: {seen}"


# The schema's strings are random Unicode, which the speech routes mostly refuse before
# any synthesis (no such voice, nothing speakable): text built from what real inputs
# hold reaches the normaliser, the G2P, the chunker, the engine and every encoder.
_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéüñçø",
                min_size=1, max_size=12)
_TOKEN = st.one_of(
    _WORD, _WORD, _WORD,
    st.from_regex(r"\A-?[0-9]{1,12}([.,][0-9]{1,4})?\Z"),
    st.from_regex(r"\A[$€£]?[0-9]{1,7}(,[0-9]{3})?(\.[0-9]{2})?[kKmM]?\Z"),
    st.from_regex(r"\A[0-9]{1,2}:[0-9]{2}( ?[ap]m)?\Z"),
    st.from_regex(r"\A(https?://)?(www\.)?[a-z]{1,8}\.(com|org|io)(/[a-z]{1,5})?\Z"),
    st.from_regex(r"\A[a-z.]{1,8}@[a-z]{1,8}\.com\Z"),
    st.from_regex(r"\A[0-9]{1,4}(\.[0-9])? ?(kg|km|mph|°C|%|ms|GB)\Z"),
    st.sampled_from([".", ",", "!", "?", ";", ":", "-", "—", "...", "(", ")", '"', "'",
                     "\n", "&", "#", "/", "*", "我们", "こんにちは", "😀"]),
)
SPEECH = st.fixed_dictionaries(
    {"input": st.lists(_TOKEN, min_size=1, max_size=12).map(" ".join)},
    optional={"voice": st.sampled_from(["af_heart", "bf_emma", "am_michael",
                                        "af_bella(2)+af_sky(1)"]),
              "response_format": st.sampled_from(FORMATS),
              "speed": st.floats(1.0, 4.0),  # slower is longer audio: CI time
              "stream": st.booleans(),
              "stream_format": st.sampled_from(["audio", "sse"]),
              "normalize": st.booleans()})


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/v1/audio/speech/captioned",
                                  "/v1/audio/phonemize"])
def test_fuzzed_text_is_spoken_or_refused_cleanly(path, onnx_server):
    seen: dict[int, int] = {}

    @given(body=SPEECH)
    @settings(max_examples=12, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(body):
        r = httpx.post(onnx_server.url + path, json=body, headers=AUTH, timeout=300)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, f"{body!r:.300}: {r.status_code} {r.text:.300}"
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "code", "param"}, body

    check()
    assert seen.get(200, 0) >= 6, f"most such texts should be spoken: {seen}"


def test_the_server_still_speaks_after_the_fuzzing(onnx_server):
    # last in this module, which pytest runs in file order
    r = httpx.post(onnx_server.url + "/v1/audio/speech", headers=AUTH, timeout=300,
                   json={"input": "Still here.", "response_format": "wav"})
    assert r.status_code == 200
    pcm, rate = decode_audio(r.content)
    assert len(pcm) > rate // 4
    assert httpx.get(onnx_server.url + "/health", timeout=60).json()["status"] == "ok"
