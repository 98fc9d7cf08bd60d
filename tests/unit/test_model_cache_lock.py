"""The companion lock (plugins/module_utils/model_cache_lock.py) over the real
manifest, and the model_cache role run on this machine against the loopback Hugging Face
stand-in: the lock is written once, reused, a changed file is refused naming file,
revision and both digests, and a failure leaves no half-written lock or cache file."""

import hashlib
import threading
from pathlib import Path

import hf_standin
import pytest
import tiny_gguf
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.kokoro.deploy.plugins.module_utils import model_cache_lock as lk
from ansible_collections.kokoro.deploy.plugins.module_utils import model_cache_plan as plan
from local_play import run_local_play
from role_filters import role_filters

REPO = Path(__file__).resolve().parents[2]

MANIFEST = yaml.safe_load((REPO / "manifest.yml").read_text())
LLM, COMFY = "llm/qwen3-8b-q4_k_m", "comfyui/qwen-image-fp8"
LLM_PATH = MANIFEST["companions"]["llm"]["qwen3-8b-q4_k_m"]["path"]
SHA_A, SHA_B, COMMIT = "a" * 64, "b" * 64, "c" * 40


def entry(path=LLM_PATH, sha=SHA_A, commit=COMMIT, size=10):
    return {"path": path, "repo": "Qwen/Qwen3-8B-GGUF", "file": "Qwen3-8B-Q4_K_M.gguf",
            "revision": "main", "commit": commit, "size": size, "sha256": sha}


def lock_of(*entries):
    return {"schema_version": 1,
            "files": {e["path"]: {k: v for k, v in e.items() if k != "path"} for e in entries}}


def test_every_companion_file_is_an_artifact_learned_on_first_use():
    arts = lk.companion_artifacts(MANIFEST, [LLM, COMFY])
    assert arts[0]["path"] == LLM_PATH
    assert len(arts) == 1 + len(MANIFEST["companions"]["comfyui"]["qwen-image-fp8"]["files"])
    assert all(a["sha256"] is None and a["pinned_by"] is None for a in arts)
    assert {a["source"]["revision"] for a in arts} == {"main"}


def test_a_locked_file_takes_the_locks_digest_and_commit():
    (a,) = lk.companion_artifacts(MANIFEST, [LLM], lock_of(entry()), "inv/models.lock.yml")
    assert (a["sha256"], a["size"], a["source"]["revision"]) == (SHA_A, 10, COMMIT)
    assert a["pinned_by"] == "inv/models.lock.yml"
    (planned,) = plan.plan_sources([a], hf_endpoint="http://127.0.0.1:9")
    assert planned["url"].endswith(f"/resolve/{COMMIT}/Qwen3-8B-Q4_K_M.gguf")
    assert planned["lock"] == "inv/models.lock.yml" and planned["hf"]["revision"] == COMMIT


def test_a_digest_pinned_in_the_manifest_wins_over_the_lock():
    manifest = yaml.safe_load((REPO / "manifest.yml").read_text())
    manifest["companions"]["llm"]["qwen3-8b-q4_k_m"]["sha256"] = SHA_B
    (a,) = lk.companion_artifacts(manifest, [LLM], lock_of(entry()), "models.lock.yml")
    assert (a["sha256"], a["pinned_by"], a["source"]["revision"]) == (SHA_B, "manifest.yml", "main")
    (planned,) = plan.plan_sources([a])
    assert "lock" not in planned and planned["sha256"] == SHA_B


def test_an_unknown_companion_is_refused_naming_the_known_ones():
    with pytest.raises(lk.LockError, match="llm/qwen3-8b-q4_k_m"):
        lk.companion_artifacts(MANIFEST, ["llm/llama-70b"])


def test_the_role_filter_refuses_it_as_a_filter_error_not_a_traceback():
    companions = role_filters("model_cache", ["model_cache_companions"])["model_cache_companions"]
    with pytest.raises(AnsibleFilterError, match=r"^model_cache: .*llm/qwen3-8b-q4_k_m"):
        companions(MANIFEST, ["llm/llama-70b"])


def test_a_malformed_lock_is_refused_naming_the_entry():
    bad = lock_of(entry(sha="nothex"))
    with pytest.raises(lk.LockError, match=f"{LLM_PATH} lacks a valid sha256"):
        lk.companion_artifacts(MANIFEST, [LLM], bad)


def test_an_unlocked_companion_cannot_come_from_a_plain_mirror_or_bundle():
    arts = lk.companion_artifacts(MANIFEST, [LLM])
    assert plan.plan_sources(arts, "mirror", "http://m/")[0]["kind"] == "upstream"
    with pytest.raises(plan.PlanError, match="cannot be checked"):
        plan.plan_sources(arts, "bundle", bundle_dir="/b")


def test_merge_adds_what_hosts_learned_and_refuses_hosts_that_disagree():
    merged = lk.merge_lock({}, [[entry()], [entry()], []])
    assert merged == lock_of(entry())
    with pytest.raises(lk.LockError, match=f"{SHA_A}.*{SHA_B}"):
        lk.merge_lock({}, [[entry()], [entry(sha=SHA_B)]])


def test_merge_refuses_a_new_digest_for_a_locked_commit():
    with pytest.raises(lk.LockError, match=f"revision {COMMIT}"):
        lk.merge_lock(lock_of(entry()), [[entry(sha=SHA_B)]], "models.lock.yml")


