"""GET /v1/audio/voices and GET /v1/models."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from ..schemas import MODELS
from ..text.g2p import LANGUAGES, available_languages
from .deps import State, require_key_and_quota

router = APIRouter(dependencies=[Depends(require_key_and_quota)])


@router.get("/v1/audio/voices")
def list_voices(st: State) -> dict:
    available = available_languages()
    voices = [{"id": v.id, "name": v.id, "lang_code": v.lang_code,
               "language": LANGUAGES.get(v.lang_code, v.lang_code), "gender": v.gender,
               "available": v.lang_code in available}
              for v in (st.voices.info[i] for i in st.voices.ids())]
    return {"voices": voices}


@router.get("/v1/models")
def list_models() -> dict:
    return {"object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "kokoro-deploy"}
                     for m in MODELS]}
