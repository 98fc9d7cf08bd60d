"""ansible/rollback.yml refuses, before any host is drained: when a fleet gateway cannot
drain hosts (naming it and the fix), and on a host that keeps no previous known-good
version (naming the version it runs and why: a second rollback does not undo the
first), with no drain hook run and no report written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
LOCAL = {
    "ansible_connection": "local",
    "ansible_python_interpreter": sys.executable,
    "ansible_become": False,
}


def rollback(tmp_path: Path, groups: dict, extra: dict) -> tuple[subprocess.CompletedProcess, str]:
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(groups))
    r = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(tmp_path / "hosts.yml"),
            "-e",
            json.dumps({"rollback_report_dir": str(tmp_path / "reports"), **extra}),
            str(REPO / "ansible/rollback.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "HOME": str(tmp_path),
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / "ansible" / "collections"),
        },
    )
    return r, " ".join((r.stdout + r.stderr).split())


def test_a_gateway_without_its_drain_tool_stops_the_rollback_before_any_host(tmp_path):
    tool = yaml.safe_load((REPO / "roles/gateway/vars/main.yml").read_text())[
        "__gateway_upstreams_tool"
    ]
    assert not Path(tool).exists(), f"{tool} exists on this machine: the test needs it absent"
    groups = {"kokoro_hosts": {"hosts": {"host-a": LOCAL}}, "gateway": {"hosts": {"gw-1": LOCAL}}}
    r, out = rollback(tmp_path, groups, {})
    assert r.returncode != 0, out[-3000:]
    assert f"The gateway(s) gw-1 of group gateway have no {tool}" in out, out[-3000:]
    assert "rollback_gateway_group=none" in out
    assert "gpu_facts" not in out
    assert not (tmp_path / "reports").exists()


def test_a_host_with_no_previous_version_is_refused_before_its_drain(tmp_path):
    current = tmp_path / "last-good" / "current"
    current.mkdir(parents=True)
    (current / "state.json").write_text(
        json.dumps({"version": {"summary": "kokoro-deploy/kokoro:cpu-3, models /m/3, settings x"}})
    )
    hook = tmp_path / "drain.yml"
    hook.write_text(
        "- name: Note the drain.\n"
        f"  ansible.builtin.file: {{path: {tmp_path}/drained, state: touch, mode: '0644'}}\n"
    )
    groups = {"kokoro_hosts": {"hosts": {"host-a": LOCAL}}}
    r, out = rollback(
        tmp_path,
        groups,
        {"stack_last_good_dir": str(tmp_path / "last-good"), "rollback_drain_tasks": str(hook)},
    )
    assert r.returncode != 0, out[-3000:]
    assert "host-a: no previous known-good version" in out, out[-3000:]
    assert "(kokoro-deploy/kokoro:cpu-3, models /m/3, settings x)" in out
    assert "a second rollback does not undo the first" in out
    assert not (tmp_path / "drained").exists()
    assert not (tmp_path / "reports").exists()
