"""plugins/modules/model_cache_fetch.py against a real HTTP server on
loopback (the same mirror server the Molecule scenario runs on its test hosts): fetch,
digest checks, resume, replacement of a wrong file, clean failure, bundle adoption."""

import functools
import hashlib
import json
import random
import threading
import urllib.parse
import urllib.request
from pathlib import Path

# The mirror server the Molecule scenario copies onto its hosts (a script, not a package;
# tests/testbed, on the path, links to it).
import mirror_server
import pytest
from ansible.module_utils.urls import open_url
from ansible_collections.kokoro.deploy.plugins.modules import model_cache_fetch as fetch

REPO = Path(__file__).resolve().parents[2]

# Over three read blocks; fixed bytes, so a corrupted copy always differs from it.
PAYLOAD = random.Random(20261206).randbytes(3 * (1 << 20) + 12345)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def opener(url, headers, timeout):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


class Mirror:
    def __init__(self, root: Path, support_range: bool):
        self.root = root
        self.log = root.parent / f"access-{root.name}-{support_range}.log"
        self.server = mirror_server.make_server(str(root), 0, str(self.log), support_range)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def requests(self):
        """The logged requests, once every connection the client made is served (each
        was accepted before the client saw its answer)."""
        self.server.wait_idle()
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture(params=[True, False], ids=["range", "no-range"])
def mirror(tmp_path, request):
    root = tmp_path / "mirror"
    (root / "kokoro").mkdir(parents=True)
    (root / "kokoro" / "model.bin").write_bytes(PAYLOAD)
    m = Mirror(root, request.param)
    yield m
    m.server.shutdown()
    m.server.server_close()


@pytest.fixture
def range_mirror(tmp_path):
    root = tmp_path / "mirror"
    (root / "kokoro").mkdir(parents=True)
    (root / "kokoro" / "model.bin").write_bytes(PAYLOAD)
    m = Mirror(root, True)
    yield m
    m.server.shutdown()
    m.server.server_close()


SIZE = len(PAYLOAD)


def params(cache, url, sha=DIGEST, size=SIZE, **extra):
    art = {"path": "kokoro/model.bin", "sha256": sha, "size": size, "url": f"{url}kokoro/model.bin"}
    return {"dir": str(cache), "artifacts": [art], "retries": 2, **extra}


def run(p, **kw):
    return fetch.run(p, opener=opener, sleep=lambda s: None, **kw)


def leftovers(cache: Path):
    return sorted(p.name for p in cache.rglob(".*.part"))


def test_fetch_downloads_verifies_and_leaves_a_read_only_file(tmp_path, mirror):
    cache = tmp_path / "cache"
    cache.mkdir()
    result = run(params(cache, mirror.url))
    assert result["errors"] == []
    assert result["changed"] and result["fetched"] == ["kokoro/model.bin"]
    target = cache / "kokoro/model.bin"
    assert target.read_bytes() == PAYLOAD
    assert target.stat().st_mode & 0o7777 == 0o444
    assert (cache / "kokoro").stat().st_mode & 0o777 == 0o755
    assert leftovers(cache) == []


def test_fetch_second_run_changes_nothing_and_downloads_nothing(tmp_path, mirror):
    cache = tmp_path / "cache"
    cache.mkdir()
    run(params(cache, mirror.url))
    before = len(mirror.requests())
    result = run(params(cache, mirror.url))
    assert result["errors"] == [] and not result["changed"]
    assert result["bytes_downloaded"] == 0
    assert len(mirror.requests()) == before


def test_fetch_resumes_a_partial_download_with_a_range_request(tmp_path, range_mirror):
    cache = tmp_path / "cache"
    (cache / "kokoro").mkdir(parents=True)
    cut = 1_000_000
    (cache / "kokoro" / ".model.bin.part").write_bytes(PAYLOAD[:cut])
    result = run(params(cache, range_mirror.url))
    assert result["errors"] == []
    assert result["resumed"] == [{"path": "kokoro/model.bin", "from": cut}]
    assert result["bytes_downloaded"] == len(PAYLOAD) - cut
    (req,) = range_mirror.requests()
    assert req["range"] == f"bytes={cut}-" and req["status"] == 206
    assert req["bytes"] == len(PAYLOAD) - cut
    assert (cache / "kokoro/model.bin").read_bytes() == PAYLOAD


