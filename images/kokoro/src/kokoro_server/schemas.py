"""Request and response shapes of the HTTP API."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

MODELS = ("kokoro", "tts-1", "tts-1-hd")


class SpeechRequest(BaseModel):
    """OpenAI's /v1/audio/speech body plus Kokoro's own fields (stream, lang_code).

    `instructions` is accepted and ignored (Kokoro has no instruction control);
    `stream_format` "audio" streams raw audio bytes, "sse" sends OpenAI's
    speech.audio.delta / speech.audio.done events. Unknown fields are ignored.
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


class VoiceOut(BaseModel):
    id: str
    name: str
    lang_code: str
    language: str
    gender: str
