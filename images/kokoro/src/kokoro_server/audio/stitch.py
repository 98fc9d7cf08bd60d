"""Click-free joins: each chunk starts and ends at zero amplitude.

A chunk's first and last few milliseconds are shaped with a raised-cosine fade, so
concatenating chunks never produces a step in the waveform (the audible click a plain
join of two non-zero samples makes).

Kokoro pads every pass with silence: about 0.3 s before the speech and 0.4-0.5 s after
it (the pad tokens' frames), where within one pass it pauses 0.1-0.6 s at a full stop,
about 0.1 s at a comma and a few tens of ms between words. Played back to back, two
chunks would pause 0.75 s or more, even mid-phrase; so at a join the later chunk keeps
LEAD_MS of its leading silence and the earlier one as much of its trailing silence as
makes up the model's own pause for how it ends (PAUSE_MS).
"""
from __future__ import annotations

import numpy as np

from ..settings import SAMPLE_RATE

FADE_MS = 5.0
GAP_MS = 60.0
# Below this a sample counts as silence: the pads' floor is 1e-5 or less, and 0.002
# (-54 dBFS) still catches the soft onset of a fricative ("five") that 0.01 misses.
SILENCE = 0.002
LEAD_MS = 25.0  # kept before a later chunk's first sound (longer than FADE_MS)
# The silence at a join, by how the earlier chunk ends: within the model's own pauses
# (one pass of the paragraphs in tests/bench/texts.py, two voices: full stop 165-585 ms,
# comma or semicolon 89-145 ms, between words 20-45 ms; the 89 ms comma on an AMD EPYC
# builder with the reduced English G2P, where an Intel one had 149 ms for the same text).
PAUSE_MS = {"sentence": 400.0, "clause": 80.0, "word": 40.0}
_SENTENCE_MARKS = ".!?…。！？"
_CLAUSE_MARKS = ",;:，、；：—–-"


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


def join_pause_ms(text: str) -> float:
    """The pause after a chunk whose text this is, by its last mark."""
    end = text.rstrip().rstrip("\"'”’)]»")[-1:]
    kind = ("sentence" if end and end in _SENTENCE_MARKS
            else "clause" if end and end in _CLAUSE_MARKS else "word")
    return PAUSE_MS[kind]


def trim_edges(audio: np.ndarray, lead_ms: float | None, tail_ms: float | None,
               max_lead: int | None = None, max_tail: int | None = None,
               rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Cut the silence before the first sound to lead_ms and after the last to tail_ms
    (None: keep that edge), removing at most max_lead / max_tail samples. Returns
    (audio, samples cut from the start)."""
    loud = np.flatnonzero(np.abs(audio) > SILENCE)
    if not len(loud):
        return audio, 0
    head = tail = 0
    if lead_ms is not None:
        head = max(0, int(loud[0]) - int(rate * lead_ms / 1000))
        head = min(head, max_lead) if max_lead is not None else head
    if tail_ms is not None:
        tail = max(0, len(audio) - 1 - int(loud[-1]) - int(rate * tail_ms / 1000))
        tail = min(tail, max_tail) if max_tail is not None else tail
    return audio[head:len(audio) - tail], head


def stitch_chunk(audio: np.ndarray, pad: int | None, text: str, first: bool,
                 last: bool, speed: float = 1.0,
                 rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """A chunk's audio ready to join: silent edges cut to the joins' pauses (unless the
    text's first or last), faded; and how many samples were cut from its start, never
    more than `pad` (the start pad's samples, if known), so its first word stays whole."""
    tail = None if last else max(FADE_MS, join_pause_ms(text) / speed - LEAD_MS)
    audio, head = trim_edges(audio, None if first else LEAD_MS, tail, pad, None, rate)
    return prepare_chunk(audio, first=True, rate=rate), head
