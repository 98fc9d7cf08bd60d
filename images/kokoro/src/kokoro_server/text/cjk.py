"""Japanese and Mandarin G2P (misaki's ja and zh), with the words captions need.

Both misaki G2Ps return phonemes without tokens, and the text has no spaces, so the
words are found as misaki found them: jieba's words for Mandarin, cutlet's word groups
(fugashi + unidic-lite) for Japanese. Each word's phonemes are then located in the
phoneme string misaki returned (align.words_by_pieces), so the phonemes spoken are
exactly misaki's, whatever the captions make of them.

Installed by the package's `zh` and `ja` extras (`cjk` for both); an image built
without them answers these languages with a 400 language_unavailable.
"""
from __future__ import annotations

import importlib.util
import logging
import re
import sys
import types
from dataclasses import replace

from .align import Word, words_by_pieces

EXTRA = {"j": "ja", "z": "zh"}
_HAN = re.compile("[\u4E00-\u9FFF]+|[^\u4E00-\u9FFF]+")


def _stand_in_pyopenjtalk() -> None:
    """misaki/ja.py imports pyopenjtalk at module level, but the cutlet path never calls
    it; the real package (C++ build, dictionary fetched on first use) would add 334 MiB.
    The stand-in raises if anything ever calls it, so a future misaki that does fails
    loudly (a test holds this) instead of speaking something else."""
    if "pyopenjtalk" in sys.modules or importlib.util.find_spec("pyopenjtalk"):
        return
    mod = types.ModuleType("pyopenjtalk")
    mod.__doc__ = "kokoro_server's stand-in: misaki's cutlet path never calls it"

    def _not_here(name: str):
        def fail(*_args, **_kwargs):
            raise RuntimeError(f"pyopenjtalk.{name} called, but the image has only a "
                               "stand-in (misaki's cutlet path is not meant to call it)")
        return fail

    # pyopenjtalk's public functions (misaki 0.9.4 uses run_frontend)
    for name in ("run_frontend", "g2p", "extract_fullcontext", "make_label"):
        setattr(mod, name, _not_here(name))
    sys.modules["pyopenjtalk"] = mod


def _jieba_ready() -> None:
    """Quiet jieba's own DEBUG handler and build its prefix dictionary in memory: its
    default would write a 9 MB cache into the temp folder (a tmpfs in our containers,
    so memory) and fail without one; the cache saved no time (measured 2026-12-06)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    dt = jieba.dt
    with dt.lock:
        if not dt.initialized:
            dt.FREQ, dt.total = dt.gen_pfdict(dt.get_dict_file())
            dt.initialized = True


def make_zh():
    import cn2an
    import jieba
    from misaki import zh

    _jieba_ready()
    g2p = zh.ZHG2P(version=None)  # Kokoro-82M v1.0's reading ('1.1' is the zh model's)

    def pieces(text: str) -> list[tuple[str, str]]:
        """(word, its phonemes) as ZHG2P.legacy_call builds its string."""
        text = zh.ZHG2P.map_punctuation(cn2an.transform(text, "an2cn"))
        out = []
        for seg in _HAN.findall(text):
            if "\u4E00" <= seg[0] <= "\u9FFF":
                out += [(w, zh.ZHG2P.word2ipa(w).replace(chr(815), ""))
                        for w in jieba.lcut(seg, cut_all=False)]
            else:
                out += [(w, w) for w in seg.split()]
        return out

    def run(text: str) -> tuple[str, list[Word]]:
        ps = g2p(text)[0] or ""
        return ps, _punctuation_as_written(words_by_pieces(pieces(text), ps, text), text)

    return run


def _punctuation_as_written(words: list[Word], text: str) -> list[Word]:
    """misaki's zh maps `，。！？、「」` to ASCII before reading, one mark for one: show
    the text's own marks where they follow the previous word (after a number, which
    cn2an rewrote, the word is not found and the ASCII marks stay)."""
    out, pos = [], 0
    for w in words:
        if any(ch.isalnum() for ch in w.text):
            at = text.find(w.text, pos)
            pos = at + len(w.text) if at >= 0 else pos
        else:
            start = pos + len(text[pos:]) - len(text[pos:].lstrip())
            marks = text[start:start + len(w.text)]
            if len(marks) == len(w.text) and not any(ch.isalnum() or ch.isspace()
                                                     for ch in marks):
                w, pos = replace(w, text=marks), start + len(marks)
        out.append(w)
    return out


def make_ja():
    _stand_in_pyopenjtalk()
    import jaconv
    import unidic_lite  # noqa: F401  fugashi's dictionary; without it Tagger() fails obscurely
    from misaki import cutlet, ja

    g2p = ja.JAG2P()  # version 'cutlet': fugashi + unidic-lite
    cut = g2p.cutlet

    def pieces(text: str) -> list[tuple[str, str]]:
        """(word group, its romaji-phonemes) as Cutlet.__call__ builds its string."""
        words = [cutlet.Word(w.surface,
                             jaconv.kata2hira(w.feature.pron or w.feature.kana or w.surface),
                             6 if w.char_type == 7 or not w.is_unk else w.char_type)
                 for w in cut.tagger(cut._normalize_text(text))]
        tokens = cut._romaji_tokens(words)
        surfaces = _groups(words, cutlet.JA_WORDS)
        if len(surfaces) != len(tokens):
            return []
        return [(s, t.surface.replace("(", "«").replace(")", "»"))
                for s, t in zip(surfaces, tokens, strict=True)]

    def run(text: str) -> tuple[str, list[Word]]:
        ps = g2p(text)[0] or ""
        return ps, words_by_pieces(pieces(text), ps, text)

    return run


def _groups(words, ja_words) -> list[str]:
    """The surfaces of Cutlet._romaji_tokens's groups: runs of one character type that
    make a word of its JA_WORDS list, else single words (same loop as cutlet's)."""
    out, i = [], 0
    while i < len(words):
        z = next((z for z in range(i + 1, len(words))
                  if words[z].char_type != words[i].char_type), len(words))
        j = next((j for j in range(z, i, -1)
                  if "".join(w.surface for w in words[i:j]) in ja_words), None)
        j = i + 1 if j is None else j
        out.append("".join(w.surface for w in words[i:j]))
        i = j
    return out
