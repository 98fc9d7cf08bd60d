"""Tools some unit tests call: promtool and the docker compose plugin. The test bed
installs both (tests/testbed/up.sh); where one is missing a test fails under CI=true and
is skipped elsewhere."""

import os
import shutil
import subprocess

import pytest


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
