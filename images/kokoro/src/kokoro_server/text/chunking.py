"""Split text at sentence boundaries into chunks whose phonemes fit Kokoro's context.

Kokoro takes at most 510 phoneme tokens per forward pass. Sentences are phonemized one
at a time; a sentence over the cap is split at commas, then at word boundaries;
neighbouring sentences are merged up to a target size. The first chunk is kept to the
first sentence so streaming starts as soon as that sentence is spoken.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

MAX_TOKENS = 510

_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])[\"'”’)\]]*\s+|\n+|(?<=[。！？])")
_CLAUSE = re.compile(r"(?<=[,;:，、；：—])\s*")


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    phonemes: str


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _split_long(text: str, g2p: Callable[[str], str], limit: int) -> Iterator[tuple[str, str]]:
    ps = g2p(text)
    if len(ps) <= limit:
        if ps:
            yield text, ps
        return
    parts = [p for p in _CLAUSE.split(text) if p.strip()]
    if len(parts) == 1:
        words = text.split()
        if len(words) == 1:  # one absurdly long "word": speak what fits
            yield text, ps[:limit]
            return
        mid = len(words) // 2
        parts = [" ".join(words[:mid]), " ".join(words[mid:])]
    else:
        mid = len(parts) // 2
        parts = [" ".join(parts[:mid]), " ".join(parts[mid:])]
    for part in parts:
        yield from _split_long(part, g2p, limit)


def chunk_text(text: str, g2p: Callable[[str], str], target: int = 300,
               limit: int = MAX_TOKENS) -> Iterator[Chunk]:
    """Yield chunks lazily (phonemizing as it goes) so the first one is ready early."""
    index = 0
    buf_text: list[str] = []
    buf_ps: list[str] = []
    for sentence in split_sentences(text):
        for piece, ps in _split_long(sentence, g2p, limit):
            joined = len(" ".join([*buf_ps, ps]))
            if buf_ps and (index == 0 or joined > target):
                yield Chunk(index, " ".join(buf_text), " ".join(buf_ps))
                index += 1
                buf_text, buf_ps = [], []
            buf_text.append(piece)
            buf_ps.append(ps)
    if buf_ps:
        yield Chunk(index, " ".join(buf_text), " ".join(buf_ps))
