"""Request and response shapes of the HTTP API."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator

MODELS = ("kokoro", "tts-1", "tts-1-hd")
# Formats whose streamed form is a complete, playable file as it stands (a client that
# saves the stream has a valid file). WAV and FLAC headers come before the audio and can
# only hold the true length once all of it is known.
STREAMABLE_FILES = ("mp3", "opus", "aac", "pcm")


class SpeechRequest(BaseModel):
    """OpenAI's /v1/audio/speech body plus Kokoro's own fields (stream, lang_code,
    input_type, normalize).

    `instructions` is accepted and ignored (Kokoro has no instruction control);
    `stream_format` "audio" streams raw audio bytes, "sse" sends OpenAI's
    speech.audio.delta / speech.audio.done events. `input_type` "phonemes" speaks the
    input as Kokoro phonemes, bypassing G2P. `normalize` (default: the server's
    KOKORO_NORMALIZE) reads numbers, money, units... aloud for English. Unknown fields are
    ignored.

    `stream` left out streams the formats in STREAMABLE_FILES and sends WAV and FLAC
    whole: OpenAI's clients never send it, and a user who saves their answer to a file
    must get a file with true sizes (a streamed WAV reads as 24.8 hours long).
    """

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = "kokoro"
    input: StrictStr
    voice: StrictStr | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0, allow_inf_nan=False)
    stream: StrictBool | None = None
    lang_code: StrictStr | None = None
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: StrictStr | None = None
    input_type: Literal["text", "phonemes"] = "text"
    normalize: StrictBool | None = None

    @model_validator(mode="after")
    def _default_stream(self):
        if self.stream is None:
            self.stream = self.response_format in STREAMABLE_FILES
        return self


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
