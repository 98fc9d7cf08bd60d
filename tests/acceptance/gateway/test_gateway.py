"""roles/gateway on a gateway host (tests/molecule/gateway; or your own with
--hosts=ansible://gateway and your inventory): the pinned Caddy runs as its own user,
each route (Kokoro's; the LLM's where gateway_llm_enabled) takes its own keys only and
balances across the hosts, a drained host gets no new request on any route while the
gateway waits for the ones it has in flight, and a host that answers 503 or stops
answering sheds its load with no failed request.

The balancing, drain, 503 and stop checks change the fleet for a moment (each puts it
back) and need the scenario's stand-ins (files/kokoro_standin.py: an answer naming the
service and the host, GET /hold held until /run/standin-release exists, a 503 switch):
run them on real hosts only with -k "not fleet_changes". None of them counts on Caddy's
random choice between equally loaded hosts or on timing: a request held on one host makes
least_conn's choice of the next one certain, and the failure that sheds a host is read
from Caddy's admin API before and after the request it must have steered."""

import json
import re
import shlex
import time
from pathlib import Path

import pytest
import testinfra

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = (REPO / "images/proxy/Dockerfile").read_text()
TOOL = "/usr/local/sbin/kokoro-gateway-upstreams"
CONFIG = "/etc/kokoro-gateway"
ADMIN = "/run/kokoro-gateway/admin.sock"
BODY = '{"model":"tts-1","input":"Hello.","voice":"af_heart"}'
# Each route: a POST path, the held GET path (the hosts' proxies' prefix, which the
# gateway strips before a service's own port), and its keys' variable.
ROUTES = {
    "kokoro": ("/v1/audio/speech", "/kokoro/hold", "gateway_kokoro_api_keys"),
    "llm": ("/v1/chat/completions", "/llm/hold", "gateway_llm_api_keys"),
}


def pin(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)[1]


@pytest.fixture(scope="module")
def variables(host) -> dict:
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def keys(variables) -> dict:
    """{route: its first key} for the routes the gateway serves."""
    served = ["kokoro", "llm"] if variables.get("gateway_llm_enabled") else ["kokoro"]
    return {r: variables[ROUTES[r][2]][0] for r in served}


@pytest.fixture(scope="module")
def key(keys):
    return keys["kokoro"]


@pytest.fixture(scope="module")
def fleet(host) -> dict:
    """{host name: testinfra host} of the gateway's upstreams."""
    names = json.loads(host.check_output(f"{TOOL} status"))["hosts"]
    inventory = host.backend.ansible_inventory
    return {n: testinfra.get_host(f"ansible://{n}", ansible_inventory=inventory) for n in names}


def call(host, key: str | None, path: str = ROUTES["kokoro"][0], method: str = "POST"):
    """(status, body) of one request through the gateway, checked against its CA."""
    auth = f"-H {shlex.quote('Authorization: Bearer ' + key)}" if key else ""
    data = f"-H 'Content-Type: application/json' -d {shlex.quote(BODY)}"
    data = data if method == "POST" else ""
    out = host.check_output(
        f"curl -sS --max-time 30 --cacert {CONFIG}/ca.crt -X {method} {auth} {data} "
        f"-w '\\n%{{http_code}}' https://localhost{path}")
    body, _, status = out.rpartition("\n")
    return int(status), body


def tool(host, *args):
    return host.run(" ".join([TOOL, *map(shlex.quote, args)]))


def in_flight(host) -> dict:
    return json.loads(tool(host, "status").stdout)["in_flight"]


def fails(host, address: str) -> int:
    """Caddy's count of an upstream address's recent failures (its admin API)."""
    out = host.check_output(
        f"curl -sS --unix-socket {ADMIN} http://localhost/reverse_proxy/upstreams")
    return {u["address"]: u["fails"] for u in json.loads(out)}.get(address, 0)


def address(host, name: str, route: str) -> str:
    return json.loads(tool(host, "status").stdout)["hosts"][name][route].split("://")[-1]


