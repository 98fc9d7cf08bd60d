"""Fixtures shared by the acceptance checks. Pytest puts this folder on sys.path when it
loads this file, so the checks can also import gpu_fact (GPU_FACT) from here."""

import json
import os

import pytest
from gpu_fact import GPU_FACT

# The compose project roles/stack writes (stack_project_dir); KOKORO_STACK_DIR overrides.
STACK_DIR = os.environ.get("KOKORO_STACK_DIR", "/opt/kokoro-deploy/stack")


@pytest.fixture
def facts(host):
    """What the gpu_facts role recorded on the host (the preflight play's decisions)."""
    fact = host.file(GPU_FACT)
    assert fact.is_file, f"{GPU_FACT} missing: run the gpu_facts role (preflight play)"
    return json.loads(fact.content_string)


@pytest.fixture(scope="module")
def stack_env(host):
    """The stack's .env on the host as a dict (the settings compose runs with); skips on
    hosts where roles/stack has not run."""
    f = host.file(f"{STACK_DIR}/.env")
    if not f.exists:
        pytest.skip(f"no compose project at {STACK_DIR} (roles/stack has not run on this host)")
    pairs = (
        line.split("=", 1)
        for line in f.content_string.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}
