"""Input hygiene: reject what cannot be text, drop what cannot be spoken."""
from __future__ import annotations

import unicodedata

from ..errors import ApiError

_ALLOWED_CONTROLS = {"\t", "\n", "\r"}


def clean_input(text: str) -> str:
    """Return NFC text without invisible format characters; raise ApiError(400) for
    control characters, lone surrogates and Unicode noncharacters."""
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat == "Cc" and ch not in _ALLOWED_CONTROLS:
            raise ApiError(400, "invalid_characters",
                           f"input contains control character U+{ord(ch):04X} at index {i}",
                           "input")
        if cat == "Cs":
            raise ApiError(400, "invalid_characters",
                           f"input contains an unpaired surrogate U+{ord(ch):04X} at index {i}",
                           "input")
        cp = ord(ch)
        if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
            raise ApiError(400, "invalid_characters",
                           f"input contains the Unicode noncharacter U+{cp:04X} at index {i}",
                           "input")
    text = unicodedata.normalize("NFC", text)
    # Format characters (zero-width joiners, bidi overrides, soft hyphens) carry no sound.
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cf", "Co"))
    return text.replace("\r\n", "\n").replace("\r", "\n")


def has_speakable(text: str) -> bool:
    """True when the text holds at least one letter or digit (of any script)."""
    return any(unicodedata.category(ch)[0] in ("L", "N") for ch in text)
