"""roles/monitoring's alert rules: valid for Prometheus' own checker (`promtool check
rules`), and they fire when they should and only then (`promtool test rules` on
synthetic series: a target down, a card under its plan's VRAM headroom, Kokoro's error
ratio and real-time factor above their bounds). Rendered from the role's template with
its defaults, as the role renders it. promtool comes with Debian's `prometheus` package:
without it these tests fail in CI (CI=true) and are skipped elsewhere."""

import json
from pathlib import Path

import jinja2
import pytest
import yaml
from required_tools import promtool, run_ok

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles/monitoring"


def render(template: str, **overrides) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROLE / "templates")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["to_json"] = json.dumps
    values = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    values.update(ansible_managed="Ansible managed", **overrides)
    return env.get_template(template).render(**values)


def promtool_passes(*args, cwd=None) -> None:
    run_ok([promtool(), *args], cwd=cwd)


@pytest.fixture
def rules(tmp_path) -> Path:
    path = tmp_path / "kokoro-alerts.rules.yml"
    path.write_text(render("kokoro-alerts.rules.yml.j2"))
    return path


def test_alert_rules_pass_promtool_check(rules):
    promtool_passes("check", "rules", str(rules))
    names = [r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]]
    assert {
        "KokoroDeployServiceDown",
        "KokoroDeployVramHeadroomLow",
        "KokoroDeploySynthesisSlow",
        "KokoroDeployErrorRateHigh",
    } <= set(names)


def test_dcgm_recording_rules_pass_promtool_check():
    promtool_passes("check", "rules", str(ROLE / "files/dcgm.rules.yml"))


def test_bounds_come_from_the_variables(tmp_path):
    text = render(
        "kokoro-alerts.rules.yml.j2",
        monitoring_alert_rtf_max=0.8,
        monitoring_alert_error_ratio_max=0.2,
        monitoring_alert_down_for="7m",
    )
    assert "> 0.8" in text and "> 0.2" in text and "for: 7m" in text


G0 = 'host="tts-01",instance="a:9100",gpu="0",uuid="GPU-0",name="H100"'
G1 = 'host="tts-01",instance="a:9100",gpu="1",uuid="GPU-1",name="H100"'
G2 = 'host="tts-02",instance="b:9100",gpu="0",uuid="GPU-2",name="RTX 4090"'
SPEECH = 'route="/v1/audio/speech"'
MIB = 1048576
H100 = 85520809984
RTX4090 = 25757220864

