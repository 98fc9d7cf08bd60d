"""GET /health (ready only after load and warm-up) and GET /metrics (Prometheus)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from .deps import State, require_api_key

router = APIRouter()


@router.get("/health")
def health(st: State) -> JSONResponse:
    if not st.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ok", **st.engine.describe(),
                         "voices": len(st.voices.ids()), "english_g2p": st.phonemizer.english})


@router.get("/metrics", dependencies=[Depends(require_api_key)])
def metrics(st: State) -> Response:
    return Response(st.metrics.render(), media_type=CONTENT_TYPE_LATEST)
