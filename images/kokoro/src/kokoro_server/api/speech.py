"""POST /v1/audio/speech: OpenAI-compatible text-to-speech."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from ..audio.encode import MEDIA_TYPES, Encoder
from ..errors import ApiError
from ..schemas import MODELS, SpeechRequest
from ..text.clean import clean_input, has_speakable
from ..text.g2p import normalize_lang
from .deps import State, require_api_key

log = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(require_api_key)])


def _validate(body: SpeechRequest, st) -> tuple[str, np.ndarray, str]:
    if body.model not in MODELS:
        raise ApiError(400, "model_not_found",
                       f"unknown model {body.model[:50]!r}; use one of {', '.join(MODELS)}",
                       "model")
    limit = st.settings.max_input_chars
    if len(body.input) > limit:
        raise ApiError(413, "input_too_long",
                       f"input is {len(body.input)} characters; the limit is {limit}", "input")
    text = clean_input(body.input)
    if not text.strip():
        raise ApiError(400, "empty_input", "input is empty or only whitespace", "input")
    if not has_speakable(text):
        raise ApiError(400, "no_speakable_text", "input has no letters or digits to speak",
                       "input")
    lang = normalize_lang(body.lang_code)
    pack, voice_lang = st.voices.resolve(body.voice or st.settings.default_voice)
    return text, pack, lang or voice_lang


@router.post("/v1/audio/speech")
async def create_speech(body: SpeechRequest, request: Request, st: State):
    if not st.ready:
        raise ApiError(503, "not_ready", "the model is still loading",
                       headers={"Retry-After": "5"})
    text, pack, lang = _validate(body, st)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, st.phonemizer.ensure, lang)  # 400 if unavailable
    release = st.scheduler.admit()
    try:
        plan = await st.scheduler.plan(text, lang)
    except BaseException:
        release()
        raise
    started = time.perf_counter()
    metrics = st.metrics
    fmt = body.response_format

    async def audio_chunks():
        """Encoded audio pieces; releases the admission place however it ends."""
        encoder = Encoder(fmt, stream=body.stream)
        first = True
        try:
            async for spoken in st.scheduler.speak(plan, pack, body.speed):
                if first:
                    metrics.first_audio.observe(time.perf_counter() - started)
                    first = False
                data = encoder.feed(spoken.audio)
                if data:
                    yield data
                if not body.stream and await request.is_disconnected():
                    raise asyncio.CancelledError("client disconnected")
            tail = encoder.finish()
            if tail:
                yield tail
            metrics.latency.observe(time.perf_counter() - started)
        except (asyncio.CancelledError, GeneratorExit):
            metrics.cancelled.inc()
            raise
        finally:
            release()

    if not body.stream:
        try:
            data = b"".join([piece async for piece in audio_chunks()])
        except asyncio.CancelledError:
            return Response(status_code=499)
        return Response(data, media_type=MEDIA_TYPES[fmt])

    if body.stream_format == "sse":
        async def events():
            async for piece in audio_chunks():
                event = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
                yield f"data: {json.dumps(event)}\n\n".encode()
            yield b'data: {"type": "speech.audio.done"}\n\n'

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return StreamingResponse(audio_chunks(), media_type=MEDIA_TYPES[fmt],
                             headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"})
