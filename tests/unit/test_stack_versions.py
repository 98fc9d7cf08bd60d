"""roles/stack's version guard and known-good slots (tasks/version.yml, version_record.yml,
last_good.yml), run for real by ansible-playbook on this machine against a scratch
project folder, with a stand-in `docker` that keeps its image tags in a JSON file: a host
with no record passes and records its version; a run that asks for another version is
refused, naming both, unless stack_allow_version_change is set; a key rotation is no
version change; the slots rotate only when a new version passes, keep both versions'
images under their own tags, and a return to the previous version leaves no previous
slot (so a second rollback cannot undo the first)."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from local_play import run_local_play

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
{tasks}
"""
STEP = """    - name: Run stack's {name} tasks.
      ansible.builtin.include_role:
        name: stack
        tasks_from: {name}
"""

FAKE_DOCKER = r"""#!/usr/bin/env python3
import json, os, sys
path = os.environ["FAKE_DOCKER_DB"]
db = json.load(open(path))
a = sys.argv[1:]
def save():
    json.dump(db, open(path, "w"))
def resolve(ref):
    return ref if ref.startswith("sha256:") else db["tags"].get(ref)
if a[0] == "ps":
    print("c1")
elif a[0] == "inspect":
    svc, img = "kokoro", db["running"]
    print(json.dumps({"key": svc, "value": {"image": img, "id": db["tags"][img]}}))
elif a[:2] == ["image", "inspect"]:
    i = resolve(a[-1])
    if not i:
        sys.exit(1)
    print(i)
elif a[0] == "tag":
    db["tags"][a[2]] = resolve(a[1]); save()
elif a[:2] == ["image", "ls"]:
    for t in db["tags"]:
        if t.startswith(a[-1] + ":"):
            print(t)
elif a[:2] == ["image", "rm"]:
    db["tags"].pop(a[2]); save()
else:
    sys.exit("unexpected: %s" % a)
"""

IDS = {"cpu-2": "sha256:" + "2" * 64, "cpu-3": "sha256:" + "3" * 64}


