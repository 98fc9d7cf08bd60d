"""tests/molecule/run.sh's lanes, with a stand-in `molecule` on PATH and scenarios that
are only folders: every scenario runs once, the longest start first, two lanes really
overlap, a failure is named and fails the run, and a bad MOLECULE_JOBS is refused."""
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# `molecule test -s NAME`: records NAME as started; "wait-for-X" blocks until X has
# started (so it passes only when X runs beside it); "bad" fails.
FAKE_MOLECULE = """#!/usr/bin/env bash
name=$3
echo "$name" >>"$MARKS/started"
touch "$MARKS/$name"
case $name in
  wait-for-*)
    other=${name#wait-for-}
    for _ in $(seq 150); do [ -e "$MARKS/$other" ] && exit 0; sleep 0.1; done
    echo "$other never started beside $name"; exit 1 ;;
  bad) echo "converge failed"; exit 2 ;;
esac
"""


@pytest.fixture()
def tree(tmp_path):
    tests = tmp_path / "tests"
    (tests / "molecule").mkdir(parents=True)
    (tests / "testbed").mkdir()
    shutil.copy(ROOT / "tests/molecule/run.sh", tests / "molecule/run.sh")
    shutil.copy(ROOT / "tests/testbed/lib.sh", tests / "testbed/lib.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "molecule"
    fake.write_text(FAKE_MOLECULE)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    marks = tmp_path / "marks"
    marks.mkdir()
    return tmp_path, marks


def scenarios(tmp_path, *names):
    for name in names:
        d = tmp_path / "tests/molecule" / name
        d.mkdir()
        (d / "molecule.yml").write_text("---\n")


def run(tmp_path, marks, *args, jobs=None, skip=None):
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           "MARKS": str(marks), "TMPDIR": str(tmp_path)}
    env.pop("KOKORO_CI_RESULTS", None)
    env.pop("MOLECULE_SKIP", None)
    if jobs is not None:
        env["MOLECULE_JOBS"] = jobs
    if skip is not None:
        env["MOLECULE_SKIP"] = skip
    return subprocess.run(["bash", str(tmp_path / "tests/molecule/run.sh"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def started(marks):
    return (marks / "started").read_text().split()


def test_two_lanes_run_scenarios_side_by_side_each_once(tree):
    tmp_path, marks = tree
    scenarios(tmp_path, "wait-for-zeta", "zeta", "alpha", "beta")
    r = run(tmp_path, marks, jobs="2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(started(marks)) == ["alpha", "beta", "wait-for-zeta", "zeta"]
    assert "molecule: 4 passed, 0 failed" in r.stdout
    for name in ("alpha", "beta", "wait-for-zeta", "zeta"):
        assert f"[time] molecule {name}" in r.stderr + r.stdout


def test_lanes_never_take_the_same_scenario(tree):
    """Many quick scenarios, so the lanes ask the queue at nearly the same moments: each
    is taken once (the queue's lock must outlive sed -i's replacement of the queue)."""
    tmp_path, marks = tree
    names = [f"s{i:02d}" for i in range(40)]
    scenarios(tmp_path, *names)
    r = run(tmp_path, marks, jobs="4")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(started(marks)) == names
    assert "molecule: 40 passed, 0 failed" in r.stdout


def test_one_lane_runs_one_at_a_time(tree):
    tmp_path, marks = tree
    scenarios(tmp_path, "wait-for-zeta", "zeta")
    r = run(tmp_path, marks, "wait-for-zeta", "zeta")
    assert r.returncode != 0
    assert "zeta never started beside wait-for-zeta" in r.stdout
    assert "molecule: 1 passed, 1 failed (wait-for-zeta)" in r.stdout


def test_the_longest_scenarios_start_first(tree):
    tmp_path, marks = tree
    scenarios(tmp_path, "apt_bundle", "stack", "fleet", "espeak_ng", "registry")
    r = run(tmp_path, marks, jobs="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert started(marks) == ["fleet", "stack", "registry", "apt_bundle", "espeak_ng"]


def test_scenarios_run_beside_the_earlier_stages_are_skipped(tree):
    """tests/stages.sh starts fleet and torch_runtime early and skips them here."""
    tmp_path, marks = tree
    scenarios(tmp_path, "fleet", "stack", "alpha", "torch_runtime")
    r = run(tmp_path, marks, jobs="2", skip="fleet torch_runtime")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(started(marks)) == ["alpha", "stack"]


def test_a_failed_scenario_is_named_its_log_shown_and_the_run_fails(tree):
    tmp_path, marks = tree
    scenarios(tmp_path, "alpha", "bad", "beta")
    r = run(tmp_path, marks, jobs="2")
    assert r.returncode != 0
    assert sorted(started(marks)) == ["alpha", "bad", "beta"]
    assert "converge failed" in r.stdout
    assert f"molecule bad failed; full log: {tmp_path}/molecule-bad.log" in r.stdout
    assert "molecule: 2 passed, 1 failed (bad)" in r.stdout


@pytest.mark.parametrize("jobs", ["0", "two", "-1"])
def test_a_bad_number_of_lanes_is_refused_before_any_scenario(tree, jobs):
    tmp_path, marks = tree
    scenarios(tmp_path, "alpha")
    r = run(tmp_path, marks, jobs=jobs)
    assert r.returncode != 0
    assert f"MOLECULE_JOBS is '{jobs}'" in r.stderr
    assert not (marks / "started").exists()


def test_an_unknown_scenario_is_refused_before_any_runs(tree):
    tmp_path, marks = tree
    scenarios(tmp_path, "alpha")
    r = run(tmp_path, marks, "alpha", "nosuch")
    assert r.returncode != 0
    assert "no scenario named nosuch" in r.stderr
    assert not (marks / "started").exists()