@pytest.mark.parametrize(("llm", "llm_file", "comfy", "want"), [
    (True, "", False, [LLM]),
    (True, "tiny-test.gguf", False, []),
    ("false", "", "true", [COMFY]),
    (False, "", False, []),
])
def test_the_stacks_settings_decide_which_companions_are_fetched(llm, llm_file, comfy, want):
    assert lk.stack_companions(llm, "qwen3-8b-q4_k_m", llm_file, comfy, "qwen-image-fp8") == want


# ---------------------------------------------------------------- the role, for real

PLAY = """
- name: Fetch the LLM companion through the Hugging Face stand-in.
  hosts: all
  gather_facts: true
  roles:
    - role: model_cache
"""


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return (path, *tiny_gguf.write(path))


@pytest.fixture
def standin(tmp_path, gguf):
    root = tmp_path / "hf"
    commit = hf_standin.publish(str(root), "Qwen/Qwen3-8B-GGUF", "Qwen3-8B-Q4_K_M.gguf",
                                str(gguf[0]))
    server = hf_standin.make_server(str(root), 0, str(tmp_path / "hf.jsonl"))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield {"commit": commit, "endpoint": f"http://127.0.0.1:{server.server_address[1]}",
           "file": root / "Qwen/Qwen3-8B-GGUF/commits" / commit / "Qwen3-8B-Q4_K_M.gguf"}
    server.shutdown()
    server.server_close()


def play(tmp_path, standin, cache="cache"):
    (tmp_path / "play.yml").write_text(PLAY)
    return run_local_play(tmp_path / "play.yml", {
        "model_cache_dir": str(tmp_path / cache),
        "model_cache_kokoro_engines": [], "model_cache_voices": [],
        "model_cache_companions": [LLM],
        "model_cache_huggingface_endpoint": standin["endpoint"],
        "model_cache_lock_path": str(tmp_path / "inventory" / "models.lock.yml"),
    })


def recap_changed(out: str) -> int:
    line = next(x for x in out.splitlines() if x.startswith("localhost") and "ok=" in x)
    return int(line.split("changed=")[1].split()[0])


def test_the_role_writes_the_lock_once_and_holds_later_runs_to_it(tmp_path, standin, gguf):
    (tmp_path / "inventory").mkdir()
    lock = tmp_path / "inventory" / "models.lock.yml"
    first = play(tmp_path, standin)
    assert first.returncode == 0, first.stdout[-3000:]
    _, size, sha = gguf
    written = yaml.safe_load(lock.read_text())
    assert written == {"schema_version": 1, "files": {LLM_PATH: {
        "repo": "Qwen/Qwen3-8B-GGUF", "file": "Qwen3-8B-Q4_K_M.gguf", "revision": "main",
        "commit": standin["commit"], "size": size, "sha256": sha}}}
    assert "trust on first use" in lock.read_text()
    text, mtime = lock.read_text(), lock.stat().st_mtime_ns

    again = play(tmp_path, standin)
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap_changed(again.stdout) == 0
    assert lock.read_text() == text and lock.stat().st_mtime_ns == mtime

    # The stand-in now serves other bytes at the locked commit: a fresh host refuses them.
    standin["file"].write_bytes(standin["file"].read_bytes() + b"tampered")
    changed = hashlib.sha256(standin["file"].read_bytes()).hexdigest()
    refused = play(tmp_path, standin, cache="fresh")
    assert refused.returncode != 0
    for needle in (LLM_PATH, standin["commit"], sha, changed, str(lock)):
        assert needle in refused.stdout, refused.stdout[-3000:]
    assert lock.read_text() == text
    assert not (tmp_path / "fresh" / LLM_PATH).exists()
    assert [p.name for p in (tmp_path / "fresh").rglob("*.part")] == []
    assert sorted(p.name for p in (tmp_path / "inventory").iterdir()) == ["models.lock.yml"]


def test_a_failed_first_fetch_writes_no_lock(tmp_path, standin):
    (tmp_path / "inventory").mkdir()
    standin["file"].unlink()  # Hugging Face answers 404 for it
    failed = play(tmp_path, standin)
    assert failed.returncode != 0 and "HTTP 404" in failed.stdout
    assert list((tmp_path / "inventory").iterdir()) == []
    assert [p.name for p in (tmp_path / "cache").rglob("*.part")] == []


def test_bundle_tool_runs_without_ansible(tmp_path):
    """tools/bundle.py imports model_cache_plan and model_cache_lock and must not need
    Ansible: both import the standard library only, and the tool starts under an
    interpreter that cannot import ansible."""
    import ast
    import subprocess
    import sys

    for module in (lk, plan):
        tree = ast.parse(Path(module.__file__).read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        outside = {n for n in names if n.split(".")[0] not in sys.stdlib_module_names}
        assert outside <= {"__future__"}, (module.__name__, outside)
    # A stand-in `ansible` package that fails on import: the tool must never touch it.
    (tmp_path / "ansible").mkdir()
    (tmp_path / "ansible" / "__init__.py").write_text("raise ImportError('no Ansible here')\n")
    done = subprocess.run(
        [sys.executable, "-c", "import runpy, sys; sys.argv = ['bundle.py', '--help']; "
         f"sys.path.insert(0, {str(tmp_path)!r}); "
         f"runpy.run_path({str(REPO / 'tools' / 'bundle.py')!r}, run_name='__main__')"],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "usage: tools/bundle.py" in done.stdout, done.stderr
