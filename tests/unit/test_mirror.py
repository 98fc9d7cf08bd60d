"""The test bed's mirror builder admits only files whose digest matches the manifest."""

import hashlib

import mirror
import pytest


def _artifact(path, data):
    return {
        path: {
            "name": path,
            "path": path,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    }


def test_mirror_build_copies_a_seed_file_whose_digest_matches(tmp_path):
    seed, dest = tmp_path / "seed", tmp_path / "mirror"
    (seed / "voices").mkdir(parents=True)
    (seed / "voices" / "af_test.pt").write_bytes(b"voice pack")
    arts = _artifact("kokoro/voices/af_test.pt", b"voice pack")
    assert mirror.build(dest, str(seed), arts) == 1
    assert (dest / "kokoro/voices/af_test.pt").read_bytes() == b"voice pack"
    assert mirror.build(dest, str(seed), arts) == 0, "a present file is not copied again"


def test_mirror_build_refuses_a_seed_file_with_the_wrong_digest_and_leaves_nothing(tmp_path):
    seed, dest = tmp_path / "seed", tmp_path / "mirror"
    seed.mkdir()
    (seed / "config.json").write_bytes(b"tampered")
    arts = _artifact("kokoro/config.json", b"the pinned bytes")
    with pytest.raises(SystemExit, match=r"config\.json has sha256 .* manifest expects"):
        mirror.build(dest, str(seed), arts)
    assert not dest.exists() or not any(dest.rglob("*"))


def test_mirror_build_names_the_missing_seed_setting(tmp_path):
    with pytest.raises(SystemExit, match="KOKORO_DEPLOY_SEED_DIR"):
        mirror.build(tmp_path / "mirror", None, {})


def test_serve_refuses_a_port_held_by_a_server_that_is_not_this_mirror(tmp_path, monkeypatch):
    """A stale server from another checkout on the port (here one serving an empty
    folder) once passed for ours, and every model fetch then got a 404."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(empty))
    stale = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=stale.serve_forever, daemon=True).start()
    monkeypatch.setattr(mirror, "CACHE", tmp_path)
    monkeypatch.setattr(mirror, "PIDFILE", tmp_path / "mirror.pid")
    try:
        with pytest.raises(SystemExit, match="taken by another server"):
            mirror.serve(tmp_path / "mirror", stale.server_address[1])
        assert not (tmp_path / "mirror.pid").exists()
    finally:
        stale.shutdown()
        stale.server_close()
