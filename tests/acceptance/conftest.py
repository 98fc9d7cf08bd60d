"""Fixtures shared by the acceptance checks. Pytest puts this folder on sys.path when it
loads this file, so the checks can also import kokoro_gpu_plugin from here."""

import json

import pytest
from kokoro_gpu_plugin import GPU_FACT


@pytest.fixture
def facts(host):
    """What the gpu_facts role recorded on the host (the preflight play's decisions)."""
    fact = host.file(GPU_FACT)
    assert fact.is_file, f"{GPU_FACT} missing: run the gpu_facts role (preflight play)"
    return json.loads(fact.content_string)
