"""onnxruntime backend for Kokoro ONNX exports (inputs tokens, style, speed).

The export's only output is the audio; its predicted durations are exposed as a second
output at load time (see onnx_graph), so captions come from the same run as the audio.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..cpu_budget import threads_per_worker, usable_cores
from ..errors import StartupError
from ..settings import Settings
from .base import Engine, Synthesis, free_host_memory
from .onnx_graph import with_durations_output

log = logging.getLogger(__name__)


class OnnxEngine(Engine):
    name = "onnx"
    _durations_output: str | None = None

    releasable = True
    loaded = False

    def __init__(self, model_path: Path, config_path: Path, settings: Settings):
        super().__init__(config_path)
        import onnxruntime as ort

        available = ort.get_available_providers()
        cuda_ok = "CUDAExecutionProvider" in available
        if settings.device == "cuda" and not cuda_ok:
            raise StartupError("KOKORO_DEVICE=cuda but this onnxruntime has no "
                               f"CUDAExecutionProvider (available: {', '.join(available)})")
        use_cuda = cuda_ok and settings.device in ("cuda", "auto")
        self._providers = (["CUDAExecutionProvider"] if use_cuda else []) + [
            "CPUExecutionProvider"]
        self._opts = ort.SessionOptions()
        self.device = "cuda" if use_cuda else "cpu"
        self._opts.intra_op_num_threads = threads_per_worker(
            usable_cores(), settings.engine_workers(self.device), settings.onnx_threads)
        self._opts.inter_op_num_threads = 1
        self._model_path = Path(model_path)
        self.session = None
        self.load()
        log.info("onnx engine on %s (%s), %d intra-op threads per worker", self.device,
                 ", ".join(self._providers), self._opts.intra_op_num_threads)

    def load(self) -> None:
        """Read the export, expose its durations and open a session (at start and
        again after an idle release)."""
        import onnxruntime as ort

        model_path = self._model_path
        patched = with_durations_output(model_path.read_bytes())
        if patched is None:
            log.warning("%s: no duration tensor found in this ONNX graph; captioned "
                        "speech (word timestamps) is unavailable with it", model_path)
            model: bytes | str = str(model_path)
            durations_output = None
        else:
            model, durations_output = patched
        session = ort.InferenceSession(model, sess_options=self._opts,
                                       providers=self._providers)
        del model, patched
        names = {i.name for i in session.get_inputs()}
        if not {"tokens", "style", "speed"} <= names:
            raise StartupError(f"{model_path}: not a Kokoro v1.0 ONNX export (inputs {names})")
        self._speed_type = next(i.type for i in session.get_inputs() if i.name == "speed")
        self._durations_output = durations_output
        self.has_durations = durations_output is not None
        self.session = session
        self.loaded = True

    def unload(self) -> None:
        """Drop the session: its weights and memory arena (host or CUDA) go with it."""
        self.loaded = False
        self.session = None
        free_host_memory()

    def infer(self, ids: list[int], style: np.ndarray, speed: float) -> Synthesis:
        tokens = np.array([[0, *ids, 0]], dtype=np.int64)
        speed_arr = np.array([speed], dtype=np.int32 if "int" in self._speed_type else np.float32)
        names = ["audio"] + ([self._durations_output] if self._durations_output else [])
        session = self.session
        if session is None:
            raise RuntimeError("the model is released (idle); load() it first")
        out = session.run(names, {"tokens": tokens, "style": style, "speed": speed_arr})
        audio = np.asarray(out[0], dtype=np.float32).reshape(-1)
        durations = np.asarray(out[1]).reshape(-1).astype(np.int64) if len(out) > 1 else None
        return Synthesis(audio, durations)
