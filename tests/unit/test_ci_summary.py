"""The closing line of .ci/run counts pytest's own JUnit reports, and a step that failed
outside any test case still counts as a failure."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = ROOT / "tests" / "ci_summary.py"

CASES = '''
import pytest
def test_ok(): pass
def test_also_ok(): pass
def test_bad(): assert False
@pytest.mark.skip(reason="stated")
def test_skipped(): pass
@pytest.fixture
def broken(): raise RuntimeError("setup")
def test_error_in_setup(broken): pass
'''


def junit(tmp_path: Path, results: Path, name: str, source: str) -> None:
    test = tmp_path / f"test_{name.replace('-', '_')}.py"
    test.write_text(source)
    # The inner run sees none of the outer run's options or plugins.
    env = {**os.environ, "PYTEST_ADDOPTS": "", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test),
                    f"--junitxml={results / name}.xml"], cwd=tmp_path, capture_output=True,
                   env=env)


def summary(results: Path, *status: str) -> list[str]:
    out = subprocess.run([sys.executable, str(SUMMARY), str(results), *status],
                         capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


@pytest.fixture
def results(tmp_path: Path) -> Path:
    path = tmp_path / "results"
    path.mkdir()
    return path


def test_summary_counts_passed_failed_and_skipped_cases_across_reports(tmp_path, results):
    junit(tmp_path, results, "unit", CASES)
    junit(tmp_path, results, "molecule-stack", "def test_one(): pass\n")
    (results / "steps").write_text("unit 1\nmolecule stack 0\n")
    # unit's failure is its failed cases: the step adds none of its own
    assert summary(results) == ["3 passed, 2 failed, 1 skipped"]


def test_a_step_that_failed_outside_its_tests_is_one_failure_named(tmp_path, results):
    junit(tmp_path, results, "unit", "def test_one(): pass\n")
    (results / "steps").write_text("testbed 0\nlint 1\nunit 0\nmolecule fleet 2\n")
    assert summary(results) == ["failed outside a test case: lint",
                                "failed outside a test case: molecule fleet",
                                "1 passed, 2 failed, 0 skipped"]


def test_an_empty_run_says_so_in_the_same_shape(results):
    assert summary(results) == ["0 passed, 0 failed, 0 skipped"]


def test_a_run_that_failed_before_any_step_is_not_reported_as_clean(results):
    assert summary(results, "2") == ["failed outside a test case: the run itself (exit status 2)",
                                     "0 passed, 1 failed, 0 skipped"]
    assert summary(results, "0") == ["0 passed, 0 failed, 0 skipped"]
