"""roles/gateway on a gateway host (tests/molecule/gateway; or your own with
--hosts=ansible://gateway and your inventory): the pinned Caddy runs as its own user,
clients need the fleet's key, requests are spread across the hosts, a drained host gets
no new request while the gateway waits for the one it has in flight, and a host that
answers 503 or stops answering sheds its load with no failed request.

The drain, 503 and stop checks change the fleet for a moment (each puts it back): run
them on real hosts only with -k "not fleet_changes" off-hours. In the scenario the hosts
run files/kokoro_standin.py: POST /v1/audio/speech answers with the host's name."""

import json
import re
import shlex
from pathlib import Path

import pytest
import testinfra

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = (REPO / "images/proxy/Dockerfile").read_text()
TOOL = "/usr/local/sbin/kokoro-gateway-upstreams"
CONFIG = "/etc/kokoro-gateway"
SPEECH = '{"model":"tts-1","input":"Hello.","voice":"af_heart"}'


def pin(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)[1]


@pytest.fixture(scope="module")
def key(host):
    return host.ansible.get_variables()["gateway_kokoro_api_keys"][0]


@pytest.fixture(scope="module")
def fleet(host) -> dict:
    """{host name: testinfra host} of the gateway's upstreams."""
    names = json.loads(host.check_output(f"{TOOL} status"))["hosts"]
    inventory = host.backend.ansible_inventory
    return {n: testinfra.get_host(f"ansible://{n}", ansible_inventory=inventory) for n in names}


def call(host, key: str | None, path: str = "/v1/audio/speech", method: str = "POST"):
    """(status, body) of one request through the gateway, checked against its CA."""
    auth = f"-H {shlex.quote('Authorization: Bearer ' + key)}" if key else ""
    data = f"-H 'Content-Type: application/json' -d {shlex.quote(SPEECH)}"
    data = data if method == "POST" else ""
    out = host.check_output(
        f"curl -sS --max-time 30 --cacert {CONFIG}/ca.crt -X {method} {auth} {data} "
        f"-w '\\n%{{http_code}}' https://localhost{path}")
    body, _, status = out.rpartition("\n")
    return int(status), body


def tool(host, *args):
    return host.run(" ".join([TOOL, *map(shlex.quote, args)]))


def test_the_pinned_caddy_runs_as_its_own_user(host):
    service = host.service("kokoro-gateway")
    assert service.is_running and service.is_enabled
    binary = f"/opt/kokoro-gateway/caddy-{pin('CADDY_VERSION')}"
    assert host.file(binary).sha256sum == pin("CADDY_SHA256_AMD64")
    users = {p.user for p in host.process.filter(comm="caddy-" + pin("CADDY_VERSION")[:9])}
    assert users <= {"kokoro-gateway"}, users
    assert host.file(f"{CONFIG}/ca.crt").contains("BEGIN CERTIFICATE")


def test_the_configuration_holding_keys_is_private(host):
    for name in ("Caddyfile", "upstreams.json", "upstreams.caddy"):
        f = host.file(f"{CONFIG}/{name}")
        assert f.group == "kokoro-gateway" and f.mode & 0o007 == 0, (name, oct(f.mode))


def test_no_request_passes_without_the_fleets_key(host, key):
    status, body = call(host, None)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    assert call(host, "x" * 16 + "not-a-key")[0] == 401
    assert call(host, key)[0] == 200


def test_a_body_over_the_limit_is_refused_at_the_gateway(host, key):
    limit = int(host.ansible.get_variables().get("gateway_max_body_bytes", 262144))
    auth = shlex.quote(f"Authorization: Bearer {key}")
    out = host.check_output(
        f"head -c {limit + 1} /dev/zero | curl -sS --max-time 30 --cacert {CONFIG}/ca.crt "
        f"-H {auth} --data-binary @- -w '\\n%{{http_code}}' https://localhost/v1/audio/speech")
    body, _, status = out.rpartition("\n")
    assert status == "413" and json.loads(body)["error"]["code"] == "request_too_large", out


