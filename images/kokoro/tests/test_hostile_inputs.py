"""Hostile, slow and pathological inputs against the real server: each gets a clean
answer (audio, or the JSON error shape), and none holds up the others.

"Holds up" is tested by structure, not by a stopwatch: the text work of a request is
held mid-way (a patched step waits on an event) and /health must answer meanwhile,
which it could not if that step ran on the event loop.
"""
from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from kokoro_server.api import speech
from kokoro_server.errors import ApiError
from kokoro_server.text_work import TextWork
from kokoro_server.voices import VoiceStore
from kokoro_testlib import API_KEY, HOSTILE

AUTH = {"Authorization": f"Bearer {API_KEY}"}
HOSTILE_VOICES = {
    "quadratic blend": "a(" + "1" * 20_000 + "x",
    "long voice": "af_heart+" * 2_000,
    "many parts": "+".join(["af_heart(1)"] * 50),
    "nested": "af_heart((((1))))",
}


def healthy(server) -> bool:
    r = httpx.get(server.url + "/health", timeout=60)  # a hang detector, not a bound
    return r.status_code == 200 and r.json()["status"] == "ok"


def answer(server, body: dict, path: str = "/v1/audio/speech") -> tuple[int, bytes]:
    """The status and the first bytes (audio is not read to the end: the client hangs
    up, which is also what a hostile client does)."""
    with httpx.Client(timeout=300, headers=AUTH) as c, \
            c.stream("POST", server.url + path, json=body) as r:
        first = next(r.iter_raw(), b"") if r.status_code == 200 else r.read()
        return r.status_code, first


def clean(status: int, first: bytes) -> None:
    assert (status == 200 and first) or 400 <= status < 500, (status, first[:300])
    if status >= 400:
        assert set(httpx.Response(status, content=first).json()["error"]) == {
            "message", "type", "code", "param"}


# Every rule's runs are read by the normaliser alone in test_normalize.py; here the
# inputs that once stalled the server go through all of it (each costs the engine a
# pass or two, which a client that hangs up cannot stop on CPU).
@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_text_gets_a_clean_answer_and_the_server_stays_healthy(name, onnx_server):
    text = HOSTILE[name]
    clean(*answer(onnx_server, {"input": text, "voice": "af_heart", "response_format": "pcm"}))
    assert healthy(onnx_server)


@pytest.mark.parametrize("name", HOSTILE_VOICES)
def test_hostile_voices_are_refused_with_400(name, onnx_server):
    status, body = answer(onnx_server, {"input": "Hello.", "voice": HOSTILE_VOICES[name]})
    assert status == 400, body[:300]
    assert httpx.Response(status, content=body).json()["error"]["param"] == "voice"


class Held:
    """Replaces one step of a request's text work with one that waits to be released."""

    def __init__(self, step):
        self.step, self.entered, self.release = step, threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(600), "the test never released the held step"
        return self.step(*args, **kwargs)


@pytest.mark.parametrize("where", ["check_text", "normalized", "resolve"])
def test_text_work_runs_off_the_event_loop(where, onnx_server, monkeypatch):
    owner = VoiceStore if where == "resolve" else speech
    held = Held(getattr(owner, where))
    if where == "resolve":
        monkeypatch.setattr(owner, where, lambda self, spec: held(self, spec))
    else:
        monkeypatch.setattr(owner, where, held)
    results = []
    request = threading.Thread(target=lambda: results.append(answer(
        onnx_server, {"input": "Held for a moment.", "response_format": "pcm"})))
    request.start()
    try:
        assert held.entered.wait(300), "the request never reached the held step"
        assert healthy(onnx_server)  # answered while the text is held
    finally:
        held.release.set()
        request.join(600)
    assert results and results[0][0] == 200


def test_text_work_over_its_budget_is_422_and_frees_the_request(onnx_server, monkeypatch):
    held = Held(speech.normalized)
    monkeypatch.setattr(speech, "normalized", held)
    monkeypatch.setattr(onnx_server.state.text_work, "budget", 0.5)
    try:
        status, body = answer(onnx_server, {"input": "Too slow to read."})
    finally:
        held.release.set()
    assert status == 422, body[:300]
    assert httpx.Response(status, content=body).json()["error"]["code"] == "input_too_complex"
    assert onnx_server.state.scheduler.admitted == 0  # refused before it was admitted


def test_text_work_beyond_its_capacity_is_refused_with_503():
    async def scenario():
        work = TextWork(threads=1, capacity=1, budget=600)
        gate = threading.Event()
        first = asyncio.ensure_future(work.run(gate.wait, 600))
        await asyncio.sleep(0)  # let it take the only place
        with pytest.raises(ApiError) as err:
            await work.run(len, "second")
        gate.set()
        assert await first is True
        assert await work.run(len, "third") == 5  # the place is back
        work.close()
        return err.value

    err = asyncio.run(scenario())
    assert (err.status, err.code, err.headers["Retry-After"]) == (503, "server_busy", "1")
