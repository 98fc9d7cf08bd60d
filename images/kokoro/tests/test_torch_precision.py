"""What the torch engine does to Kokoro's layers at load: weight norm folded, and for
KOKORO_PRECISION=bf16/fp16 the pitch and waveform parts kept in fp32 under autocast.
Autocast itself runs on CUDA only (measured on GPUs: docs/benchmarks); here each kept
part is called under CPU autocast, where a plain layer would compute in bf16."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from kokoro_server.errors import StartupError
from kokoro_server.settings import Settings, SettingsError
from kokoro_testlib import RANDOM_CKPT_PATH

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def paths(torch_settings):
    root = torch_settings.model_dir
    return root / RANDOM_CKPT_PATH, root / torch_settings.config


@pytest.fixture(scope="module")
def engine(torch_settings, paths):
    from kokoro_server.engines.torch import TorchEngine

    return TorchEngine(*paths, torch_settings)


def test_weight_norm_is_folded_without_changing_the_audio(engine, paths):
    from kokoro import KModel
    from torch.nn.utils.weight_norm import WeightNorm

    assert not [m for m in engine.model.modules()
                for h in m._forward_pre_hooks.values() if isinstance(h, WeightNorm)]
    assert not [n for n, _ in engine.model.named_parameters() if n.endswith("weight_g")]
    pack = np.random.default_rng(0).standard_normal((510, 1, 256)).astype(np.float32)
    phonemes = "hˈɛlO wˈɜɹld."
    torch.manual_seed(3)  # the vocoder draws random phase and noise
    folded = engine.synthesize(phonemes, pack)
    unfolded = KModel(repo_id="hexgrad/Kokoro-82M", config=str(paths[1]),
                      model=str(paths[0])).eval()
    assert [m for m in unfolded.modules()
            for h in m._forward_pre_hooks.values() if isinstance(h, WeightNorm)]
    folded_model, engine.model = engine.model, unfolded
    try:
        torch.manual_seed(3)
        reference = engine.synthesize(phonemes, pack)
    finally:
        engine.model = folded_model
    np.testing.assert_allclose(folded, reference, atol=1e-5)


def test_precision_must_be_known_and_is_for_the_torch_engine_only():
    with pytest.raises(SettingsError, match="KOKORO_PRECISION must be fp32, bf16 or fp16"):
        Settings(engine="torch", precision="int8").validate()
    with pytest.raises(SettingsError, match=r"torch engine only.*unset KOKORO_PRECISION"):
        Settings.from_env({"KOKORO_ENGINE": "onnx", "KOKORO_PRECISION": "fp16"})
    assert Settings.from_env({"KOKORO_ENGINE": "torch",
                              "KOKORO_PRECISION": "fp16"}).precision == "fp16"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_on_the_cpu_is_refused_with_the_fix(torch_settings, paths, precision):
    from kokoro_server.engines.torch import TorchEngine

    with pytest.raises(StartupError, match=f"KOKORO_PRECISION={precision} needs CUDA.*"
                                           "unset KOKORO_PRECISION"):
        TorchEngine(*paths, replace(torch_settings, precision=precision))


def test_pitch_and_waveform_parts_stay_fp32_under_autocast(paths):
    from kokoro import KModel
    from kokoro_server.engines import torch_precision

    model = KModel(repo_id="hexgrad/Kokoro-82M", config=str(paths[1]),
                   model=str(paths[0])).eval()
    torch_precision.prepare(model)
    predictor, generator = model.predictor, model.decoder.generator
    bf16 = torch.bfloat16
    with torch.inference_mode(), torch_precision.autocast("cpu", "bf16"):
        hidden = torch.randn(1, predictor.F0_proj.in_channels, 12, dtype=bf16)
        assert generator.conv_post(torch.randn(1, generator.conv_post.in_channels, 30,
                                               dtype=bf16)).dtype == bf16  # autocast is on
        assert predictor.F0_proj(hidden).dtype == torch.float32
        assert predictor.N_proj(hidden).dtype == torch.float32
        lstm_in = torch.randn(1, 7, predictor.lstm.input_size, dtype=bf16)
        assert predictor.lstm(lstm_in)[0].dtype == torch.float32
        f0 = torch.full((1, 2400, 1), 180.0, dtype=bf16)
        assert all(t.dtype == torch.float32 for t in generator.m_source(f0))
        magnitude, phase = generator.stft.transform(torch.randn(1, 2400, dtype=bf16))
        assert magnitude.dtype == phase.dtype == torch.float32
        audio = generator.stft.inverse(magnitude.to(bf16), phase.to(bf16))
        assert audio.dtype == torch.float32 and torch.isfinite(audio).all()


def test_autocast_is_a_no_op_for_fp32():
    from kokoro_server.engines import torch_precision

    with torch_precision.autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
