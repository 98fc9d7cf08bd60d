"""Captioned speech on the real int8 model: word times from its predicted durations."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from kokoro_server.engines.base import FRAME_SAMPLES
from kokoro_server.text.align import Captioner, TimedWord, Word
from kokoro_server.text.normalize import normalize
from kokoro_server.text.subtitles import cues
from kokoro_testlib import assert_error

SENTENCES = "The quick brown fox jumps over the lazy dog. Then it rests, quietly!"
# three chunks: the first sentence alone, the next two merged (up to ~300 phonemes), then
# the last one
LONG = ("Captions follow the voice. Each chunk of text is spoken on its own by the model, and "
        "the times of its words must still add up across all of them, one after another. From "
        "the first sentence to the last one, there is no gap and no overlap anywhere in the "
        "captions that come back, whether they are streamed or not. That is all for now.")
END_TOLERANCE_S = 0.6  # after the last word: its punctuation and the end pad token


def plain(words: list[str]) -> list[str]:
    """Lower-case words without punctuation (how captions are compared with input)."""
    return " ".join(re.sub(r"[^\w\s]", " ", w.lower()) for w in words).split()


def captioned(client, text: str, **extra) -> dict:
    r = client.post("/v1/audio/speech/captioned",
                    json={"input": text, "voice": "af_heart", "response_format": "pcm", **extra})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def assert_well_timed(words: list[dict], duration: float) -> None:
    prev_end = 0.0
    for w in words:
        assert set(w) == {"word", "start", "end"}
        assert prev_end <= w["start"] < w["end"] <= duration, (w, prev_end, duration)
        prev_end = w["end"]
    assert duration - END_TOLERANCE_S <= words[-1]["end"] <= duration


def test_captioned_speech_times_every_input_word_in_order(client):
    body = captioned(client, SENTENCES)
    audio = base64.b64decode(body["audio"])
    assert body["audio_format"] == "pcm" and body["sample_rate"] == 24000
    assert body["duration"] == pytest.approx(len(audio) / 2 / 24000, abs=0.001)
    assert plain([w["word"] for w in body["words"]]) == plain(SENTENCES.split())
    assert_well_timed(body["words"], body["duration"])
    assert [w["word"] for w in body["words"][-3:]] == ["Then", "it", "rests,", "quietly!"][-3:]


def test_word_times_are_the_models_durations(onnx_server):
    """The engine returns its duration predictor's frames with the audio: the audio is
    exactly their sum in samples, so the captions measure the audio itself."""
    engine = onnx_server.state.engine
    pack, _ = onnx_server.state.voices.resolve("af_heart")
    phonemes = onnx_server.state.phonemizer("Time flies like an arrow.", "a")
    for speed in (1.0, 2.0):
        result = engine.synthesize_timed(phonemes, pack, speed)
        assert len(result.durations) == len(engine.token_ids(phonemes)) + 2
        assert (result.durations >= 1).all()
        assert len(result.audio) == int(result.durations.sum()) * FRAME_SAMPLES


def test_streamed_captions_keep_offsets_cumulative_across_chunks(client):
    body = {"input": LONG, "voice": "am_michael", "response_format": "pcm", "stream": True,
            "speed": 2.0}
    with client.stream("POST", "/v1/audio/speech/captioned", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    chunks, done = lines[:-1], lines[-1]
    assert len(chunks) >= 3 and all(c["type"] == "chunk" for c in chunks)
    assert done["type"] == "done"
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    position = 0.0
    for c in chunks:
        seconds = len(base64.b64decode(c["audio"])) / 2 / 24000  # pcm: exactly this chunk
        assert c["start"] == pytest.approx(position, abs=0.002)
        assert c["end"] == pytest.approx(position + seconds, abs=0.002)
        assert all(c["start"] <= w["start"] and w["end"] <= c["end"] for w in c["words"])
        position += seconds
    assert done["duration"] == pytest.approx(position, abs=0.002)
    words = [w for c in chunks for w in c["words"]]
    assert plain([w["word"] for w in words]) == plain(LONG.split())
    assert_well_timed(words, done["duration"])
    # the same request as one JSON answer gives the same captions (durations are
    # deterministic), so a client may stream or not
    whole = captioned(client, LONG, voice="am_michael", speed=2.0)
    assert whole["words"] == words and whole["duration"] == done["duration"]


def ms(seconds: float) -> int:
    """Whole milliseconds, the unit both caption formats write: comparing times as floats
    parsed two ways (5 + 935/1000 against float("05.935")) fails by one ulp on some values."""
    return round(seconds * 1000)


def parse_srt(text: str) -> list[tuple[int, int, int, str]]:
    def stamp(s: str) -> int:
        h, m, rest = s.split(":")
        sec, milli = rest.split(",")
        return ((int(h) * 60 + int(m)) * 60 + int(sec)) * 1000 + int(milli)

    out = []
    for block in text.strip().split("\n\n"):
        index, times, *lines = block.split("\n")
        start, arrow, end = times.split(" ")
        assert arrow == "-->" and re.fullmatch(r"\d\d:\d\d:\d\d,\d{3}", start)
        out.append((int(index), stamp(start), stamp(end), "\n".join(lines)))
    return out


def parse_vtt(text: str) -> list[tuple[int, int, str]]:
    def stamp(s: str) -> int:
        h, m, rest = s.split(":")
        sec, milli = rest.split(".")
        return ((int(h) * 60 + int(m)) * 60 + int(sec)) * 1000 + int(milli)

    head, *blocks = text.strip().split("\n\n")
    assert head == "WEBVTT"
    out = []
    for block in blocks:
        times, *lines = block.split("\n")
        start, arrow, end = times.split(" ")
        assert arrow == "-->" and re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", start)
        out.append((stamp(start), stamp(end), "\n".join(lines)))
    return out


def test_srt_and_webvtt_hold_the_same_captions_as_the_words(client):
    srt = captioned(client, LONG, caption_format="srt", speed=2.0)
    vtt = captioned(client, LONG, caption_format="vtt", speed=2.0)
    assert srt["words"] == vtt["words"]
    words = srt["words"]
    srt_cues, vtt_cues = parse_srt(srt["captions"]), parse_vtt(vtt["captions"])
    assert [c[0] for c in srt_cues] == list(range(1, len(srt_cues) + 1))
    assert [c[1:] for c in srt_cues] == vtt_cues
    assert " ".join(c[2] for c in vtt_cues) == " ".join(w["word"] for w in words)
    assert len(vtt_cues) >= 3  # one per sentence at least; lines stay short
    assert all(len(c[2]) <= 42 for c in vtt_cues)
    starts = {ms(w["start"]) for w in words}
    ends = {ms(w["end"]) for w in words}
    prev = 0
    for start, end, _ in vtt_cues:
        assert start in starts and end in ends and prev <= start < end
        prev = end


def test_written_forms_are_captioned_as_written_and_timed_as_spoken(client):
    text = "It costs $1,234.56 at 3:30 pm, not 5."
    body = captioned(client, text)
    words = [w["word"] for w in body["words"]]
    assert words == ["It", "costs", "$1,234.56", "at", "3:30 pm,", "not", "5."]
    by_word = {w["word"]: w["end"] - w["start"] for w in body["words"]}
    # "one thousand two hundred thirty four dollars and fifty six cents" takes long
    assert by_word["$1,234.56"] > 5 * by_word["costs"]
    assert_well_timed(body["words"], body["duration"])


def test_phoneme_input_is_captioned_by_its_phoneme_words(client):
    body = captioned(client, "hˈɛlO wˈɜɹld.", input_type="phonemes")
    assert [w["word"] for w in body["words"]] == ["hˈɛlO", "wˈɜɹld."]
    assert_well_timed(body["words"], body["duration"])


@pytest.mark.parametrize("body,status,code", [
    ({"input": ""}, 400, "empty_input"),
    ({"input": "x" * 20_001}, 413, "input_too_long"),
    ({"input": "hi", "voice": "zz_nobody"}, 400, "voice_not_found"),
    ({"input": "hi", "caption_format": "ass"}, 400, "invalid_caption_format"),
    ({"input": "hi", "response_format": "ogg"}, 400, "unsupported_format"),
    ({"input": "hi", "stream": "yes"}, 400, "invalid_stream"),
    ({"input": "hi", "input_type": "phonemes", "voice": "af_heart", "speed": 9}, 400,
     "invalid_speed"),
])
def test_captioned_speech_rejects_bad_input_with_the_one_error_shape(client, body, status, code):
    assert_error(client.post("/v1/audio/speech/captioned", json=body), status, code)


# ---- the alignment itself, on made-up durations (no model) -----------------------------

VOCAB = {ch: i for i, ch in enumerate(" .,!abcdefghijklmnopqrstuvwxyz", 1)}


def test_captioner_times_words_from_token_frames_and_skips_spaces():
    # phonemes "ab cd." -> tokens a b ␠ c d . ; durations with pads: 2 | 1 1 4 2 2 3 | 5
    words = [Word("ab", 0, 2), Word("cd", 3, 5, space_after=False), Word(".", 5, 6)]
    cap = Captioner(VOCAB, frame_seconds=0.5)
    timed = cap.add(words, "ab cd.", np.array([2, 1, 1, 4, 2, 2, 3, 5]), 0.25, 20.0)
    assert [(t.word, t.start, t.end) for t in timed] == [
        ("ab", 0.25 + 2 * 0.5, 0.25 + 4 * 0.5), ("cd.", 0.25 + 8 * 0.5, 0.25 + 12 * 0.5)]
    assert cap.offset == 20.0  # the next chunk starts after this one's audio


def test_captioner_joins_the_spoken_form_of_one_written_form():
    norm = normalize("pay $5 now")
    assert norm.text == "pay five dollars now"
    ps = "pay five dollars now"  # phonemes = letters, for the test
    words, pos = [], 0
    for w in ps.split():
        words.append(Word(w, pos, pos + len(w)))
        pos += len(w) + 1
    durations = np.ones(len(ps) + 2, dtype=np.int64)
    timed = Captioner(VOCAB, norm.text, norm.spans, 1.0).add(words, ps, durations, 0.0, 99.0)
    assert [(t.word, t.start, t.end) for t in timed] == [
        ("pay", 1, 4), ("$5", 5, 17), ("now", 18, 21)]


def test_cues_break_after_sentences_and_before_long_lines():
    text = "One. Two words here that make a line far longer than forty two."
    words = [TimedWord(w, i, i + 0.5) for i, w in enumerate(text.split())]
    got = [c.text for c in cues(words)]
    assert got == ["One.", "Two words here that make a line far longer", "than forty two."]
