"""Request and response shapes of the HTTP API."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

MODELS = ("kokoro", "tts-1", "tts-1-hd")


class SpeechRequest(BaseModel):
    """OpenAI's /v1/audio/speech body plus Kokoro's own fields (stream, lang_code,
    input_type, normalize).

    `instructions` is accepted and ignored (Kokoro has no instruction control);
    `stream_format` "audio" streams raw audio bytes, "sse" sends OpenAI's
    speech.audio.delta / speech.audio.done events. `input_type` "phonemes" speaks the
    input as Kokoro phonemes, bypassing G2P. `normalize` (default: the server's
    KOKORO_NORMALIZE) reads numbers, money, units... aloud for English. Unknown fields are
    ignored.
    """

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = "kokoro"
    input: StrictStr
    voice: StrictStr | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0, allow_inf_nan=False)
    stream: StrictBool = True
    lang_code: StrictStr | None = None
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: StrictStr | None = None
    input_type: Literal["text", "phonemes"] = "text"
    normalize: StrictBool | None = None


class CaptionedSpeechRequest(SpeechRequest):
    """The speech body; the answer is JSON (or JSON lines with `stream`) holding the
    audio and each word's start and end, plus SRT or WebVTT with `caption_format`."""

    stream: StrictBool = False
    caption_format: Literal["json", "srt", "vtt"] = "json"


class PhonemizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: StrictStr
    lang_code: StrictStr | None = None
    voice: StrictStr | None = None  # its language, when lang_code is not given
    normalize: StrictBool | None = None


class VoiceOut(BaseModel):
    id: str
    name: str
    lang_code: str
    language: str
    gender: str
