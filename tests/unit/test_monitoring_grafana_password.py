"""roles/monitoring's Grafana never starts as admin/admin: its tasks (tasks/grafana.yml),
run for real by ansible-playbook on this machine against a scratch folder, generate a
strong admin password once and keep it (mode 0600, Grafana's uid) so a rerun changes
nothing; a configured one wins; a weak one is refused naming the variable and the fix;
the compose file hands the password to Grafana as a file (checked by `docker compose
config`), and no rendered file nor the play's output holds it."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from local_play import run_role_tasks
from required_tools import require_compose

REPO = Path(__file__).resolve().parents[2]

def run(tmp_path: Path, **extra) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.skip("the password file is chowned to Grafana's uid 472: needs root")
    variables = {"monitoring_grafana_dir": str(tmp_path / "grafana"), **extra}
    return run_role_tasks(tmp_path, "monitoring", "grafana", variables)


def changed(r: subprocess.CompletedProcess) -> int:
    return int(re.search(r"localhost\s*:.*changed=(\d+)", r.stdout)[1])


def password_file(tmp_path: Path) -> Path:
    return tmp_path / "grafana" / "secrets" / "admin_password"


def rendered(tmp_path: Path) -> str:
    folder = tmp_path / "grafana"
    return "\n".join(
        p.read_text() for p in folder.rglob("*") if p.is_file() and "secrets" not in p.parts
    )


def test_a_strong_password_is_generated_once_kept_private_and_never_printed(tmp_path):
    first = run(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    f = password_file(tmp_path)
    password = f.read_text()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password), "not a 32-character generated password"
    st = f.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, 472)
    assert password not in first.stdout + first.stderr
    assert password not in rendered(tmp_path)

    again = run(tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert changed(again) == 0, again.stdout
    assert f.read_text() == password


def test_a_configured_password_wins_and_a_rerun_changes_nothing(tmp_path):
    assert run(tmp_path).returncode == 0  # a generated one first
    configured = "vaulted-grafana-password-0123"
    r = run(tmp_path, monitoring_grafana_admin_password=configured)
    assert r.returncode == 0, r.stdout + r.stderr
    assert password_file(tmp_path).read_text() == configured
    assert configured not in r.stdout + r.stderr
    again = run(tmp_path, monitoring_grafana_admin_password=configured)
    assert changed(again) == 0, again.stdout


@pytest.mark.parametrize("weak", ["admin", "short", "Admin", "two\nlines-of-password"])
def test_a_weak_configured_password_is_refused_before_anything_is_written(tmp_path, weak):
    r = run(tmp_path, monitoring_grafana_admin_password=weak)
    assert r.returncode != 0
    assert "monitoring_grafana_admin_password" in r.stdout and "openssl rand" in r.stdout
    assert not password_file(tmp_path).exists()
    if weak.lower() != "admin":  # a word the task's own name and condition hold
        assert weak not in r.stdout + r.stderr


def test_grafana_gets_the_password_as_a_file_never_admin_admin(tmp_path):
    require_compose()
    assert run(tmp_path).returncode == 0
    folder = tmp_path / "grafana"
    out = subprocess.run(
        ["docker", "compose", "-f", str(folder / "compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    grafana = json.loads(out.stdout)["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    mounts = {v["target"]: v for v in grafana["volumes"]}
    secret = mounts["/run/secrets/grafana_admin_password"]
    assert secret["source"] == str(password_file(tmp_path)) and secret.get("read_only")
    assert password_file(tmp_path).read_text() not in out.stdout
