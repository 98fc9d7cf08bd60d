"""The TLS front door (roles/stack with stack_proxy_enabled): the only published port;
every route refuses a request without its service's key and answers with it; TLS
verifies against the CA the proxy generated; the services' own ports cannot be reached
from the host or from a container outside the compose network; key files are private;
no key appears in a log, a rendered file or a container's configuration; and a rotated
key stops working. Skipped on hosts whose stack runs without the proxy.

Settings (environment), besides KOKORO_STACK_DIR:
  KOKORO_ANSIBLE_LOG       the controller's Ansible log of the deploy (ANSIBLE_LOG_PATH),
                           also searched for keys
  KOKORO_ROTATED_KEY_FILE  a Kokoro key that ansible/rotate_keys.yml replaced
"""

import json
import os
import re
import secrets
from pathlib import Path

import pytest
from host_http import requests as host_requests

PROJECT = os.environ.get("KOKORO_STACK_DIR", "/opt/kokoro-deploy/stack")


@pytest.fixture(scope="module")
def env(stack_env):
    if "compose.proxy.yml" not in stack_env.get("COMPOSE_FILE", ""):
        pytest.skip("this host's stack runs without the TLS proxy (stack_proxy_enabled)")
    return stack_env


@pytest.fixture(scope="module")
def keys(host, env):
    out = {}
    for service in ("kokoro", "llm", "comfyui"):
        f = host.file(f"{PROJECT}/secrets/{service}_api_keys")
        if f.exists:
            # a Kokoro key may be named (name:key); clients send the key alone
            lines = host.check_output("cat %s", f.path).split()
            out[service] = [k.rpartition(":")[2] for k in lines]
    return out


@pytest.fixture(scope="module")
def fetch(host, env):
    port = env.get("PROXY_PORT", "443")
    name = env["PROXY_SERVER_NAMES"].split(",")[0]

    def fetch(requests):
        for r in requests:
            r.setdefault("url", f"https://127.0.0.1:{port}{r.pop('path', '')}")
            r.setdefault("name", name)
            r.setdefault("ca", f"{PROJECT}/proxy-ca.crt")
        return host_requests(host, requests)

    return fetch


def routes(env):
    """(method, path, body, service) of every route the proxy serves."""
    llm = "llm" in env.get("COMPOSE_PROFILES", "")
    speech = {"model": "kokoro", "input": "Hello.", "voice": "af_heart", "response_format": "wav"}
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    out = [
        ("GET", "/v1/audio/voices", None, "kokoro"),
        ("POST", "/v1/audio/speech", speech, "kokoro"),
        ("GET", "/kokoro/health", None, "kokoro"),
        ("GET", "/kokoro/metrics", None, "kokoro"),
        ("GET", "/v1/models", None, "llm" if llm else "kokoro"),
    ]
    if llm:
        out += [
            ("POST", "/v1/chat/completions", chat, "llm"),
            ("GET", "/llm/health", None, "llm"),
            ("GET", "/llm/metrics", None, "llm"),
        ]
    return out


def test_only_the_proxy_publishes_a_port(host, env):
    """... and Kokoro its Wyoming port, where enabled: Caddy cannot carry Wyoming."""
    project = env.get("COMPOSE_PROJECT_NAME", "kokoro")
    ids = host.check_output("docker ps -q --filter label=com.docker.compose.project=%s", project)
    published = {}
    for c in json.loads(host.check_output("docker inspect " + " ".join(ids.split()))):
        service = c["Config"]["Labels"]["com.docker.compose.service"]
        ports = c["NetworkSettings"]["Ports"] or {}
        published[service] = sorted(
            f"{b['HostIp']}:{b['HostPort']}" for bs in ports.values() for b in (bs or [])
        )
    want = f"{env.get('PROXY_BIND_ADDRESS', '0.0.0.0')}:{env.get('PROXY_PORT', '443')}"
    assert published.pop("proxy") == [want]
    if "compose.wyoming.yml" in env.get("COMPOSE_FILE", "").split(":"):
        address = env.get("WYOMING_BIND_ADDRESS", "127.0.0.1")
        port = env.get("WYOMING_PORT", "10200")
        assert published.pop("kokoro") == [f"{address}:{port}"]
    assert all(not p for p in published.values()), published


