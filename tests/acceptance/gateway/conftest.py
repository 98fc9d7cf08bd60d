"""The gateway's checks run on the gateway hosts; the fleet's other hosts are skipped."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def _only_gateway_hosts(host):
    groups = host.ansible.get_variables().get("group_names", [])
    if "gateway" not in groups:
        pytest.skip(f"{host.backend.hostname} is not in the gateway group")