def test_fetch_starts_over_when_the_server_ignores_range(tmp_path):
    root = tmp_path / "mirror"
    (root / "kokoro").mkdir(parents=True)
    (root / "kokoro" / "model.bin").write_bytes(PAYLOAD)
    m = Mirror(root, support_range=False)
    try:
        cache = tmp_path / "cache"
        (cache / "kokoro").mkdir(parents=True)
        (cache / "kokoro" / ".model.bin.part").write_bytes(PAYLOAD[:5000])
        result = run(params(cache, m.url))
        assert result["errors"] == [] and result["resumed"] == []
        assert result["bytes_downloaded"] == len(PAYLOAD)
        assert (cache / "kokoro/model.bin").read_bytes() == PAYLOAD
    finally:
        m.server.shutdown()
        m.server.server_close()


def test_fetch_refetches_whole_when_a_resumed_part_belongs_to_another_file(tmp_path, range_mirror):
    cache = tmp_path / "cache"
    (cache / "kokoro").mkdir(parents=True)
    (cache / "kokoro" / ".model.bin.part").write_bytes(b"x" * 1000)  # not a prefix
    result = run(params(cache, range_mirror.url))
    assert result["errors"] == []
    assert [r["range"] for r in range_mirror.requests()] == ["bytes=1000-", None]
    assert (cache / "kokoro/model.bin").read_bytes() == PAYLOAD
    assert leftovers(cache) == []


@pytest.mark.parametrize("damage", ["flipped-byte", "truncated"])
def test_fetch_replaces_a_corrupted_file(tmp_path, mirror, damage):
    cache = tmp_path / "cache"
    cache.mkdir()
    run(params(cache, mirror.url))
    target = cache / "kokoro/model.bin"
    target.chmod(0o644)
    data = bytearray(PAYLOAD)
    if damage == "flipped-byte":
        data[12345] ^= 0xFF
    else:
        del data[-100:]
    target.write_bytes(bytes(data))
    result = run(params(cache, mirror.url))
    assert result["errors"] == []
    assert result["replaced"] == ["kokoro/model.bin"] and result["changed"]
    assert target.read_bytes() == PAYLOAD


def test_fetch_with_a_wrong_pin_fails_naming_both_digests_and_leaves_nothing(tmp_path, mirror):
    cache = tmp_path / "cache"
    cache.mkdir()
    wrong = "0" * 64
    result = run(params(cache, mirror.url, sha=wrong))
    (error,) = result["errors"]
    assert "kokoro/model.bin" in error and wrong in error and DIGEST in error
    assert "Nothing was installed" in error
    assert not (cache / "kokoro/model.bin").exists()
    assert leftovers(cache) == []


def test_fetch_with_a_wrong_size_fails_before_hashing_and_leaves_nothing(tmp_path, mirror):
    cache = tmp_path / "cache"
    cache.mkdir()
    result = run(params(cache, mirror.url, size=len(PAYLOAD) + 1))
    (error,) = result["errors"]
    assert f"size {len(PAYLOAD)} bytes, expected {len(PAYLOAD) + 1}" in error
    assert not (cache / "kokoro/model.bin").exists() and leftovers(cache) == []


def test_fetch_of_a_missing_file_fails_at_once_naming_the_http_status(tmp_path, mirror):
    cache = tmp_path / "cache"
    cache.mkdir()
    p = params(cache, mirror.url)
    p["artifacts"][0]["url"] = mirror.url + "kokoro/absent.bin"
    result = run(p)
    (error,) = result["errors"]
    assert "HTTP 404" in error and "kokoro/model.bin" in error
    assert len(mirror.requests()) == 1  # a 404 is not retried


