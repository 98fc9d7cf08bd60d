"""The torch-free voice reader and voice blends, on the 54 real stock voice packs."""
from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
from kokoro_server.errors import ApiError
from kokoro_server.pt_reader import PtFormatError, load_pt, load_voice_pack
from kokoro_server.voices import VoiceStore, parse_blend


def test_pt_reader_matches_torch_load_on_every_stock_voice(model_dir):
    torch = pytest.importorskip("torch")
    files = sorted((model_dir / "kokoro" / "voices").glob("*.pt"))
    assert len(files) == 54
    for path in files:
        ours = load_voice_pack(path)
        theirs = torch.load(path, map_location="cpu", weights_only=True).numpy()
        assert ours.shape == theirs.shape == (510, 1, 256), path.name
        assert np.array_equal(ours, theirs), path.name


def test_pt_reader_handles_views_with_offset_and_stride(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    view = base[1:5, ::3]  # offset into the storage, non-unit stride
    torch.save({"view": view, "ints": torch.arange(4)}, tmp_path / "v.pt")
    out = load_pt(tmp_path / "v.pt")
    assert np.array_equal(out["view"], view.numpy())
    assert np.array_equal(out["ints"], np.arange(4))


def test_pt_reader_refuses_a_pickle_that_would_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Evil(), protocol=2))
    with pytest.raises(PtFormatError, match="refusing pickle global"):
        load_pt(path)


def test_blend_parses_weights_and_defaults_to_one():
    assert parse_blend("af_bella(2)+af_sky(1)") == [("af_bella", 2.0), ("af_sky", 1.0)]
    assert parse_blend("af_bella + am_adam(0.5)") == [("af_bella", 1.0), ("am_adam", 0.5)]
    assert parse_blend("af_bella(.5)+af_sky(2.)") == [("af_bella", 0.5), ("af_sky", 2.0)]


@pytest.mark.parametrize("spec", ["af_bella(", "af_bella()+", "+af_sky", "af bella",
                                  "af_bella(-1)", "af_bella(0)", "a(1)" + "+a(1)" * 8, "   ",
                                  "af_bella(1.2.3)", "af_bella(.)"])
def test_blend_rejects_malformed_specs(spec):
    with pytest.raises(ApiError) as err:
        parse_blend(spec)
    assert err.value.status == 400 and err.value.code == "invalid_voice"


def test_a_voice_longer_than_the_limit_is_refused_before_any_parsing():
    from kokoro_server.voices import MAX_VOICE_CHARS

    # the old pattern backtracked over a run of digits: 3.6 s for this one
    for spec in ["a(" + "1" * 20_000 + "x", "a" * (MAX_VOICE_CHARS + 1)]:
        with pytest.raises(ApiError) as err:
            parse_blend(spec)
        assert err.value.code == "invalid_voice" and str(MAX_VOICE_CHARS) in err.value.message
    assert parse_blend("a" * MAX_VOICE_CHARS) == [("a" * MAX_VOICE_CHARS, 1.0)]


def test_blend_is_the_weighted_mean_of_the_packs(model_dir):
    vdir = model_dir / "kokoro" / "voices"
    store = VoiceStore.from_files({v: (vdir / f"{v}.pt", None) for v in ("af_bella", "af_sky")})
    blended, lang = store.resolve("af_bella(2)+af_sky(1)")
    expected = (2 * load_voice_pack(vdir / "af_bella.pt") + load_voice_pack(vdir / "af_sky.pt")) / 3
    assert lang == "a"
    np.testing.assert_allclose(blended, expected, rtol=1e-6, atol=1e-7)
