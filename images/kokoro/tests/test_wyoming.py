"""Home Assistant's Wyoming protocol (KOKORO_WYOMING_PORT): the real server with the real
int8 model, spoken to with the `wyoming` package's client as Home Assistant speaks to it
(describe -> info; synthesize -> audio-start, audio-chunk..., audio-stop; the streaming
synthesize-start / -chunk / -stop -> synthesize-stopped), through the same admission,
limits and engine as the HTTP API."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import replace

import numpy as np
import pytest
from kokoro_server.errors import ApiError
from kokoro_server.settings import Settings, SettingsError
from kokoro_server.wyoming_server import language_code, pick_voice, sentences_end
from kokoro_testlib import ServerThread, free_port
from test_speech_quality import SENTENCES, recovered
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

LANGUAGES = {"a": "en-US", "b": "en-GB", "e": "es", "f": "fr", "h": "hi", "i": "it",
             "j": "ja", "p": "pt-BR", "z": "zh"}
LONG = " ".join(f"This is sentence number {i}, spoken slowly and clearly." for i in range(30))
READ_TIMEOUT = 300  # a deadline against a hang, never a timing assertion


@pytest.fixture(scope="module")
def wyoming_server(onnx_settings):
    """The HTTP API with its keys, and Wyoming on a loopback port beside it."""
    settings = replace(onnx_settings, port=free_port(), wyoming_port=free_port())
    with ServerThread(settings) as server:
        yield server


@pytest.fixture(scope="module")
def one_place(onnx_settings):
    """One worker and no queue: a second synthesis while one runs is refused."""
    settings = replace(onnx_settings, port=free_port(), wyoming_port=free_port(), workers=1,
                       max_queue=0, api_keys=(), warmup=False)
    with ServerThread(settings) as server:
        yield server


def client(server) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", server.settings.wyoming_port)


async def read_until(c: AsyncTcpClient, *last: str) -> list[Event]:
    """Events up to and including one of type `last` (or an error), or up to the end
    of the connection."""
    events = []
    while True:
        event = await asyncio.wait_for(c.read_event(), READ_TIMEOUT)
        if event is None:
            return events
        events.append(event)
        if event.type in last or Error.is_type(event.type):
            return events


async def exchange(server, *requests: Event, last: str = "audio-stop") -> list[Event]:
    async with client(server) as c:
        for request in requests:
            await c.write_event(request)
        return await read_until(c, last)


def talk(server, *requests: Event, last: str = "audio-stop") -> list[Event]:
    return asyncio.run(exchange(server, *requests, last=last))


def audio_of(events: list[Event]) -> np.ndarray:
    """The PCM of the audio-chunk events as float32, after checking their format."""
    starts = [AudioStart.from_event(e) for e in events if AudioStart.is_type(e.type)]
    chunks = [AudioChunk.from_event(e) for e in events if AudioChunk.is_type(e.type)]
    assert starts and chunks, [e.type for e in events]
    for fmt in [*starts, *chunks]:
        assert (fmt.rate, fmt.width, fmt.channels) == (24000, 2, 1)
    pcm = b"".join(c.audio for c in chunks)
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768


def error_of(events: list[Event]) -> Error:
    assert events and Error.is_type(events[-1].type), [e.type for e in events]
    assert not any(AudioStart.is_type(e.type) for e in events)
    return Error.from_event(events[-1])


def count(server, status: str) -> float:
    return server.state.metrics.requests.labels("wyoming", status)._value.get()


def wait_idle(server, deadline_s: float = 120) -> int:
    end = time.monotonic() + deadline_s
    while server.state.scheduler.admitted and time.monotonic() < end:
        time.sleep(0.05)
    return server.state.scheduler.admitted


# ----- describe -----------------------------------------------------------------------

def test_describe_lists_every_voice_with_its_language(wyoming_server):
    events = talk(wyoming_server, Describe().event(), last="info")
    info = Info.from_event(events[-1])
    assert len(info.tts) == 1
    program = info.tts[0]
    assert program.installed and program.supports_synthesize_streaming
    voices = {v.name: v for v in program.voices}
    ids = wyoming_server.state.voices.ids()
    assert sorted(voices) == ids and len(ids) == 54
    for vid, voice in voices.items():
        assert voice.languages == [LANGUAGES[vid[0]]], vid
        assert voice.installed, vid
        assert voice.attribution.url.startswith("https://huggingface.co/hexgrad/")
    assert {v.languages[0] for v in voices.values()} == set(LANGUAGES.values())


# ----- synthesize ----------------------------------------------------------------------

@pytest.mark.parametrize("voice", ["af_heart", "am_michael", "bf_emma"])
def test_synthesize_streams_intelligible_24khz_16bit_mono(wyoming_server, recognise, voice):
    before = count(wyoming_server, "200")
    for sentence in SENTENCES:
        events = talk(wyoming_server,
                      Synthesize(text=sentence, voice=SynthesizeVoice(name=voice)).event())
        assert events[0].type == "audio-start" and events[-1].type == "audio-stop"
        assert all(e.type == "audio-chunk" for e in events[1:-1])
        audio = audio_of(events)
        heard = recognise(audio)
        assert recovered(sentence, heard) >= 0.6, (voice, sentence, heard)
    assert count(wyoming_server, "200") == before + len(SENTENCES)


def test_synthesize_without_a_voice_uses_the_default_voice(wyoming_server, recognise):
    state = wyoming_server.state
    assert pick_voice(state, None) == state.settings.default_voice == "af_heart"
    events = talk(wyoming_server, Synthesize(text=SENTENCES[0]).event())
    assert recovered(SENTENCES[0], recognise(audio_of(events))) >= 0.6


def test_a_language_alone_picks_a_voice_of_that_language(wyoming_server):
    state = wyoming_server.state
    # the default voice where it speaks the language, else the language's first voice
    assert pick_voice(state, SynthesizeVoice(language="en-US")) == "af_heart"
    assert pick_voice(state, SynthesizeVoice(language="en-GB")) == "bf_alice"
    assert pick_voice(state, SynthesizeVoice(language="fr")) == "ff_siwis"
    assert pick_voice(state, SynthesizeVoice(language="pt_BR")) == "pf_dora"
    assert [language_code(t) for t in ("EN-gb", "es-ES", "ja", "zh-CN", "xx")] == \
        ["b", "e", "j", "z", None]
    text = "Bom dia, meu nome é Dora e eu moro em uma pequena cidade."
    events = talk(wyoming_server, Synthesize(
        text=text, voice=SynthesizeVoice(language="pt-BR")).event())
    audio = audio_of(events)
    assert len(text) / 25 < len(audio) / 24000 < len(text) / 8
    with pytest.raises(ApiError, match=r"no voice speaks 'tlh'.*en-GB"):
        pick_voice(state, SynthesizeVoice(language="tlh"))


def test_streaming_synthesis_speaks_sentences_as_they_arrive(wyoming_server, recognise):
    """Home Assistant's streaming TTS: synthesize-start, the text in small pieces (an
    LLM's tokens), its copy of the whole message as a synthesize (to be ignored), then
    synthesize-stop; one audio-start ... audio-stop group per complete sentence, then
    synthesize-stopped."""
    text = " ".join(SENTENCES)
    words = text.split(" ")
    pieces = [words[0], *(" " + w for w in words[1:])]
    before = count(wyoming_server, "200")
    events = talk(wyoming_server,
                  SynthesizeStart(voice=SynthesizeVoice(name="af_heart")).event(),
                  *(SynthesizeChunk(text=p).event() for p in pieces),
                  Synthesize(text=text, voice=SynthesizeVoice(name="af_heart")).event(),
                  SynthesizeStop().event(), last="synthesize-stopped")
    types = [e.type for e in events]
    assert types[-1] == "synthesize-stopped", types
    assert types.count("audio-start") == types.count("audio-stop") == len(SENTENCES)
    heard = recognise(audio_of(events))
    assert recovered(text, heard) >= 0.6, heard
    assert count(wyoming_server, "200") == before + 1  # the stream is one request


def test_sentence_ends_in_streamed_text():
    assert sentences_end("Hello there") == 0
    assert sentences_end("Hello there. How") == len("Hello there. ")
    assert sentences_end('He said "yes." Then') == len('He said "yes." ')
    assert sentences_end("It costs 3.50 dollars") == 0
    assert sentences_end("你好。今天") == len("你好。")


# ----- refusals --------------------------------------------------------------------------

def assert_still_serving(server):
    events = talk(server, Synthesize(text="Still here.").event())
    assert len(audio_of(events)) > 2400


@pytest.mark.parametrize("request_event,code,words", [
    (Synthesize(text="Hello.", voice=SynthesizeVoice(name="af_nobody")).event(),
     "voice_not_found", ["af_nobody", "describe"]),
    (Synthesize(text="   ").event(), "empty_input", ["empty"]),
    (Synthesize(text="Hello.", voice=SynthesizeVoice(language="tlh")).event(),
     "unsupported_language", ["tlh", "en-US"]),
    (Synthesize(text="Hello.", text_format="ssml").event(), "unsupported_format", ["ssml"]),
    (Event("synthesize", {"text": 42}), "invalid_event", ["string"]),
    (SynthesizeChunk(text="Hello.").event(), "invalid_event", ["synthesize-start"]),
])
def test_bad_requests_get_an_error_event_and_the_server_serves_on(wyoming_server,
                                                                  request_event, code, words):
    before = count(wyoming_server, "400")
    err = error_of(talk(wyoming_server, request_event))
    assert err.code == code, err
    for word in words:
        assert word in err.text, err
    assert count(wyoming_server, "400") == before + 1
    assert_still_serving(wyoming_server)


def test_an_error_ends_that_connection(wyoming_server):
    async def run():
        async with client(wyoming_server) as c:
            await c.write_event(Synthesize(text="", voice=None).event())
            events = await read_until(c, "audio-stop")
            after = await asyncio.wait_for(c.read_event(), READ_TIMEOUT)
            return events, after

    events, after = asyncio.run(run())
    assert error_of(events).code == "empty_input"
    assert after is None  # closed: Home Assistant's one-shot reader would wait otherwise


def test_text_over_the_input_limit_is_refused(wyoming_server):
    limit = wyoming_server.settings.max_input_chars
    err = error_of(talk(wyoming_server, Synthesize(text="word " * (limit // 5 + 1)).event()))
    assert err.code == "input_too_long" and str(limit) in err.text
    # streamed: the whole stream counts as one input
    piece = "word " * 1000
    err = error_of(talk(wyoming_server, SynthesizeStart().event(),
                        *(SynthesizeChunk(text=piece).event()
                          for _ in range(limit // len(piece) + 1)),
                        SynthesizeStop().event(), last="synthesize-stopped"))
    assert err.code == "input_too_long" and "KOKORO_MAX_INPUT_CHARS" in err.text
    assert_still_serving(wyoming_server)


def raw_exchange(server, data: bytes) -> list[dict]:
    """Send raw bytes; the JSON headers of what comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", server.settings.wyoming_port)) as s:
        s.settimeout(READ_TIMEOUT)
        s.sendall(data)
        answer = b""
        while more := s.recv(65536):
            answer += more
    lines, out = answer.split(b"\n"), []
    for i, line in enumerate(lines):
        if line.startswith(b"{") and b'"type"' in line:
            header = json.loads(line)
            if header.get("data_length"):
                rest = b"\n".join(lines[i + 1:])
                header["data"] = json.loads(rest[:header["data_length"]])
            out.append(header)
    return out


