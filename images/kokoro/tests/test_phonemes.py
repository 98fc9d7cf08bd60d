"""Phonemes out (POST /v1/audio/phonemize) and in (input_type "phonemes"), real model."""
from __future__ import annotations

import json

import pytest
from kokoro_server.engines.base import MAX_TOKENS
from kokoro_server.errors import ApiError
from kokoro_server.text.phonemes import check_phonemes
from kokoro_testlib import assert_error

TEXT = "It costs $1,234.56 today. Visit example.com/docs for more."


def pcm_samples(client, **body) -> int:
    r = client.post("/v1/audio/speech", json={"voice": "af_heart", "response_format": "pcm",
                                              "stream": False, "speed": 2.0, **body})
    assert r.status_code == 200, r.text
    return len(r.content) // 2


def test_phonemize_returns_phonemes_and_the_models_token_ids(client, onnx_server):
    r = client.post("/v1/audio/phonemize", json={"input": "Hello there, friend."})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["lang_code"] == "a"  # the default voice's language
    assert body["phonemes"] == "həlˈO ðˈɛɹ, fɹˈɛnd."
    vocab = onnx_server.state.engine.vocab
    assert body["tokens"] == [vocab[c] for c in body["phonemes"]]


def test_phonemize_takes_the_language_from_lang_code_or_the_voice(client):
    def ps(**body):
        r = client.post("/v1/audio/phonemize", json={"input": "Tomato", **body})
        assert r.status_code == 200, r.text
        return r.json()

    american, british = ps(lang_code="en-us"), ps(voice="bf_emma")
    assert american["lang_code"] == "a" and british["lang_code"] == "b"
    assert american["phonemes"] != british["phonemes"]  # təmˈAtO / təmˈɑːtəʊ
    assert ps(lang_code="fr")["lang_code"] == "f"


def test_phonemize_reads_numbers_and_addresses_aloud_unless_told_not_to(client):
    def ps(**body):
        return client.post("/v1/audio/phonemize", json={"input": TEXT, **body}).json()["phonemes"]

    spoken = ps()
    assert "dˈɑləɹz" in spoken and "sˈɛnts" in spoken  # dollars, cents
    assert "dˈɑt" in spoken and "slˈæʃ" in spoken  # dot, slash
    raw = ps(normalize=False)  # misaki alone: reads the money, skips "dot" and "slash"
    assert "dˈɑt" not in raw and "slˈæʃ" not in raw


def test_speech_from_phonemes_equals_speech_from_their_text(client):
    """Phonemes from /v1/audio/phonemize, sent back as input, speak the same: the same
    token durations, so exactly the same length."""
    phonemes = client.post("/v1/audio/phonemize", json={"input": TEXT}).json()["phonemes"]
    assert pcm_samples(client, input=phonemes, input_type="phonemes") == \
        pcm_samples(client, input=TEXT)


def test_long_phoneme_input_is_split_at_phoneme_boundaries_into_passes(client):
    sentence = "ðə kwˈɪk bɹˈWn fˈɑks ʤˈʌmps ˌOvəɹ ðə lˈAzi dˈɔɡ, ænd ɹˈʌnz əwˈA. "
    phonemes = sentence * 8  # over 540 symbols: more than one pass of 510
    assert len(phonemes) > MAX_TOKENS
    body = {"input": phonemes, "input_type": "phonemes", "response_format": "pcm",
            "stream": True, "speed": 4.0}
    with client.stream("POST", "/v1/audio/speech/captioned", json=body) as r:
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.iter_lines() if line]
    chunks = [line for line in lines if line["type"] == "chunk"]
    assert len(chunks) >= 3
    words = [w["word"] for c in chunks for w in c["words"]]
    assert words == phonemes.split()  # every phoneme word spoken once, in order


def test_unknown_phoneme_symbols_are_named_in_a_400(client):
    r = client.post("/v1/audio/speech", json={"input": "hˈɛlO 5 wˈɜɹld☃",
                                              "input_type": "phonemes"})
    err = assert_error(r, 400, "invalid_phonemes")
    assert err["param"] == "input"
    assert "'5' (U+0035)" in err["message"] and "'☃' (U+2603)" in err["message"]
    assert "'h'" not in err["message"]


def test_a_phoneme_run_longer_than_one_pass_is_refused():
    with pytest.raises(ApiError) as err:
        check_phonemes("a" * (MAX_TOKENS + 1), {"a": 1, " ": 2})
    assert err.value.code == "invalid_phonemes" and "511 phonemes" in err.value.message
    assert check_phonemes("  a \n\t a ", {"a": 1, " ": 2}) == "a a"


PHONEMIZE_ERRORS = [
    ({"input": ""}, 400, "empty_input"),
    ({"input": "x" * 20_001}, 413, "input_too_long"),
    ({"input": "hi", "lang_code": "xx"}, 400, "unsupported_language"),
    ({"input": "hi", "voice": "zz_nobody"}, 400, "voice_not_found"),
    ({"input": 42}, 400, "invalid_input"),
    ({"input": "hi", "normalize": "yes"}, 400, "invalid_normalize"),
    ({"input": "🙂 ✨"}, 400, "no_speakable_text"),
    ({"input": "bell\x07"}, 400, "invalid_characters"),
]


@pytest.mark.parametrize("body,status,code", PHONEMIZE_ERRORS,
                         ids=[c for _, _, c in PHONEMIZE_ERRORS])
def test_phonemize_errors_have_the_speech_error_shape(client, body, status, code):
    assert_error(client.post("/v1/audio/phonemize", json=body), status, code)


@pytest.mark.parametrize("body,code", [
    ({"input": "", "input_type": "phonemes"}, "empty_input"),
    ({"input": "həlˈO", "input_type": "ipa"}, "invalid_input_type"),
    ({"input": "x" * 20_001, "input_type": "phonemes"}, "input_too_long"),
])
def test_phoneme_speech_has_the_same_limits_as_text(client, body, code):
    assert_error(client.post("/v1/audio/speech", json=body),
                 413 if code == "input_too_long" else 400, code)
