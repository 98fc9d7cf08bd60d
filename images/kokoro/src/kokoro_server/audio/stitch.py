"""Click-free joins: each chunk starts and ends at zero amplitude.

A chunk's first and last few milliseconds are shaped with a raised-cosine fade, so
concatenating chunks never produces a step in the waveform (the audible click a plain
join of two non-zero samples makes), and a short pause separates sentences.
"""
from __future__ import annotations

import numpy as np

from ..settings import SAMPLE_RATE

FADE_MS = 5.0
GAP_MS = 60.0


def _ramp(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float32))).astype(np.float32)


def prepare_chunk(audio: np.ndarray, first: bool, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Fade the chunk's edges to zero and, unless first, prepend a short silence."""
    out = np.asarray(audio, dtype=np.float32).reshape(-1).copy()
    n = min(int(rate * FADE_MS / 1000), len(out) // 2)
    if n > 1:
        ramp = _ramp(n)
        out[:n] *= ramp
        out[-n:] *= ramp[::-1]
        out[0] = out[-1] = 0.0
    if not first:
        out = np.concatenate([np.zeros(int(rate * GAP_MS / 1000), np.float32), out])
    return np.clip(out, -1.0, 1.0)
