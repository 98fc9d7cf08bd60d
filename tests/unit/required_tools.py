"""Tools some unit tests call: promtool and the docker compose plugin. The test bed
installs both (tests/testbed/up.sh); where one is missing a test fails under CI=true and
is skipped elsewhere. run_ok runs a checker (promtool, yamllint, compose) and fails the
test with its output unless it passes."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml


def missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        missing("promtool is not installed (Debian package prometheus; tests/testbed/up.sh)")
    return tool


def require_compose() -> None:
    if (
        shutil.which("docker") is None
        or subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
    ):
        missing("the docker compose plugin is not installed (tests/testbed/up.sh installs it)")


def run_ok(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`argv` run to its end (text, output captured; `kwargs` to subprocess.run): the
    test fails with its output unless it exits 0."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def compose_config(folder: Path, drop_env: tuple[str, ...] = ("COMPOSE_",)) -> dict:
    """`docker compose config` of the project in `folder`, as data; the environment's
    variables with these prefixes are left out, so only the folder's files count."""
    require_compose()
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_env)}
    out = run_ok(["docker", "compose", "config", "--format", "yaml"], cwd=folder, env=env)
    return yaml.safe_load(out.stdout)
