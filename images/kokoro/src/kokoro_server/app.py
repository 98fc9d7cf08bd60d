"""Wire settings, routes and the model's lifespan into one ASGI app; `main` runs it."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__, assets
from .api import captions, ops, phonemes, speech, voices, web
from .audio_cache import AudioCache
from .engines import load_engine
from .engines.base import Engine
from .errors import ApiError, StartupError
from .metrics import Metrics
from .quota import Quotas
from .scheduler import Scheduler
from .settings import Settings, SettingsError
from .text.g2p import Phonemizer, reduced_english_warning
from .text_work import TextWork
from .voices import VoiceStore
from .wyoming_server import WyomingServer

log = logging.getLogger("kokoro_server")

WARMUP_TEXT = "Hello, this is a warm-up sentence for the speech engine."


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    engine: Engine | None = None
    voices: VoiceStore | None = None
    phonemizer: Phonemizer | None = None
    scheduler: Scheduler | None = None
    text_work: TextWork | None = None
    ready: bool = False
    quotas: Quotas | None = None  # per API key (made from the settings when not given)
    named_keys: tuple[tuple[str, str], ...] = ()
    wyoming: WyomingServer | None = None  # while KOKORO_WYOMING_PORT serves
    audio_cache: AudioCache | None = None  # with KOKORO_AUDIO_CACHE_DIR
    # the model file's manifest sha256 and this package's code: part of each cache key,
    # so an upgrade that changes chunking or encoding never serves the old bytes
    cache_salt: str = ""

    def __post_init__(self):
        self.named_keys = self.settings.named_keys()
        if self.quotas is None:
            self.quotas = Quotas(self.settings, self.metrics)


def load(state: AppState) -> None:
    """Verify files, load voices and the model, warm up. Raises StartupError."""
    s = state.settings
    t0 = time.perf_counter()
    found = assets.verify(s)
    state.voices = VoiceStore.from_files(found.voices)
    state.engine = load_engine(s, found)
    if s.audio_cache_dir and state.audio_cache is None:
        model = assets.Manifest.load(s.manifest).artifacts[s.model_file].sha256
        state.cache_salt = hashlib.sha256((model + code_digest()).encode()).hexdigest()
        state.audio_cache = open_audio_cache(s, state.metrics)
    state.phonemizer = Phonemizer(s.english_g2p)
    warning = reduced_english_warning(s.english_g2p, state.phonemizer.english)
    if warning:
        log.warning(warning)
    warmed = state.phonemizer.warm()
    state.scheduler = Scheduler(state.engine, state.phonemizer, state.metrics,
                                workers=s.engine_workers(state.engine.device),
                                max_queue=s.max_queue,
                                batch_tokens=s.batch_tokens,
                                idle_unload_seconds=s.idle_unload_seconds)
    state.text_work = TextWork(threads=2, capacity=state.scheduler.capacity,
                               budget=s.text_budget)
    lang = state.voices.info[s.default_voice].lang_code
    pack, _ = state.voices.resolve(s.default_voice)
    phonemes = state.phonemizer(WARMUP_TEXT, lang if lang in ("a", "b") else "a")
    state.scheduler.set_probe(phonemes, pack)
    if s.warmup:
        state.engine.warm_up(phonemes, pack)
    state.ready = True
    state.metrics.ready.set(1)
    log.info("ready in %.1f s: engine=%s device=%s voices=%d english_g2p=%s cjk=%s",
             time.perf_counter() - t0, state.engine.name, state.engine.device,
             len(state.voices.ids()), state.phonemizer.english, ",".join(warmed) or "none")


def code_digest() -> str:
    """sha256 over this package's Python files (about 50, read once at start)."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def open_audio_cache(s: Settings, metrics: Metrics) -> AudioCache:
    """The cache in KOKORO_AUDIO_CACHE_DIR, made if missing; StartupError if unusable."""
    folder = Path(s.audio_cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
        return AudioCache(folder, s.audio_cache_max_bytes, on_hit=metrics.cache_hits.inc,
                          on_miss=metrics.cache_misses.inc,
                          on_evict=metrics.cache_evictions.inc,
                          on_size=metrics.cache_bytes.set)
    except OSError as exc:
        raise StartupError(
            f"KOKORO_AUDIO_CACHE_DIR={folder} is not a writable folder: "
            f"{exc.strerror or exc}; give the server's user a folder it can write (a "
            "volume), or leave KOKORO_AUDIO_CACHE_DIR empty for no cache") from exc


class RequestMetrics:
    """Pure ASGI middleware counting responses by route and status (streams intact)."""

    ROUTES: ClassVar[frozenset[str]] = frozenset(
        {"/v1/audio/speech", "/v1/audio/speech/captioned", "/v1/audio/phonemize",
         "/v1/audio/voices", "/v1/models", "/health", "/metrics"})

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.ROUTES else "other"
        status = {"code": 500}

        async def wrapped(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()


# The routes that read a speech body and stream audio back.
SPEECH_PATHS = frozenset({"/v1/audio/speech", "/v1/audio/speech/captioned", "/v1/audio/phonemize"})


def max_body_bytes(settings: Settings) -> int:
    """The largest speech body that can hold an allowed input: JSON may spend up to 6
    bytes on one character (\\uXXXX escapes), plus room for the other fields."""
    return settings.max_input_chars * 6 + 65536


class BodyLimit:
    """Refuse a speech body too large to hold an allowed input: at once where its
    Content-Length says so, and otherwise by counting the bytes as they arrive (a
    chunked body, or a Content-Length that lies), never holding more than the limit.
    The body is read here, before admission, and handed to the route whole; a client
    that pauses for `idle_seconds` while sending it gets 408 and its connection back."""

    def __init__(self, app, max_bytes: int, idle_seconds: float):
        self.app = app
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds

    def _too_long(self, size: str) -> JSONResponse:
        return _error(ApiError(
            413, "input_too_long",
            f"request body of {size} bytes is over the limit of {self.max_bytes} bytes; "
            "send less input per request (split long texts)", "input"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in SPEECH_PATHS:
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self._too_long(str(int(length)))(scope, receive, send)
        parts, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.idle_seconds)
            except TimeoutError:
                return await _error(ApiError(
                    408, "request_timeout",
                    f"the request body stopped arriving for {self.idle_seconds:g} s after "
                    f"{size} bytes; send the whole body at once"))(scope, receive, send)
            if message["type"] != "http.request":
                return None  # the client left before its body was complete
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_bytes:
                return await self._too_long(f"over {size}")(scope, receive, send)
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        handed = False

        async def replay():
            # the whole body once, then the client's own messages (its disconnect)
            nonlocal handed
            if handed:
                return await receive()
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


class SendDeadline:
    """A client that leaves a speech response unread for `seconds` loses it: the send
    that waited is abandoned, the synthesis behind it stops and its admission place is
    given back, and the connection is closed. Without it, clients that stop reading
    hold every place of the queue for as long as they keep the connection open."""

    def __init__(self, app, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in SPEECH_PATHS:
            return await self.app(scope, receive, send)
        stalled = False

        async def send_with_deadline(message):
            nonlocal stalled
            try:
                await asyncio.wait_for(send(message), self.seconds)
            except TimeoutError:
                stalled = True
                raise

        try:
            await self.app(scope, receive, send_with_deadline)
        except TimeoutError:
            if not stalled:
                raise
            log.warning("%s %s: the client read nothing for %.0f s; response dropped",
                        scope.get("method"), scope["path"], self.seconds)


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def create_app(settings: Settings, state: AppState | None = None) -> FastAPI:
    state = state or AppState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not state.ready:
            import anyio

            await anyio.to_thread.run_sync(load, state)
        if settings.wyoming_port:
            # on uvicorn's own loop: Wyoming's syntheses share the scheduler with HTTP's
            wyoming = WyomingServer(state, max_event_bytes=max_body_bytes(settings))
            try:
                await wyoming.start()
            except OSError as exc:
                raise StartupError(
                    f"cannot listen for Wyoming on {settings.wyoming_bind}:"
                    f"{settings.wyoming_port}: {exc.strerror or exc}; free the port or set "
                    "another KOKORO_WYOMING_PORT (0 turns Wyoming off)") from exc
            state.wyoming = wyoming
        yield
        if state.wyoming:
            await state.wyoming.close()
            state.wyoming = None
        if state.scheduler:
            state.scheduler.close()
        if state.text_work:
            state.text_work.close()

    app = FastAPI(title="Kokoro TTS", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.kokoro = state
    app.include_router(speech.router)
    app.include_router(captions.router)
    app.include_router(phonemes.router)
    app.include_router(voices.router)
    app.include_router(ops.router)
    app.include_router(web.router)  # /web: the browser player (no API key to load it)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        err = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "json_invalid":
            return _error(ApiError(400, "invalid_json", "request body is not valid JSON"))
        param = loc[0] if loc else None
        if err.get("type") == "missing":
            msg = f"missing required field {param!r}"
        else:
            msg = f"invalid value for {param or 'body'}: {err.get('msg', 'invalid')}"
        code = "invalid_" + (param or "body") if param in (
            "speed", "response_format", "voice", "input", "stream", "model", "input_type",
            "normalize", "caption_format") else "invalid_request"
        if param == "response_format":
            code = "unsupported_format"
        return _error(ApiError(400, code, msg, param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(ApiError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unhandled(_: Request, exc: Exception):
        log.exception("unhandled error")
        return _error(ApiError(500, "internal_error", "internal server error"))

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes(settings),
                       idle_seconds=settings.send_timeout)
    app.add_middleware(SendDeadline, seconds=settings.send_timeout)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"kokoro-server: configuration error: {exc}")
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = AppState(settings)
    try:
        load(state)
    except StartupError as exc:
        sys.exit(f"kokoro-server: refusing to start: {exc}")
    uvicorn.run(create_app(settings, state), host=settings.host, port=settings.port,
                log_level=settings.log_level, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
