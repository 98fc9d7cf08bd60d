"""onnxruntime backend for Kokoro ONNX exports (inputs tokens, style, speed)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import StartupError
from ..settings import Settings
from .base import Engine

log = logging.getLogger(__name__)


class OnnxEngine(Engine):
    name = "onnx"

    def __init__(self, model_path: Path, config_path: Path, settings: Settings):
        super().__init__(config_path)
        import onnxruntime as ort

        available = ort.get_available_providers()
        cuda_ok = "CUDAExecutionProvider" in available
        if settings.device == "cuda" and not cuda_ok:
            raise StartupError("KOKORO_DEVICE=cuda but this onnxruntime has no "
                               f"CUDAExecutionProvider (available: {', '.join(available)})")
        use_cuda = cuda_ok and settings.device in ("cuda", "auto")
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        threads = settings.onnx_threads or (os.cpu_count() or 1)
        opts.intra_op_num_threads = max(1, threads // max(1, settings.workers))
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), sess_options=opts,
                                            providers=providers)
        self.device = "cuda" if use_cuda else "cpu"
        names = {i.name for i in self.session.get_inputs()}
        if not {"tokens", "style", "speed"} <= names:
            raise StartupError(f"{model_path}: not a Kokoro v1.0 ONNX export (inputs {names})")
        self._speed_type = next(i.type for i in self.session.get_inputs() if i.name == "speed")
        log.info("onnx engine on %s (%s)", self.device, ", ".join(providers))

    def synthesize_ids(self, ids: list[int], style: np.ndarray, speed: float) -> np.ndarray:
        tokens = np.array([[0, *ids, 0]], dtype=np.int64)
        speed_arr = np.array([speed], dtype=np.int32 if "int" in self._speed_type else np.float32)
        (audio,) = self.session.run(None, {"tokens": tokens, "style": style, "speed": speed_arr})
        return np.asarray(audio, dtype=np.float32).reshape(-1)