def test_every_route_refuses_a_request_without_its_key(env, keys, fetch):
    wrong = {"kokoro": keys.get("llm", ["x" * 43])[0], "llm": keys["kokoro"][0]}
    cases = []
    for method, path, body, service in routes(env):
        for key in ("", "not-a-key-0123456789", wrong[service]):
            cases.append({"method": method, "path": path, "body": body, "key": key})
    cases.append({"path": "/no/such/route"})
    answers = fetch([dict(c) for c in cases])
    refused = [(c.get("method", "GET"), c["path"], a) for c, a in zip(cases, answers, strict=True)]
    assert all(a.get("status") == 401 for _, _, a in refused), [
        r for r in refused if r[2].get("status") != 401
    ]


def test_every_route_answers_with_its_key(env, keys, fetch):
    cases = [{"method": m, "path": p, "body": b, "key": keys[s][0]} for m, p, b, s in routes(env)]
    answers = fetch([dict(c) for c in cases])
    for case, answer in zip(cases, answers, strict=True):
        assert answer.get("status") == 200, (case["path"], answer)
    metrics = answers[[c["path"] for c in cases].index("/kokoro/metrics")]["body"]
    assert "kokoro_" in metrics, metrics
    unknown = fetch([{"path": "/no/such/route", "key": keys["kokoro"][0]}])[0]
    assert unknown.get("status") == 404, unknown


def test_tls_verifies_against_the_generated_ca_only(env, keys, fetch):
    names = env["PROXY_SERVER_NAMES"].split(",")
    key = keys["kokoro"][0]
    good = fetch([{"path": "/v1/audio/voices", "key": key, "name": n} for n in names])
    assert all(a.get("status") == 200 for a in good), dict(zip(names, good, strict=True))
    untrusted = fetch([{"path": "/v1/audio/voices", "key": key, "ca": ""}])[0]
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.get("error", ""), untrusted
    stranger = fetch([{"path": "/v1/audio/voices", "key": key, "name": "not-ours.example"}])[0]
    assert "alert" in stranger.get("error", "").lower(), stranger


def test_a_client_that_connects_by_address_reaches_the_api(env, keys, fetch):
    """Host: 127.0.0.1:<port> (what Prometheus sends) gets the API's answers, never the
    empty 200 Caddy gives a host it has no site for."""
    port = env.get("PROXY_PORT", "443")
    by_address = [
        {"path": "/v1/audio/voices", "key": keys["kokoro"][0], "host": f"127.0.0.1:{port}"},
        {"path": "/v1/audio/voices", "host": f"127.0.0.1:{port}"},
        {"path": "/kokoro/metrics", "key": keys["kokoro"][0], "host": f"127.0.0.1:{port}"},
    ]
    voices, refused, metrics = fetch(by_address)
    assert (voices.get("status"), refused.get("status")) == (200, 401), (voices, refused)
    assert "voices" in voices["body"] or "af_heart" in voices["body"], voices
    assert "kokoro_" in metrics.get("body", ""), metrics


def test_service_ports_are_unreachable_outside_the_compose_network(host, env):
    project = env.get("COMPOSE_PROJECT_NAME", "kokoro")
    network = f"{project}_default"
    inspect = json.loads(host.check_output("docker network inspect %s", network))[0]
    assert inspect["Internal"] is True, "the services' network is not internal"
    kokoro_ip = next(
        c["IPv4Address"].split("/")[0]
        for c in inspect["Containers"].values()
        if c["Name"].endswith("kokoro-1")
    )
    image = env["KOKORO_IMAGE"]
    probe = "import socket; socket.create_connection(('%s', 8880), timeout=5); print('open')"

    def from_container(net):
        return host.run(
            "docker run --rm --network %s --entrypoint python3 %s -c %s",
            net,
            image,
            probe % kokoro_ip,
        )

    inside = from_container(network)
    assert inside.rc == 0 and "open" in inside.stdout, f"control failed: {inside.stderr}"
    outside = from_container("bridge")
    assert outside.rc != 0, "a container outside the compose network reached Kokoro"
    for port in ("8880", "8080", "8188"):
        on_host = host.run(
            "python3 -c %s", probe.replace("'%s'", "'127.0.0.1'").replace("8880", port)
        )
        assert on_host.rc != 0, f"port {port} answers on the host"


