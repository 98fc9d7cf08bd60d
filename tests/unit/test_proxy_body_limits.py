"""The proxy's body limits, run: the Caddyfile roles/stack_proxy renders, adapted by the pinned
Caddy and served by it on loopback (plain HTTP, upstreams moved to loopback: the only
changes), in front of Kokoro's own body limit (kokoro_server.app.BodyLimit, the code the
image runs) and of a service that reads whatever it is sent.

Two limits stand in a row on the Kokoro route: the proxy's (stack_proxy_kokoro_max_body_size)
and Kokoro's own, lower one. Either may answer a body over both, but every answer must
arrive whole: a 413 cut off on its way tells the client nothing (CI saw that through the
stack scenario's proxy, in about one request in a hundred)."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time

import pytest
from caddy_config import adapt, body_limits, caddy_env, pinned_caddy, render

KOKORO_KEY = "kokoro-key-0123456789abcdef"
LLM_KEY = "llm-key-0123456789abcdef"
LLM_LIMIT = 1024 * 1024  # rendered as 1MiB below: small enough to send past quickly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """A uvicorn server on a loopback port, in a thread: `app` behind a counter of the
    requests that reached it."""

    def __init__(self, app):
        import uvicorn

        self.requests = 0
        self.port = free_port()

        async def counted(scope, receive, send):
            if scope["type"] == "http":
                self.requests += 1
            await app(scope, receive, send)

        config = uvicorn.Config(counted, host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the upstream did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


async def read_all_then_ok(scope, receive, send):
    """A service that reads the whole body, then answers 200 with its size."""
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps({"read": size}).encode()})


def on_loopback(config: dict, port: int, dials: dict[str, int]) -> dict:
    """The adapted config with its API server on 127.0.0.1:`port` in plain HTTP and each
    upstream dial moved to its loopback port; routes, matchers and limits untouched."""
    servers = config["apps"]["http"]["servers"]
    api = next(s for s in servers.values() if any("8443" in a for a in s["listen"]))
    api["listen"] = [f"127.0.0.1:{port}"]
    api.pop("tls_connection_policies", None)
    api["automatic_https"] = {"disable": True}
    config["apps"]["http"]["servers"] = {"api": api}
    for app in ("tls", "pki"):
        config["apps"].pop(app, None)
    text = json.dumps(config)
    for dial, local in dials.items():
        assert f'"dial": "{dial}"' in text, dial
        text = text.replace(f'"dial": "{dial}"', f'"dial": "127.0.0.1:{local}"')
    return json.loads(text)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """(port, kokoro upstream, llm upstream, Kokoro's own limit) of a running proxy."""
    from kokoro_server.app import BodyLimit, max_body_bytes
    from kokoro_server.settings import Settings

    folder = tmp_path_factory.mktemp("proxy")
    caddy = pinned_caddy(folder)
    r = render(folder, stack_comfyui_enabled=False, stack_proxy_llm_max_body_size="1MiB")
    assert r.returncode == 0, r.stdout + r.stderr
    config = adapt(caddy, folder)
    own = max_body_bytes(Settings())
    kokoro_app = BodyLimit(read_all_then_ok, max_bytes=own, idle_seconds=10)
    with Upstream(kokoro_app) as kokoro, Upstream(read_all_then_ok) as llm:
        port = free_port()
        loopback = on_loopback(config, port, {"kokoro:8880": kokoro.port, "llm:8080": llm.port})
        (folder / "caddy.json").write_text(json.dumps(loopback))
        env = caddy_env(folder)
        with open(folder / "caddy.log", "wb") as log:
            run = subprocess.Popen([str(caddy), "run", "--config", str(folder / "caddy.json")],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert run.poll() is None, (folder / "caddy.log").read_text()
                    assert time.monotonic() < deadline, (folder / "caddy.log").read_text()
                    time.sleep(0.05)
            yield port, kokoro, llm, own
        finally:
            run.terminate()
            run.wait(timeout=10)


def head_only(port: int, path: str, key: str, length: int) -> tuple[int, dict]:
    """A POST that declares `length` bytes and sends none: the answer, or a failure if
    the proxy waits for the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: tts.example.internal\r\n"
                      f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {length}\r\n\r\n").encode())
        conn = http.client.HTTPResponse(sock, method="POST")
        conn.begin()
        return conn.status, json.loads(conn.read())


def post(port: int, path: str, key: str, size: int, chunked: bool) -> tuple[int, bytes]:
    """A JSON body of `size` bytes, sent whole (with Content-Length, or chunked) before
    the answer is read, as most clients do."""
    head, tail = b'{"input": "', b'"}'
    body = head + b"a" * (size - len(head) - len(tail)) + tail
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": "tts.example.internal", "Authorization": f"Bearer {key}",
               "Content-Type": "application/json"}
    try:
        if chunked:
            pieces = (body[i:i + 16384] for i in range(0, len(body), 16384))
            conn.request("POST", path, body=pieces, headers=headers, encode_chunked=True)
        else:
            conn.request("POST", path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_the_routes_render_the_limits_the_loopback_proxy_runs(tmp_path):
    caddy = pinned_caddy(tmp_path)
    assert render(tmp_path, stack_proxy_llm_max_body_size="1MiB").returncode == 0
    limits = body_limits(adapt(caddy, tmp_path))
    assert limits["llm:8080"] == LLM_LIMIT and limits["kokoro:8880"] == 256 * 1024


@pytest.mark.parametrize("path,key", [("/v1/audio/speech", KOKORO_KEY),
                                      ("/v1/chat/completions", LLM_KEY)])
def test_a_declared_length_over_the_limit_is_refused_before_the_body(proxy, path, key):
    port, kokoro, llm, _ = proxy
    before = kokoro.requests + llm.requests
    status, error = head_only(port, path, key, 10**9)
    assert status == 413 and error["error"]["code"] == "request_too_large", error
    assert kokoro.requests + llm.requests == before  # nothing went upstream


def test_without_a_key_a_large_body_still_hears_401(proxy):
    port, *_ = proxy
    status, error = head_only(port, "/v1/audio/speech", "wrong-key", 10**9)
    assert status == 401 and error["error"]["code"] == "invalid_api_key", error


def test_a_chunked_body_over_the_limit_is_counted_and_refused(proxy):
    port, *_ = proxy
    status, body = post(port, "/v1/chat/completions", LLM_KEY, LLM_LIMIT + 65536, True)
    assert status == 413, body
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_a_body_within_the_limit_reaches_the_service_whole(proxy):
    port, *_ = proxy
    status, body = post(port, "/v1/chat/completions", LLM_KEY, LLM_LIMIT - 1024, False)
    assert status == 200 and json.loads(body) == {"read": LLM_LIMIT - 1024}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_kokoros_own_413_arrives_whole_through_the_proxy(proxy, chunked):
    """Bodies between Kokoro's limit and the proxy's: Kokoro answers 413 before it has
    read them, while the proxy still streams them on. Every answer is Kokoro's, whole
    (before full duplex, about one in a hundred came with its body cut off)."""
    port, _, _, own = proxy
    for _ in range(100):
        status, body = post(port, "/v1/audio/speech", KOKORO_KEY, own + 65536, chunked)
        assert status == 413 and json.loads(body)["error"]["code"] == "input_too_long", body
