"""Home Assistant's Wyoming protocol beside the HTTP API (KOKORO_WYOMING_PORT).

Wyoming is JSON lines over TCP, each event a header line, then optional data and a
binary payload (the `wyoming` package defines the events; its own server is not used
here, see `Connection.read_event`). What is served, on the app's own event loop:

* describe -> info: one TTS program with every voice, its language as a BCP-47 tag
  (LANGUAGE_TAGS), installed where this image reads that language.
* synthesize(text, voice) -> audio-start, audio-chunk..., audio-stop: 24 kHz 16-bit mono
  PCM. The voice is picked by name (a blend such as af_bella(2)+af_sky(1) works too),
  else by language (the default voice where it speaks that language, else the
  language's first voice), else KOKORO_DEFAULT_VOICE.
* synthesize-start, synthesize-chunk..., synthesize-stop -> (audio-start, chunks,
  audio-stop) per group of complete sentences as the text arrives, then
  synthesize-stopped: Home Assistant's streaming TTS, fed by an LLM's reply. The whole
  message it also sends as a `synthesize` inside the stream (for servers without
  streaming) is ignored there, as wyoming-piper does.

Every synthesis takes the HTTP API's path (api/speech.py: prepare, admit_and_plan,
spoken_pieces): the same length limit, text budget, normalisation, admission places and
queue, engine and metrics. A request the HTTP API answers with an error status gets an
`error` event (its `code` is the HTTP API's error code), and the connection is closed
after it, as wyoming-piper does: Home Assistant's one-shot reader otherwise waits for an
audio-stop that never comes. A client that goes away or reads nothing for
KOKORO_SEND_TIMEOUT loses its synthesis and its place at the next audio it is sent.
Requests are counted in kokoro_requests_total{route="wyoming"} (one per synthesize, one
per stream) with the status the HTTP API would have answered.

At most KOKORO_WYOMING_MAX_CONNECTIONS connections are served at once: one more gets an
error event (code `server_busy`) and is closed. A connection that sends nothing for
KOKORO_WYOMING_IDLE_SECONDS while the server waits for its next event gets an error event
(code `idle_timeout`) and is closed, freeing its slot; time spent answering it (speaking
to it) does not count.

There is no authentication in the protocol: no API key, so no per-key quota either.
settings.py refuses a bind that is not loopback unless KOKORO_WYOMING_UNAUTHENTICATED.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from contextlib import aclosing

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from . import __version__
from .api.speech import admit_and_plan, prepare, spoken_pieces
from .errors import ApiError
from .schemas import SpeechRequest
from .settings import SAMPLE_RATE
from .text.g2p import ALIASES, LANGUAGES, available_languages

log = logging.getLogger(__name__)

ROUTE = "wyoming"  # the route label of kokoro_requests_total
WIDTH, CHANNELS = 2, 1  # 16-bit mono
SAMPLES_PER_EVENT = SAMPLE_RATE // 4  # audio-chunk events of a quarter second
# Kokoro's language codes as BCP-47 tags, as Home Assistant's pipelines name languages
LANGUAGE_TAGS = {"a": "en-US", "b": "en-GB", "e": "es", "f": "fr", "h": "hi", "i": "it",
                 "j": "ja", "p": "pt-BR", "z": "zh"}
ATTRIBUTION = Attribution(name="hexgrad", url="https://huggingface.co/hexgrad/Kokoro-82M")
VOICES_VERSION = "1.0"  # Kokoro-82M v1.0's voice packs
# The end of a complete sentence in streamed text: a terminator (closing quotes and
# brackets included) then white space, a CJK terminator, or a line break.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？]+[」』”’）]*\s*|\n\s*")


class ClientGone(Exception):
    """The client closed the connection or read nothing for KOKORO_SEND_TIMEOUT."""


class Idle(Exception):
    """The client sent no event for KOKORO_WYOMING_IDLE_SECONDS."""


class ProtocolError(Exception):
    """The bytes are no Wyoming event (or one over the size limit); the connection ends."""


def language_tag(lang: str) -> str:
    return LANGUAGE_TAGS.get(lang, lang)


def language_code(tag: str) -> str | None:
    """A client's language ('en-GB', 'en_us', 'pt', 'ja') -> Kokoro's code, or None."""
    low = tag.strip().lower().replace("_", "-")
    for code, known in LANGUAGE_TAGS.items():
        if low == known.lower():
            return code
    low = ALIASES.get(low, low)
    if low in LANGUAGES:
        return low
    return ALIASES.get(low.split("-")[0])


def describe(st) -> Info:
    """The info event: one TTS program holding every voice the server loaded."""
    readable = available_languages()
    voices = [
        TtsVoice(name=v.id, attribution=ATTRIBUTION, installed=v.lang_code in readable,
                 description=f"{v.id} ({v.gender})", version=VOICES_VERSION,
                 languages=[language_tag(v.lang_code)])
        for v in (st.voices.info[vid] for vid in st.voices.ids())]
    program = TtsProgram(
        name="kokoro", attribution=ATTRIBUTION, installed=True,
        description="Kokoro-82M text-to-speech (kokoro-deploy)", version=__version__,
        voices=voices, supports_synthesize_streaming=True)
    return Info(tts=[program])


def pick_voice(st, voice: SynthesizeVoice | None) -> str:
    """The voice to speak with: by name, else by language, else the default voice."""
    default = st.settings.default_voice
    if voice is None or (voice.name is None and voice.language is None):
        return default
    if voice.name is not None:
        return voice.name
    lang = language_code(voice.language)
    info = st.voices.info
    if lang is not None and info[default].lang_code == lang:
        return default
    for vid in st.voices.ids():
        if info[vid].lang_code == lang:
            return vid
    tags = sorted({language_tag(v.lang_code) for v in info.values()})
    raise ApiError(400, "unsupported_language",
                   f"no voice speaks {voice.language[:20]!r}; the languages are "
                   f"{', '.join(tags)}", "voice")


def sentences_end(text: str) -> int:
    """Where the complete sentences of streamed `text` end (0: none is complete yet)."""
    end = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
    return end


def parse(cls, event: Event):
    """The event as `cls` (Synthesize, SynthesizeStart, SynthesizeChunk), its text and
    voice of the right types, or a 400 naming what is wrong."""
    try:
        parsed = cls.from_event(event)
    except (KeyError, TypeError, AttributeError, ValueError):
        parsed = None
    text = getattr(parsed, "text", "")
    voice = getattr(parsed, "voice", None)
    names = (voice.name, voice.language) if voice is not None else ()
    if parsed is None or not isinstance(text, str) or not all(
            isinstance(v, str | None) for v in names):
        raise ApiError(400, "invalid_event",
                       f"malformed {event.type!r} event: its text must be a string, its "
                       "voice an object with a string name or language", "text")
    return parsed


def _message(exc: ApiError) -> str:
    text = exc.message
    if exc.code == "voice_not_found":
        # the HTTP message points at GET /v1/audio/voices; say how a Wyoming client finds them
        text = (text.split(";")[0] + "; a Wyoming describe lists the voices (Home "
                "Assistant offers them as this service's voices), as does GET "
                "/v1/audio/voices on the HTTP API")
    if "Retry-After" in exc.headers:
        text += f" (in about {exc.headers['Retry-After']} s)"
    return text


class Connection:
    """One client's events, handled in order."""

    def __init__(self, st, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_event_bytes: int, send_timeout: float, idle_seconds: float = 0.0):
        self.st = st
        self.reader = reader
        self.writer = writer
        self.max_event_bytes = max_event_bytes
        self.send_timeout = send_timeout
        self.idle_seconds = idle_seconds  # 0: wait for the next event for ever
        self.stream: SynthesizeStart | None = None  # an open synthesize-start
        self.buffer = ""  # streamed text not yet spoken
        self.streamed = 0  # characters streamed so far
        self.open = False  # a request (synthesize, or a stream) not yet counted
        self.lost = False  # the connection broke (the client reset it)
        self.closing = False

    # ----- the wire ------------------------------------------------------------------
    async def read_event(self) -> Event | None:
        """The next event, or None at the end of the connection. Unlike the wyoming
        package's reader, the data and payload lengths a client announces are bounded
        (by the largest speech body the HTTP API accepts), and an event that stops
        arriving part-way is given up after KOKORO_SEND_TIMEOUT."""
        try:
            async with asyncio.timeout(self.idle_seconds or None):
                line = await self.reader.readline()
        except ValueError:  # over the reader's limit
            raise ProtocolError(
                f"an event header is over {self.max_event_bytes} bytes") from None
        except TimeoutError:
            raise Idle from None
        if not line:
            return None
        try:
            header = json.loads(line)
        except ValueError:
            raise ProtocolError("that is not a Wyoming event (a JSON header line)") from None
        if not isinstance(header, dict) or not isinstance(header.get("type"), str):
            raise ProtocolError("a Wyoming event header needs a string 'type'")
        data = header.get("data") or {}
        lengths = [header.get("data_length") or 0, header.get("payload_length") or 0]
        if not isinstance(data, dict) or not all(
                isinstance(n, int) and 0 <= n <= self.max_event_bytes for n in lengths):
            raise ProtocolError(
                f"malformed {header['type']!r} event: its data must be an object and its "
                f"data and payload at most {self.max_event_bytes} bytes each")
        payload = None
        try:
            async with asyncio.timeout(self.send_timeout):
                if lengths[0]:
                    extra = json.loads(await self.reader.readexactly(lengths[0]))
                    if not isinstance(extra, dict):
                        raise ValueError("data is not an object")
                    data.update(extra)
                if lengths[1]:
                    payload = await self.reader.readexactly(lengths[1])
        except asyncio.IncompleteReadError:
            return None
        except TimeoutError:
            raise ProtocolError(
                f"the {header['type']!r} event stopped arriving for {self.send_timeout:g} s; "
                "send each event whole") from None
        except ValueError as exc:
            raise ProtocolError(f"malformed {header['type']!r} event data: {exc}") from None
        return Event(type=header["type"], data=data, payload=payload)

    async def write(self, event: Event) -> None:
        try:
            async with asyncio.timeout(self.send_timeout):
                await async_write_event(event, self.writer)
        except TimeoutError:
            log.warning("wyoming: the client read nothing for %.0f s; dropped",
                        self.send_timeout)
            raise ClientGone from None
        except ConnectionError:
            raise ClientGone from None

    # ----- the conversation ----------------------------------------------------------
    async def run(self) -> None:
        # A client that resets the connection mid-synthesis is noticed at once (not at
        # the next audio sent): the transport keeps reading while this task speaks, and
        # its loss cancels the task, whose synthesis stops and gives its place back.
        task = asyncio.current_task()
        watch = asyncio.ensure_future(self.writer.wait_closed())

        def lost(done: asyncio.Future) -> None:
            if not done.cancelled():
                done.exception()  # retrieved: a reset is this callback's business
            if not self.closing:
                self.lost = True
                task.cancel()

        watch.add_done_callback(lost)
        try:
            await self.converse()
        except asyncio.CancelledError:
            if not self.lost:
                raise  # the server is closing
        finally:
            self.closing = True
            watch.cancel()
            if self.open:  # the client left before its answer was whole
                self.count(499)
            self.writer.close()

    async def converse(self) -> None:
        """Events in, answers out, until the client leaves or an error ends it."""
        try:
            while True:
                event = await self.read_event()
                if event is None:
                    break
                if not await self.handle(event):
                    await self.linger()
                    break
        except ProtocolError as exc:
            with contextlib.suppress(ClientGone):
                await self.write(Error(text=str(exc), code="invalid_event").event())
                await self.linger()
        except Idle:
            with contextlib.suppress(ClientGone):
                await self.write(Error(
                    text=f"no event for {self.idle_seconds:g} s (KOKORO_WYOMING_IDLE_SECONDS); "
                    "connect again to send more", code="idle_timeout").event())
        except (ClientGone, ConnectionError):  # a reset, seen by a read or a write
            pass

    async def linger(self) -> None:
        """After an error: say that nothing more comes, and read (and drop) what the
        client still sends for a moment. Closing with its events unread would reset the
        connection, and the reset can destroy the error event before it is read."""
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            async with asyncio.timeout(min(2.0, self.send_timeout)):
                while await self.reader.read(65536):
                    pass

    def count(self, status: int) -> None:
        self.open = False
        self.st.metrics.requests.labels(ROUTE, str(status)).inc()

    async def handle(self, event: Event) -> bool:
        """Answer one event; False ends the connection (after an error event)."""
        if Describe.is_type(event.type):
            await self.write(describe(self.st).event())
            return True
        streamed = self.stream is not None
        try:
            if Synthesize.is_type(event.type):
                if streamed:  # Home Assistant's copy of the streamed message: ignored
                    return True
                self.open = True
                request = parse(Synthesize, event)
                voice = pick_voice(self.st, request.voice)
                self.check_format(request.text_format)
                await self.speak(request.text, voice)
                self.count(200)
            elif SynthesizeStart.is_type(event.type):
                if streamed:
                    raise ApiError(400, "invalid_event",
                                   "synthesize-start inside a stream: end it with "
                                   "synthesize-stop first")
                self.open = True
                start = parse(SynthesizeStart, event)
                self.check_format(start.text_format)
                pick_voice(self.st, start.voice)  # an unknown language fails now
                self.stream, self.buffer, self.streamed = start, "", 0
            elif SynthesizeChunk.is_type(event.type):
                await self.stream_chunk(parse(SynthesizeChunk, event).text)
            elif SynthesizeStop.is_type(event.type):
                await self.stream_stop()
            else:
                log.debug("wyoming: ignored a %r event", event.type)
        except ApiError as exc:
            return await self.fail(exc)
        except ClientGone:
            raise
        except Exception:
            log.exception("wyoming: %s failed", event.type)
            return await self.fail(ApiError(500, "internal_error", "internal server error"))
        return True

    async def fail(self, exc: ApiError) -> bool:
        self.stream = None
        self.count(exc.status)
        await self.write(Error(text=_message(exc), code=exc.code).event())
        return False

    @staticmethod
    def check_format(text_format) -> None:
        if text_format not in (None, "text"):
            name = str(getattr(text_format, "value", text_format))[:20]
            raise ApiError(400, "unsupported_format",
                           f"text_format {name!r} is not supported; send plain text",
                           "text_format")

    async def stream_chunk(self, text: str) -> None:
        if self.stream is None:
            raise ApiError(400, "invalid_event",
                           "synthesize-chunk outside a stream: send synthesize-start first")
        self.streamed += len(text)
        limit = self.st.settings.max_input_chars
        if self.streamed > limit:
            # the whole stream is one request: its text counts like one HTTP input
            raise ApiError(413, "input_too_long",
                           f"the streamed text is over {limit} characters, the limit "
                           "(KOKORO_MAX_INPUT_CHARS) of one request's input", "text")
        self.buffer += text
        end = sentences_end(self.buffer)
        if end:
            ready, self.buffer = self.buffer[:end], self.buffer[end:]
            await self.speak_streamed(ready)

    async def stream_stop(self) -> None:
        if self.stream is None:
            raise ApiError(400, "invalid_event",
                           "synthesize-stop outside a stream: send synthesize-start first")
        rest, self.buffer = self.buffer, ""
        await self.speak_streamed(rest)
        self.stream = None
        self.count(200)
        await self.write(SynthesizeStopped().event())

    async def speak_streamed(self, text: str) -> None:
        """Speak a part of the stream; a part with nothing to say (punctuation, space)
        is skipped, not refused."""
        try:
            await self.speak(text, pick_voice(self.st, self.stream.voice))
        except ApiError as exc:
            if exc.code not in ("empty_input", "no_speakable_text"):
                raise

    async def speak(self, text: str, voice: str) -> None:
        """audio-start, audio-chunk..., audio-stop for `text`, through the HTTP API's
        checks, admission and pipeline (api/speech.py)."""
        st = self.st
        body = SpeechRequest(input=text, voice=voice, response_format="pcm", stream=True)
        req = await prepare(body, st)
        release, plan = await admit_and_plan(req, st)
        try:
            await self.write(AudioStart(rate=SAMPLE_RATE, width=WIDTH,
                                        channels=CHANNELS).event())
            step = SAMPLES_PER_EVENT * WIDTH * CHANNELS
            async with aclosing(spoken_pieces(st, plan, req, body, release)) as pieces:
                async for data, _ in pieces:
                    for i in range(0, len(data), step):
                        await self.write(AudioChunk(rate=SAMPLE_RATE, width=WIDTH,
                                                    channels=CHANNELS,
                                                    audio=data[i:i + step]).event())
            await self.write(AudioStop().event())
        finally:
            release()  # idempotent; spoken_pieces releases it too once it has started


