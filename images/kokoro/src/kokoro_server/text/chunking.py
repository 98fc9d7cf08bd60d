"""Split text at sentence boundaries into chunks whose phonemes fit Kokoro's context.

Kokoro takes at most 510 phoneme tokens per forward pass. Sentences are phonemized one
at a time; a sentence over the cap is split at commas, then at word boundaries;
neighbouring sentences are merged up to a target size. The first chunk is kept to the
first sentence so streaming starts as soon as that sentence is spoken.

A sentence longer than PRESPLIT_CHARS (a raw transcript with no sentence punctuation)
is first cut on its text, at the last clause or word boundary of each window, so the
G2P never sees more than one window at a time: the first chunk of a 20,000-character
run-on is ready about as soon as that of a short text, where the G2P would otherwise
read the whole run, and then each half it was split into, before the first audio. The
first window of a text is shorter still (FIRST_CHARS), as the first audio waits for it.

Chinese and Japanese give several phonemes per character, so a sentence with their
characters is cut in windows of CJK_CHARS, and one without spaces or clause marks that
is still too long is halved between characters rather than cut short.

The G2P may also return where each word's phonemes are (align.Word); chunks carry them,
moved to their place in the chunk's joined phoneme string.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .align import Word

MAX_TOKENS = 510
# Text characters per G2P call for a run-on sentence: English and the espeak languages
# give about one phoneme per character, so a window's phonemes mostly fit MAX_TOKENS
# (one that does not is split further by _split_long, as any long sentence is).
PRESPLIT_CHARS = 400
FIRST_CHARS = 150
# Mandarin gives about 4 phonemes a character, Japanese about 2.9 (misaki's zh and ja):
# their windows are cut this short so that one mostly fits a pass.
CJK_CHARS = 100
_CJK = re.compile("[\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF]")
_CLAUSE_MARKS = ",;:，、；：—"

_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])[\"'”’)\]]*\s+|\n+|(?<=[。！？])")
_CLAUSE = re.compile(r"(?<=[,;:，、；：—])\s*")


G2p = Callable[[str], "str | tuple[str, list[Word]]"]


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    phonemes: str
    words: tuple[Word, ...] = ()


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _cut(window: str) -> int:
    """Where to end a piece that starts `window`: after its last clause mark, else at
    its last space, if either leaves at least a third of it; else the whole window
    (a text without spaces, such as Chinese or Japanese, is cut between characters)."""
    floor = len(window) // 3
    clause = max(window.rfind(c) for c in _CLAUSE_MARKS) + 1
    if clause > floor:
        return clause
    space = max(window.rfind(c) for c in " \t\n")
    return space if space > floor else len(window)


def presplit(text: str, first_chars: int = PRESPLIT_CHARS,
             max_chars: int = PRESPLIT_CHARS) -> Iterator[str]:
    """A sentence over max_chars characters as pieces of at most max_chars (the first
    at most first_chars), cut on the text alone: linear time, no G2P. A sentence
    within max_chars stays whole, however long the first is."""
    if len(text) <= max_chars:
        yield text
        return
    start, size = 0, first_chars
    while len(text) - start > size:
        cut = _cut(text[start:start + size])
        piece = text[start:start + cut].strip()
        if piece:
            yield piece
        start += cut
        size = max_chars
    if text[start:].strip():
        yield text[start:].strip()


def _windows(sentence: str, first: bool) -> tuple[int, int]:
    """presplit's (first_chars, max_chars) for a sentence: shorter for Chinese and
    Japanese, whose characters give several phonemes each."""
    size = CJK_CHARS if _CJK.search(sentence) else PRESPLIT_CHARS
    return (min(FIRST_CHARS, size) if first else size), size


def _phonemize(g2p: G2p, text: str) -> tuple[str, tuple[Word, ...]]:
    out = g2p(text)
    return (out, ()) if isinstance(out, str) else (out[0], tuple(out[1]))


def _split_long(text: str, g2p: G2p,
                limit: int) -> Iterator[tuple[str, str, tuple[Word, ...]]]:
    ps, ws = _phonemize(g2p, text)
    if len(ps) <= limit:
        if ps:
            yield text, ps, ws
        return
    parts = [p for p in _CLAUSE.split(text) if p.strip()]
    if len(parts) == 1:
        words = text.split()
        if len(words) == 1 and _CJK.search(text) and len(text) > 1:
            # Chinese or Japanese without clause marks: halve it between characters
            words = [text[:len(text) // 2], text[len(text) // 2:]]
        if len(words) == 1:  # one absurdly long "word": speak what fits
            yield text, ps[:limit], tuple(w.shifted(0, limit) for w in ws)
            return
        mid = len(words) // 2
        parts = [" ".join(words[:mid]), " ".join(words[mid:])]
    else:
        mid = len(parts) // 2
        parts = [" ".join(parts[:mid]), " ".join(parts[mid:])]
    for part in parts:
        yield from _split_long(part, g2p, limit)


def _chunk(index: int, texts: list[str], pss: list[str],
           words: list[tuple[Word, ...]]) -> Chunk:
    moved, offset = [], 0
    for ps, ws in zip(pss, words, strict=True):
        moved.extend(w.shifted(offset) for w in ws)
        offset += len(ps) + 1
    return Chunk(index, " ".join(texts), " ".join(pss), tuple(moved))


def chunk_text(text: str, g2p: G2p, target: int = 300,
               limit: int = MAX_TOKENS) -> Iterator[Chunk]:
    """Yield chunks lazily (phonemizing as it goes) so the first one is ready early.
    `g2p` returns the phonemes, or the phonemes and their words."""
    index = 0
    buf_text: list[str] = []
    buf_ps: list[str] = []
    buf_words: list[tuple[Word, ...]] = []
    pieces = (piece for n, sentence in enumerate(split_sentences(text))
              for piece in presplit(sentence, *_windows(sentence, n == 0)))
    for sentence in pieces:
        for piece, ps, words in _split_long(sentence, g2p, limit):
            joined = len(" ".join([*buf_ps, ps]))
            if buf_ps and joined > target:
                yield _chunk(index, buf_text, buf_ps, buf_words)
                index += 1
                buf_text, buf_ps, buf_words = [], [], []
            buf_text.append(piece)
            buf_ps.append(ps)
            buf_words.append(words)
            if index == 0:  # the first chunk goes now, not once the next piece is read
                yield _chunk(index, buf_text, buf_ps, buf_words)
                index += 1
                buf_text, buf_ps, buf_words = [], [], []
    if buf_ps:
        yield _chunk(index, buf_text, buf_ps, buf_words)
