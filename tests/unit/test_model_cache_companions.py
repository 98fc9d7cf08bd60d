"""model_cache_fetch on companion files against a loopback stand-in for Hugging Face
(tests/testbed/hf_standin.py: resolve URLs with X-Repo-Commit, X-Linked-Etag and
X-Linked-Size on a 302 to a CDN-like host, Range on the CDN), with the tiny GGUF
(tests/testbed/tiny_gguf.py) standing in for Qwen3: trust on first use, the lock's
digest held, a manifest pin checked against Hugging Face's word, nothing half-written."""

import hashlib
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import hf_standin
import pytest
import tiny_gguf
from ansible_collections.kokoro.deploy.plugins.modules import model_cache_fetch as fetch

REPO = Path(__file__).resolve().parents[2]

HF_REPO, HF_FILE = "Qwen/Qwen3-8B-GGUF", "Qwen3-8B-Q4_K_M.gguf"
CACHE_PATH = "llm/Qwen3-8B-Q4_K_M.gguf"
TOKEN = "hf_unit_test_token"


def opener(url, headers, timeout):
    def once(url, headers, timeout):
        return urllib.request.build_opener(_NoRedirect).open(
            urllib.request.Request(url, headers=headers), timeout=timeout)
    return fetch.following_redirects(once)(url, headers, timeout)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def head(url, headers, timeout):
    req = urllib.request.Request(url, headers=headers, method="HEAD")
    try:
        with urllib.request.build_opener(_NoRedirect).open(req, timeout=timeout) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as err:
        return err.code, err.headers


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    size, sha = tiny_gguf.write(path)
    return path, size, sha


@pytest.fixture
def standin(tmp_path, gguf):
    root = tmp_path / "hf"
    commit = hf_standin.publish(str(root), HF_REPO, HF_FILE, str(gguf[0]))
    log = tmp_path / "hf.jsonl"
    server = hf_standin.make_server(str(root), 0, str(log))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    s = type("Standin", (), {})()
    s.root, s.commit, s.log = root, commit, log
    s.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    s.file = root / HF_REPO / "commits" / commit / HF_FILE

    def requests():
        server.wait_idle()
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    s.requests = requests
    yield s
    server.shutdown()
    server.server_close()


def artifact(standin, sha=None, size=None, revision="main", lock=None):
    art = {"path": CACHE_PATH, "sha256": sha, "size": size, "huggingface": True,
           "url": f"{standin.endpoint}/{HF_REPO}/resolve/{revision}/{HF_FILE}",
           "hf": {"endpoint": standin.endpoint, "repo": HF_REPO, "file": HF_FILE,
                  "revision": revision}}
    if lock:
        art["lock"] = lock
    return art


def run(cache, *arts, **kw):
    params = {"dir": str(cache), "artifacts": list(arts), "retries": 1,
              "huggingface_token": TOKEN}
    return fetch.run(params, opener=opener, head=head, sleep=lambda s: None, **kw)


def leftovers(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".part"))


def test_first_use_learns_hugging_faces_digest_and_fetches_from_the_resolved_commit(
        tmp_path, standin, gguf):
    cache = tmp_path / "cache"
    result = run(cache, artifact(standin))
    assert result["errors"] == []
    _, size, sha = gguf
    assert result["learned"] == [{"path": CACHE_PATH, "repo": HF_REPO, "file": HF_FILE,
                                  "revision": "main", "commit": standin.commit,
                                  "size": size, "sha256": sha}]
    target = cache / CACHE_PATH
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha
    assert target.stat().st_mode & 0o7777 == 0o444
    reqs = standin.requests()
    # The HEAD stops at the redirect (its headers carry the metadata), as huggingface_hub's
    # get_hf_file_metadata does; the GET asks for the commit, then the CDN without the token.
    assert [(r["method"], r["path"], r["auth"]) for r in reqs] == [
        ("HEAD", f"/{HF_REPO}/resolve/main/{HF_FILE}", True),
        ("GET", f"/{HF_REPO}/resolve/{standin.commit}/{HF_FILE}", True),
        ("GET", f"/cdn/{HF_REPO}/commits/{standin.commit}/{HF_FILE}", False),
    ]


