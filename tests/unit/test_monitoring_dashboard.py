"""roles/monitoring's Grafana dashboard (files/grafana/kokoro-deploy.json) and Grafana's
provisioning: valid JSON with what Grafana's dashboard schema requires of a dashboard
and its panels, unique panel ids, panels that do not overlap, every query against the
provisioned Prometheus data source, and every series a query names exported by
something the kit runs: the Kokoro server (images/kokoro/src/kokoro_server/metrics.py),
llama-server, node exporter, the GPU exporter script, or Prometheus itself. The panels
the issue asks for are there. Grafana's and DCGM's compose files pass
`docker compose config` (skipped without the compose plugin, failed in CI)."""

import json
import re
from pathlib import Path

import jinja2
import kokoro_gpu_exporter as gpu_exporter
import pytest
import yaml
from required_tools import compose_config

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles/monitoring"
DASHBOARD = json.loads((ROLE / "files/grafana/kokoro-deploy.json").read_text())
DS_UID = "kokoro-deploy-prometheus"



def kokoro_series() -> set[str]:
    """The names the Kokoro server exposes, from its prometheus_client declarations."""
    text = (REPO / "images/kokoro/src/kokoro_server/metrics.py").read_text()
    names = set()
    for kind, name in re.findall(r'\b(Counter|Gauge|Histogram)\(\s*"([a-z_:]+)"', text):
        if kind == "Histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "Counter":
            names |= {
                name if name.endswith("_total") else f"{name}_total",
                f"{name.removesuffix('_total')}_created",
            }
        else:
            names.add(name)
    assert "kokoro_requests_total" in names and "kokoro_real_time_factor_bucket" in names
    return names


# llama.cpp tools/server/server-task.cpp (the source images/llm builds): metrics with
# LLAMA_ARG_ENDPOINT_METRICS=1, each prefixed "llamacpp:".
LLAMA = {
    f"llamacpp:{n}"
    for n in (
        "prompt_tokens_total",
        "prompt_tokens_cached_total",
        "prompt_seconds_total",
        "tokens_predicted_total",
        "tokens_predicted_seconds_total",
        "n_decode_total",
        "n_tokens_max",
        "prompt_tokens_seconds",
        "predicted_tokens_seconds",
        "requests_processing",
        "requests_deferred",
        "n_busy_slots_per_decode",
    )
}
# node exporter 1.5 (Debian 12), the ones the dashboard uses; Prometheus' own.
NODE = {"node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes"}
PROMETHEUS = {"up"}
KNOWN = kokoro_series() | LLAMA | NODE | PROMETHEUS | set(gpu_exporter.HELP)

KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    # aggregation operators, which may stand before "by (...)" rather than "("
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
}


def series_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, keywords, labels or strings)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("(") or m.group(0).lower() in KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def panels():
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def exprs():
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def test_series_in_parses_promql():
    assert series_in(
        '1 - avg by (host) (rate(node_cpu_seconds_total{host=~"$host", mode="idle"}[5m]))'
    ) == {"node_cpu_seconds_total"}
    assert series_in("a_total / on (host) group_left () b_bytes > 0.5") == {"a_total", "b_bytes"}
    assert series_in("llamacpp:requests_processing") == {"llamacpp:requests_processing"}