def test_fetch_from_an_unreachable_source_fails_after_retries_keeping_nothing_in_place(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    result = run(params(cache, "http://127.0.0.1:9/"))
    (error,) = result["errors"]
    assert "failed after 2 attempts" in error
    assert not (cache / "kokoro/model.bin").exists()


def test_fetch_adopts_a_bundle_copy_after_checking_it(tmp_path):
    cache = tmp_path / "cache"
    incoming = cache / ".incoming/kokoro"
    incoming.mkdir(parents=True)
    (incoming / "model.bin").write_bytes(PAYLOAD)
    art = {"path": "kokoro/model.bin", "sha256": DIGEST, "size": len(PAYLOAD),
           "src": str(incoming / "model.bin")}
    result = run({"dir": str(cache), "artifacts": [art]})
    assert result["errors"] == [] and result["fetched"] == ["kokoro/model.bin"]
    assert (cache / "kokoro/model.bin").read_bytes() == PAYLOAD
    assert not (incoming / "model.bin").exists()


def test_fetch_rejects_a_bad_bundle_copy_and_removes_it(tmp_path):
    cache = tmp_path / "cache"
    incoming = cache / ".incoming/kokoro"
    incoming.mkdir(parents=True)
    (incoming / "model.bin").write_bytes(PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 0xFF]))
    art = {"path": "kokoro/model.bin", "sha256": DIGEST, "size": len(PAYLOAD),
           "src": str(incoming / "model.bin")}
    result = run({"dir": str(cache), "artifacts": [art]})
    (error,) = result["errors"]
    assert "the bundle copy" in error and DIGEST in error
    assert not (cache / "kokoro/model.bin").exists() and not (incoming / "model.bin").exists()
    assert leftovers(cache) == []


def test_verified_state_reports_missing_and_wrong_files_without_touching_them(tmp_path, mirror):
    cache = tmp_path / "cache"
    (cache / "kokoro").mkdir(parents=True)
    (cache / "kokoro/model.bin").write_bytes(b"wrong")
    result = run(params(cache, mirror.url, state="verified"))
    assert result["needed"] == ["kokoro/model.bin"] and not result["changed"]
    assert (cache / "kokoro/model.bin").read_bytes() == b"wrong"
    assert mirror.requests() == []


def test_check_mode_reports_a_change_but_downloads_nothing(tmp_path, mirror):
    cache = tmp_path / "cache"
    cache.mkdir()
    result = run(params(cache, mirror.url), check_mode=True)
    assert result["changed"] and not (cache / "kokoro").exists()
    assert mirror.requests() == []


def test_fetch_refuses_a_path_that_leaves_the_cache(tmp_path, mirror):
    cache = tmp_path / "cache"
    cache.mkdir()
    p = params(cache, mirror.url)
    p["artifacts"][0]["path"] = "../escape.bin"
    (error,) = run(p)["errors"]
    assert "leaves the cache folder" in error
    assert not (tmp_path / "escape.bin").exists()


def test_fetch_corrects_the_mode_of_a_good_file_without_downloading(tmp_path, mirror):
    cache = tmp_path / "cache"
    cache.mkdir()
    run(params(cache, mirror.url))
    (cache / "kokoro/model.bin").chmod(0o666)
    before = len(mirror.requests())
    result = run(params(cache, mirror.url))
    assert result["changed"] and result["attributes_fixed"] == ["kokoro/model.bin"]
    assert (cache / "kokoro/model.bin").stat().st_mode & 0o7777 == 0o444
    assert len(mirror.requests()) == before


def test_the_hugging_face_token_goes_to_hugging_face_artifacts_only():
    p = {"headers": {"User-Agent": "kokoro-deploy"}, "huggingface_token": "hf_secret"}
    assert fetch.request_headers(p, {"huggingface": True}) == {
        "User-Agent": "kokoro-deploy",
        "Authorization": "Bearer hf_secret",
    }
    assert fetch.request_headers(p, {"huggingface": False}) == {"User-Agent": "kokoro-deploy"}
    assert fetch.request_headers({}, {"huggingface": True}) == {}


