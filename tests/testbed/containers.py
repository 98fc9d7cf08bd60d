"""Docker helpers the image tests share (images/*/tests): the docker CLI with its output
captured, why an image cannot be built here, and a wait for a container's own
HEALTHCHECK to pass."""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest


def docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, **kw)


def docker_missing(base_image: str) -> str | None:
    """Why no image can be built on `base_image` here, or None when everything is there."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    if docker("info", check=False).returncode != 0:
        return "no Docker engine answers (start dockerd, e.g. tests/testbed/up.sh)"
    if docker("image", "inspect", base_image, check=False).returncode != 0:
        return (f"base image {base_image} is absent (tests/testbed/up.sh builds it; "
                "or set KOKORO_DEPLOY_BASE_IMAGE)")
    return None


def wait_until_healthy(name: str, timeout: float, poll: float = 1.0, log_tail: int = 2000):
    """Return once container `name` runs and reports healthy; fail the test with its state
    and the tail of its logs as soon as it stops running or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        state = docker("inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}",
                       name).stdout.split()
        if state == ["running", "healthy"]:
            return
        if state[0] != "running" or time.monotonic() > deadline:
            logs = docker("logs", name, check=False)
            pytest.fail(f"container state {state}:\n{logs.stdout[-log_tail:]}"
                        f"{logs.stderr[-log_tail:]}")
        time.sleep(poll)