def test_key_files_are_readable_only_by_their_service(host, keys):
    owners = {"kokoro": 10001, "llm": 10002, "comfyui": 0}
    for service in keys:
        f = host.file(f"{PROJECT}/secrets/{service}_api_keys")
        assert (f.mode, f.uid) == (0o400, owners[service]), service
    folder = host.file(f"{PROJECT}/secrets/proxy")
    assert (folder.mode, folder.uid) == (0o500, 10004)
    caddyfile = host.file(f"{PROJECT}/secrets/proxy/Caddyfile")
    assert (caddyfile.mode, caddyfile.uid) == (0o400, 10004)


def test_no_key_leaks_into_logs_rendered_files_or_container_config(host, env, keys):
    every_key = [k for ks in keys.values() for k in ks]
    for secret in ("webui_api_key", "webui_secret_key", "webui_admin_password"):
        f = host.file(f"{PROJECT}/secrets/{secret}")
        if f.exists:
            every_key.append(host.check_output("cat %s", f.path).strip())
    rotated = Path(os.environ.get("KOKORO_ROTATED_KEY_FILE", "/nonexistent"))
    if rotated.is_file():
        every_key += rotated.read_text().split()
    project = env.get("COMPOSE_PROJECT_NAME", "kokoro")
    ids = host.check_output("docker ps -aq --filter label=com.docker.compose.project=%s", project)
    haystacks = {
        "rendered files": host.check_output(
            "find %s -path %s -prune -o -type f -print0 | xargs -0 cat",
            PROJECT,
            f"{PROJECT}/secrets",
        ),
        "container logs": "\n".join(
            host.check_output("docker logs %s 2>&1", i) for i in ids.split()
        ),
        "container config": host.check_output("docker inspect " + " ".join(ids.split())),
        "journal": host.run("journalctl --no-pager -q").stdout,
    }
    assert "kokoro" in haystacks["rendered files"] and "GET" in haystacks["container logs"]
    log = os.environ.get("KOKORO_ANSIBLE_LOG")
    if log:
        text = Path(log).read_text()
        assert "Ensure each service's key file holds its keys" in text, (
            f"{log} is not the deploy's log"
        )
        haystacks["Ansible log"] = text
    leaks = [
        (where, key[:4]) for where, text in haystacks.items() for key in every_key if key in text
    ]
    assert not leaks, f"keys (first 4 characters shown) found in: {leaks}"


def test_a_rotated_key_opens_nothing(keys, fetch):
    rotated = Path(os.environ.get("KOKORO_ROTATED_KEY_FILE", "/nonexistent"))
    if not rotated.is_file():
        pytest.skip("no rotated key to check (KOKORO_ROTATED_KEY_FILE)")
    old = rotated.read_text().split()[0]
    assert old not in keys["kokoro"], "the key was not rotated"
    old_answer, new_answer = fetch(
        [
            {"path": "/v1/audio/voices", "key": old},
            {"path": "/v1/audio/voices", "key": keys["kokoro"][0]},
        ]
    )
    assert (old_answer.get("status"), new_answer.get("status")) == (401, 200)


# Sends one request body of a given size to the proxy, with a Content-Length or chunked
# (no length up front: the case a server that trusts Content-Length would buffer whole),
# and answers {"status", "body"} or {"error"}. Standard library only, run on the host.
BODY_CLIENT = r"""
import http.client, json, socket, ssl, sys
r = json.loads(sys.argv[1])
try:
    sock = socket.create_connection(("127.0.0.1", r["port"]), timeout=30)
    sock = ssl.create_default_context(cafile=r["ca"]).wrap_socket(sock, server_hostname=r["name"])
    conn = http.client.HTTPConnection("127.0.0.1", r["port"])
    conn.sock = sock
    # Valid JSON of the asked size: a speech request whose input fills it.
    head, tail = b'{"model": "kokoro", "voice": "af_heart", "input": "', b'"}'
    body = head + b"a" * (r["size"] - len(head) - len(tail)) + tail
    headers = {"Content-Type": "application/json", "Host": r["name"],
               "Authorization": "Bearer " + r["key"]}
    if r["chunked"]:
        def chunks():
            for i in range(0, len(body), 16384):
                yield body[i:i + 16384]
        headers["Transfer-Encoding"] = "chunked"
        conn.request("POST", r["path"], body=chunks(), headers=headers, encode_chunked=True)
    else:
        conn.request("POST", r["path"], body=body, headers=headers)
    resp = conn.getresponse()
    print(json.dumps({"status": resp.status, "body": resp.read(2000).decode("utf-8", "replace")}))
except (OSError, http.client.HTTPException) as exc:
    # The proxy may answer 413 and close while the body is still being sent.
    print(json.dumps({"error": type(exc).__name__ + ": " + str(exc)}))
"""