class WyomingServer:
    """The TCP listener, started and closed by the app's lifespan."""

    def __init__(self, st, max_event_bytes: int):
        self.st = st
        self.max_event_bytes = max_event_bytes
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def sockets(self) -> list:
        return list(self._server.sockets) if self._server else []

    async def start(self) -> None:
        s = self.st.settings
        self._server = await asyncio.start_server(
            self._serve, host=s.wyoming_bind, port=s.wyoming_port,
            limit=self.max_event_bytes)
        log.info("Wyoming protocol on %s:%d (%d voices)", s.wyoming_bind, s.wyoming_port,
                 len(self.st.voices.ids()))

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        s = self.st.settings
        if len(self._tasks) >= s.wyoming_max_connections:
            await self._refuse(reader, writer, s.wyoming_max_connections)
            return
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await Connection(self.st, reader, writer, self.max_event_bytes,
                             s.send_timeout, s.wyoming_idle_seconds).run()
        finally:
            self._tasks.discard(task)

    @staticmethod
    async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      limit: int) -> None:
        """One error event, then close within a second. What the client sent is read and
        dropped meanwhile: closing with it unread would reset the connection, and the
        reset can destroy the error event before it is read."""
        log.warning("wyoming: refused a connection, %d are open "
                    "(KOKORO_WYOMING_MAX_CONNECTIONS)", limit)
        error = Error(text=f"the server has {limit} Wyoming connections open, its limit "
                      "(KOKORO_WYOMING_MAX_CONNECTIONS); try again shortly",
                      code="server_busy")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await async_write_event(error.event(), writer)
                if writer.can_write_eof():
                    writer.write_eof()
                while await reader.read(65536):
                    pass
        writer.close()

    async def close(self) -> None:
        """Stop listening and end every connection (their syntheses stop and give their
        admission places back)."""
        if self._server is None:
            return
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._server = None
