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
from local_play import role_play, run_local_play

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


ALICE = "alice:" + "a" * 32


def test_a_named_kokoro_key_is_written_with_its_name_for_the_servers_quotas(tmp_path):
    done = run(tmp_path, stack_kokoro_api_keys=[ALICE, "b" * 20], stack_proxy_enabled=False,
               stack_kokoro_quota_requests_per_minute=60,
               stack_kokoro_quota_overrides={"alice": {"audio_seconds_per_day": 3600}})
    assert done.returncode == 0, done.stdout
    assert keys(tmp_path, "kokoro") == [ALICE, "b" * 20]


@pytest.mark.parametrize("extra, words", [
    ({"stack_kokoro_api_keys": [ALICE, "alice:" + "c" * 20]}, "gives two keys one name"),
    ({"stack_kokoro_api_keys": [ALICE], "stack_kokoro_quota_overrides": {"bob": {}}},
     "names bob, which no key in stack_kokoro_api_keys carries"),
    ({"stack_kokoro_api_keys": [ALICE],
      "stack_kokoro_quota_overrides": {"alice": {"requests_per_minute": -1}}},
     "alice.requests_per_minute must be whole numbers >= 0"),
    ({"stack_kokoro_api_keys": [ALICE], "stack_kokoro_quota_audio_seconds_per_day": -5},
     "stack_kokoro_quota_audio_seconds_per_day must be whole numbers >= 0"),
    ({"stack_kokoro_quota_requests_per_minute": 10},
     "quotas are counted per API key and it has none"),
    ({"stack_kokoro_api_keys": ["alice:short"]}, "Some API keys of kokoro are not 16 or more"),
])
def test_key_names_and_quotas_the_server_would_refuse_are_refused_first(tmp_path, extra, words):
    done = run(tmp_path, stack_proxy_enabled=False, **extra)
    assert done.returncode != 0
    assert words in " ".join(done.stdout.split()), done.stdout
    assert not list((tmp_path / "project" / "secrets").iterdir())
    assert "a" * 32 not in done.stdout + done.stderr


OVERRIDES_PLAY = role_play(["stack"], """\
    - name: Write KOKORO_QUOTA_OVERRIDES as env.j2 renders it.
      ansible.builtin.copy:
        dest: "{{{{ out }}}}"
        content: "{{{{ __stack_kokoro_quota_overrides }}}}"
        mode: "0600"
""")


def test_quota_overrides_render_as_the_server_reads_them(tmp_path):
    (tmp_path / "play.yml").write_text(OVERRIDES_PLAY)
    done = run_local_play(tmp_path / "play.yml", {
        "out": str(tmp_path / "overrides"),
        "stack_kokoro_quota_requests_per_minute": 30,
        "stack_kokoro_quota_audio_seconds_per_day": 600,
        "stack_kokoro_quota_overrides": {"alice": {"requests_per_minute": 120},
                                         "bob": {"audio_seconds_per_day": 0}}})
    assert done.returncode == 0, done.stdout
    assert (tmp_path / "overrides").read_text() == "alice:120:600,bob:30:0"


def secret(tmp_path: Path, name: str) -> str:
    return (tmp_path / "project" / "secrets" / name).read_text().strip()


def test_open_webui_gets_secrets_of_its_own_kept_and_a_key_the_services_accept(tmp_path):
    first = run(tmp_path, stack_webui_enabled=True)
    assert first.returncode == 0, first.stdout + first.stderr
    key, signing = secret(tmp_path, "webui_api_key"), secret(tmp_path, "webui_secret_key")
    # 64 hex characters: never 44, which Open WebUI would take for a Fernet key as it is
    assert len(signing) == 64 and set(signing) <= set("0123456789abcdef")
    assert len(key) == 43 and len(secret(tmp_path, "webui_admin_password")) == 24
    for name in ("webui_api_key", "webui_secret_key", "webui_admin_password"):
        st = (tmp_path / "project" / "secrets" / name).stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o400, 10005), name
    # In the services' key files (Kokoro counts it under its name), after their own keys.
    assert keys(tmp_path, "kokoro")[-1] == f"webui:{key}" and len(keys(tmp_path, "kokoro")) == 2
    assert keys(tmp_path, "llm")[-1] == key and len(keys(tmp_path, "llm")) == 2
    again = run(tmp_path, stack_webui_enabled=True)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout
    kept = secret(tmp_path, "webui_api_key"), secret(tmp_path, "webui_secret_key")
    assert kept == (key, signing)
    assert not any(s in first.stdout + again.stdout for s in (key, signing))


def test_open_webui_adds_no_key_to_a_service_that_has_none(tmp_path):
    done = run(tmp_path, stack_webui_enabled=True, stack_proxy_enabled=False)
    assert done.returncode == 0, done.stdout
    assert keys(tmp_path, "kokoro") == [] and keys(tmp_path, "llm") == []
    assert secret(tmp_path, "webui_api_key")


def test_a_configured_admin_password_is_the_one_written(tmp_path):
    done = run(tmp_path, stack_webui_enabled=True, stack_webui_admin_password="a-vaulted-pass-123")
    assert done.returncode == 0, done.stdout
    assert secret(tmp_path, "webui_admin_password") == "a-vaulted-pass-123"


def test_a_kokoro_key_named_like_open_webuis_own_is_refused(tmp_path):
    done = run(tmp_path, stack_webui_enabled=True, stack_kokoro_api_keys=["webui:" + "k" * 20])
    assert done.returncode != 0
    assert "The key name webui is Open WebUI's own" in done.stdout, done.stdout
