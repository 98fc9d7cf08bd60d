"""Words in the phoneme string, and their times from the model's predicted durations.

G2P yields, per word, where its phonemes sit in the phoneme string (Word). The engine
turns the phoneme string into token ids (one per character in Kokoro's vocabulary,
at most 510) and predicts a duration in frames for each token, plus one for each pad
token at either end. A word's time is then the frames of its first to its last token:

    start = offset + frames before its first token      (the leading pad included)
    end   = offset + frames up to its last token's end

so the spaces between words (tokens of their own) fall between the words' times, and
times never overlap. Punctuation-only words are not timed: their text joins the
neighbouring word ("Hello," "world!"). Where the text was normalised, the words of one
spoken form ("five dollars and fifty cents") become one caption showing what was
written ("$5.50"), timed over all of them.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .normalize import Span


@dataclass(frozen=True)
class Word:
    text: str  # as written (normalised text; for phoneme input, the phonemes)
    start: int  # [start, end): character offsets in the chunk's phoneme string
    end: int
    space_after: bool = True

    def shifted(self, by: int, limit: int | None = None) -> Word:
        start, end = self.start + by, self.end + by
        if limit is not None:
            start, end = min(max(start, 0), limit), min(max(end, 0), limit)
        return replace(self, start=start, end=end)


def millis(seconds: float) -> int:
    """Whole milliseconds: the one rounding that word times and caption stamps share, so
    a word's time in JSON and in SRT/WebVTT never differ by a rounding step."""
    return max(0, round(seconds * 1000))


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float  # seconds from the start of the whole response's audio
    end: float

    def as_dict(self) -> dict:
        return {"word": self.word, "start": millis(self.start) / 1000,
                "end": millis(self.end) / 1000}


def has_alnum(text: str) -> bool:
    return any(unicodedata.category(ch)[0] in ("L", "N") for ch in text)


def words_from_tokens(tokens: Iterable, phonemes: str, unk: str = "") -> list[Word]:
    """Words of misaki's English tokens (text, phonemes, whitespace), whose phonemes
    joined with their whitespace are the phoneme string misaki returned. If they do not
    add up to it, one word covers the whole string."""
    tokens = list(tokens)
    words, parts, pos = [], [], 0
    for tk in tokens:
        ps = unk if tk.phonemes is None else tk.phonemes
        words.append(Word(tk.text, pos, pos + len(ps), bool(tk.whitespace)))
        parts.append(ps + tk.whitespace)
        pos += len(ps) + len(tk.whitespace)
    if "".join(parts) != phonemes:
        text = "".join(t.text + t.whitespace for t in tokens).strip()
        return [Word(text, 0, len(phonemes))] if phonemes else []
    return words


def _runs(s: str) -> list[tuple[int, int]]:
    out, start = [], None
    for i, ch in enumerate(s + " "):
        if ch.isspace():
            if start is not None:
                out.append((start, i))
                start = None
        elif start is None:
            start = i
    return out


def phoneme_words(phonemes: str) -> list[Word]:
    """Each space-separated run of a phoneme string is a word (for phoneme input)."""
    return [Word(phonemes[a:b], a, b) for a, b in _runs(phonemes)]


def words_by_spaces(text: str, phonemes: str) -> list[Word]:
    """Pair text words with phoneme words when both split into as many (espeak-ng
    languages usually do); otherwise one word spans the whole piece."""
    tw, pw = text.split(), _runs(phonemes)
    if len(tw) == len(pw):
        return [Word(t, a, b) for t, (a, b) in zip(tw, pw, strict=True)]
    return [Word(text.strip(), 0, len(phonemes))] if phonemes else []


def words_by_pieces(pieces: Iterable[tuple[str, str]], phonemes: str,
                    text: str) -> list[Word]:
    """Words of a G2P's own segmentation, (word, its phonemes) in order, found in the
    phoneme string the G2P returned (only whitespace may lie between them: the G2P
    may add or drop spaces between words). Pieces without phonemes are not spoken, so
    not timed. If they do not add up to the string, one word spans the whole piece."""
    words, pos = [], 0
    for surface, ps in pieces:
        ps = re.sub(r"\s+", " ", ps.strip())
        if not ps:
            continue
        at = phonemes.find(ps, pos)
        if at < 0 or phonemes[pos:at].strip():
            break
        pos = at + len(ps)
        words.append(Word(surface, at, pos, phonemes[pos:pos + 1].isspace()))
    else:
        if not phonemes[pos:].strip():
            return words
    return [Word(text.strip(), 0, len(phonemes))] if phonemes else []