def test_requests_are_spread_across_the_hosts(host, key, fleet):
    answers = [call(host, key) for _ in range(40)]
    assert {status for status, _ in answers} == {200}
    assert {body for _, body in answers} == set(fleet)


def test_a_drain_waits_for_the_request_in_flight_and_sends_no_new_one(host, key, fleet):
    a, b = sorted(fleet)
    held = "/tmp/gateway-held-request"
    try:
        # A request held on host a alone: b is out of service while it starts.
        assert tool(host, "drain", b).stdout.split()[-1] == "changed"
        auth = shlex.quote(f"Authorization: Bearer {key}")
        host.run(f"rm -f {held}; (curl -sS --max-time 120 --cacert {CONFIG}/ca.crt -H {auth} "
                 f"-w ' %{{http_code}}' https://localhost/hold > {held} 2>&1 &)")
        busy = f"{TOOL} status | grep -q '\"{a}\": 1'"
        host.run(f"for i in $(seq 100); do {busy} && break; sleep 0.1; done")
        assert json.loads(tool(host, "status").stdout)["in_flight"][a] == 1
        assert tool(host, "undrain", b).stdout.split()[-1] == "changed"

        refused = tool(host, "drain", a, "--timeout", "2")
        assert refused.rc == 1 and f"{a} still has 1 request(s) in flight" in refused.stderr
        assert {call(host, key) for _ in range(10)} == {(200, b)}

        fleet[a].run("touch /run/standin-release")
        host.run(f"for i in $(seq 100); do grep -q ' 200$' {held} && break; sleep 0.1; done")
        assert host.file(held).content_string == f"{a} 200"
        done = tool(host, "drain", a)
        assert done.rc == 0 and done.stdout.split()[-1] == "unchanged"
        assert {call(host, key) for _ in range(10)} == {(200, b)}
    finally:
        fleet[a].run("rm -f /run/standin-release")
        for name in fleet:
            tool(host, "undrain", name)
    assert not host.file(f"{CONFIG}/drained").content_string.split()


def test_a_drain_names_the_hosts_it_knows(host):
    r = tool(host, "drain", "no-such-host")
    assert r.rc == 1 and "no-such-host is not one of the gateway's hosts" in r.stderr


def test_a_fleet_with_every_host_drained_says_so(host, key, fleet):
    try:
        for name in fleet:
            assert tool(host, "drain", name).rc == 0
        status, body = call(host, key)
        assert status == 503 and json.loads(body)["error"]["code"] == "no_upstream"
    finally:
        for name in fleet:
            tool(host, "undrain", name)
    assert call(host, key)[0] == 200


def test_a_host_that_stops_answering_loses_no_request(host, key, fleet):
    a, b = sorted(fleet)
    fleet[b].run("systemctl stop kokoro-standin")
    try:
        assert {call(host, key) for _ in range(20)} == {(200, a)}
    finally:
        fleet[b].run("systemctl start kokoro-standin")
    # b is back once its failure is older than gateway_fail_duration.
    for _ in range(300):
        if call(host, key) == (200, b):
            break
    else:
        pytest.fail(f"{b} got no request after it came back")


def test_a_host_that_answers_503_sheds_its_load(host, key, fleet):
    """Last: the host that answered 503 gets no request for gateway_fail_duration."""
    a, b = sorted(fleet)
    fleet[b].run("touch /run/standin-503")
    try:
        answers = [call(host, key) for _ in range(15)]
    finally:
        fleet[b].run("rm -f /run/standin-503")
    failed = [i for i, (status, _) in enumerate(answers) if status != 200]
    # b answers 503 once (queue full), then gets nothing: every later request is a's.
    assert len(failed) <= 1 and all(body == a for status, body in answers if status == 200)
    assert all(answers[i][0] == 503 for i in failed)
