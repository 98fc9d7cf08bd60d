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
