"""A streamed response that always closes what it streams.

Starlette's StreamingResponse leaves its body generator suspended when sending fails or
is cancelled (the client hung up, or stopped reading past KOKORO_SEND_TIMEOUT): the
generator's cleanup, which stops the synthesis and gives the request's admission place
back, would then wait for the garbage collector. Closing it here makes that happen
as soon as the response ends, however it ends.
"""
from __future__ import annotations

from fastapi.responses import StreamingResponse

# no buffering by a proxy in front (nginx's X-Accel), no caching of a live stream
STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}


class ClosingStreamingResponse(StreamingResponse):
    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
