"""Building the Kokoro images for the container tests: the build context they need, the
build itself, and the rule for a missing Docker engine (fail in CI, skip elsewhere)."""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kokoro_testlib import REPO, free_port

sys.path.insert(0, str(REPO / "tests" / "testbed"))
from containers import docker, docker_missing, wait_until_healthy

__all__ = ["build_image", "docker", "running", "unavailable", "wait_until_healthy"]

BASE = os.environ.get("KOKORO_DEPLOY_BASE_IMAGE", "kokoro-deploy/debian:12")
HOST_CA = Path(os.environ.get("KOKORO_DEPLOY_EXTRA_CA", "/etc/ssl/certs/ca-certificates.crt"))


def unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"container test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def build_context(dest: Path) -> Path:
    """The build context the image needs, nothing more (the repo root holds venvs and
    model caches): manifest, package, Dockerfile, this machine's CA for the proxy, and
    the en_core_web_sm wheel if the test bed built one."""
    kokoro = dest / "images" / "kokoro"
    kokoro.mkdir(parents=True)
    shutil.copy(REPO / "manifest.yml", dest)
    src = REPO / "images" / "kokoro"
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        shutil.copy(src / name, kokoro)
    shutil.copytree(src / "src", kokoro / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    extra_ca = dest / "images" / "extra-ca"
    extra_ca.mkdir()
    shutil.copy(REPO / "images" / "extra-ca" / "trust.sh", extra_ca)
    (kokoro / "wheels").mkdir()
    if HOST_CA.is_file():
        shutil.copy(HOST_CA, extra_ca / "host.crt")
    for whl in (REPO / ".cache" / "wheels").glob("en_core_web_sm-*.whl"):
        shutil.copy(whl, kokoro / "wheels")
    return dest


def build_image(target: str, tag: str, tmp: Path) -> str:
    """`docker build --target TARGET` of images/kokoro/Dockerfile on the local base image,
    with the image's default build arguments (LANGUAGE_EXTRAS=cjk included)."""
    reason = docker_missing(BASE)
    if reason:
        unavailable(reason)
    ctx = build_context(tmp)
    # The test bed's spaCy model is in the context's wheels/ (its release is out of reach).
    r = docker("build", "-q", "--target", target, "--build-arg", f"BASE_IMAGE={BASE}",
               "--build-arg", "SPACY_MODEL_WHEEL=", "-t", tag,
               "-f", str(ctx / "images/kokoro/Dockerfile"), str(ctx), check=False)
    assert r.returncode == 0, f"docker build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return tag


@contextmanager
def running(image: str, models: Path, key: str, env: dict[str, str] | None = None,
            timeout: float = 240) -> Iterator[tuple[str, str]]:
    """The image running with `models` mounted read-only at /models and API key `key`,
    published on a free loopback port; yields (container name, base URL) once it is
    healthy and removes it afterwards."""
    port = free_port()
    name = f"kokoro-test-{port}"
    extra = [arg for k, v in (env or {}).items() for arg in ("-e", f"{k}={v}")]
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8880",
           "-v", f"{models}:/models:ro", "-e", f"KOKORO_API_KEYS={key}", *extra, image)
    try:
        wait_until_healthy(name, timeout=timeout)
        yield name, f"http://127.0.0.1:{port}"
    finally:
        docker("rm", "-f", name, check=False)
