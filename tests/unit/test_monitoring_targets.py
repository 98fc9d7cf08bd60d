"""roles/monitoring's scrape targets come from the inventory (filter_plugins/
monitoring_targets.py): every host of the group appears with node exporter and Kokoro
(and its LLM where it runs one), reached directly or through the TLS proxy with that
host's key and CA files, as each host's own roles/stack variables say; a service that
Prometheus could not reach is a clear error naming the variable. The rendered
prometheus.yml passes `promtool check config` and holds no key."""

import json
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible_collections.kokoro.deploy.plugins.module_utils import monitoring_targets as mt
from required_tools import promtool, run_ok

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles/monitoring"
DEFAULTS = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
STACK = DEFAULTS["monitoring_stack_defaults"]
CRED = "/etc/prometheus/kokoro-deploy/targets"


def targets(hosts: dict, server: str, **kw):
    return mt.scrape_targets(list(hosts), list(hosts.values()), server, STACK, CRED, **kw)


def by(ts, host, service):
    (t,) = [t for t in ts if t["host"] == host and t["service"] == service]
    return t


def test_one_host_without_proxy_scrapes_its_loopback_ports():
    ts = targets({"tts-01": {}}, "tts-01")
    assert [(t["service"], t["address"], t["metrics_path"]) for t in ts] == [
        ("node", "127.0.0.1:9100", "/metrics"),
        ("kokoro", "127.0.0.1:8880", "/metrics"),
    ]
    assert (
        by(ts, "tts-01", "kokoro")["key_src"] == "/opt/kokoro-deploy/stack/secrets/kokoro_api_keys"
    )


def test_a_fleet_behind_the_proxy_is_scraped_over_tls_with_each_hosts_key():
    hosts = {
        "tts-01": {"stack_proxy_enabled": True, "stack_llm_enabled": True},
        "tts-02": {
            "stack_proxy_enabled": True,
            "ansible_host": "10.0.0.2",
            "stack_proxy_server_names": ["tts-02.example.internal"],
        },
        "tts-03": {
            "stack_kokoro_bind_address": "0.0.0.0",
            "ansible_host": "10.0.0.3",
            "stack_project_dir": "/srv/stack",
        },
    }
    ts = targets(hosts, "tts-01")
    assert {(t["host"], t["service"]) for t in ts} == {
        ("tts-01", "node"),
        ("tts-01", "kokoro"),
        ("tts-01", "llm"),
        ("tts-02", "node"),
        ("tts-02", "kokoro"),
        ("tts-03", "node"),
        ("tts-03", "kokoro"),
    }
    local = by(ts, "tts-01", "llm")
    assert (local["scheme"], local["address"], local["metrics_path"], local["tls_server_name"]) == (
        "https",
        "127.0.0.1:443",
        "/llm/metrics",
        "localhost",
    )
    assert local["key_file"] == f"{CRED}/tts-01/llm.key"
    assert local["ca_src"] == "/opt/kokoro-deploy/stack/proxy-ca.crt"
    remote = by(ts, "tts-02", "kokoro")
    assert (remote["address"], remote["metrics_path"], remote["tls_server_name"]) == (
        "10.0.0.2:443",
        "/kokoro/metrics",
        "tts-02.example.internal",
    )
    assert by(ts, "tts-02", "node")["address"] == "10.0.0.2:9100"
    direct = by(ts, "tts-03", "kokoro")
    assert (direct["scheme"], direct["address"], direct["key_src"]) == (
        "http",
        "10.0.0.3:8880",
        "/srv/stack/secrets/kokoro_api_keys",
    )


def test_a_remote_service_on_loopback_is_an_error_naming_the_fix():
    with pytest.raises(
        mt.AnsibleFilterError, match=r"stack_kokoro_bind_address=127\.0\.0\.1.*stack_proxy_enabled"
    ):
        targets({"tts-01": {}, "tts-02": {}}, "tts-01")


def test_a_remote_node_exporter_on_loopback_is_an_error_naming_the_variable():
    with pytest.raises(mt.AnsibleFilterError, match="monitoring_node_exporter_bind_address"):
        targets(
            {
                "tts-01": {},
                "tts-02": {
                    "stack_proxy_enabled": True,
                    "monitoring_node_exporter_bind_address": "127.0.0.1",
                },
            },
            "tts-01",
        )


def test_dcgm_hosts_get_a_gpu_target():
    ts = targets({"tts-01": {"monitoring_gpu_exporter": "dcgm"}}, "tts-01")
    assert by(ts, "tts-01", "gpu")["address"] == "127.0.0.1:9400"


def render_config(ts, keys) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROLE / "templates")), undefined=jinja2.StrictUndefined
    )
    env.filters["to_json"] = json.dumps
    values = dict(
        DEFAULTS,
        ansible_managed="Ansible managed",
        inventory_hostname="tts-01",
        __monitoring_targets=ts,
        __monitoring_keys=keys,
        __monitoring_rules_file="/etc/prometheus/kokoro-deploy/kokoro-alerts.rules.yml",
        __monitoring_dcgm_rules_file="/etc/prometheus/kokoro-deploy/dcgm.rules.yml",
    )
    return env.get_template("prometheus.yml.j2").render(**values)


def test_rendered_prometheus_config_passes_promtool_and_holds_no_key(tmp_path):
    hosts = {
        "tts-01": {"stack_proxy_enabled": True, "stack_llm_enabled": True},
        "tts-02": {"stack_proxy_enabled": True, "ansible_host": "10.0.0.2"},
    }
    ts = targets(hosts, "tts-01")
    secret = "k" * 43
    keys = {t["key_file"]: secret for t in ts if t["key_file"]}
    text = render_config(ts, keys)
    assert secret not in text
    config = yaml.safe_load(text)
    jobs = {c["job_name"]: c for c in config["scrape_configs"]}
    assert jobs["kokoro/tts-02"]["authorization"]["credentials_file"] == f"{CRED}/tts-02/kokoro.key"
    assert jobs["kokoro/tts-02"]["tls_config"] == {
        "ca_file": f"{CRED}/tts-02/proxy-ca.crt",
        "server_name": "tts-02",
    }
    assert jobs["llm/tts-01"]["static_configs"][0]["labels"] == {"host": "tts-01", "service": "llm"}
    (tmp_path / "prometheus.yml").write_text(text)
    run_ok([promtool(), "check", "config", "--syntax-only", "prometheus.yml"], cwd=tmp_path)


def test_a_service_without_a_key_gets_no_authorization():
    ts = targets({"tts-01": {}}, "tts-01")
    config = yaml.safe_load(render_config(ts, {f"{CRED}/tts-01/kokoro.key": ""}))
    (kokoro,) = [c for c in config["scrape_configs"] if c["job_name"] == "kokoro/tts-01"]
    assert "authorization" not in kokoro and "tls_config" not in kokoro
