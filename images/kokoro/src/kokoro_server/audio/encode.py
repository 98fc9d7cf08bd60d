"""Encode float32 mono audio to mp3, opus, aac, flac, wav or pcm, whole or streamed.

mp3 (LAME), opus (libopus, in Ogg), aac (FFmpeg's native encoder, in ADTS) and flac go
through PyAV, whose wheels bundle FFmpeg with these encoders; wav and pcm are written
here. Every encoder is incremental: feed() returns the bytes ready so far, so a stream
starts as soon as the first chunk is spoken.

A streamed file cannot know its length when its header is sent: streamed WAV says
"unknown length" (0xFFFFFFFF) and streamed FLAC's STREAMINFO holds no sample count or
MD5. Whole files (stream=False) are written to a seekable buffer instead, so the muxer
goes back and writes the true sizes (FLAC's sample count and MD5, MP3's Xing frame
count) and the WAV header carries the real data size.
"""
from __future__ import annotations

import io
import struct

import numpy as np

from ..settings import SAMPLE_RATE

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
               "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
_AV = {  # format -> (container, codec, bit rate)
    "mp3": ("mp3", "libmp3lame", 64_000),
    "opus": ("ogg", "libopus", 32_000),
    "aac": ("adts", "aac", 64_000),
    "flac": ("flac", "flac", None),
}


def to_int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")


def wav_header(n_samples: int | None, rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit mono WAV header; n_samples None = unknown length (streaming)."""
    data = 0xFFFFFFFF if n_samples is None else n_samples * 2
    riff = 0xFFFFFFFF if n_samples is None else 36 + data
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) +
            b"data" + struct.pack("<I", data))


class _Sink:
    """A write-only file for PyAV: collects what the muxer writes until taken."""

    def __init__(self):
        self._parts: list[bytes] = []

    def write(self, b) -> int:
        self._parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class Encoder:
    def __init__(self, fmt: str, rate: int = SAMPLE_RATE, stream: bool = True):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt}")
        self.fmt, self.rate, self.stream = fmt, rate, stream
        self._pending: list[np.ndarray] = []
        self._started = False
        if fmt in _AV:
            import av

            container, codec, bit_rate = _AV[fmt]
            self._sink = _Sink() if stream else io.BytesIO()
            self._out = av.open(self._sink, mode="w", format=container)
            self._st = self._out.add_stream(codec, rate=rate)
            self._st.codec_context.layout = "mono"
            if bit_rate:
                self._st.codec_context.bit_rate = bit_rate
            self._st.codec_context.open()
            frame_size = self._st.codec_context.frame_size or None
            self._resampler = av.AudioResampler(format=self._st.codec_context.format.name,
                                                layout="mono", rate=rate,
                                                frame_size=frame_size)
            self._pts = 0

    def _frames(self, pcm: np.ndarray | None):
        import av

        if pcm is None:
            yield from self._resampler.resample(None)
            return
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += pcm.shape[0]
        yield from self._resampler.resample(frame)

    def feed(self, audio: np.ndarray) -> bytes:
        pcm = to_int16(audio)
        if self.fmt == "pcm":
            return pcm.tobytes()
        if self.fmt == "wav":
            if not self.stream:
                self._pending.append(pcm)
                return b""
            head = b"" if self._started else wav_header(None, self.rate)
            self._started = True
            return head + pcm.tobytes()
        for fr in self._frames(pcm):
            for packet in self._st.encode(fr):
                self._out.mux(packet)
        return self._sink.take() if self.stream else b""

    def finish(self) -> bytes:
        if self.fmt == "pcm":
            return b""
        if self.fmt == "wav":
            if self.stream:
                return b"" if self._started else wav_header(None, self.rate)
            data = np.concatenate(self._pending) if self._pending else np.zeros(0, "<i2")
            return wav_header(len(data), self.rate) + data.tobytes()
        for fr in self._frames(None):
            for packet in self._st.encode(fr):
                self._out.mux(packet)
        for packet in self._st.encode(None):
            self._out.mux(packet)
        self._out.close()
        return self._sink.take() if self.stream else self._sink.getvalue()


def encode(audio: np.ndarray, fmt: str, rate: int = SAMPLE_RATE) -> bytes:
    enc = Encoder(fmt, rate, stream=False)
    return enc.feed(audio) + enc.finish()
