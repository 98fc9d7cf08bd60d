"""POST /v1/audio/phonemize: text -> Kokoro phonemes and the model's token ids.

The phonemes are exactly what speech would speak for the same text and settings
(same normalisation, same sentence-by-sentence G2P, chunks joined by a space), so they
can be edited and sent back with `input_type: "phonemes"`.
"""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from ..errors import ApiError
from ..schemas import PhonemizeRequest
from ..text.g2p import normalize_lang
from .deps import State, require_key_and_quota
from .speech import check_text, normalized, require_ready

router = APIRouter(dependencies=[Depends(require_key_and_quota)])


@router.post("/v1/audio/phonemize")
async def phonemize(body: PhonemizeRequest, st: State) -> dict:
    require_ready(st)
    text = await st.text_work.run(check_text, body.input, st)
    lang = normalize_lang(body.lang_code)
    if lang is None:
        voice = body.voice or st.settings.default_voice
        lang = (await st.text_work.run(st.voices.resolve, voice))[1]
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, st.phonemizer.ensure, lang)  # 400 if unavailable
    # admitted like speech: it shares the G2P thread that streams need for their next
    # chunk, so it takes a place in the same bounded queue (or a 503)
    release = st.scheduler.admit()
    try:
        text, _ = await st.text_work.run(normalized, text, lang, body.normalize,
                                         st.settings.normalize)
        chunks = await st.scheduler.phonemize(text, lang)
    finally:
        release()
    if not chunks:
        raise ApiError(400, "no_speakable_text",
                       "the input has no text that can be spoken in this language", "input")
    phonemes = " ".join(c.phonemes for c in chunks)
    vocab = st.engine.vocab
    return {"phonemes": phonemes, "tokens": [vocab[c] for c in phonemes if c in vocab],
            "lang_code": lang}