@pytest.mark.parametrize("data,words", [
    (b"this is not json\n", "not a Wyoming event"),
    (b'{"type": "synthesize", "data_length": 999999999}\n', "at most"),
])
def test_malformed_events_get_an_error_and_the_connection_closes(wyoming_server, data, words):
    answers = raw_exchange(wyoming_server, data)
    assert [a["type"] for a in answers] == ["error"]
    assert answers[0]["data"]["code"] == "invalid_event"
    assert words in answers[0]["data"]["text"]
    assert_still_serving(wyoming_server)


# ----- admission -------------------------------------------------------------------------

def test_a_full_server_answers_an_error_event_not_a_hang(one_place):
    async def run():
        async with client(one_place) as first:
            await first.write_event(Synthesize(text=LONG).event())
            assert (await read_until(first, "audio-chunk"))[-1].type == "audio-chunk"
            # holding the only place, mid-synthesis: the next request is refused
            return await exchange(one_place, Synthesize(text="Me too.").event())

    before = one_place.state.metrics.rejected._value.get()
    err = error_of(asyncio.run(run()))
    assert err.code == "server_busy" and "capacity" in err.text
    assert one_place.state.metrics.rejected._value.get() == before + 1
    assert count(one_place, "503") >= 1
    assert wait_idle(one_place) == 0
    assert_still_serving(one_place)


