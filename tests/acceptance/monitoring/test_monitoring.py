"""roles/monitoring on a host that runs Prometheus: every target is up; real speech
moves Kokoro's series; every query of the Grafana dashboard returns data from this
Prometheus; the GPU exporter ties each GPU process to its compose service; the scrape
keys are private to Prometheus and appear in no rendered file; Grafana's admin password
is private, not admin and in no rendered file or log, and where Grafana runs admin/admin
is refused and that password accepted. Skipped on hosts without Prometheus (the other
hosts of a fleet).

On a host without a GPU the GPU panels are checked only when the GPU exporter reports
one (the Molecule scenario replays a recorded nvidia-smi sample for that).
Settings (environment):
  KOKORO_PROMETHEUS_URL  Prometheus on the host (default http://127.0.0.1:9090)
"""

import json
import os
import re
import time
from pathlib import Path

import pytest
from host_http import request as host_request

PROM = os.environ.get("KOKORO_PROMETHEUS_URL", "http://127.0.0.1:9090")
DASHBOARD = json.loads(
    (
        Path(__file__).resolve().parents[3] / "roles/monitoring/files/grafana/kokoro-deploy.json"
    ).read_text()
)
CONF = "/etc/prometheus/kokoro-deploy"
GPU_SERIES = re.compile(r"\b(nvidia_gpu_\w+|kokoro_deploy_vram_min_headroom_bytes)\b")


def call(host, **request) -> dict:
    answer = host_request(host, **request)
    assert "error" not in answer, answer
    return answer


def api(host, path: str, **params) -> dict:
    from urllib.parse import urlencode

    url = f"{PROM}{path}" + (f"?{urlencode(params)}" if params else "")
    answer = call(host, url=url, full=True)
    assert answer["status"] == 200, answer
    return json.loads(answer["body"])["data"]


def query(host, expr: str) -> list:
    return api(host, "/api/v1/query", query=expr)["result"]


def panel_queries():
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            yield (
                panel["title"],
                target["expr"].replace("$host", ".*").replace("$__rate_interval", "5m"),
            )


@pytest.fixture(scope="module")
def prometheus(host):
    if (
        not host.file("/etc/prometheus/prometheus.yml").exists
        or not host.service("prometheus").is_running
    ):
        pytest.skip(
            "no Prometheus on this host (roles/monitoring's server runs on monitoring_server_host)"
        )
    return host


@pytest.fixture(scope="module")
def kokoro_targets(prometheus):
    targets = [
        t
        for t in api(prometheus, "/api/v1/targets")["activeTargets"]
        if t["labels"].get("service") == "kokoro"
    ]
    assert targets, "Prometheus has no Kokoro target"
    return targets


def speech_request(host, target: dict, voice: str) -> dict:
    """A speech request to the Kokoro that Prometheus scrapes, by the same way in."""
    url = target["scrapeUrl"].rsplit("/metrics", 1)[0] + "/v1/audio/speech"
    name = target["labels"]["host"]
    key_file = host.file(f"{CONF}/targets/{name}/kokoro.key")
    ca = f"{CONF}/targets/{name}/proxy-ca.crt"
    request = {
        "url": url,
        "body": {
            "model": "kokoro",
            "input": "Monitoring works.",
            "voice": voice,
            "response_format": "wav",
        },
    }
    if key_file.exists:
        request["key"] = key_file.content_string.strip()
    if url.startswith("https://"):
        request.update(ca=ca, name="localhost")
    return call(host, **request)


@pytest.fixture(scope="module")
def traffic(prometheus, kokoro_targets):
    """Real speech (and one refused request) through every Kokoro that Prometheus scrapes
    on this host; the Kokoro request counter before and after."""
    before = {
        r["metric"]["host"]: float(r["value"][1])
        for r in query(prometheus, "sum by (host) (kokoro_requests_total)")
    }
    local = [
        t for t in kokoro_targets if "127.0.0.1" in t["scrapeUrl"] or "localhost" in t["scrapeUrl"]
    ]
    assert local, "no Kokoro target on this host's loopback"
    for target in local:
        ok = speech_request(prometheus, target, "af_heart")
        assert ok["status"] == 200 and ok["bytes"] > 1000, ok
        bad = speech_request(prometheus, target, "no_such_voice")
        assert 400 <= bad["status"] < 500, bad
    return {"before": before, "hosts": [t["labels"]["host"] for t in local]}


def wait_for(check, timeout=90, every=3):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


