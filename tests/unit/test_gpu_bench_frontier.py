"""The pure parts of tests/bench/gpu_bench.py's frontier preset (issue 27's GPU targets):
percentiles, the workers' packing rule for the direct reference, the targets' verdicts
and summary, and the presets gpu_run.sh runs. No GPU, no model."""

import os
import subprocess
import sys
from pathlib import Path

import gpu_bench as gb
import pytest
from kokoro_server.settings import Settings

REPO = Path(__file__).resolve().parents[2]
BY_KEY = {t.key: t for t in gb.TARGETS}


def test_percentile_is_linear_between_the_closest_ranks():
    assert gb.percentile([5, 1, 4, 2, 3], 50) == 3
    assert gb.percentile([5, 1, 4, 2, 3], 0) == 1
    assert gb.percentile([5, 1, 4, 2, 3], 100) == 5
    assert gb.percentile([7], 95) == 7
    assert gb.percentile(list(range(1, 21)), 95) == pytest.approx(19.05)
    assert gb.percentile([10, 20], 25) == pytest.approx(12.5)
    # 19 fast runs and one slow: p50 stays fast, p95 reaches toward the slow one
    runs = [0.030] * 19 + [0.500]
    assert gb.percentile(runs, 50) == pytest.approx(0.030)
    assert gb.percentile(runs, 95) > 0.030
    with pytest.raises(ValueError):
        gb.percentile([], 50)
    with pytest.raises(ValueError):
        gb.percentile([1, 2], 101)


def test_passes_follow_the_workers_rule_size_then_padded_tokens():
    assert [len(p) for p in gb.plan_passes([30] * 20, 16, 512)] == [16, 4]
    assert [len(p) for p in gb.plan_passes([100] * 6, 16, 512)] == [5, 1]
    # the longest input sets the padding: 3 x 200 > 512 starts a new pass
    assert gb.plan_passes([10, 200, 10, 10], 16, 512) == [[0, 1], [2, 3]]
    # an input over the budget alone still gets a pass of its own
    assert gb.plan_passes([600, 10], 16, 512) == [[0], [1]]
    assert gb.plan_passes([5, 5, 5], 1, 512) == [[0], [1], [2]]
    assert [len(p) for p in gb.plan_passes([400] * 40, 16, 0)] == [16, 16, 8]  # 0: no bound
    assert gb.plan_passes([], 16, 512) == []
    indices = [i for p in gb.plan_passes([7, 300, 12, 90] * 9, 16, 512) for i in p]
    assert indices == list(range(36))  # every input once, in order


def test_the_targets_are_issue_27s_numbers_in_one_place():
    assert set(BY_KEY) == {
        "aggregate_x_realtime",
        "first_audio_p50_s",
        "first_audio_p95_concurrent_s",
        "process_vram_mib",
    }
    agg, p50 = BY_KEY["aggregate_x_realtime"], BY_KEY["first_audio_p50_s"]
    p95, vram = BY_KEY["first_audio_p95_concurrent_s"], BY_KEY["process_vram_mib"]
    assert (agg.op, agg.value, dict(agg.conditions)) == (">=", 750, {"streams": 64})
    assert (p50.op, p50.value) == ("<=", 0.040)
    assert (p95.op, p95.value, dict(p95.conditions)) == ("<=", 0.150, {"concurrent": 16})
    assert (vram.op, vram.value) == ("<=", 2048)


def test_verdicts_at_and_around_each_target():
    agg, p50 = BY_KEY["aggregate_x_realtime"], BY_KEY["first_audio_p50_s"]
    vram = BY_KEY["process_vram_mib"]
    at = {"streams": 64, "concurrent": 16}
    assert gb.judge(agg, 750.0, at) == "pass"
    assert gb.judge(agg, 749.9, at) == "fail"
    assert gb.judge(p50, 0.040, at) == "pass"
    assert gb.judge(p50, 0.041, at) == "fail"
    assert gb.judge(vram, 2136.0, at) == "fail"
    assert gb.judge(vram, None, at) == "not measured"
    # measured at other counts, or not on a GPU: the verdict says it is not issue 27's
    small = gb.judge(agg, 900.0, {"streams": 2, "concurrent": 2})
    assert small.startswith("pass (not comparable")
    assert "streams 2, the target's 64" in small
    on_cpu = gb.judge(p50, 2.5, at, device="cpu (x86_64)")
    assert on_cpu.startswith("fail (not comparable") and "cpu (x86_64)" in on_cpu


