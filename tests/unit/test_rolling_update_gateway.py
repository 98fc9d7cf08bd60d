"""ansible/rolling_update.yml refuses to start when a fleet gateway cannot drain hosts
(its kokoro-gateway-upstreams is missing: the gateway was never deployed), naming the
gateway and the fix, before any host is touched."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_a_gateway_without_its_drain_tool_stops_the_roll_before_any_host(tmp_path):
    tool = yaml.safe_load((REPO / "roles/gateway/vars/main.yml").read_text())[
        "__gateway_upstreams_tool"]
    assert not Path(tool).exists(), f"{tool} exists on this machine: the test needs it absent"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
             "ansible_become": False}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({
        "kokoro_hosts": {"hosts": {"host-a": local}},
        "gateway": {"hosts": {"gw-1": local}},
    }))
    r = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
         "-e", json.dumps({"rolling_update_report_dir": str(tmp_path / "reports")}),
         str(REPO / "ansible/rolling_update.yml")],
        capture_output=True, text=True, check=False,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1",
             "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "HOME": str(tmp_path),
             "ANSIBLE_COLLECTIONS_PATH": str(REPO / "ansible" / "collections")},
    )
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0, out[-3000:]
    assert f"The gateway(s) gw-1 of group gateway have no {tool}" in out, out[-3000:]
    assert "ansible/gateway.yml" in out and "rolling_update_gateway_group=none" in out
    # Stopped before the first step of any host: no GPU detection, no report.
    assert "gpu_facts" not in out
    assert not (tmp_path / "reports").exists()