class Held:
    """A request through the gateway kept in flight at a host until release()."""

    count = 0

    def __init__(self, host, key: str, path: str):
        Held.count += 1
        self.host, self.out = host, f"/tmp/gateway-held-{Held.count}"
        before = in_flight(host)
        auth = shlex.quote(f"Authorization: Bearer {key}")
        host.run(f"rm -f {self.out}; (curl -sS --max-time 120 --cacert {CONFIG}/ca.crt -H {auth} "
                 f"-w ' %{{http_code}}' https://localhost{path} > {self.out} 2>&1 &)")
        for _ in range(200):
            now = in_flight(host)
            grown = [n for n in now if now[n] > before.get(n, 0)]
            if grown:
                self.at = grown[0]
                return
        pytest.fail(f"the held request to {path} never showed in flight: {in_flight(host)}")

    def release(self, fleet) -> str:
        """Its answer, once the host lets it go."""
        fleet[self.at].run("touch /run/standin-release")
        try:
            self.host.run(f"for i in $(seq 300); do grep -q ' [0-9][0-9][0-9]$' {self.out} "
                          "&& break; sleep 0.1; done")
            return self.host.file(self.out).content_string
        finally:
            fleet[self.at].run("rm -f /run/standin-release")


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


def test_each_route_takes_its_own_keys_only(host, keys):
    for route, service_key in keys.items():
        path = ROUTES[route][0]
        status, body = call(host, service_key, path)
        assert status == 200 and body.startswith(f"{route} "), (route, status, body)
        for other, other_key in keys.items():
            if other != route:
                status, body = call(host, other_key, path)
                assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    if "llm" in keys:  # /v1/models is the LLM's, as at the hosts' proxies
        assert call(host, keys["llm"], "/v1/models", "GET")[0] != 401
        assert call(host, keys["kokoro"], "/v1/models", "GET")[0] == 401


def test_a_path_no_route_serves_gets_404_and_no_host(host, keys, variables):
    paths = ["/no/such/path"] + ([] if "llm" in keys else ["/v1/chat/completions", "/llm/health"])
    for path in paths:
        assert call(host, None, path)[0] == 401
        status, body = call(host, keys["kokoro"], path)
        assert status == 404 and json.loads(body)["error"]["code"] == "not_found", (path, body)


def test_kokoros_readiness_answers_at_the_gateway(host, key):
    assert call(host, key, "/health", "GET")[0] == 200
    assert call(host, None, "/health", "GET")[0] == 401


@pytest.mark.parametrize("route, limit_var, default", [
    ("kokoro", "gateway_max_body_bytes", 262144),
    ("llm", "gateway_llm_max_body_bytes", 16777216),
])
def test_a_body_over_the_limit_is_refused_at_the_gateway(host, keys, variables, route, limit_var,
                                                         default):
    if route not in keys:
        pytest.skip(f"the gateway serves no {route} route")
    limit = int(variables.get(limit_var, default))
    auth = shlex.quote(f"Authorization: Bearer {keys[route]}")
    # Asking first (Expect: 100-continue), as clients do for large bodies: the 413 comes
    # before the body is sent, so the answer is read whole.
    out = host.check_output(
        f"head -c {limit + 1} /dev/zero | curl -sS --http1.1 -H 'Expect: 100-continue' "
        f"--max-time 60 --cacert {CONFIG}/ca.crt -H {auth} --data-binary @- "
        f"-w '\\n%{{http_code}}' https://localhost{ROUTES[route][0]}")
    body, _, status = out.rpartition("\n")
    assert status == "413" and json.loads(body)["error"]["code"] == "request_too_large", out


@pytest.mark.parametrize("route", ["kokoro", "llm"])
def test_fleet_changes_requests_go_to_the_host_with_fewer_in_flight(host, keys, fleet, route):
    """Balanced over both hosts: with one request held at a host, the next goes to the other."""
    if route not in keys:
        pytest.skip(f"the gateway serves no {route} route")
    post, hold, _ = ROUTES[route]
    held = Held(host, keys[route], hold)
    try:
        other = next(n for n in fleet if n != held.at)
        assert call(host, keys[route], post) == (200, f"{route} {other}")
    finally:
        answer = held.release(fleet)
    assert answer == f"{route} {held.at} 200"