def test_fetch_sends_the_token_with_hugging_face_requests_only(tmp_path, range_mirror):
    cache = tmp_path / "cache"
    cache.mkdir()
    p = params(cache, range_mirror.url, huggingface_token="hf_unit_test")
    p["artifacts"][0]["huggingface"] = True
    other = dict(p["artifacts"][0], path="kokoro/copy.bin", huggingface=False)
    p["artifacts"].append(other)
    assert run(p)["errors"] == []
    assert [r["auth"] for r in range_mirror.requests()] == [True, False]


# ---- redirects: where the Hugging Face token may go ---------------------------------

def test_a_redirect_keeps_the_token_on_its_own_origin_only():
    auth = {"User-Agent": "kokoro-deploy", "Authorization": "Bearer hf_x"}
    same, kept = fetch.redirected("https://huggingface.co/a/resolve/main/x", "/api/x", auth)
    assert same == "https://huggingface.co/api/x" and kept == auth
    for away in ("https://cdn-lfs.hf.co/x", "https://huggingface.co:8443/x"):
        new, sent = fetch.redirected("https://huggingface.co/a/x", away, auth)
        assert new == away and sent == {"User-Agent": "kokoro-deploy"}


def test_a_redirect_from_https_to_plain_http_is_refused():
    with pytest.raises(fetch.FetchError, match="from HTTPS to plain HTTP"):
        fetch.redirected("https://huggingface.co/x", "http://huggingface.co/x", {})


class Redirector(Mirror):
    """A second source on loopback that sends /away/<path> to the mirror under another
    host name (localhost, not 127.0.0.1) and /loop to itself, logging like the mirror."""

    def __init__(self, root: Path, target: str):
        super().__init__(root, True)
        partial = self.server.RequestHandlerClass  # functools.partial(handler, directory=...)
        handler = partial.func
        target_port = urllib.parse.urlsplit(target).port

        class Redirect(handler):
            def do_GET(self):
                if self.path.startswith("/away/"):
                    where = f"http://localhost:{target_port}/{self.path[len('/away/'):]}"
                elif self.path == "/loop":
                    where = "/loop"
                else:
                    return super().do_GET()
                self.send_response(302)
                self.send_header("Location", where)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server.RequestHandlerClass = functools.partial(Redirect, *partial.args,
                                                            **partial.keywords)


def open_once(url, headers, timeout):
    return open_url(url, headers=headers, timeout=timeout, follow_redirects="none")


def test_the_token_is_not_sent_where_a_source_redirects_to_another_host(tmp_path, range_mirror):
    away = tmp_path / "away"
    away.mkdir()
    redirector = Redirector(away, range_mirror.url)
    try:
        cache = tmp_path / "cache"
        cache.mkdir()
        p = params(cache, redirector.url + "away/", huggingface_token="hf_unit_test")
        p["artifacts"][0]["huggingface"] = True
        result = fetch.run(p, opener=fetch.following_redirects(open_once), sleep=lambda s: None)
        assert result["errors"] == []
        assert (cache / "kokoro/model.bin").read_bytes() == PAYLOAD
        assert [(r["status"], r["auth"]) for r in redirector.requests()] == [(302, True)]
        assert [(r["status"], r["auth"]) for r in range_mirror.requests()] == [(200, False)]
    finally:
        redirector.server.shutdown()
        redirector.server.server_close()


def test_a_redirect_loop_ends_with_an_error_naming_it(tmp_path):
    loop = tmp_path / "loop"
    loop.mkdir()
    redirector = Redirector(loop, "http://127.0.0.1:9/")
    try:
        opener = fetch.following_redirects(open_once)
        with pytest.raises(fetch.FetchError, match="more than 10 redirects"):
            opener(redirector.url + "loop", headers={}, timeout=10)
        assert len(redirector.requests()) == fetch.MAX_REDIRECTS + 1
    finally:
        redirector.server.shutdown()
        redirector.server.server_close()
