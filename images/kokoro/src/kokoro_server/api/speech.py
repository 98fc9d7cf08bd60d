"""POST /v1/audio/speech: OpenAI-compatible text-to-speech (text or Kokoro phonemes).

`prepare` and `spoken_pieces` are shared with the captioned endpoint (api/captions.py),
so both validate, normalise, admit and stream the same way.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ..audio.encode import MEDIA_TYPES, Encoder
from ..audio_cache import MAGIC, Entry, make_key
from ..errors import ApiError
from ..scheduler import Plan, SpokenChunk
from ..schemas import MODELS, SpeechRequest
from ..settings import SAMPLE_RATE
from ..text.clean import clean_input, has_speakable
from ..text.g2p import normalize_lang
from ..text.normalize import Span, normalize
from ..text.phonemes import check_phonemes
from .deps import State, require_key_and_quota
from .streaming import STREAM_HEADERS, ClosingStreamingResponse

log = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(require_key_and_quota)])


def require_ready(st) -> None:
    if not st.ready:
        raise ApiError(503, "not_ready", "the model is still loading",
                       headers={"Retry-After": "5"})


def check_text(raw: str, st) -> str:
    """Length cap, cleaning, emptiness: the checks every text input gets."""
    limit = st.settings.max_input_chars
    if len(raw) > limit:
        raise ApiError(413, "input_too_long",
                       f"input is {len(raw)} characters; the limit is {limit}", "input")
    text = clean_input(raw)
    if not text.strip():
        raise ApiError(400, "empty_input", "input is empty or only whitespace", "input")
    if not has_speakable(text):
        raise ApiError(400, "no_speakable_text", "input has no letters or digits to speak",
                       "input")
    return text


def normalized(text: str, lang: str, requested: bool | None,
               default: bool) -> tuple[str, tuple[Span, ...]]:
    """English (a, b) text normalisation, as the request asks or else by default."""
    enabled = default if requested is None else requested
    if not enabled or lang not in ("a", "b"):
        return text, ()
    result = normalize(text, british=lang == "b")
    return result.text, result.spans


@dataclass
class Prepared:
    text: str  # what is spoken: normalised text, or checked phonemes
    pack: np.ndarray
    lang: str
    phonemes: bool
    spans: tuple[Span, ...] = ()  # normalisation replacements in `text`


async def prepare(body: SpeechRequest, st) -> Prepared:
    """Every check that can fail, before any audio (all errors above come from here)."""
    require_ready(st)
    if body.model not in MODELS:
        raise ApiError(400, "model_not_found",
                       f"unknown model {body.model[:50]!r}; use one of {', '.join(MODELS)}",
                       "model")
    # text work runs off the event loop (text_work.py): other requests and /health go on
    # while a long or hostile input is read
    work = st.text_work.run
    text = await work(check_text, body.input, st)
    lang = normalize_lang(body.lang_code)
    pack, voice_lang = await work(st.voices.resolve, body.voice or st.settings.default_voice)
    lang = lang or voice_lang
    if body.input_type == "phonemes":
        return Prepared(await work(check_phonemes, text, st.engine.vocab), pack, lang, True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, st.phonemizer.ensure, lang)  # 400 if unavailable
    text, spans = await work(normalized, text, lang, body.normalize, st.settings.normalize)
    return Prepared(text, pack, lang, False, spans)


async def admit_and_plan(req: Prepared, st) -> tuple[Callable[[], None], Plan]:
    """Take an admission place (or 503) and phonemize the first chunk (or 400)."""
    release = st.scheduler.admit()
    try:
        return release, await st.scheduler.plan(req.text, req.lang, phonemes=req.phonemes)
    except BaseException:
        release()
        raise


def caller(request: Request) -> dict:
    """What spoken_pieces needs to know of an HTTP caller: its key's name (for its
    quota) and how to tell that it went away."""
    return {"key": getattr(request.state, "kokoro_key", None),
            "disconnected": request.is_disconnected}


async def spoken_pieces(st, plan: Plan, req: Prepared, body: SpeechRequest,
                        release: Callable[[], None], key: str | None = None,
                        disconnected: Callable[[], Awaitable[bool]] | None = None,
                        ) -> AsyncIterator[tuple[bytes, SpokenChunk | None]]:
    """(encoded bytes, the chunk they came from) in order, then (encoder tail, None);
    records the request's metrics and releases its admission place however it ends.

    `key`: the API key's name whose quota the audio counts against (None: no key).
    `disconnected`: asked after each chunk of a whole (not streamed) answer, which
    sends nothing until the end; a streamed answer learns it when a send fails. HTTP
    routes pass caller(request); the Wyoming server (wyoming_server.py) streams."""
    started = time.perf_counter()
    metrics = st.metrics
    encoder = Encoder(body.response_format, stream=body.stream)
    first = True
    try:
        async for spoken in st.scheduler.speak(plan, req.pack, body.speed):
            if first:
                metrics.first_audio.observe(time.perf_counter() - started)
                first = False
            st.quotas.add_audio(key, spoken.seconds)
            yield encoder.feed(spoken.audio), spoken
            if not body.stream and disconnected is not None and await disconnected():
                raise asyncio.CancelledError("client disconnected")
        yield encoder.finish(), None
        metrics.latency.observe(time.perf_counter() - started)
    except (asyncio.CancelledError, GeneratorExit):
        metrics.cancelled.inc()
        raise
    finally:
        release()


def cache_key(st, req: Prepared, body: SpeechRequest) -> str:
    """Every part that changes the bytes of a speech response (the salt stands for the
    model file and the code: chunking, encoders' settings)."""
    s = st.settings
    return make_key({
        "layout": MAGIC.decode(), "salt": st.cache_salt,
        "engine": s.engine, "precision": s.precision, "rate": SAMPLE_RATE,
        "voice": hashlib.sha256(req.pack.tobytes()).hexdigest(), "speed": body.speed,
        "text": req.text, "phonemes": req.phonemes, "lang": req.lang,
        "format": body.response_format, "stream": body.stream,
        "stream_format": body.stream_format if body.stream else None})


def look_up(st, req: Prepared, body: SpeechRequest):
    """(the request's cache key, its entry or None): one trip off the event loop."""
    key = cache_key(st, req, body)
    return key, st.audio_cache.get(key)


async def stored(pieces: AsyncIterator[bytes], st, key: str, media_type: str,
                 seconds: list[float]) -> AsyncIterator[bytes]:
    """Pass `pieces` through; once the last was sent (never after an error or a client
    that left, whose GeneratorExit or CancelledError ends this at a yield), store them."""
    kept: list[bytes] | None = []
    size = 0
    async with aclosing(pieces):
        async for piece in pieces:
            if kept is not None:
                size += len(piece)
                kept.append(piece)
                if size > st.audio_cache.max_bytes:
                    kept = None  # too big to keep: not held in memory either
            yield piece
    if kept is not None:
        entry = Entry(b"".join(kept), media_type, sum(seconds))
        await asyncio.to_thread(st.audio_cache.put, key, entry)


@router.post("/v1/audio/speech")
async def create_speech(body: SpeechRequest, request: Request, st: State):
    req = await prepare(body, st)
    cache, key = st.audio_cache, None
    if cache is not None:
        key, hit = await asyncio.to_thread(look_up, st, req, body)
        if hit is not None:
            # no admission place: nothing is synthesized; the quota still counts the audio
            st.quotas.add_audio(caller(request)["key"], hit.seconds)
            return Response(hit.body, media_type=hit.media_type, headers={"X-Cache": "hit"})
    release, plan = await admit_and_plan(req, st)
    fmt = body.response_format
    seconds: list[float] = []  # of each chunk spoken, for the cache entry

    async def audio_chunks():
        # aclosing: a client that goes away closes the pipeline now, not at GC
        pieces = spoken_pieces(st, plan, req, body, release, **caller(request))
        async with aclosing(pieces):
            async for data, spoken in pieces:
                if spoken is not None:
                    seconds.append(spoken.seconds)
                if data:
                    yield data

    headers = {} if key is None else {"X-Cache": "miss"}
    if not body.stream:
        try:
            data = b"".join([piece async for piece in audio_chunks()])
        except asyncio.CancelledError:
            return Response(status_code=499)
        if key is not None:
            await asyncio.to_thread(cache.put, key, Entry(data, MEDIA_TYPES[fmt],
                                                          sum(seconds)))
        return Response(data, media_type=MEDIA_TYPES[fmt], headers=headers)

    if body.stream_format == "sse":
        async def events():
            async with aclosing(audio_chunks()) as pieces:
                async for piece in pieces:
                    event = {"type": "speech.audio.delta",
                             "audio": base64.b64encode(piece).decode()}
                    yield f"data: {json.dumps(event)}\n\n".encode()
            yield b'data: {"type": "speech.audio.done"}\n\n'

        content, media_type = events(), "text/event-stream"
        headers["Cache-Control"] = "no-cache"
    else:
        content, media_type = audio_chunks(), MEDIA_TYPES[fmt]
        headers.update(STREAM_HEADERS)
    if key is not None:
        content = stored(content, st, key, media_type, seconds)
    return ClosingStreamingResponse(content, media_type=media_type, headers=headers)