def test_summary_gives_each_figure_its_direct_reference_ratio_and_verdict():
    figures = {
        "aggregate_x_realtime": 800.0,
        "first_audio_p50_s": 0.05,
        "first_audio_p95_concurrent_s": 0.12,
        "process_vram_mib": 1800.0,
        "direct": {
            "aggregate_x_realtime": 1000.0,
            "first_audio_p50_s": 0.025,
            "first_audio_p95_concurrent_s": 0.06,
        },
        "conditions": {"streams": 64, "concurrent": 16, "ttfa_runs": 20},
    }
    rows = {r["figure"]: r for r in gb.summarize(figures)}
    assert [r["verdict"] for r in rows.values()] == ["pass", "fail", "pass", "pass"]
    assert rows["aggregate_x_realtime"]["ratio_to_direct"] == pytest.approx(0.8)
    assert rows["first_audio_p50_s"]["ratio_to_direct"] == pytest.approx(2.0)
    assert rows["process_vram_mib"]["ratio_to_direct"] is None  # no direct reference
    assert rows["aggregate_x_realtime"]["target"] == ">= 750"
    text = gb.render_summary(list(rows.values()), "Issue 27 targets: NVIDIA H100, today")
    lines = text.splitlines()
    assert lines[0] == "Issue 27 targets: NVIDIA H100, today"
    assert len(lines) == 2 + len(gb.TARGETS)
    assert all(line.startswith("target ") for line in lines[2:])
    assert "fail" in lines[3] and "first_audio_p50_s" in lines[3]
    missing = gb.summarize({"conditions": figures["conditions"]})
    assert {r["verdict"] for r in missing} == {"not measured"}
    assert "-" in gb.render_summary(missing, "h").splitlines()[2].split()


def test_figures_from_raw_timings():
    raw = {
        "first_audio_single_s": [0.03, 0.01, 0.02],
        "first_audio_concurrent_s": [0.1] * 4,
        "aggregate_audio_s": 600.0,
        "aggregate_wall_s": 2.0,
    }
    f = gb.figures_of(raw)
    assert f["first_audio_p50_s"] == pytest.approx(0.02)
    assert f["first_audio_p95_concurrent_s"] == pytest.approx(0.1)
    assert f["aggregate_x_realtime"] == pytest.approx(300.0)
    assert (
        gb.figures_of({**raw, "first_audio_concurrent_s": []})["first_audio_p95_concurrent_s"]
        is None
    )


def test_the_frontier_preset_runs_the_servers_defaults():
    (config,) = gb.preset_configs("frontier")
    workers, batch, tokens, flags = gb.parse_config(config)
    defaults = Settings()
    assert workers == "auto" and defaults.workers == 0
    assert batch == defaults.batch_size == 0
    assert tokens == defaults.batch_tokens == 512
    assert "--frontier" in flags and "--streams=64" in flags
    assert defaults.engine_workers("cuda") == 1
    assert defaults.precision == "fp32" and not any("precision" in f for f in flags)
    for c in gb.preset_configs("vram"):  # the former default list still parses
        assert gb.parse_config(c)[3][0] == "--server-only"
    assert len(gb.preset_configs("vram")) <= 6  # the device tool brings back 8 files
    with pytest.raises(SystemExit, match="frontier"):
        gb.preset_configs("frontiers")
    for bad in ("4:16", "x:1:512", "1:1:512:server-only"):
        with pytest.raises(ValueError):
            gb.parse_config(bad)


def test_gpu_run_lists_a_preset_and_refuses_an_unknown_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": "images/kokoro/src"}
    listed = subprocess.run(
        [sys.executable, "tests/bench/gpu_bench.py", "--preset-configs", "frontier"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert listed.stdout.split() == gb.preset_configs("frontier")
    run = subprocess.run(
        ["bash", "tests/bench/gpu_run.sh"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "GPU_PRESET": "nope", "OUT": str(tmp_path), "PYTHON": sys.executable},
    )
    assert run.returncode == 2
    assert "unknown GPU_PRESET 'nope'" in run.stderr and "frontier" in run.stderr
    assert list(tmp_path.iterdir()) == []  # nothing installed or run