def test_a_client_that_disconnects_mid_stream_gives_its_place_back(one_place):
    state = one_place.state
    cancelled = state.metrics.cancelled._value.get()
    gone = count(one_place, "499")

    async def run():
        async with client(one_place) as c:
            await c.write_event(Synthesize(text=LONG).event())
            assert (await read_until(c, "audio-chunk"))[-1].type == "audio-chunk"
        # leaving the block closed the connection with the synthesis under way

    asyncio.run(run())
    assert wait_idle(one_place) == 0
    assert state.metrics.cancelled._value.get() == cancelled + 1
    assert count(one_place, "499") == gone + 1
    assert_still_serving(one_place)  # the one place is free again


def test_a_client_that_leaves_a_stream_unfinished_gives_its_place_back(one_place):
    gone = count(one_place, "499")

    async def run():
        async with client(one_place) as c:
            await c.write_event(SynthesizeStart().event())
            await c.write_event(SynthesizeChunk(text=LONG + " And").event())
            assert (await read_until(c, "audio-chunk"))[-1].type == "audio-chunk"

    asyncio.run(run())
    assert wait_idle(one_place) == 0
    assert count(one_place, "499") == gone + 1
    assert_still_serving(one_place)


# ----- settings --------------------------------------------------------------------------

def test_a_public_wyoming_bind_is_refused_unless_unauthenticated_on_purpose():
    env = {"KOKORO_HOST": "0.0.0.0", "KOKORO_API_KEYS": "k", "KOKORO_WYOMING_PORT": "10200"}
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    for words in ("0.0.0.0:10200", "no authentication", "KOKORO_WYOMING_HOST=127.0.0.1",
                  "KOKORO_WYOMING_UNAUTHENTICATED=true"):
        assert words in message
    ok = Settings.from_env({**env, "KOKORO_WYOMING_UNAUTHENTICATED": "true"})
    assert (ok.wyoming_bind, ok.wyoming_port) == ("0.0.0.0", 10200)
    local = Settings.from_env({**env, "KOKORO_WYOMING_HOST": "127.0.0.1"})
    assert local.wyoming_bind == "127.0.0.1"
    # a loopback HTTP bind says nothing about a public Wyoming one
    with pytest.raises(SettingsError, match="no authentication"):
        Settings.from_env({"KOKORO_WYOMING_PORT": "10200", "KOKORO_WYOMING_HOST": "::"})


