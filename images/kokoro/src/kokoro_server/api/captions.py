"""POST /v1/audio/speech/captioned: audio plus each word's start and end.

Word times come from the durations the model predicted for the very run that made the
audio (see text/align.py), offset by where each chunk sits in the whole response, so
they hold across chunks. Whole answer: one JSON object. `stream: true`: JSON lines, one
object per chunk with its audio bytes and its words, then a closing "done" object.
"""
from __future__ import annotations

import asyncio
import base64
import json
from contextlib import aclosing

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ..engines.base import FRAME_SAMPLES
from ..errors import ApiError
from ..schemas import CaptionedSpeechRequest
from ..text.align import Captioner, TimedWord
from ..text.subtitles import render
from .deps import State, require_key_and_quota
from .speech import admit_and_plan, caller, prepare, spoken_pieces
from .streaming import STREAM_HEADERS, ClosingStreamingResponse

router = APIRouter(dependencies=[Depends(require_key_and_quota)])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@router.post("/v1/audio/speech/captioned")
async def captioned_speech(body: CaptionedSpeechRequest, request: Request, st: State):
    req = await prepare(body, st)
    if not st.engine.has_durations:
        raise ApiError(501, "timestamps_unavailable",
                       f"the {st.engine.name} engine's model does not report durations, "
                       "so word timestamps are not available", None)
    release, plan = await admit_and_plan(req, st)
    rate = st.engine.sample_rate
    captioner = Captioner(st.engine.vocab, "" if req.phonemes else req.text, req.spans,
                          FRAME_SAMPLES / rate)
    fmt = body.response_format

    async def pieces():
        """(encoded bytes, words, chunk or None for the tail, chunk start)."""
        async with aclosing(spoken_pieces(st, plan, req, body, release, **caller(request))) as it:
            async for data, spoken in it:
                if spoken is None:
                    yield data, [], None, captioner.offset
                    continue
                start = captioner.offset
                words = captioner.add(spoken.chunk.words, spoken.chunk.phonemes,
                                      spoken.durations, spoken.lead_seconds, spoken.seconds)
                yield data, words, spoken, start

    def extra(words: list[TimedWord]) -> dict:
        return {"captions": render(words, body.caption_format)} \
            if body.caption_format != "json" else {}

    if not body.stream:
        audio, words = [], []
        try:
            async with aclosing(pieces()) as it:
                async for data, chunk_words, _, _ in it:
                    audio.append(data)
                    words.extend(chunk_words)
        except asyncio.CancelledError:
            return Response(status_code=499)
        return JSONResponse({"audio": _b64(b"".join(audio)), "audio_format": fmt,
                             "sample_rate": rate, "duration": round(captioner.offset, 3),
                             "words": [w.as_dict() for w in words], **extra(words)})

    async def lines():
        words: list[TimedWord] = []
        async with aclosing(pieces()) as it:
            async for data, chunk_words, spoken, start in it:
                if spoken is None:
                    done = {"type": "done", "audio": _b64(data),
                            "duration": round(captioner.offset, 3), **extra(words)}
                    yield (json.dumps(done) + "\n").encode()
                    continue
                words.extend(chunk_words)
                line = {"type": "chunk", "index": spoken.chunk.index, "audio": _b64(data),
                        "start": round(start, 3), "end": round(captioner.offset, 3),
                        "words": [w.as_dict() for w in chunk_words]}
                yield (json.dumps(line) + "\n").encode()

    return ClosingStreamingResponse(lines(), media_type="application/x-ndjson",
                                    headers=STREAM_HEADERS)
