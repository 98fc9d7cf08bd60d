"""Split text at sentence boundaries into chunks whose phonemes fit Kokoro's context.

Kokoro takes at most 510 phoneme tokens per forward pass. Sentences are phonemized one
at a time; a sentence over the cap is split at commas, then at word boundaries;
neighbouring sentences are merged up to a target size.

The first audio waits for the first chunk's whole synthesis (on 2 CPU cores about
0.25 s plus 20 ms per phoneme), so the first sentence is spoken as a lead-in: its
phonemes are cut into a head of at most HEAD_PHONEMES (at least HEAD_MIN_WORDS words)
ending at a clause mark or before an unstressed (function) word, then pieces that
each at most double what came before. Later chunks grow the same way (at most
GROWTH times the phonemes already spoken) up to the target, so each chunk is
synthesised while the ones before it play (RTF about 0.5 on 2 cores).

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
# The first chunk: about 24 phonemes, 0.55-0.6 s to synthesise on 2 busy cores (0.5 s
# idle); three words are the least that still sound like a phrase, not a word list.
HEAD_PHONEMES = 24
HEAD_MIN_WORDS = 3
# A chunk's phonemes may be at most GROWTH times those spoken before it: with an RTF
# about 0.5 it is ready before they have played.
GROWTH = 2.0
_STRESS = "ˈ"  # misaki and espeak mark a content word's stress; function words go without


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


def _phrase_cut(ps: str, ends: list[int], floor: int, limit: int) -> int:
    """The best word end in (floor, limit] of a phoneme string: after a clause mark,
    else between a stressed word and an unstressed one (before "at the", "of a": where
    speech pauses); 0 when there is none. Never just any word end: one inside a
    number read aloud ("one thousand | two hundred") would split its caption."""
    fits = [e for e in ends if floor < e <= limit]
    for e in reversed(fits):
        if ps[e - 1] in _CLAUSE_MARKS:
            return e
    for e in reversed(fits):
        before, after = ps[:e].rsplit(None, 1)[-1], ps[e:].split(None, 1)[0]
        if _STRESS in before and _STRESS not in after:
            return e
    return 0


def lead_in(ps: str) -> list[int]:
    """Where the first sentence's phonemes are cut: a head of HEAD_MIN_WORDS words or
    more within HEAD_PHONEMES, then pieces of at most GROWTH times what came before,
    each leaving HEAD_MIN_WORDS words after it, all at phrase boundaries (_phrase_cut).
    None for a short sentence or one without a boundary in its head. Decided on
    the phonemes alone, so phoneme input (/v1/audio/phonemize's output sent back) is
    cut where its text was."""
    ends = [m.end() for m in re.finditer(r"\S+", ps)]
    if len(ends) < 2 * HEAD_MIN_WORDS or len(ps) <= HEAD_PHONEMES * 3 // 2:
        return []
    tail = ends[:-HEAD_MIN_WORDS]
    start = _phrase_cut(ps, tail, ends[HEAD_MIN_WORDS - 2], HEAD_PHONEMES)
    if not start:
        return []
    cuts = [start]
    while len(ps) - start > GROWTH * start:
        start = _phrase_cut(ps, tail, start + start // 2, int((1 + GROWTH) * start))
        if not start:
            break
        cuts.append(start)
    return cuts


def _text_ends(text: str, ps: str, words: tuple[Word, ...], cuts: list[int]) -> list[int]:
    """Where in the text each phoneme cut falls: after the last word spoken before it
    (found in order by its text), else after as many text words as phoneme words."""
    if words:
        out, pos, k = [], 0, 0
        for cut in cuts:
            while k < len(words) and words[k].start < cut:
                found = text.find(words[k].text, pos)
                if found < 0:
                    return []
                pos, k = found + len(words[k].text), k + 1
            out.append(pos)
        return out
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    counts = [len(ps[:cut].split()) for cut in cuts]
    return [ends[n - 1] for n in counts] if counts[-1] <= len(ends) else []


def _split_lead(text: str, ps: str, words: tuple[Word, ...]
                ) -> list[tuple[str, str, tuple[Word, ...]]]:
    """The first piece cut at lead_in's places, its text and words with it."""
    cuts = lead_in(ps)
    tcuts = _text_ends(text, ps, words, cuts) if cuts else []
    if not cuts or len(tcuts) != len(cuts) or tcuts != sorted(set(tcuts)):
        return [(text, ps, words)]
    out = []
    for (a, b), (ta, tb) in zip(zip([0, *cuts], [*cuts, len(ps)], strict=True),
                                zip([0, *tcuts], [*tcuts, len(text)], strict=True),
                                strict=True):
        lead = len(ps[a:b]) - len(ps[a:b].lstrip())
        part = tuple(w.shifted(-a - lead) for w in words if a <= w.start < b)
        out.append((text[ta:tb].strip(), ps[a:b].strip(), part))
    if not all(t and p for t, p, _ in out):
        return [(text, ps, words)]
    return out


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


def chunk_text(text: str, g2p: G2p, target: int = 300, limit: int = MAX_TOKENS,
               short_first: bool = True) -> Iterator[Chunk]:
    """Yield chunks lazily (phonemizing as it goes) so the first one is ready early.
    `g2p` returns the phonemes, or the phonemes and their words. `short_first`: the
    first sentence as a lead-in and chunks growing by GROWTH (else the first chunk is
    the first sentence and the rest are merged up to `target`)."""
    index = 0
    spoken = 0  # phonemes in the chunks yielded so far
    buf_text: list[str] = []
    buf_ps: list[str] = []
    buf_words: list[tuple[Word, ...]] = []
    pieces = (piece for n, sentence in enumerate(split_sentences(text))
              for piece in presplit(sentence, *_windows(sentence, n == 0)))
    for n, sentence in enumerate(pieces):
        parts = _split_long(sentence, g2p, limit)
        if short_first and n == 0 and not _CJK.search(sentence):
            parts = (cut for part in parts for cut in _split_lead(*part))
        for piece, ps, words in parts:
            joined = len(" ".join([*buf_ps, ps]))
            budget = min(target, GROWTH * spoken) if short_first else target
            if buf_ps and joined > budget:
                spoken += len(" ".join(buf_ps))
                yield _chunk(index, buf_text, buf_ps, buf_words)
                index += 1
                buf_text, buf_ps, buf_words = [], [], []
            buf_text.append(piece)
            buf_ps.append(ps)
            buf_words.append(words)
            if index == 0:  # the first chunk goes now, not once the next piece is read
                spoken += len(ps)
                yield _chunk(index, buf_text, buf_ps, buf_words)
                index += 1
                buf_text, buf_ps, buf_words = [], [], []
    if buf_ps:
        yield _chunk(index, buf_text, buf_ps, buf_words)