def test_wyoming_is_off_by_default_and_its_port_is_checked():
    assert Settings.from_env({}).wyoming_port == 0
    assert Settings.from_env({"KOKORO_WYOMING_PORT": "10200"}).wyoming_bind == "127.0.0.1"
    with pytest.raises(SettingsError, match=r"KOKORO_WYOMING_PORT.*KOKORO_PORT"):
        Settings.from_env({"KOKORO_WYOMING_PORT": "8880"})
    with pytest.raises(SettingsError, match="KOKORO_WYOMING_PORT must be a TCP port"):
        Settings.from_env({"KOKORO_WYOMING_PORT": "70000"})
    with pytest.raises(SettingsError, match="KOKORO_WYOMING_PORT"):
        Settings.from_env({"KOKORO_WYOMING_PORT": "ten"})


# ---- connection limits (KOKORO_WYOMING_MAX_CONNECTIONS, KOKORO_WYOMING_IDLE_SECONDS) ---


def limited_server(onnx_settings, **limits):
    settings = replace(onnx_settings, port=free_port(), wyoming_port=free_port(),
                       api_keys=(), warmup=False, **limits)
    return ServerThread(settings)


@pytest.fixture(scope="module")
def two_connections(onnx_settings):
    with limited_server(onnx_settings, wyoming_max_connections=2,
                        wyoming_idle_seconds=0.0) as server:
        yield server