def token_index(phonemes: str, vocab: dict[str, int] | frozenset[str],
                max_tokens: int = 510) -> list[int]:
    """For each character, the index of its token in the model's input (pads not
    counted), or -1 for characters the vocabulary drops. Mirrors Engine.token_ids."""
    out, k = [], 0
    for ch in phonemes:
        if ch in vocab and k < max_tokens:
            out.append(k)
            k += 1
        else:
            out.append(-1)
    return out


def _containing(spans: Sequence[Span], pos: int, hint: int) -> tuple[Span | None, int]:
    while hint < len(spans) and spans[hint].end <= pos:
        hint += 1
    if hint < len(spans) and spans[hint].start <= pos < spans[hint].end:
        return spans[hint], hint
    return None, hint


class Captioner:
    """Timed words for one response, chunk after chunk: keeps the running audio offset
    and a cursor into the (normalised) text, to find each word's normalisation span."""

    def __init__(self, vocab: dict[str, int], text: str = "", spans: Sequence[Span] = (),
                 frame_seconds: float = 0.025, max_tokens: int = 510):
        self.vocab = vocab
        self.text = text
        self.spans = tuple(spans)
        self.frame_seconds = frame_seconds
        self.max_tokens = max_tokens
        self.offset = 0.0  # seconds of audio before the next chunk
        self._cursor = 0
        self._span_hint = 0

    def _span_of(self, word: Word) -> Span | None:
        """The span this word was spoken for, found by its place in the text."""
        if not self.text:
            return None
        pos = self.text.find(word.text, self._cursor)
        if pos < 0 or has_alnum(self.text[self._cursor:pos]):
            return None  # not where it should be: leave the cursor, show the word as is
        self._cursor = pos + len(word.text)
        span, self._span_hint = _containing(self.spans, pos, self._span_hint)
        return span

    def add(self, words: Sequence[Word], phonemes: str, durations: np.ndarray | None,
            lead_seconds: float, chunk_seconds: float) -> list[TimedWord]:
        """Timed words of one spoken chunk. `lead_seconds` is the silence put before the
        chunk's audio; `chunk_seconds` the chunk's whole length (lead included)."""
        base = self.offset + lead_seconds
        self.offset += chunk_seconds
        tok = token_index(phonemes, self.vocab, self.max_tokens)
        # units: [text, first token, last token, span]
        units: list[list] = []
        prefix = ""
        prev_space = True
        for w in words:
            span = self._span_of(w)
            toks = [tok[i] for i in range(max(w.start, 0), min(w.end, len(tok))) if tok[i] >= 0]
            if span is not None and units and units[-1][3] is span:
                unit = units[-1]
                if toks:
                    unit[1] = toks[0] if unit[1] is None else unit[1]
                    unit[2] = toks[-1]
            elif span is not None:
                units.append([prefix + span.original, toks[0] if toks else None,
                              toks[-1] if toks else None, span])
                prefix = ""
            elif not has_alnum(w.text):  # punctuation: shown with a word, not timed
                if units and not prev_space:
                    units[-1][0] += w.text  # "world" + "!"
                elif units and w.space_after:
                    units[-1][0] += " " + w.text  # "word" + " —"
                else:
                    prefix += w.text  # "“" + "Hello"
            elif not toks:  # a word that produced no tokens: shown with the next one
                prefix += w.text + " "
            else:
                units.append([prefix + w.text, toks[0], toks[-1], None])
                prefix = ""
            prev_space = w.space_after
        if prefix.strip() and units:
            units[-1][0] += (" " if has_alnum(prefix) else "") + prefix.strip()
        if durations is None or not len(durations):
            return []
        cum = np.concatenate([[0], np.cumsum(np.asarray(durations, dtype=np.int64))])
        out = []
        for text, first, last, _ in units:
            if first is None or last + 2 >= len(cum):
                continue
            start = base + cum[first + 1] * self.frame_seconds
            end = base + cum[last + 2] * self.frame_seconds
            out.append(TimedWord(text.strip(), float(start), float(end)))
        return out
