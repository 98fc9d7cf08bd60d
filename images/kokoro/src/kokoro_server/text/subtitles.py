"""SRT and WebVTT documents from timed words.

Words are grouped into cues: a cue ends after a word that ends a sentence, or before a
word that would make its line longer than `max_chars` (42, the usual subtitle line).
A cue runs from its first word's start to its last word's end.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .align import TimedWord, millis

MAX_CHARS = 42
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]]*$")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def cues(words: Sequence[TimedWord], max_chars: int = MAX_CHARS) -> list[Cue]:
    out: list[Cue] = []
    group: list[TimedWord] = []

    def flush() -> None:
        if group:
            out.append(Cue(group[0].start, group[-1].end, " ".join(w.word for w in group)))
            group.clear()

    for w in words:
        if group and len(" ".join(x.word for x in [*group, w])) > max_chars:
            flush()
        group.append(w)
        if _SENTENCE_END.search(w.word):
            flush()
    flush()
    return out


def _stamp(seconds: float, sep: str) -> str:
    ms = millis(seconds)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(words: Sequence[TimedWord], max_chars: int = MAX_CHARS) -> str:
    blocks = [f"{i}\n{_stamp(c.start, ',')} --> {_stamp(c.end, ',')}\n{c.text}\n"
              for i, c in enumerate(cues(words, max_chars), 1)]
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(words: Sequence[TimedWord], max_chars: int = MAX_CHARS) -> str:
    blocks = [f"{_stamp(c.start, '.')} --> {_stamp(c.end, '.')}\n{_vtt_escape(c.text)}\n"
              for c in cues(words, max_chars)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(words: Sequence[TimedWord], fmt: str) -> str:
    return to_srt(words) if fmt == "srt" else to_vtt(words)
