"""Settings and start-up checks: the server refuses to run misconfigured or on bad files."""
from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
from kokoro_server.assets import verify
from kokoro_server.errors import StartupError
from kokoro_server.settings import Settings, SettingsError


def test_non_loopback_bind_without_api_keys_is_refused():
    with pytest.raises(SettingsError, match="needs API keys"):
        Settings.from_env({"KOKORO_HOST": "0.0.0.0"})


def test_non_loopback_bind_is_allowed_with_keys_or_explicit_opt_out(tmp_path):
    assert Settings.from_env({"KOKORO_HOST": "0.0.0.0", "KOKORO_API_KEYS": "a, b"}).api_keys \
        == ("a", "b")
    keys = tmp_path / "keys"
    keys.write_text("k1\nk2\n")
    s = Settings.from_env({"KOKORO_HOST": "0.0.0.0", "KOKORO_API_KEYS_FILE": str(keys)})
    assert s.api_keys == ("k1", "k2")
    assert Settings.from_env({"KOKORO_HOST": "0.0.0.0", "KOKORO_AUTH_DISABLED": "true"})


def test_api_keys_never_appear_in_the_settings_repr():
    s = Settings.from_env({"KOKORO_API_KEYS": "sekrit-value"})
    assert "sekrit-value" not in repr(s)


@pytest.mark.parametrize("env,match", [({"KOKORO_ENGINE": "tf"}, "KOKORO_ENGINE"),
                                       ({"KOKORO_DEVICE": "gpu"}, "KOKORO_DEVICE"),
                                       ({"KOKORO_WORKERS": "-1"}, "KOKORO_WORKERS"),
                                       ({"KOKORO_ONNX_THREADS": "-2"}, "KOKORO_ONNX_THREADS"),
                                       ({"KOKORO_MAX_INPUT_CHARS": "0"},
                                        "KOKORO_MAX_INPUT_CHARS"),
                                       ({"KOKORO_BATCH_SIZE": "-1"}, "KOKORO_BATCH_SIZE"),
                                       ({"KOKORO_BATCH_TOKENS": "-5"}, "KOKORO_BATCH_TOKENS"),
                                       ({"KOKORO_PORT": "http"}, "KOKORO_PORT"),
                                       ({"KOKORO_WARMUP": "maybe"}, "KOKORO_WARMUP"),
                                       ({"KOKORO_NORMALIZE": "maybe"}, "KOKORO_NORMALIZE"),
                                       ({"KOKORO_SEND_TIMEOUT": "0"}, "KOKORO_SEND_TIMEOUT"),
                                       ({"KOKORO_SEND_TIMEOUT": "soon"},
                                        "KOKORO_SEND_TIMEOUT"),
                                       ({"KOKORO_STALL_TIMEOUT": "30"},
                                        "KOKORO_STALL_TIMEOUT .* greater than "
                                        "KOKORO_SEND_TIMEOUT")])
def test_bad_settings_name_the_variable(env, match):
    with pytest.raises(SettingsError, match=match):
        Settings.from_env(env)


def _copy_tree(model_dir, tmp_path, skip=()):
    dest = tmp_path / "models"
    shutil.copytree(model_dir, dest, ignore=lambda d, names: [n for n in names if n in skip])
    return dest


def test_missing_model_file_is_named_at_startup(onnx_settings, model_dir, tmp_path):
    dest = _copy_tree(model_dir, tmp_path, skip={"kokoro-v1.0.int8.onnx"})
    with pytest.raises(StartupError, match=r"missing model file .*kokoro-v1\.0\.int8\.onnx"):
        verify(replace(onnx_settings, model_dir=dest))


def test_tampered_file_is_refused_with_both_digests(onnx_settings, model_dir, tmp_path):
    dest = _copy_tree(model_dir, tmp_path, skip={"kokoro-v1.0.int8.onnx"})
    cfg = dest / "kokoro" / "config.json"
    cfg.write_text(cfg.read_text().replace('"n_token"', '"n_token" ', 1))
    with pytest.raises(StartupError, match=r"sha256 mismatch for .*config.json.*expects 5abb01"):
        verify(replace(onnx_settings, model_dir=dest))


def test_absent_voices_are_left_out_but_the_default_voice_is_required(onnx_settings,
                                                                      model_dir, tmp_path):
    dest = _copy_tree(model_dir, tmp_path, skip={"am_adam.pt"})
    found = verify(replace(onnx_settings, model_dir=dest))
    assert "am_adam" not in found.voices and len(found.voices) == 53
    with pytest.raises(StartupError, match=r"default voice 'am_adam'"):
        verify(replace(onnx_settings, model_dir=dest, default_voice="am_adam"))


def test_device_cuda_refuses_to_start_without_usable_cuda():
    torch = pytest.importorskip("torch")
    from kokoro_server.engines.torch import cuda_problem, resolve_device

    if cuda_problem() is None:
        pytest.skip(f"CUDA is usable here ({torch.cuda.get_device_name(0)})")
    with pytest.raises(StartupError, match=r"KOKORO_DEVICE=cuda but CUDA is not usable: .+"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"
