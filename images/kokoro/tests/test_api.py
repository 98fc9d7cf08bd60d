"""The HTTP API on the real onnx engine (Kokoro-82M int8, real voices), over real HTTP."""
from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import time
import wave
from dataclasses import replace

import httpx
import pytest
from kokoro_server.audio.encode import FORMATS
from kokoro_server.text.chunking import chunk_text
from kokoro_testlib import API_KEY, ServerThread, assert_error, decode_audio, free_port

HELLO = "Hello there. How are you today?"


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_speech_returns_decodable_audio_in_every_format(client, fmt):
    r = client.post("/v1/audio/speech", json={"input": HELLO, "voice": "af_heart",
                                              "response_format": fmt, "stream": False})
    assert r.status_code == 200, r.text
    if fmt == "pcm":
        seconds = len(r.content) / 2 / 24000
    else:
        pcm, rate = decode_audio(r.content)
        seconds = len(pcm) / rate
    assert 1.0 < seconds < 5.0  # two short sentences, a normal speaking rate


def test_streamed_speech_equals_a_whole_file_in_length(client):
    body = {"input": HELLO + " The weather is nice.", "voice": "am_michael",
            "response_format": "pcm"}
    with client.stream("POST", "/v1/audio/speech", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        streamed = b"".join(r.iter_bytes())
    whole = client.post("/v1/audio/speech", json={**body, "stream": False}).content
    assert len(streamed) == len(whole) > 24000 * 2


def test_sse_stream_sends_one_delta_per_chunk_then_done(client):
    text = "First sentence here. " + "The second sentence is much longer than the first. " * 2
    r = client.post("/v1/audio/speech", json={"input": text, "response_format": "pcm",
                                              "stream_format": "sse"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"]
    deltas = [base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2 and all(deltas)


def test_speed_scales_duration(client):
    def seconds(speed):
        r = client.post("/v1/audio/speech", json={"input": HELLO, "speed": speed,
                                                  "response_format": "pcm", "stream": False})
        return len(r.content) / 48000

    ratio = seconds(2.0) / seconds(1.0)
    assert 0.35 < ratio < 0.7


def test_voice_blend_is_spoken(client):
    r = client.post("/v1/audio/speech", json={"input": HELLO, "voice": "af_bella(2)+af_sky(1)",
                                              "response_format": "wav", "stream": False})
    assert r.status_code == 200
    pcm, _ = decode_audio(r.content)
    assert len(pcm) > 24000


def test_voices_lists_the_54_stock_voices_with_language_and_gender(client):
    voices = {v["id"]: v for v in client.get("/v1/audio/voices").json()["voices"]}
    assert len(voices) == 54
    assert voices["af_heart"] == {"id": "af_heart", "name": "af_heart", "lang_code": "a",
                                  "language": "American English", "gender": "female",
                                  "available": True}
    assert voices["bm_george"]["gender"] == "male"
    assert {v["lang_code"] for v in voices.values()} == set("abefhijpz")


def test_models_lists_kokoro_and_openai_aliases_and_each_is_accepted(client):
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["kokoro", "tts-1", "tts-1-hd"]
    r = client.post("/v1/audio/speech", json={"model": "tts-1-hd", "input": "Yes.",
                                              "voice": "af_heart", "stream": False,
                                              "instructions": "speak calmly"})
    assert r.status_code == 200


def test_health_is_ok_without_credentials(onnx_server):
    r = httpx.get(onnx_server.url + "/health", timeout=60)
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["engine"] == "onnx"


def test_requests_without_or_with_a_wrong_key_get_401(onnx_server, caplog):
    url = onnx_server.url
    assert_error(httpx.post(url + "/v1/audio/speech", json={"input": "hi"}, timeout=60), 401,
                 "missing_api_key")
    r = httpx.get(url + "/v1/audio/voices", headers={"Authorization": "Bearer wrong-key-123"},
                  timeout=60)
    assert_error(r, 401, "invalid_api_key")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(httpx.get(url + "/metrics", headers={"Authorization": "Basic x"}, timeout=60),
                 401, "missing_api_key")
    assert "wrong-key-123" not in caplog.text and API_KEY not in caplog.text


BAD_INPUTS = [
    ({"input": ""}, 400, "empty_input"),
    ({"input": "   \n\t "}, 400, "empty_input"),
    ({"input": "x" * 20_001}, 413, "input_too_long"),
    ({"input": "hi", "voice": "zz_nobody"}, 400, "voice_not_found"),
    ({"input": "hi", "voice": "af_bella(2)+"}, 400, "invalid_voice"),
    ({"input": "hi", "voice": "af_bella(2)+zz_nobody"}, 400, "voice_not_found"),
    ({"input": "hi", "response_format": "ogg"}, 400, "unsupported_format"),
    ({"input": "hi", "speed": 0.1}, 400, "invalid_speed"),
    ({"input": "hi", "speed": 4.5}, 400, "invalid_speed"),
    ({"input": "hi", "speed": "fast"}, 400, "invalid_speed"),
    ({"input": 42}, 400, "invalid_input"),
    ({"input": ["a", "b"]}, 400, "invalid_input"),
    ({"input": "hi", "voice": 3}, 400, "invalid_voice"),
    ({"input": "hi", "stream": "yes"}, 400, "invalid_stream"),
    ({"voice": "af_heart"}, 400, "invalid_input"),
    ({"input": "hi", "model": "whisper-1"}, 400, "model_not_found"),
    ({"input": "hi", "lang_code": "xx"}, 400, "unsupported_language"),
    ({"input": "hi\x00there"}, 400, "invalid_characters"),
    ({"input": "ring \x07 bell"}, 400, "invalid_characters"),
    ({"input": "bad\ufffeunicode"}, 400, "invalid_characters"),
    ({"input": "🙂🙂 ✨"}, 400, "no_speakable_text"),
    ({"input": "hi", "input_type": "ipa"}, 400, "invalid_input_type"),
    ({"input": "hi", "normalize": "no"}, 400, "invalid_normalize"),
]


@pytest.mark.parametrize("body,status,code", BAD_INPUTS,
                         ids=[f"{c}-{i}" for i, (_, _, c) in enumerate(BAD_INPUTS)])
def test_bad_input_gets_a_stable_json_error(client, body, status, code):
    assert_error(client.post("/v1/audio/speech", json=body), status, code)


@pytest.mark.parametrize("raw,code", [(b"{not json", "invalid_json"),
                                      (b'["a list"]', "invalid_request"),
                                      (b'{"input": "lone \\ud800 surrogate"}',
                                       "invalid_characters")])
def test_malformed_bodies_get_a_stable_json_error(client, raw, code):
    r = client.post("/v1/audio/speech", content=raw,
                    headers={"content-type": "application/json"})
    assert_error(r, 400, code)


def test_oversized_body_is_refused_before_it_is_read(client):
    r = client.post("/v1/audio/speech", content=b'{"input": "' + b"a" * 200_000 + b'"}',
                    headers={"content-type": "application/json"})
    assert_error(r, 413, "input_too_long")


def chunked(*parts: bytes):
    """A body without Content-Length: httpx sends an iterator chunked."""
    yield from parts


def test_a_chunked_body_over_the_limit_is_refused_as_its_bytes_arrive(client):
    # the input itself is short: only counting the bytes can refuse this body
    body = chunked(b'{"input": "Hi.", "padding": "', *[b"a" * 10_000] * 20, b'"}')
    r = client.post("/v1/audio/speech", content=body,
                    headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "input_too_long")


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response with a Content-Length body: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"closed before the head: {data!r}"
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    while len(body) < length:
        more = sock.recv(65536)
        assert more, f"closed inside the body: {head!r} {body!r}"
        body += more
    return head, body


@pytest.mark.parametrize("chunked_body", [False, True], ids=["content-length", "chunked"])
def test_a_refused_body_is_read_to_its_end_and_the_connection_lives_on(
        impatient_server, chunked_body):
    """The 413 goes out before the body is read (it may be huge); the rest of the body
    is then read and dropped, not left unread at close (the kernel would reset the
    connection, and the reset can destroy the 413 on its way). The proxy relies on it:
    it streams the body on while Kokoro's answer comes back. So the connection lives."""
    payload = b'{"input": "' + b"a" * 250_000 + b'"}'
    head = (b"POST /v1/audio/speech HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\n")
    if chunked_body:
        pieces = [payload[i:i + 16384] for i in range(0, len(payload), 16384)]
        request = head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        request = head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload
    with socket.create_connection(("127.0.0.1", impatient_server.settings.port)) as sock:
        sock.settimeout(60)
        sock.sendall(request)
        status, body = read_response(sock)
        assert status.startswith(b"HTTP/1.1 413 "), status
        assert json.loads(body)["error"]["code"] == "input_too_long"
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        status, body = read_response(sock)
        assert status.startswith(b"HTTP/1.1 200 "), (status, body)


def test_a_chunked_body_within_the_limit_is_spoken(client):
    body = chunked(b'{"input": "Hi ', b'there.", "response_format": "pcm", "stream": false}')
    r = client.post("/v1/audio/speech", content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.content) > 24000 * 2 * 0.3, r.text


def test_unknown_route_and_method_use_the_same_error_shape(client):
    assert_error(client.get("/v1/nope"), 404, "not_found")
    assert_error(client.get("/v1/audio/speech"), 405, "method_not_allowed")


def test_server_keeps_serving_after_every_bad_input(client):
    for body, _, _ in BAD_INPUTS:
        client.post("/v1/audio/speech", json=body)
    r = client.post("/v1/audio/speech", json={"input": "Still here.", "stream": False})
    assert r.status_code == 200 and len(r.content) > 1000


def test_text_with_emoji_and_invisible_characters_is_still_spoken(client):
    r = client.post("/v1/audio/speech", json={"input": "Good\u200b morning 🙂 everyone!",
                                              "response_format": "pcm", "stream": False})
    assert r.status_code == 200 and len(r.content) > 24000


def test_metrics_count_requests_audio_and_expose_histograms(client):
    before = metric(client.get("/metrics").text, "kokoro_audio_seconds_total")
    r = client.post("/v1/audio/speech", json={"input": "Count me.", "stream": False,
                                              "response_format": "pcm"})
    spoken = len(r.content) / 2 / 24000
    client.post("/v1/audio/speech", json={"input": ""})
    text = client.get("/metrics").text
    assert metric(text, "kokoro_requests_total",
                  '{route="/v1/audio/speech",status="200"}') >= 1
    assert metric(text, "kokoro_requests_total",
                  '{route="/v1/audio/speech",status="400"}') >= 1
    # this request's audio at least (other tests' requests may land in between)
    assert metric(text, "kokoro_audio_seconds_total") - before >= spoken * 0.9
    assert metric(text, "kokoro_synthesis_seconds_count") >= 1
    assert metric(text, "kokoro_real_time_factor_count") >= 1
    assert metric(text, "kokoro_time_to_first_audio_seconds_count") >= 1
    assert "kokoro_queue_depth " in text and metric(text, "kokoro_ready") == 1


def test_metrics_count_the_captioned_and_phonemize_routes(client):
    client.post("/v1/audio/phonemize", json={"input": "Count me."})
    client.post("/v1/audio/speech/captioned", json={"input": ""})
    text = client.get("/metrics").text
    assert metric(text, "kokoro_requests_total",
                  '{route="/v1/audio/phonemize",status="200"}') >= 1
    assert metric(text, "kokoro_requests_total",
                  '{route="/v1/audio/speech/captioned",status="400"}') >= 1


def test_speech_reads_money_aloud_as_its_words(client):
    """Normalisation happens before G2P: "$1,234.56" is spoken exactly as its words
    (same phonemes, so the same predicted durations and audio length), far longer than
    "hi"; with normalize false the G2P alone reads it differently."""
    def samples(text, **extra):
        r = client.post("/v1/audio/speech", json={"input": text, "response_format": "pcm",
                                                  "stream": False, "speed": 2.0, **extra})
        assert r.status_code == 200, r.text
        return len(r.content) // 2

    money = samples("$1,234.56")
    assert money == samples("one thousand two hundred thirty four dollars and fifty six cents")
    assert money > 3 * samples("hi")
    url = "See example.com/docs."
    assert samples(url) == samples("See example dot com slash docs.")
    assert samples(url, normalize=False) < samples(url)


def test_openai_client_synthesizes_and_streams(onnx_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=onnx_server.url + "/v1", api_key=API_KEY)
    resp = client.audio.speech.create(model="tts-1", voice="af_heart", input=HELLO,
                                      response_format="mp3")
    pcm, rate = decode_audio(resp.content)
    assert len(pcm) / rate > 1.0
    with client.audio.speech.with_streaming_response.create(
            model="kokoro", voice="bf_emma", input=HELLO, response_format="wav") as stream:
        data = b"".join(stream.iter_bytes())
    # the client sends no `stream`: a WAV it saves is a whole file with its true length
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnframes() == (len(data) - 44) // 2 > 24000
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="nobody", input="hi")
    assert err.value.body["code"] == "voice_not_found"


LONG = " ".join(f"This is sentence number {i}, spoken slowly and clearly." for i in range(40))


def _wait_idle(server, deadline_s=120):
    """Poll until the server holds no admitted request (the disconnect was seen)."""
    end = time.monotonic() + deadline_s
    while server.state.scheduler.admitted and time.monotonic() < end:
        time.sleep(0.05)
    return server.state.scheduler.admitted


def test_full_queue_answers_503_with_retry_after(small_server):
    url = small_server.url
    with httpx.Client(base_url=url, timeout=120) as c:
        with c.stream("POST", "/v1/audio/speech",
                      json={"input": LONG, "response_format": "pcm"}) as first:
            assert first.status_code == 200
            pieces = first.iter_raw()  # keep a reference: a dropped iterator closes the stream
            next(pieces)  # admitted and producing audio
            # a second connection (one httpx client would queue behind its open stream)
            busy = httpx.post(url + "/v1/audio/speech", json={"input": "Me too.",
                                                               "stream": False}, timeout=120)
            err = assert_error(busy, 503, "server_busy")
            assert err["type"] == "server_busy"
            assert int(busy.headers["retry-after"]) >= 1
            # phonemize shares the G2P thread with speech: it queues in the same place
            assert_error(httpx.post(url + "/v1/audio/phonemize", json={"input": "Me too."},
                                    timeout=120), 503, "server_busy")
        assert _wait_idle(small_server) == 0
        ok = c.post("/v1/audio/speech", json={"input": "My turn now.", "stream": False})
        assert ok.status_code == 200


@pytest.fixture(scope="module")
def impatient_server(onnx_settings):
    """One place, no queue, and a 2 s KOKORO_SEND_TIMEOUT."""
    settings = replace(onnx_settings, port=free_port(), workers=1, max_queue=0,
                       api_keys=(), warmup=False, send_timeout=2.0)
    with ServerThread(settings) as server:
        yield server


def post_head(length: int) -> bytes:
    return (b"POST /v1/audio/speech HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length)


def test_a_client_that_pauses_while_sending_its_body_gets_408(impatient_server):
    with socket.create_connection(("127.0.0.1", impatient_server.settings.port)) as paused:
        paused.settimeout(300)
        paused.sendall(post_head(100) + b'{"input": ')  # and then nothing more
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            more = paused.recv(4096)
            assert more, f"closed without an answer: {answer!r}"
            answer += more
    assert answer.startswith(b"HTTP/1.1 408 ")
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "request_timeout" and "stopped arriving" in error["message"]
    r = httpx.post(impatient_server.url + "/v1/audio/speech", timeout=120,
                   json={"input": "Next.", "response_format": "pcm"})
    assert r.status_code == 200 and r.content


def test_a_client_that_stops_reading_loses_its_response_and_its_place(impatient_server):
    """A streaming client that never reads (a tiny receive buffer, so the server's sends
    soon wait) holds the only place; once KOKORO_SEND_TIMEOUT passes without a byte read
    the server drops it, gives the place back and speaks to the next client."""
    body = json.dumps({"input": LONG, "response_format": "pcm", "speed": 4.0}).encode()
    request = post_head(len(body))
    server = impatient_server
    with socket.socket() as stalled:
        state = server.state
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", server.settings.port))
        stalled.sendall(request + body)
        deadline = time.monotonic() + 300
        while state.scheduler.admitted < 1:
            assert time.monotonic() < deadline, "the client was never admitted"
            time.sleep(0.05)
        assert _wait_idle(server, deadline_s=600) == 0, "the stalled client kept its place"
        r = httpx.post(server.url + "/v1/audio/speech", timeout=120,
                       json={"input": "My turn now.", "stream": False})
        assert r.status_code == 200


def test_client_disconnect_stops_generation(small_server):
    state = small_server.state
    chunks_before = state.metrics.chunks._value.get()
    cancelled_before = state.metrics.cancelled._value.get()
    total_chunks = len(list(chunk_text(LONG, lambda t: state.phonemizer(t, "a"))))
    with httpx.Client(base_url=small_server.url, timeout=120) as c, \
            c.stream("POST", "/v1/audio/speech",
                     json={"input": LONG, "response_format": "pcm"}) as r:
        pieces = r.iter_raw()
        next(pieces)
        # leaving the block closes the connection mid-stream
    assert _wait_idle(small_server) == 0
    end = time.monotonic() + 120  # a chunk already on the worker finishes, then stops
    while not state.scheduler.idle and time.monotonic() < end:
        time.sleep(0.05)
    produced = state.metrics.chunks._value.get() - chunks_before
    assert state.metrics.cancelled._value.get() == cancelled_before + 1
    assert produced <= 4 < total_chunks


def test_concurrent_requests_are_all_served(onnx_server):
    results = []

    def one(i):
        with httpx.Client(base_url=onnx_server.url, timeout=300,
                          headers={"Authorization": f"Bearer {API_KEY}"}) as c:
            r = c.post("/v1/audio/speech", json={"input": f"Request number {i}.",
                                                 "response_format": "pcm", "stream": False})
            results.append((r.status_code, len(r.content)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [s for s, _ in results] == [200] * 4 and all(n > 12000 for _, n in results)
