"""Engines: one interface (base.Engine), two backends (onnx, torch)."""
from __future__ import annotations

from ..assets import Assets
from ..settings import Settings
from .base import Engine


def load_engine(settings: Settings, assets: Assets) -> Engine:
    if settings.engine == "onnx":
        from .onnx import OnnxEngine

        return OnnxEngine(assets.model, assets.config, settings)
    from .torch import TorchEngine

    return TorchEngine(assets.model, assets.config, settings)
