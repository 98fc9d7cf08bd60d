"""Grapheme-to-phoneme per Kokoro language code, offline only.

English (a, b) uses misaki's lexicon. With spaCy's en_core_web_sm installed it gets
part-of-speech tags (heteronyms such as "read"/"lead", currency, number reading in
context); without it a blank spaCy tokenizer plus a small rule tagger keeps the
lexicon, punctuation and plain number reading, and espeak-ng handles unknown words.
Spanish, French, Hindi, Italian and Portuguese use espeak-ng (espeakng-loader bundles
it). Japanese and Mandarin use misaki's ja (cutlet) and zh G2Ps (text/cjk.py), when
the image has the package's `cjk` extra.

Each G2P also says where every word's phonemes are (align.Word), for captions: English
from misaki's tokens, Japanese and Mandarin from their G2P's own words, the other
languages by pairing space-separated words.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

from ..errors import ApiError
from .align import Word, words_by_spaces, words_from_tokens

log = logging.getLogger(__name__)

LANGUAGES = {
    "a": "American English", "b": "British English", "e": "Spanish", "f": "French",
    "h": "Hindi", "i": "Italian", "j": "Japanese", "p": "Brazilian Portuguese",
    "z": "Mandarin Chinese",
}
ESPEAK_LANG = {"e": "es", "f": "fr-fr", "h": "hi", "i": "it", "p": "pt-br"}
# Aliases clients send (OpenAI-style and ISO codes) -> Kokoro's one-letter codes.
ALIASES = {"en-us": "a", "en": "a", "en-gb": "b", "es": "e", "fr": "f", "fr-fr": "f",
           "hi": "h", "it": "i", "ja": "j", "pt": "p", "pt-br": "p", "zh": "z"}

_PUNCT_TAGS = {",": ",", ".": ".", "!": ".", "?": ".", ":": ":", ";": ":", "-": ":",
               "–": ":", "—": ":", "(": "-LRB-", ")": "-RRB-", '"': "``", "“": "``",
               "”": "''", "'": "''", "…": ":", "$": "$", "£": "$", "€": "$"}


def normalize_lang(code: str | None) -> str | None:
    if code is None:
        return None
    low = code.strip().lower()
    low = ALIASES.get(low, low)
    if low not in LANGUAGES:
        raise ApiError(400, "unsupported_language",
                       f"unknown lang_code {code[:20]!r}; use one of "
                       f"{', '.join(sorted(LANGUAGES))}", "lang_code")
    return low


def english_mode(requested: str = "auto") -> str:
    """'full' when en_core_web_sm is installed, else 'lite' (see module doc)."""
    if requested in ("full", "lite"):
        return requested
    import spacy.util

    return "full" if spacy.util.is_package("en_core_web_sm") else "lite"


def reduced_english_warning(requested: str, mode: str) -> str | None:
    """The start-up warning for English in the reduced mode nobody asked for: without
    it, only /health tells (a word's part of speech picks its reading: "read", "live")."""
    if mode != "lite" or requested == "lite":
        return None
    return ("English (a, b) runs in its reduced G2P: spaCy's en_core_web_sm is not "
            "installed, so words read by part of speech may be misread. The kit's images "
            "install it (build argument SPACY_MODEL_WHEEL); set KOKORO_ENGLISH_G2P=lite "
            "to run without it knowingly.")


def _rule_tagger(doc):
    """Tags for punctuation and numbers: all misaki's lexicon needs tags for, short of
    a statistical tagger."""
    for tok in doc:
        if tok.text in _PUNCT_TAGS:
            tok.tag_ = _PUNCT_TAGS[tok.text]
        elif tok.like_num:
            tok.tag_ = "CD"
    return doc


def _register_rule_tagger() -> None:
    import spacy

    if "kokoro_rule_tagger" not in spacy.registry.factories:
        spacy.Language.component("kokoro_rule_tagger", func=_rule_tagger)


G2pFn = Callable[[str], tuple[str, list[Word]]]


def _make_english(british: bool, mode: str) -> G2pFn:
    import spacy
    from misaki import en
    from misaki.espeak import EspeakFallback

    fallback = EspeakFallback(british=british)
    if mode == "full":
        g2p = en.G2P(trf=False, british=british, fallback=fallback)
    else:
        # misaki.en.G2P.__init__ would try spacy.cli.download (network); build it by hand.
        g2p = en.G2P.__new__(en.G2P)
        g2p.version, g2p.british, g2p.unk = None, british, ""
        g2p.lexicon = en.Lexicon(british)
        g2p.fallback = fallback
        nlp = spacy.blank("en")
        _register_rule_tagger()
        nlp.add_pipe("kokoro_rule_tagger")
        g2p.nlp = nlp

    def run(text: str) -> tuple[str, list[Word]]:
        ps, tokens = g2p(_break_long_runs(text))
        return ps, words_from_tokens(tokens or [], ps, g2p.unk)

    return run


# misaki's English G2P takes about cubic time in the length of a token it does not know
# ("a@a@...": 100 characters 0.8 s, 150 characters 2.4 s); no English word is longer.
MAX_ENGLISH_RUN = 48
_LONG_RUN = re.compile(rf"\S{{{MAX_ENGLISH_RUN + 1},}}")


def _break_long_runs(text: str) -> str:
    """Runs without whitespace over MAX_ENGLISH_RUN characters, cut into pieces of it."""
    return _LONG_RUN.sub(lambda m: " ".join(
        m[0][i:i + MAX_ENGLISH_RUN] for i in range(0, len(m[0]), MAX_ENGLISH_RUN)), text)


def _by_spaces(g2p) -> G2pFn:
    def run(text: str) -> tuple[str, list[Word]]:
        ps = g2p(text)[0] or ""
        return ps, words_by_spaces(text, ps)

    return run


def _make_espeak(lang: str) -> G2pFn:
    from misaki.espeak import EspeakG2P

    return _by_spaces(EspeakG2P(language=ESPEAK_LANG[lang]))


def _make_cjk(lang: str) -> G2pFn:
    from . import cjk

    extra = cjk.EXTRA[lang]
    try:
        return cjk.make_ja() if lang == "j" else cjk.make_zh()
    except ImportError as exc:
        raise ApiError(400, "language_unavailable",
                       f"{LANGUAGES[lang]} needs the server package's '{extra}' extra "
                       f"(missing module {exc.name!r}), which this image was built without; "
                       f"rebuild it with LANGUAGE_EXTRAS=cjk (the default) or {extra}, or "
                       f"install kokoro-server[{extra}]", "lang_code") from exc


def available_languages() -> set[str]:
    """The languages this server can read text in (Japanese and Mandarin only where
    their extra is installed)."""
    return set(LANGUAGES) - {"j", "z"} | set(cjk_installed())


def cjk_installed() -> list[str]:
    """The CJK languages whose G2P dependencies are importable here."""
    import importlib.util

    need = {"j": ("fugashi", "unidic_lite", "jaconv", "mojimoji"),
            "z": ("jieba", "pypinyin", "cn2an", "ordered_set")}
    return [lang for lang, mods in need.items()
            if all(importlib.util.find_spec(m) for m in mods)]


class Phonemizer:
    """One G2P per language, built on first use; each guarded by a lock (espeak-ng and
    spaCy pipelines are not safe to share between threads)."""

    def __init__(self, english: str = "auto"):
        self.english = english_mode(english)
        self._g2p: dict[str, G2pFn] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._build_lock = threading.Lock()

    def _get(self, lang: str) -> tuple[G2pFn, threading.Lock]:
        with self._build_lock:
            if lang not in self._g2p:
                if lang in ("a", "b"):
                    self._g2p[lang] = _make_english(lang == "b", self.english)
                elif lang in ESPEAK_LANG:
                    self._g2p[lang] = _make_espeak(lang)
                else:
                    self._g2p[lang] = _make_cjk(lang)
                self._locks[lang] = threading.Lock()
            return self._g2p[lang], self._locks[lang]

    def warm(self) -> list[str]:
        """Build and run every installed CJK G2P once, so the first request does not pay
        for it (jieba builds its dictionary on first use: 0.6 s). Returns those warmed."""
        warmed = []
        for lang, sample in (("j", "こんにちは。"), ("z", "你好。")):
            if lang in cjk_installed():
                try:
                    self.align(sample, lang)
                except ApiError as exc:  # half installed: requests get the same 400
                    log.warning("%s", exc.message)
                    continue
                warmed.append(lang)
        return warmed

    def ensure(self, lang: str) -> None:
        """Build the language's G2P now; ApiError(400) if it is not installed."""
        self._get(lang)

    def align(self, text: str, lang: str) -> tuple[str, list[Word]]:
        """Phonemes (stripped) and where each word's phonemes are in them."""
        fn, lock = self._get(lang)
        with lock:
            ps, words = fn(text)
        ps = ps or ""
        lead, stripped = len(ps) - len(ps.lstrip()), ps.strip()
        return stripped, [w.shifted(-lead, len(stripped)) for w in words]

    def __call__(self, text: str, lang: str) -> str:
        return self.align(text, lang)[0]