UNIT_TESTS = {
    "rule_files": ["kokoro-alerts.rules.yml"],
    "evaluation_interval": "1m",
    "tests": [
        {  # Kokoro stops answering on one host; the LLM on another stays up.
            "interval": "1m",
            "input_series": [
                {
                    "series": (
                        'up{job="kokoro",service="kokoro",host="tts-01",instance="127.0.0.1:8880"}'
                    ),
                    "values": "1 1 0 0 0 0 0",
                },
                {
                    "series": 'up{job="llm",service="llm",host="tts-02",instance="10.0.0.2:443"}',
                    "values": "1x6",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "KokoroDeployServiceDown", "exp_alerts": []},
                {
                    "eval_time": "5m",
                    "alertname": "KokoroDeployServiceDown",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "critical",
                                "job": "kokoro",
                                "service": "kokoro",
                                "host": "tts-01",
                                "instance": "127.0.0.1:8880",
                            },
                            "exp_annotations": {
                                "summary": "kokoro on tts-01 is down",
                                "description": (
                                    "Prometheus has not been able to "
                                    "scrape kokoro at 127.0.0.1:8880 "
                                    "(host tts-01). Check `docker compose ps` "
                                    "in the stack's project "
                                    "folder, or the exporter's systemd unit."
                                ),
                            },
                        }
                    ],
                },
            ],
        },
        {  # GPU 0 of tts-01 has 300 MiB free against its host's 512 MiB; GPU 1 has plenty;
            # tts-02 has a 256 MiB threshold and 300 MiB free (no alert).
            "interval": "1m",
            "input_series": [
                {
                    "series": f"nvidia_gpu_memory_total_bytes{{{G0}}}",
                    "values": f"{H100}x10",
                },
                {
                    "series": f"nvidia_gpu_memory_used_bytes{{{G0}}}",
                    "values": f"{H100 - 300 * MIB}x10",
                },
                {
                    "series": f"nvidia_gpu_memory_total_bytes{{{G1}}}",
                    "values": f"{H100}x10",
                },
                {
                    "series": f"nvidia_gpu_memory_used_bytes{{{G1}}}",
                    "values": "1048576x10",
                },
                {
                    "series": (
                        'kokoro_deploy_vram_min_headroom_bytes{host="tts-01",instance="a:9100"}'
                    ),
                    "values": f"{512 * MIB}x10",
                },
                {
                    "series": f"nvidia_gpu_memory_total_bytes{{{G2}}}",
                    "values": f"{RTX4090}x10",
                },
                {
                    "series": f"nvidia_gpu_memory_used_bytes{{{G2}}}",
                    "values": f"{RTX4090 - 300 * MIB}x10",
                },
                {
                    "series": (
                        'kokoro_deploy_vram_min_headroom_bytes{host="tts-02",instance="b:9100"}'
                    ),
                    "values": f"{256 * MIB}x10",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "KokoroDeployVramHeadroomLow", "exp_alerts": []},
                {
                    "eval_time": "6m",
                    "alertname": "KokoroDeployVramHeadroomLow",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "host": "tts-01",
                                "instance": "a:9100",
                                "gpu": "0",
                                "uuid": "GPU-0",
                                "name": "H100",
                            },
                            "exp_annotations": {
                                "summary": (
                                    "GPU 0 on tts-01 has 300MiB of "
                                    "VRAM free, under the plan's headroom"
                                ),
                                "description": (
                                    "Free VRAM on H100 (GPU 0) is "
                                    "below stack_vram_min_headroom_mib "
                                    "for this host. A service grew "
                                    "beyond its plan, or something outside "
                                    "the stack uses the card: see the per-process VRAM panel."
                                ),
                            },
                        }
                    ],
                },
            ],
        },
        {  # 10% of Kokoro's requests answer 500: above the 5% bound after 5 minutes.
            "interval": "1m",
            "input_series": [
                {
                    "series": f'kokoro_requests_total{{host="tts-01",{SPEECH},status="200"}}',
                    "values": "0+54x15",
                },
                {
                    "series": f'kokoro_requests_total{{host="tts-01",{SPEECH},status="500"}}',
                    "values": "0+6x15",
                },
                {
                    "series": f'kokoro_requests_total{{host="tts-02",{SPEECH},status="200"}}',
                    "values": "0+60x15",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "KokoroDeployErrorRateHigh", "exp_alerts": []},
                {
                    "eval_time": "12m",
                    "alertname": "KokoroDeployErrorRateHigh",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "host": "tts-01"},
                            "exp_annotations": {
                                "summary": "Kokoro on tts-01: 10% of requests fail",
                                "description": "More than 5.0% of Kokoro's requests answered 5xx "
                                "(monitoring_alert_error_ratio_max); 503s are a full queue "
                                "(stack_kokoro_max_queue).",
                            },
                        }
                    ],
                },
            ],
        },
        {  # Every chunk lands in the (0.75, 1] bucket: p95 above the 0.5 bound.
            "interval": "1m",
            "input_series": [
                *(
                    {
                        "series": f'kokoro_real_time_factor_bucket{{host="tts-01",le="{le}"}}',
                        "values": "0x30",
                    }
                    for le in ("0.3", "0.5", "0.75")
                ),
                *(
                    {
                        "series": f'kokoro_real_time_factor_bucket{{host="tts-01",le="{le}"}}',
                        "values": "0+10x30",
                    }
                    for le in ("1", "2", "+Inf")
                ),
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "KokoroDeploySynthesisSlow", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "KokoroDeploySynthesisSlow",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "host": "tts-01"},
                            "exp_annotations": {
                                "summary": "Kokoro on tts-01: p95 real-time factor 0.99",
                                "description": (
                                    "95% of synthesised chunks "
                                    "took more than 0.5 x their audio's "
                                    "length to make "
                                    "(monitoring_alert_rtf_max). The host is overloaded, "
                                    "or the model fell back to a slower device."
                                ),
                            },
                        }
                    ],
                },
            ],
        },
    ],
}


def test_alerts_fire_when_they_should_promtool_test_rules(rules, tmp_path):
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(UNIT_TESTS, sort_keys=False))
    promtool_passes("test", "rules", "tests.yml", cwd=tmp_path)
