"""The engine interface: phonemes + voice pack + speed in, 24 kHz float32 audio out,
with the model's predicted duration of every input token where the backend has it."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import json
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..settings import SAMPLE_RATE

MAX_TOKENS = 510
FRAME_SAMPLES = 600  # audio samples per duration frame (Kokoro: 40 frames a second)


def free_host_memory() -> None:
    """Collect cycles, then have glibc give freed heap pages back to the system: without
    malloc_trim a released model's memory stays in the process (measured on the CPU:
    torch 1,340 MiB RSS before a release and after it, 513 MiB once trimmed)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(name).malloc_trim(0)


@dataclass(frozen=True)
class Synthesis:
    audio: np.ndarray  # float32 mono at SAMPLE_RATE
    # Frames per model input token, both pad tokens included (len = tokens + 2), as the
    # duration predictor set them; len(audio) == durations.sum() * FRAME_SAMPLES.
    # None when the backend cannot report them.
    durations: np.ndarray | None = None


class Engine(ABC):
    name: str = "base"
    device: str = "cpu"
    sample_rate: int = SAMPLE_RATE
    has_durations: bool = False  # infer() reports durations
    max_batch: int = 1  # inputs infer_batch() runs in one forward pass
    # unload() frees the model and load() makes it again (idle release: residency.py);
    # an engine without this keeps its model for as long as it lives
    releasable: bool = False
    loaded: bool = True  # the model is in memory (releasable engines set it)
    # Callers outside the engine workers that use the model now (the warm-up), which an
    # idle release waits for; one engine per process, so one lock for the class.
    _use_lock = threading.Lock()
    _users = 0

    def __init__(self, config_path: Path):
        config = json.loads(Path(config_path).read_text())
        self.vocab: dict[str, int] = config["vocab"]

    def token_ids(self, phonemes: str) -> list[int]:
        """Kokoro's vocabulary maps single phoneme characters; others are dropped."""
        ids = [self.vocab[c] for c in phonemes if c in self.vocab]
        return ids[:MAX_TOKENS]

    @staticmethod
    def style_for(pack: np.ndarray, n_tokens: int) -> np.ndarray:
        """A voice pack holds one style vector per input length; pick this one's."""
        return pack[max(0, min(n_tokens, len(pack)) - 1)].reshape(1, -1).astype(np.float32)

    @abstractmethod
    def infer(self, ids: list[int], style: np.ndarray, speed: float) -> Synthesis:
        """Run the model on token ids (without the pad tokens)."""

    def infer_batch(self, items: list[tuple[list[int], np.ndarray, float]]) -> list[Synthesis]:
        """Several (ids, style, speed) at once; backends that batch override this."""
        return [self.infer(ids, style, speed) for ids, style, speed in items]

    def synthesize_ids(self, ids: list[int], style: np.ndarray, speed: float) -> np.ndarray:
        return self.infer(ids, style, speed).audio

    def synthesize_timed(self, phonemes: str, pack: np.ndarray,
                         speed: float = 1.0) -> Synthesis:
        ids = self.token_ids(phonemes)
        if not ids:
            return Synthesis(np.zeros(0, np.float32), np.zeros(0, np.int64))
        return self.infer(ids, self.style_for(pack, len(ids)), speed)

    def synthesize_batch(self, items: list[tuple[str, np.ndarray, float]]) -> list[Synthesis]:
        """synthesize_timed for each (phonemes, pack, speed), in forward passes of up
        to max_batch inputs."""
        results: list[Synthesis] = [Synthesis(np.zeros(0, np.float32), np.zeros(0, np.int64))
                                    for _ in items]
        work = []
        for i, (phonemes, pack, speed) in enumerate(items):
            ids = self.token_ids(phonemes)
            if ids:
                work.append((i, (ids, self.style_for(pack, len(ids)), speed)))
        for start in range(0, len(work), self.max_batch):
            part = work[start:start + self.max_batch]
            for (i, _), result in zip(part, self.infer_batch([w for _, w in part]), strict=True):
                results[i] = result
        return results

    def synthesize(self, phonemes: str, pack: np.ndarray, speed: float = 1.0) -> np.ndarray:
        return self.synthesize_timed(phonemes, pack, speed).audio

    def warm_up(self, phonemes: str, pack: np.ndarray, passes: int = 2) -> None:
        """The first passes before serving (kernel choice, allocator growth), then give
        back what only they held."""
        with self.in_use():
            for _ in range(passes):
                self.synthesize(phonemes, pack, 1.0)
        self.release_cache()

    @contextlib.contextmanager
    def in_use(self):
        """Keep the model from an idle release while the caller uses it outside the
        engine workers (loading it first if it was released)."""
        with self._use_lock:
            if not self.loaded:
                self.load()
            self._users += 1
        try:
            yield
        finally:
            with self._use_lock:
                self._users -= 1

    def unload_if_unused(self) -> bool:
        """unload() unless a caller holds in_use(); True if it did."""
        with self._use_lock:
            if self._users:
                return False
            self.unload()
            return True

    def load(self) -> None:  # noqa: B027 - a hook: releasable backends override it
        """Make the model (again, after unload()); sets `loaded` once it can infer."""

    def unload(self) -> None:  # noqa: B027 - a hook: releasable backends override it
        """Free the model and what the backend cached for it; load() brings it back.
        Only while no pass runs (the caller's promise); the vocabulary stays."""

    def release_cache(self) -> None:  # noqa: B027 - a hook: most backends cache nothing
        """Free memory the backend caches but no longer uses."""

    def describe(self) -> dict:
        return {"engine": self.name, "device": self.device}
