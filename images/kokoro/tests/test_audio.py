"""Encoders for every response format, whole and streamed, and click-free stitching."""
from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from kokoro_server.audio.encode import FORMATS, Encoder, encode
from kokoro_server.audio.stitch import GAP_MS, prepare_chunk
from kokoro_testlib import decode_audio

RATE = 24000


def tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac"])
def test_compressed_formats_decode_to_the_encoded_duration(fmt):
    audio = tone(1.5)
    pcm, rate = decode_audio(encode(audio, fmt))
    assert abs(len(pcm) / rate - 1.5) < 0.1  # codec priming/padding only
    assert np.sqrt(np.mean(pcm**2)) > 0.2  # the tone survived (RMS of 0.4 sine = 0.28)


@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_encoding_decodes_like_the_whole_file(fmt):
    audio = tone(2.0)
    stream = Encoder(fmt, stream=True)
    pieces = [stream.feed(audio[:9000]), stream.feed(audio[9000:30000]),
              stream.feed(audio[30000:]), stream.finish()]
    data = b"".join(pieces)
    if fmt == "pcm":
        assert np.frombuffer(data, "<i2").shape[0] == len(audio)
        return
    if fmt == "wav":  # streamed WAV: unknown length in the header, data follows
        assert data[:4] == b"RIFF" and len(data) == 44 + 2 * len(audio)
        return
    assert pieces[0] or pieces[1], "a stream must yield bytes before it is finished"
    whole, _ = decode_audio(encode(audio, fmt))
    streamed, _ = decode_audio(data)
    # only a whole file's header can tell the decoder how much codec priming and padding
    # to trim (MP3's LAME tag): a stream may decode up to two frames longer
    assert 0 <= len(streamed) - len(whole) < 2 * 1152


def test_whole_wav_has_exact_header_sizes():
    data = encode(tone(0.5), "wav")
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        assert w.getnframes() == RATE // 2


def flac_streaminfo(data: bytes) -> tuple[int, bytes]:
    """(total samples, MD5 of the audio) from the STREAMINFO block that opens a FLAC."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    info = data[8:8 + 34]
    return int.from_bytes(info[10:18], "big") & ((1 << 36) - 1), info[18:34]


def test_whole_mp3_decodes_to_its_exact_length():
    audio = tone(1.0)
    pcm, _ = decode_audio(encode(audio, "mp3"))  # the LAME tag says what to trim
    assert len(pcm) == len(audio)


def test_whole_flac_states_its_length_and_checksum():
    audio = tone(0.75)
    samples, md5 = flac_streaminfo(encode(audio, "flac"))
    assert samples == len(audio) and md5 != bytes(16)
    stream = Encoder("flac", stream=True)  # a stream cannot know them when it starts
    assert flac_streaminfo(stream.feed(audio) + stream.finish()) == (0, bytes(16))


def test_stitched_chunks_join_without_a_step():
    a, b = tone(0.3, 200), tone(0.3, 330) + 0.3  # b even starts with a DC offset
    joined = np.concatenate([prepare_chunk(a, first=True), prepare_chunk(b, first=False)])
    steps = np.abs(np.diff(joined))
    typical = np.abs(np.diff(tone(0.3, 330))).max()
    assert steps.max() <= typical * 1.05  # no jump larger than the signal's own slope
    assert joined[0] == 0 and joined[-1] == 0
    gap = int(RATE * GAP_MS / 1000)
    assert np.all(joined[len(a):len(a) + gap] == 0)
