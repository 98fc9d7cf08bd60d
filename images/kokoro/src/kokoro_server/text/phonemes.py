"""Phoneme input: check it against Kokoro's vocabulary before anything is spoken."""
from __future__ import annotations

import re

from ..errors import ApiError

MAX_WORD = 510  # one pass of the model; a run without a space cannot be split


def check_phonemes(text: str, vocab: dict[str, int], max_word: int = MAX_WORD) -> str:
    """The phonemes as the model will get them (whitespace runs become one space), or
    ApiError(400, invalid_phonemes) naming the symbols Kokoro does not know."""
    text = re.sub(r"\s+", " ", text).strip()
    unknown = sorted({ch for ch in text if ch not in vocab})
    if unknown:
        shown = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in unknown[:12])
        more = f" and {len(unknown) - 12} more" if len(unknown) > 12 else ""
        raise ApiError(400, "invalid_phonemes",
                       f"input has {len(unknown)} symbol(s) outside Kokoro's phoneme "
                       f"vocabulary: {shown}{more}; POST /v1/audio/phonemize shows valid "
                       "phonemes for a text", "input")
    longest = max((len(w) for w in text.split(" ")), default=0)
    if longest > max_word:
        raise ApiError(400, "invalid_phonemes",
                       f"input has a run of {longest} phonemes without a space; at most "
                       f"{max_word} fit in one pass of the model", "input")
    return text
