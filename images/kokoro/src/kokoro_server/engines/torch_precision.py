"""KOKORO_PRECISION for the torch engine on CUDA: fp32 (the default), or bf16/fp16 autocast.

Kokoro-82M ships fp32 weights only. Under autocast the weights stay fp32 and each
matrix product and convolution runs in the lower precision. Measured on an H100
(docs/benchmarks/gpu-server-vram-2026-11-27): fp16 takes a 510-token pass from 788 to
511 MiB over the weights, speed within run-to-run noise; bf16 drifts more.
The parts that turn numbers into pitch and waveform stay fp32, because there an error
of one part in 256 (bf16) is audible: the F0 and energy projections, the sine source
(it integrates F0 into phase with a cumsum over every sample) and the vocoder's STFT
and inverse STFT (no bf16 FFT). The LSTMs stay fp32 too: autocast leaves them out (fp32
weights given bf16 input fail), and they run at text rate, so they cost little.
"""
from __future__ import annotations

import contextlib

import torch
from kokoro.istftnet import SourceModuleHnNSF, TorchSTFT
from torch import nn
from torch.nn.utils.rnn import PackedSequence

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _fp32(x):
    if isinstance(x, PackedSequence):
        return x.float()
    return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _no_autocast(x):
    device = (x.data if isinstance(x, PackedSequence) else x).device
    return torch.autocast(device_type=device.type, enabled=False)


class _Fp32Forward:
    def forward(self, x, *args):
        with _no_autocast(x):
            return super().forward(_fp32(x), *(_fp32(a) for a in args))


class _Fp32STFT:
    def transform(self, input_data):
        with _no_autocast(input_data):
            return super().transform(_fp32(input_data))

    def inverse(self, magnitude, phase):
        with _no_autocast(magnitude):
            return super().inverse(_fp32(magnitude), _fp32(phase))


def _keep_fp32(module: nn.Module, mixin: type) -> None:
    cls = type(module)
    if not issubclass(cls, mixin):  # after torch_batch's swaps, so over their classes
        module.__class__ = type(f"Fp32{cls.__name__}", (mixin, cls), {})


def prepare(model: nn.Module) -> None:
    """Mark the parts that must stay fp32; a no-op for fp32 runs outside autocast."""
    for module in model.modules():
        if isinstance(module, nn.LSTM):
            _keep_fp32(module, _Fp32Forward)
    predictor = model.predictor
    _keep_fp32(predictor.F0_proj, _Fp32Forward)
    _keep_fp32(predictor.N_proj, _Fp32Forward)
    for module in model.decoder.modules():
        if isinstance(module, SourceModuleHnNSF):
            _keep_fp32(module, _Fp32Forward)
        elif isinstance(module, TorchSTFT):
            _keep_fp32(module, _Fp32STFT)


def autocast(device: str, precision: str):
    dtype = DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)