@pytest.fixture(scope="module")
def idle_one_second(onnx_settings):
    with limited_server(onnx_settings, wyoming_max_connections=2,
                        wyoming_idle_seconds=1.0) as server:
        yield server


async def described(c: AsyncTcpClient) -> bool:
    await c.write_event(Describe().event())
    return Info.is_type((await asyncio.wait_for(c.read_event(), READ_TIMEOUT)).type)


def test_wyoming_connection_over_the_limit_gets_server_busy_and_is_closed(two_connections):
    async def run():
        async with client(two_connections) as a, client(two_connections) as b:
            assert await described(a) and await described(b)
            async with client(two_connections) as extra:
                start = time.monotonic()
                events = await read_until(extra, "never")
                closed_in = time.monotonic() - start
            err = error_of(events)
            assert err.code == "server_busy" and "KOKORO_WYOMING_MAX_CONNECTIONS" in err.text
            assert closed_in < 5
            assert await described(a)  # the two served go on
        end = time.monotonic() + 30  # their slots are given back as the server sees them go
        while two_connections.state.wyoming._tasks and time.monotonic() < end:
            await asyncio.sleep(0.05)
        async with client(two_connections) as again:
            assert await described(again)

    asyncio.run(run())


def test_wyoming_idle_connection_is_closed_and_frees_its_slot(idle_one_second):
    async def run():
        start = time.monotonic()
        async with client(idle_one_second) as a, client(idle_one_second) as b:
            assert await described(a)  # an event resets nothing lasting: idle from here
            events_a = await read_until(a, "never")
            events_b = await read_until(b, "never")
        waited = time.monotonic() - start
        for events in (events_a, events_b):
            err = error_of(events)
            assert err.code == "idle_timeout" and "KOKORO_WYOMING_IDLE_SECONDS" in err.text
        assert 1.0 <= waited < 30
        async with client(idle_one_second) as c:  # both slots free again
            assert await described(c)
            events = await read_until(c, "never")
            assert error_of(events).code == "idle_timeout"

    asyncio.run(run())


def test_wyoming_idle_timeout_spares_a_connection_being_spoken_to(idle_one_second):
    events = talk(idle_one_second, Synthesize(text=LONG[:250]).event())
    assert events[-1].type == "audio-stop" and len(audio_of(events)) > 24000


def test_settings_refuse_bad_wyoming_limits():
    with pytest.raises(SettingsError, match="KOKORO_WYOMING_MAX_CONNECTIONS must be >= 1"):
        Settings.from_env({"KOKORO_WYOMING_MAX_CONNECTIONS": "0"})
    with pytest.raises(SettingsError, match="KOKORO_WYOMING_IDLE_SECONDS must be >= 0"):
        Settings.from_env({"KOKORO_WYOMING_IDLE_SECONDS": "-1"})
    s = Settings.from_env({})
    assert (s.wyoming_max_connections, s.wyoming_idle_seconds) == (64, 120.0)