def test_dashboard_has_the_schema_essentials():
    for key, kind in {
        "title": str,
        "uid": str,
        "schemaVersion": int,
        "panels": list,
        "time": dict,
        "templating": dict,
        "tags": list,
        "version": int,
    }.items():
        assert isinstance(DASHBOARD[key], kind), key
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", DASHBOARD["uid"])
    assert DASHBOARD["schemaVersion"] >= 36
    assert "id" not in DASHBOARD or DASHBOARD["id"] is None  # provisioning assigns it
    for var in DASHBOARD["templating"]["list"]:
        assert {"name", "type", "query"} <= set(var)
    for p in DASHBOARD["panels"]:
        assert {"id", "type", "title", "gridPos"} <= set(p), p.get("title")
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0 and g["y"] >= 0, p["title"]
    for p in panels():
        assert p["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}, p["title"]
        assert p["targets"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


def test_panel_ids_are_unique_and_panels_do_not_overlap():
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells = {}
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_every_query_uses_the_provisioned_data_source():
    datasource = yaml.safe_load(render("grafana/datasource.yml.j2"))["datasources"][0]
    assert datasource["uid"] == DS_UID and datasource["type"] == "prometheus"
    for p in panels():
        assert p["datasource"]["uid"] == DS_UID, p["title"]
        for t in p["targets"]:
            assert t.get("datasource", p["datasource"])["uid"] == DS_UID


@pytest.mark.parametrize("title,expr", exprs(), ids=lambda v: v[:50] if isinstance(v, str) else v)
def test_every_query_names_series_that_exist(title, expr):
    names = series_in(expr)
    assert names, f"{title}: no series in {expr}"
    unknown = names - KNOWN
    assert not unknown, f"{title}: {sorted(unknown)} are exported by nothing the kit runs"


def test_the_panels_the_issue_asks_for_are_there():
    text = " ".join(e for _, e in exprs())
    for needed in (
        "kokoro_requests_total",
        'status!~"2.."',
        "llamacpp:",
        "kokoro_real_time_factor_bucket",
        "kokoro_synthesis_seconds_bucket",
        "kokoro_queue_depth",
        "nvidia_gpu_memory_used_bytes",
        "nvidia_gpu_memory_total_bytes",
        "nvidia_gpu_process_memory_used_bytes",
        "nvidia_gpu_utilization_ratio",
        "nvidia_gpu_temperature_celsius",
    ):
        assert needed in text, needed
    assert {"0.5", "0.95", "0.99"} <= set(re.findall(r"histogram_quantile\(([0-9.]+)", text))


def render(template: str, **overrides) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROLE / "templates")), undefined=jinja2.StrictUndefined
    )
    env.filters["to_json"] = json.dumps
    values = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    values.update(ansible_managed="Ansible managed", **overrides)
    return env.get_template(template).render(**values)


def test_dashboard_provider_points_where_compose_mounts_the_dashboard():
    provider = yaml.safe_load(render("grafana/dashboards.yml.j2"))["providers"][0]
    compose = yaml.safe_load(render("grafana/compose.grafana.yml.j2"))
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards:{provider['options']['path']}:ro" in mounts
    assert "./provisioning:/etc/grafana/provisioning:ro" in mounts
    image = compose["services"]["grafana"]["image"]
    assert re.fullmatch(r"grafana/grafana-oss:\d+\.\d+\.\d+", image), "pin Grafana by tag"


def project_config(tmp_path: Path, text: str, extra: dict | None = None) -> dict:
    """`docker compose config` of `text` as compose.yml, with the `extra` files beside it."""
    (tmp_path / "compose.yml").write_text(text)
    for name, content in (extra or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    return compose_config(tmp_path)


def test_grafana_compose_file_passes_docker_compose_config(tmp_path):
    config = project_config(
        tmp_path,
        render("grafana/compose.grafana.yml.j2"),
        {
            "provisioning/datasources/kokoro-deploy.yml": render("grafana/datasource.yml.j2"),
            "provisioning/dashboards/kokoro-deploy.yml": render("grafana/dashboards.yml.j2"),
            "dashboards/kokoro-deploy.json": json.dumps(DASHBOARD),
        },
    )
    grafana = config["services"]["grafana"]
    assert grafana["network_mode"] == "host"
    assert grafana["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert grafana["cap_drop"] == ["ALL"]


def test_dcgm_compose_file_passes_docker_compose_config(tmp_path):
    config = project_config(
        tmp_path, render("compose.dcgm.yml.j2", monitoring_node_exporter_bind_address="0.0.0.0")
    )
    service = config["services"]["dcgm-exporter"]
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert service["ports"][0]["published"] == "9400"