@pytest.mark.parametrize("route", ["kokoro", "llm"])
def test_fleet_changes_a_drain_waits_for_the_request_in_flight_and_sends_no_new_one(
        host, keys, fleet, route):
    if route not in keys:
        pytest.skip(f"the gateway serves no {route} route")
    a, b = sorted(fleet)
    held = None
    try:
        # A request held on host a alone: b is out of service while it starts.
        assert tool(host, "drain", b).stdout.split()[-1] == "changed"
        held = Held(host, keys[route], ROUTES[route][1])
        assert held.at == a and in_flight(host)[a] == 1
        assert tool(host, "undrain", b).stdout.split()[-1] == "changed"

        refused = tool(host, "drain", a, "--timeout", "2")
        assert refused.rc == 1 and f"{a} still has 1 request(s) in flight" in refused.stderr
        # a is out of every route while its request finishes.
        for r, k in keys.items():
            assert {call(host, k, ROUTES[r][0]) for _ in range(5)} == {(200, f"{r} {b}")}

        assert held.release(fleet) == f"{route} {a} 200"
        held = None
        done = tool(host, "drain", a)
        assert done.rc == 0 and done.stdout.split()[-1] == "unchanged"
        for r, k in keys.items():
            assert {call(host, k, ROUTES[r][0]) for _ in range(5)} == {(200, f"{r} {b}")}
    finally:
        if held is not None:
            held.release(fleet)
        for name in fleet:
            tool(host, "undrain", name)
    assert not host.file(f"{CONFIG}/drained").content_string.split()


def test_a_drain_names_the_hosts_it_knows(host):
    r = tool(host, "drain", "no-such-host")
    assert r.rc == 3 and "no-such-host is not one of the gateway's hosts" in r.stderr


def test_fleet_changes_a_fleet_with_every_host_drained_says_so(host, keys, fleet):
    try:
        for name in fleet:
            assert tool(host, "drain", name).rc == 0
        for route, k in keys.items():
            status, body = call(host, k, ROUTES[route][0])
            assert status == 503 and json.loads(body)["error"]["code"] == "no_upstream"
    finally:
        for name in fleet:
            tool(host, "undrain", name)
    for route, k in keys.items():
        assert call(host, k, ROUTES[route][0])[0] == 200


def wait_no_fails(host, where: str) -> None:
    """Until Caddy has forgotten the address's failures (gateway_fail_duration)."""
    for _ in range(600):
        if fails(host, where) == 0:
            return
        time.sleep(0.2)
    pytest.fail(f"Caddy still counts failures of {where}")


def wait_answers(host, key: str, name: str) -> None:
    """Until a Kokoro request through the gateway is answered by host `name` (back in
    service: its readiness check passed)."""
    for _ in range(300):
        if call(host, key) == (200, f"kokoro {name}"):
            return
        time.sleep(0.2)
    pytest.fail(f"{name} answered no request through the gateway")


def test_fleet_changes_a_host_that_stops_answering_loses_no_request(host, key, fleet):
    a, b = sorted(fleet)
    where = address(host, b, "kokoro")
    fleet[b].run("systemctl stop kokoro-standin")
    try:
        # Whichever host each request is given first, a answers it: b's refusal is retried.
        assert {call(host, key) for _ in range(10)} == {(200, f"kokoro {a}")}
    finally:
        fleet[b].run("systemctl start kokoro-standin")
    # b is back once its failures are forgotten and its readiness check has passed again
    # (it answers a request); then, with a request held at one host, the next one goes to
    # the other.
    wait_no_fails(host, where)
    wait_answers(host, key, b)
    held = Held(host, key, ROUTES["kokoro"][1])
    try:
        other = b if held.at == a else a
        assert call(host, key) == (200, f"kokoro {other}")
    finally:
        held.release(fleet)


def test_fleet_changes_a_host_that_answers_503_sheds_its_load(host, key, fleet):
    """The host that answered 503 gets no request while Caddy counts its failure, even
    when the other host is busier: least_conn alone would choose it."""
    a, b = sorted(fleet)
    where = address(host, b, "kokoro")
    steered: list = []
    for _ in range(3):  # again only if b's failure was forgotten before a request was sent
        wait_no_fails(host, where)
        held = None
        try:
            # With a request held at one host, the next goes to the other: hold it at a
            # (b out of service while it starts), then wait until b is back in service.
            assert tool(host, "drain", b).rc == 0
            try:
                held = Held(host, key, ROUTES["kokoro"][1])
            finally:
                assert tool(host, "undrain", b).rc == 0
            assert held.at == a, f"the held request went to {held.at}"
            wait_answers(host, key, b)
            fleet[b].run("touch /run/standin-kokoro-503")
            # b answers; the client still gets the host's 503 (no replay).
            assert call(host, key) == (503, "queue full")
            while fails(host, where) and len(steered) < 5:
                answer = call(host, key)
                if fails(host, where):  # b's failure was counted all through this request
                    steered.append(answer)
        finally:
            fleet[b].run("rm -f /run/standin-kokoro-503")
            if held is not None:
                held.release(fleet)
        if steered:
            break
    assert steered and set(steered) == {(200, f"kokoro {a}")}, steered