def test_prometheus_config_and_rules_pass_promtool(prometheus):
    out = prometheus.run("promtool check config /etc/prometheus/prometheus.yml")
    assert out.rc == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_every_target_is_up(prometheus):
    def states():
        targets = api(prometheus, "/api/v1/targets")["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_for(states, timeout=60) or api(prometheus, "/api/v1/targets")["activeTargets"]
    down = [
        (t["labels"].get("host"), t["labels"].get("service"), t["lastError"])
        for t in targets
        if t["health"] != "up"
    ]
    assert not down, f"targets not up: {down}"
    services = {(t["labels"].get("host"), t["labels"]["service"]) for t in targets}
    for name in {h for h, _ in services if h}:
        assert (name, "node") in services and (name, "kokoro") in services, services


def test_llm_is_scraped_where_it_runs(prometheus, stack_env):
    if "llm" not in stack_env.get("COMPOSE_PROFILES", "").split(","):
        pytest.skip("the LLM is not enabled on this host")
    assert query(prometheus, 'llamacpp:requests_processing{service="llm"}'), (
        "no llama-server series"
    )


def test_speech_moves_the_kokoro_request_counter(prometheus, traffic):
    def moved():
        after = {
            r["metric"]["host"]: float(r["value"][1])
            for r in query(prometheus, "sum by (host) (kokoro_requests_total)")
        }
        return (
            all(after.get(h, 0) >= traffic["before"].get(h, 0) + 2 for h in traffic["hosts"])
            and after
        )

    assert wait_for(moved), f"kokoro_requests_total did not grow from {traffic['before']}"
    assert query(prometheus, "kokoro_audio_seconds_total > 0")
    assert query(prometheus, 'kokoro_requests_total{route=~".*speech.*", status="200"} > 0')


def test_gpu_exporter_ties_gpu_processes_to_compose_services(prometheus):
    if not query(prometheus, "nvidia_smi_up == 1"):
        pytest.skip("no host reports a GPU (nvidia_smi_up is 0 everywhere)")
    services = wait_for(
        lambda: query(prometheus, 'nvidia_gpu_process_memory_used_bytes{compose_service!=""}')
    )
    assert services, "no GPU process was matched to a compose service"
    assert {r["metric"]["compose_service"] for r in services} <= {"kokoro", "llm", "comfyui"}


@pytest.mark.parametrize(
    "title,expr", list(panel_queries()), ids=lambda v: v[:60] if isinstance(v, str) else v
)
def test_every_dashboard_query_returns_data(prometheus, traffic, title, expr):
    if GPU_SERIES.search(expr) and not query(prometheus, "nvidia_smi_up == 1"):
        pytest.skip("no host reports a GPU: the GPU panels have nothing to show here")
    result = wait_for(lambda: query(prometheus, expr), timeout=60)
    assert result, f"panel {title!r}: no data for {expr}"


def test_scrape_keys_are_private_to_prometheus_and_in_no_rendered_file(prometheus):
    keys = prometheus.run(f"find {CONF}/targets -name '*.key'").stdout.split()
    config = prometheus.file("/etc/prometheus/prometheus.yml").content_string
    for path in keys:
        f = prometheus.file(path)
        assert (f.user, f.mode) == ("prometheus", 0o400), path
        assert f.content_string.strip() not in config
        assert f"credentials_file: {path}" in config


GRAFANA_DIR = os.environ.get("KOKORO_GRAFANA_DIR", "/opt/kokoro-deploy/grafana")
GRAFANA_URL = os.environ.get("KOKORO_GRAFANA_URL", "http://127.0.0.1:3000")

# Logs in to Grafana with HTTP basic auth and prints the status of GET /api/user, or
# "down" when nothing answers. Standard library only, run on the host; the password is
# read from a file there, never put on a command line.
GRAFANA_LOGIN = r"""
import base64, sys, urllib.error, urllib.request
url, user, secret = sys.argv[1:]
password = open(secret).read().strip() if secret.startswith("/") else secret
token = base64.b64encode(f"{user}:{password}".encode()).decode()
req = urllib.request.Request(url + "/api/user", headers={"Authorization": "Basic " + token})
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        print(resp.status)
except urllib.error.HTTPError as err:
    print(err.code)
except OSError:
    print("down")
"""


@pytest.fixture(scope="module")
def grafana(prometheus):
    if not prometheus.file(f"{GRAFANA_DIR}/compose.yml").exists:
        pytest.skip(f"no Grafana files in {GRAFANA_DIR} (monitoring_grafana_dir empty)")
    return prometheus


def test_grafana_has_a_private_admin_password_that_is_not_admin(grafana):
    secret = grafana.file(f"{GRAFANA_DIR}/secrets/admin_password")
    assert secret.exists, "no admin password file: Grafana would start as admin/admin"
    assert (secret.mode, secret.uid) == (0o600, 472)
    password = grafana.check_output("cat %s", secret.path)
    assert len(password) >= 12 and password.lower() != "admin"
    compose = grafana.file(f"{GRAFANA_DIR}/compose.yml").content_string
    assert "GF_SECURITY_ADMIN_PASSWORD__FILE: /run/secrets/grafana_admin_password" in compose
    assert "./secrets/admin_password:/run/secrets/grafana_admin_password:ro" in compose
    rendered = grafana.check_output(
        "find %s -path %s -prune -o -type f -print0 | xargs -0 cat",
        GRAFANA_DIR,
        f"{GRAFANA_DIR}/secrets",
    )
    assert password not in rendered
    log = os.environ.get("KOKORO_ANSIBLE_LOG")
    if log:
        assert password not in Path(log).read_text(), "the password is in the deploy's log"


def test_grafana_refuses_admin_admin_and_takes_the_configured_password(grafana):
    """Where Grafana runs (its image pulled, `docker compose up -d` in its folder)."""
    secret = f"{GRAFANA_DIR}/secrets/admin_password"
    default = grafana.check_output("python3 -c %s %s admin admin", GRAFANA_LOGIN, GRAFANA_URL)
    if default == "down":
        pytest.skip(
            f"Grafana does not answer at {GRAFANA_URL}: the role writes its compose file only "
            f"(run `docker compose up -d` in {GRAFANA_DIR} where grafana/grafana-oss can be "
            "pulled; no registry is reachable on the test bed)"
        )
    assert default == "401", f"admin/admin got {default}"
    configured = grafana.check_output(
        "python3 -c %s %s admin %s", GRAFANA_LOGIN, GRAFANA_URL, secret
    )
    assert configured == "200", f"the configured password got {configured}"
