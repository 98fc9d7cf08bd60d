"""PyTorch backend: the `kokoro` package's KModel, on CUDA when usable, else CPU.

KOKORO_DEVICE=cuda never falls back: if CUDA is unusable (no driver, NVML error, or a
GPU architecture this torch build was not compiled for) the server refuses to start
and says why. Each worker thread gets its own CUDA stream, so concurrent requests
overlap on the GPU. Inputs that are queued together run as one padded forward pass
(engines/torch_batch.py) up to `max_batch` at a time: on a GPU one pass over many
short inputs costs little more than one over a single input.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
from pathlib import Path

import numpy as np

from ..cpu_budget import threads_per_worker, usable_cores
from ..errors import StartupError
from ..settings import Settings
from .base import Engine, Synthesis, free_host_memory

log = logging.getLogger(__name__)


def cuda_problem() -> str | None:
    """None when CUDA is usable by this torch build on GPU 0, else the reason."""
    import torch

    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    try:
        torch.cuda.init()
    except Exception as exc:
        return f"CUDA initialisation failed: {exc}"
    if torch.cuda.device_count() < 1:
        return "no CUDA device visible (check the driver and --gpus / device requests)"
    major, minor = torch.cuda.get_device_capability(0)
    arch = f"sm_{major}{minor}"
    archs = torch.cuda.get_arch_list()
    ptx = [a for a in archs if a.startswith("compute_")]
    ptx_ok = any(int(a.split("_")[1]) <= major * 10 + minor for a in ptx)
    if arch not in archs and not ptx_ok:
        return (f"GPU 0 ({torch.cuda.get_device_name(0)}) is {arch}, which this torch build "
                f"({torch.__version__}) does not support: {', '.join(archs)}; install a "
                "torch build for this architecture (e.g. cu128 for sm_120)")
    return None


def resolve_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    problem = cuda_problem()
    if problem is None:
        return "cuda"
    if requested == "cuda":
        raise StartupError(f"KOKORO_DEVICE=cuda but CUDA is not usable: {problem}")
    log.warning("KOKORO_DEVICE=auto: using CPU because %s", problem)
    return "cpu"


def fold_weight_norm(model) -> None:
    """Turn every weight-normed layer (89 in Kokoro's decoder and predictor) into a
    plain one with the same weight. Training needs the split; inference only pays for
    it: each layer recomputes its weight every pass and keeps that copy between passes
    (220 MiB for Kokoro-82M, beside its 312 MiB of parameters)."""
    import torch
    from torch.nn.utils import remove_weight_norm
    from torch.nn.utils.weight_norm import WeightNorm

    with torch.no_grad():
        for module in model.modules():
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, WeightNorm):
                    remove_weight_norm(module, hook.name)


def _quiet_loguru() -> None:
    """kokoro logs through loguru at DEBUG (the whole config, every load); keep WARNING+."""
    try:
        from loguru import logger
    except ImportError:
        return
    logger.remove()
    logger.add(sys.stderr, level="WARNING")


class TorchEngine(Engine):
    name = "torch"
    has_durations = True  # forward_with_tokens returns pred_dur with the audio
    releasable = True
    loaded = False

    def __init__(self, model_path: Path, config_path: Path, settings: Settings):
        super().__init__(config_path)
        import torch

        _quiet_loguru()
        self._torch = torch
        self.device = resolve_device(settings.device)
        if self.device == "cpu":
            # torch's default is the host's cores, not the container's quota.
            torch.set_num_threads(threads_per_worker(usable_cores(),
                                                     settings.engine_workers("cpu")))
        self.precision = settings.precision
        if self.precision != "fp32" and self.device != "cuda":
            # Measured: bf16 autocast took 158 s where fp32 took 2 s on a CPU without
            # bf16 instructions.
            raise StartupError(f"KOKORO_PRECISION={self.precision} needs CUDA, but the torch "
                               f"engine runs on {self.device}; unset KOKORO_PRECISION (fp32) "
                               "on the CPU")
        self._model_path, self._config_path = Path(model_path), Path(config_path)
        self.max_batch = settings.batch_size or (16 if self.device == "cuda" else 1)
        self.model = None
        self.load()
        self._local = threading.local()
        log.info("torch engine on %s (torch %s, %s), up to %d inputs per forward pass",
                 self.device, torch.__version__, self.precision, self.max_batch)

    def load(self) -> None:
        """Build the module on its device (at start and again after an idle release)."""
        from kokoro import KModel

        # KModel with explicit local paths reads them and downloads nothing.
        model = KModel(repo_id="hexgrad/Kokoro-82M", config=str(self._config_path),
                       model=str(self._model_path))
        fold_weight_norm(model)
        model = model.to(self.device).eval()
        if self.max_batch > 1:
            from . import torch_batch

            torch_batch.enable(model)
        if self.precision != "fp32":
            from . import torch_precision

            torch_precision.prepare(model)
        self.model = model
        self.loaded = True

    def unload(self) -> None:
        """Drop the module, then hand its CUDA memory back to the driver (torch's
        allocator would otherwise keep it reserved). The CUDA context stays."""
        self.loaded = False
        self.model = None
        free_host_memory()  # a cycle inside the module would hold its tensors; the heap
        self.release_cache()

    def _module(self):
        model = self.model
        if model is None:
            raise RuntimeError("the model is released (idle); load() it first")
        return model

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        from .torch_precision import autocast

        return autocast(self.device, self.precision)

    def _stream(self):
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._torch.cuda.Stream()
            self._local.stream = stream
        return stream

    def infer(self, ids: list[int], style: np.ndarray, speed: float) -> Synthesis:
        torch = self._torch
        with torch.inference_mode():
            input_ids = torch.tensor([[0, *ids, 0]], dtype=torch.long, device=self.device)
            ref_s = torch.from_numpy(style).to(self.device)
            if self.device == "cuda":
                stream = self._stream()
                with torch.cuda.stream(stream), self._autocast():
                    audio, pred_dur = self._module().forward_with_tokens(input_ids, ref_s, speed)
                    out, dur = audio.float().cpu(), pred_dur.cpu()
            else:  # fp32: low precision is CUDA-only
                out, dur = self._module().forward_with_tokens(input_ids, ref_s, speed)
                out = out.float()
        return Synthesis(out.numpy().reshape(-1).astype(np.float32, copy=False),
                         dur.numpy().reshape(-1).astype(np.int64))

    def infer_batch(self, items: list[tuple[list[int], np.ndarray, float]]) -> list[Synthesis]:
        if len(items) == 1:
            return [self.infer(*items[0])]
        from .torch_batch import forward_batch

        torch = self._torch
        ids = [[0, *row, 0] for row, _, _ in items]
        styles = np.concatenate([style for _, style, _ in items])
        speeds = [speed for _, _, speed in items]
        with torch.inference_mode():
            ref_s = torch.from_numpy(styles).to(self.device)
            if self.device == "cuda":
                with torch.cuda.stream(self._stream()), self._autocast():
                    out = [(a.float().cpu(), d)
                           for a, d in forward_batch(self._module(), ids, ref_s, speeds)]
            else:
                out = [(a.float(), d) for a, d in forward_batch(self._module(), ids, ref_s, speeds)]
        return [Synthesis(a.numpy().astype(np.float32, copy=False), d.numpy().astype(np.int64))
                for a, d in out]

    def release_cache(self) -> None:
        # torch caches CUDA memory per stream: what the warm-up took on the loading
        # thread's stream would stay reserved, unused, beside each worker's own.
        if self.device == "cuda":
            self._torch.cuda.synchronize()
            self._torch.cuda.empty_cache()

    def describe(self) -> dict:
        return {**super().describe(), "precision": self.precision}

    def vram_bytes(self) -> int | None:
        if self.device != "cuda":
            return None
        return int(self._torch.cuda.max_memory_allocated())