SIZES = {
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


def kokoro_body_limit(host) -> int:
    """The request_body max_size of the proxy's Kokoro route, from its Caddyfile."""
    caddyfile = host.check_output("cat %s", f"{PROJECT}/secrets/proxy/Caddyfile")
    block = caddyfile[caddyfile.index("handle @kokoro {") :]
    value = re.search(r"max_size (\d+)([KMG]?i?B)", block)
    assert value, "the Kokoro route has no request_body max_size"
    return int(value[1]) * SIZES[value[2]]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_routes_limit_is_refused_with_413(host, env, keys, chunked):
    limit = kokoro_body_limit(host)
    port = env.get("PROXY_PORT", "443")
    name = env["PROXY_SERVER_NAMES"].split(",")[0]

    def send(size):
        r = {
            "port": int(port),
            "name": name,
            "ca": f"{PROJECT}/proxy-ca.crt",
            "key": keys["kokoro"][0],
            "path": "/v1/audio/speech",
            "size": size,
            "chunked": chunked,
        }
        out = host.run("python3 -c %s %s", BODY_CLIENT, json.dumps(r))
        assert out.rc == 0, out.stderr
        return json.loads(out.stdout)

    over = send(limit + 4096)
    assert over.get("status") == 413, over
    if not chunked:
        # Its Content-Length says so: the proxy refuses it before a byte goes on.
        assert json.loads(over["body"])["error"]["code"] == "request_too_large", over
    elif over["body"]:
        # Counted as it streams on, it reaches Kokoro first, whose lower limit answers
        # while the proxy's still counts; when the proxy's trips at that moment it drops
        # Kokoro's answer half-read (tests/unit/test_proxy_body_limits.py): the status
        # is the contract for a chunked body over both limits.
        assert json.loads(over["body"])["error"]["code"] in (
            "request_too_large", "input_too_long"), over
    # Just under the proxy's limit the body reaches Kokoro, whose own limit is lower:
    # its 413 says why (the input is too long), not the proxy's, and arrives whole.
    under = send(limit - 4096)
    assert under.get("status") == 413, under
    assert json.loads(under["body"])["error"]["code"] == "input_too_long", under


def test_a_repeated_speech_request_is_answered_from_the_audio_cache(env, keys, fetch):
    """stack_kokoro_audio_cache_enabled: the same request twice through the front door, the
    second from Kokoro's cache: the same bytes, their true length, X-Cache saying so."""
    if not env.get("KOKORO_AUDIO_CACHE_DIR"):
        pytest.skip("this host's Kokoro runs without the audio cache")
    # a text no earlier run asked for, so the first answer is made, not found
    words = " ".join(secrets.choice(["amber", "cedar", "harbor", "meadow", "silver", "willow"])
                     for _ in range(6))
    speech = {"model": "kokoro", "input": f"Cache check: {words}.", "voice": "af_heart",
              "response_format": "wav"}
    ask = {"method": "POST", "path": "/v1/audio/speech", "body": speech, "key": keys["kokoro"][0]}
    first, second = fetch([dict(ask), dict(ask)])
    assert first["status"] == second["status"] == 200, (first, second)
    assert (first["headers"]["x-cache"], second["headers"]["x-cache"]) == ("miss", "hit")
    assert second["sha256"] == first["sha256"]
    assert int(second["headers"]["content-length"]) == second["bytes"] == first["bytes"]