@pytest.fixture
def host(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the project's files are owned by root: needs root")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    project = tmp_path / "project"
    project.mkdir()
    for name in (
        "compose.yml",
        "compose.gpu.yml",
        "compose.publish.yml",
        "compose.proxy.yml",
        "compose.wyoming.yml",
    ):
        (project / name).write_text("services: {}\n")
    db = tmp_path / "docker.json"
    db.write_text(
        json.dumps(
            {"tags": {f"kokoro-deploy/kokoro:{t}": i for t, i in IDS.items()}, "running": None}
        )
    )
    return tmp_path


def run(host: Path, steps: list[str], tag: str, **extra) -> subprocess.CompletedProcess:
    """The steps as a play, the host running (and asking for) kokoro-deploy/kokoro:<tag>
    with its models in /m/<tag>."""
    image = f"kokoro-deploy/kokoro:{tag}"
    db = json.loads((host / "docker.json").read_text())
    db["running"] = image
    (host / "docker.json").write_text(json.dumps(db))
    (host / "project" / ".env").write_text(
        f"COMPOSE_FILE=compose.yml\nCOMPOSE_PROFILES=\nMODEL_DIR=/m/{tag}\nKOKORO_IMAGE={image}\n"
        f"KOKORO_KEYS_DIGEST={extra.pop('keys_digest', 'a')}\n"
    )
    (host / "play.yml").write_text(PLAY.format(tasks="".join(STEP.format(name=s) for s in steps)))
    variables = {
        "stack_project_dir": str(host / "project"),
        "stack_plan": {"device": "cpu"},
        "stack_kokoro_image_cpu": image,
        "stack_model_dir": f"/m/{tag}",
        "__stack_image_refs": {"kokoro": image},
        **extra,
    }
    env = {
        "PATH": f"{host / 'bin'}:{os.environ['PATH']}",
        "FAKE_DOCKER_DB": str(host / "docker.json"),
    }
    return run_local_play(host / "play.yml", variables, env=env)


def slot(host: Path, name: str) -> dict | None:
    p = host / "project" / "last-good" / name / "state.json"
    return json.loads(p.read_text()) if p.exists() else None


def kept(host: Path) -> dict:
    tags = json.loads((host / "docker.json").read_text())["tags"]
    return {
        t.split(":", 1)[1]: i for t, i in tags.items() if t.startswith("kokoro-deploy-last-good:")
    }


def test_a_host_without_a_record_passes_and_records_its_version(host):
    done = run(host, ["version", "version_record"], "cpu-2")
    assert done.returncode == 0, done.stdout
    record = json.loads((host / "project" / "version.json").read_text())
    assert record["version"]["images"] == {"kokoro": "kokoro-deploy/kokoro:cpu-2"}
    assert record["version"]["model_dir"] == "/m/cpu-2"
    assert record["images"]["kokoro"] == {"ref": "kokoro-deploy/kokoro:cpu-2", "id": IDS["cpu-2"]}
    assert record["run"]["play"] == "localhost" and record["run"]["at"].endswith("Z")
    again = run(host, ["version", "version_record"], "cpu-2")
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout
    # Keys, quotas and ports are not the version: a rotation is no change of it.
    keys = run(
        host,
        ["version", "version_record"],
        "cpu-2",
        stack_kokoro_api_keys=["k" * 20],
        stack_kokoro_port=8990,
        stack_kokoro_quota_requests_per_minute=5,
    )
    assert keys.returncode == 0 and "changed=0" in keys.stdout, keys.stdout


def test_another_version_is_refused_naming_both_unless_allowed(host):
    assert run(host, ["version", "version_record"], "cpu-3").returncode == 0
    before = (host / "project" / "version.json").read_text()
    refused = run(host, ["version", "version_record"], "cpu-2")
    assert refused.returncode != 0
    said = " ".join(refused.stdout.split())
    assert "runs version kokoro-deploy/kokoro:cpu-3, models /m/cpu-3" in said, said
    assert "asks for version kokoro-deploy/kokoro:cpu-2, models /m/cpu-2" in said, said
    assert "stack_allow_version_change=true" in said and "ansible/rolling_update.yml" in said
    assert (host / "project" / "version.json").read_text() == before
    # A setting that changes what users hear is a version change too.
    precision = run(host, ["version"], "cpu-3", stack_kokoro_precision="fp16")
    assert precision.returncode != 0 and "kokoro_precision" in precision.stdout
    allowed = run(host, ["version", "version_record"], "cpu-2", stack_allow_version_change=True)
    assert allowed.returncode == 0, allowed.stdout
    record = json.loads((host / "project" / "version.json").read_text())
    assert record["version"]["model_dir"] == "/m/cpu-2"
    assert record["run"]["replaced"].startswith("kokoro-deploy/kokoro:cpu-3")


def test_a_service_turned_on_is_no_version_change(host):
    assert run(host, ["version", "version_record"], "cpu-3").returncode == 0
    # the LLM joins (its image, its model settings): what Kokoro runs is unchanged
    more = run(host, ["version"], "cpu-3", stack_llm_enabled=True)
    assert more.returncode == 0, more.stdout


def test_slots_keep_two_versions_and_a_return_leaves_no_previous(host):
    allow = {"stack_allow_version_change": True}
    assert run(host, ["version", "version_record", "last_good"], "cpu-2", **allow).returncode == 0
    assert slot(host, "current")["model_dir"] == "/m/cpu-2" and slot(host, "previous") is None
    assert kept(host) == {"kokoro-current-kokoro": IDS["cpu-2"]}

    done = run(host, ["version", "version_record", "last_good"], "cpu-3", **allow)
    assert done.returncode == 0, done.stdout
    assert slot(host, "current")["model_dir"] == "/m/cpu-3"
    assert slot(host, "previous")["model_dir"] == "/m/cpu-2"
    assert (
        (host / "project" / "last-good" / "previous" / ".env")
        .read_text()
        .count("MODEL_DIR=/m/cpu-2")
    )
    assert kept(host) == {
        "kokoro-current-kokoro": IDS["cpu-3"],
        "kokoro-previous-kokoro": IDS["cpu-2"],
    }

    # The same version passing again moves nothing.
    same = run(host, ["version", "version_record", "last_good"], "cpu-3")
    assert same.returncode == 0 and "changed=0" in same.stdout, same.stdout
    assert slot(host, "previous")["model_dir"] == "/m/cpu-2"

    # Back on the previous version (as rollback_previous leaves the host): it becomes the
    # current slot, the version left is set aside and its image no longer kept.
    back = run(host, ["version", "version_record", "last_good"], "cpu-2", **allow)
    assert back.returncode == 0, back.stdout
    assert slot(host, "current")["model_dir"] == "/m/cpu-2" and slot(host, "previous") is None
    assert slot(host, "rolled-away")["model_dir"] == "/m/cpu-3"
    assert kept(host) == {"kokoro-current-kokoro": IDS["cpu-2"]}
    again = run(host, ["last_good"], "cpu-2")
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout


def test_a_state_kept_before_the_slots_becomes_the_current_one(host):
    legacy = host / "project" / "last-good"
    legacy.mkdir()
    (legacy / ".env").write_text("MODEL_DIR=/m/cpu-2\n")
    (legacy / "state.json").write_text(
        json.dumps(
            {
                "project": "kokoro",
                "model_dir": "/m/cpu-2",
                "compose_files": ["compose.yml"],
                "profiles": [],
                "services": {"kokoro": {"image": "kokoro-deploy/kokoro:cpu-2", "id": IDS["cpu-2"]}},
                "kept_image_prefix": "kokoro-deploy-last-good:kokoro-",
            }
        )
    )
    db = json.loads((host / "docker.json").read_text())
    db["tags"]["kokoro-deploy-last-good:kokoro-kokoro"] = IDS["cpu-2"]
    (host / "docker.json").write_text(json.dumps(db))
    done = run(host, ["version", "version_record", "last_good"], "cpu-3")
    assert done.returncode == 0, done.stdout
    assert slot(host, "previous")["model_dir"] == "/m/cpu-2"
    assert slot(host, "current")["model_dir"] == "/m/cpu-3"
    assert not (legacy / "state.json").exists()
    assert kept(host) == {
        "kokoro-current-kokoro": IDS["cpu-3"],
        "kokoro-previous-kokoro": IDS["cpu-2"],
    }
