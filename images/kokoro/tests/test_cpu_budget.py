"""The cores the server may use (cgroup v1 and v2 quotas, affinity) and how they are split
between engine workers and onnxruntime's threads (cpu_budget.py), on cgroup trees built
here as the kernel lays them out; and the onnx engine opening its session with them."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from kokoro_server import cpu_budget
from kokoro_server.cpu_budget import cgroup_cores, cpu_workers, threads_per_worker, usable_cores
from kokoro_server.settings import Settings


def v2_tree(tmp_path: Path, own: str, limits: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup v2 mount with cpu.max at the given relative paths; the process in `own`."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for rel, value in limits.items():
        d = root / rel.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(value + "\n")
    (root / own.lstrip("/")).mkdir(parents=True, exist_ok=True)
    me = tmp_path / "self-cgroup"
    me.write_text(f"0::{own}\n")
    return root, me


def v1_tree(tmp_path: Path, controller: str, quota: int, period: int = 100000):
    root = tmp_path / "cgroup"
    d = root / controller
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (d / "cpu.cfs_period_us").write_text(f"{period}\n")
    me = tmp_path / "self-cgroup"
    # A Docker container's view: its own cgroup is the root of each hierarchy.
    me.write_text(f"12:memory:/\n4:{controller}:/\n0::/\n")
    return root, me


@pytest.mark.parametrize(("limits", "own", "cores"), [
    ({"/": "200000 100000"}, "/", 2.0),            # --cpus 2 in a cgroup namespace
    ({"/": "max 100000"}, "/", None),               # no limit
    ({"/kubepods": "400000 100000",                 # a parent's limit binds the child's
      "/kubepods/pod1/c1": "800000 100000"}, "/kubepods/pod1/c1", 4.0),
    ({"/system.slice/docker-1.scope": "150000 100000"}, "/system.slice/docker-1.scope", 1.5),
])
def test_cgroup_v2_quota_is_the_tightest_from_the_process_up(tmp_path, limits, own, cores):
    root, me = v2_tree(tmp_path, own, limits)
    assert cgroup_cores(root, me) == cores


@pytest.mark.parametrize(("controller", "quota", "cores"), [
    ("cpu,cpuacct", 300000, 3.0), ("cpu", 50000, 0.5), ("cpu,cpuacct", -1, None)])
def test_cgroup_v1_quota(tmp_path, controller, quota, cores):
    root, me = v1_tree(tmp_path, controller, quota)
    assert cgroup_cores(root, me) == cores


def test_no_cgroup_file_is_no_limit(tmp_path):
    assert cgroup_cores(tmp_path, tmp_path / "absent") is None


@pytest.mark.parametrize(("affinity", "quota", "usable"), [
    (64, "200000 100000", 2),    # a 2-core container on a 64-core host
    (64, "150000 100000", 2),    # rounded up, as GOMAXPROCS is
    (64, "50000 100000", 1),     # never below one
    (4, "800000 100000", 4),     # taskset / cpuset narrower than the quota
    (16, "max 100000", 16),
])
def test_usable_cores_is_the_smaller_of_affinity_and_quota(tmp_path, monkeypatch,
                                                           affinity, quota, usable):
    monkeypatch.setattr(cpu_budget, "_affinity", lambda: affinity)
    root, me = v2_tree(tmp_path, "/", {"/": quota})
    assert usable_cores(root, me) == usable


@pytest.mark.parametrize(("cores", "workers", "threads"), [
    (1, 1, 1), (2, 1, 2), (4, 1, 4), (8, 2, 4), (16, 4, 4), (64, 16, 4)])
def test_the_cores_are_split_into_workers_of_about_four_threads(cores, workers, threads):
    assert cpu_workers(cores) == workers
    assert threads_per_worker(cores, workers) == threads


def test_settings_pick_workers_by_device_unless_set(monkeypatch):
    monkeypatch.setattr("kokoro_server.settings.usable_cores", lambda: 16)
    auto = Settings.from_env({})
    assert auto.workers == 0
    assert (auto.engine_workers("cpu"), auto.engine_workers("cuda")) == (4, 1)
    assert Settings.from_env({"KOKORO_WORKERS": "3"}).engine_workers("cpu") == 3
    # KOKORO_ONNX_THREADS is the total, split between the workers.
    assert threads_per_worker(16, 2, requested=6) == 3


def test_the_onnx_engine_opens_its_session_with_the_budget(onnx_settings, monkeypatch):
    from kokoro_server import assets
    from kokoro_server.engines import onnx

    monkeypatch.setattr(onnx, "usable_cores", lambda: 8)
    monkeypatch.setattr("kokoro_server.settings.usable_cores", lambda: 8)
    found = assets.verify(onnx_settings)
    settings = replace(onnx_settings, workers=0, onnx_threads=0, device="cpu")
    engine = onnx.OnnxEngine(found.model, found.config, settings)
    try:
        # 8 cores: two workers, four threads each.
        assert engine.session.get_session_options().intra_op_num_threads == 4
    finally:
        engine.unload()