def test_a_locked_file_in_place_asks_hugging_face_nothing(tmp_path, standin, gguf):
    cache = tmp_path / "cache"
    run(cache, artifact(standin))
    before = len(standin.requests())
    _, size, sha = gguf
    result = run(cache, artifact(standin, sha, size, standin.commit, lock="models.lock.yml"))
    assert result["errors"] == [] and not result["changed"] and result["learned"] == []
    assert len(standin.requests()) == before


def test_a_file_changed_since_it_was_locked_is_refused_naming_file_revision_and_digests(
        tmp_path, standin, gguf):
    _, size, sha = gguf
    standin.file.write_bytes(standin.file.read_bytes() + b"changed upstream")
    changed = hashlib.sha256(standin.file.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    result = run(cache, artifact(standin, sha, size, standin.commit, lock="inv/models.lock.yml"))
    (error,) = result["errors"]
    for needle in (CACHE_PATH, HF_REPO, HF_FILE, standin.commit, sha, changed,
                   "inv/models.lock.yml", "trust on first use"):
        assert needle in error
    assert not (cache / CACHE_PATH).exists()
    assert leftovers(cache) == []


def test_a_manifest_pin_that_hugging_face_contradicts_is_refused_before_any_download(
        tmp_path, standin, gguf):
    wrong = "0" * 64
    cache = tmp_path / "cache"
    result = run(cache, artifact(standin, wrong))
    (error,) = result["errors"]
    assert wrong in error and gguf[2] in error and "manifest.yml pins" in error
    assert "revision main" in error and standin.commit in error
    assert [r["method"] for r in standin.requests()] == ["HEAD"]
    assert not (cache / CACHE_PATH).exists() and leftovers(cache) == []
    assert result["learned"] == []


def test_a_manifest_pin_that_hugging_face_confirms_is_fetched_and_reported(
        tmp_path, standin, gguf):
    cache = tmp_path / "cache"
    result = run(cache, artifact(standin, gguf[2]))
    assert result["errors"] == [] and result["fetched"] == [CACHE_PATH]
    assert result["learned"][0]["commit"] == standin.commit


def test_a_download_unlike_hugging_faces_declared_digest_is_not_installed(
        tmp_path, standin, gguf, monkeypatch):
    # A mirror that declares one digest and serves other bytes: the CDN copy is altered.
    real_path = hf_standin.Handler.translate_path

    def altered(self, path):
        alt = Path(real_path(self, path) + ".altered")
        alt.write_bytes(b"X" + Path(real_path(self, path)).read_bytes()[1:])
        return str(alt)

    monkeypatch.setattr(hf_standin.Handler, "translate_path", altered)
    cache = tmp_path / "cache"
    result = run(cache, artifact(standin))
    (error,) = result["errors"]
    assert "Hugging Face declared sha256 " + gguf[2] in error and "nothing was locked" in error
    assert result["learned"] == []
    assert not (cache / CACHE_PATH).exists() and leftovers(cache) == []


def test_an_interrupted_companion_download_resumes_from_the_cdn(tmp_path, standin, gguf):
    cache = tmp_path / "cache"
    part = cache / "llm" / f".{Path(CACHE_PATH).name}.part"
    part.parent.mkdir(parents=True)
    data = gguf[0].read_bytes()
    part.write_bytes(data[:1000])
    result = run(cache, artifact(standin))
    assert result["errors"] == [] and result["resumed"] == [{"path": CACHE_PATH, "from": 1000}]
    cdn = [r for r in standin.requests() if r["path"].startswith("/cdn/")]
    assert cdn[-1]["range"] == "bytes=1000-" and cdn[-1]["status"] == 206
    assert (cache / CACHE_PATH).read_bytes() == data


def test_an_unknown_revision_is_named_with_what_to_check(tmp_path, standin):
    result = run(tmp_path / "cache", artifact(standin, revision="no-such-branch"))
    (error,) = result["errors"]
    assert "HTTP 404" in error and "revision" in error and "no-such-branch" in error
