"""roles/stack's API keys (tasks/keys.yml), run for real by ansible-playbook on this
machine against a scratch project folder: behind the proxy an empty key list gets a
generated key, kept on later runs and replaced only when rotated; configured keys win;
files are 0400 and owned by the service's uid; a key that would break the proxy's
configuration is refused, naming the service and the fix, before anything is written;
and no key reaches the play's output."""

import os
import subprocess
from pathlib import Path

import pytest
from local_play import run_local_play

REPO = Path(__file__).resolve().parents[2]
PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Choose and write the keys.
      ansible.builtin.include_role:
        name: stack
        tasks_from: keys
"""


def run(tmp_path: Path, **extra) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.skip("the key files are chowned to the services' uids: needs root")
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "project" / "secrets").mkdir(parents=True, exist_ok=True)
    variables = {
        "stack_project_dir": str(tmp_path / "project"),
        "stack_proxy_enabled": True,
        "stack_llm_enabled": True,
        "stack_comfyui_enabled": False,
        **extra,
    }
    return run_local_play(tmp_path / "play.yml", variables)


def keys(tmp_path: Path, service: str) -> list[str]:
    return (tmp_path / "project" / "secrets" / f"{service}_api_keys").read_text().split()


def test_generated_keys_are_private_kept_and_rotated(tmp_path):
    first = run(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    kokoro, llm = keys(tmp_path, "kokoro"), keys(tmp_path, "llm")
    assert len(kokoro) == len(llm) == 1 and len(kokoro[0]) == 43 and kokoro != llm
    for service, uid in (("kokoro", 10001), ("llm", 10002)):
        st = (tmp_path / "project" / "secrets" / f"{service}_api_keys").stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o400, uid), service
    again = run(tmp_path)
    assert again.returncode == 0 and (keys(tmp_path, "kokoro"), keys(tmp_path, "llm")) == (
        kokoro,
        llm,
    )
    assert "changed=0" in again.stdout, again.stdout
    rotated = run(tmp_path, stack_rotate_api_keys=["kokoro"])
    assert rotated.returncode == 0, rotated.stdout
    assert keys(tmp_path, "kokoro") != kokoro and keys(tmp_path, "llm") == llm
    for out in (first, again, rotated):
        assert not any(
            k in out.stdout + out.stderr for k in kokoro + llm + keys(tmp_path, "kokoro")
        )


def test_configured_keys_win_and_without_the_proxy_none_are_generated(tmp_path):
    mine = ["k" * 20, "K" * 24]
    done = run(tmp_path, stack_kokoro_api_keys=mine, stack_proxy_enabled=False)
    assert done.returncode == 0, done.stdout
    assert keys(tmp_path, "kokoro") == mine and keys(tmp_path, "llm") == []


def test_a_key_that_would_break_the_proxy_is_refused_before_anything_is_written(tmp_path):
    bad = ["has space in it 0123", "star*0123456789abcdef", "tooShort", 'quo"te0123456789']
    done = run(tmp_path, stack_llm_api_keys=bad)
    assert done.returncode != 0
    assert "Some API keys of llm are not 16 or more" in done.stdout, done.stdout
    assert not any(b in done.stdout + done.stderr for b in bad)
    assert not list((tmp_path / "project" / "secrets").iterdir())


def test_a_key_with_a_trailing_newline_is_refused(tmp_path):
    # `$` in a pattern matches before a final newline: the key would end the proxy's
    # header line early
    done = run(tmp_path, stack_kokoro_api_keys=["0123456789abcdef0123\n"])
    assert done.returncode != 0
    assert "Some API keys of kokoro are not 16 or more" in done.stdout, done.stdout
    assert not list((tmp_path / "project" / "secrets").iterdir())
