"""GET /health (ready after load and warm-up, while the engine works and the server
makes progress) and GET /metrics (Prometheus)."""
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
    broken = st.scheduler.engine_broken if st.scheduler else None
    if broken:
        # unhealthy, so the container's health check, the stack's verify and a load
        # balancer take this server out; the next pass that succeeds clears it
        return JSONResponse({"status": "engine_failing", "error": broken}, status_code=503)
    stalled = st.scheduler.stalled(st.settings.stall_timeout) if st.scheduler else None
    if stalled:
        return JSONResponse({"status": "stalled", "error": stalled}, status_code=503)
    return JSONResponse({"status": "ok", **st.engine.describe(),
                         "voices": len(st.voices.ids()), "english_g2p": st.phonemizer.english})


@router.get("/metrics", dependencies=[Depends(require_api_key)])
def metrics(st: State) -> Response:
    st.quotas.refresh()
    return Response(st.metrics.render(), media_type=CONTENT_TYPE_LATEST)
