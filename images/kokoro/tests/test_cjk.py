"""Japanese and Mandarin: misaki's ja (cutlet) and zh G2Ps on the real int8 model.

The golden phonemes are misaki 0.9.4's own output with the pinned dictionaries, checked
by hand (docs/research/cjk-g2p-2026-12-06.md); a change of any pin shows here first.
"""
from __future__ import annotations

import base64
import json
import re
import sys
import types
import unicodedata

import numpy as np
import pytest
from kokoro_server.api.speech import normalized
from kokoro_server.errors import ApiError
from kokoro_server.text import cjk
from kokoro_server.text.chunking import MAX_TOKENS, chunk_text
from kokoro_server.text.g2p import Phonemizer
from kokoro_testlib import assert_error

GOLDEN = {
    ("z", "你好，世界。"): "ni↓xau↓, ʂɨ↘ʨje↘.",
    ("z", "今天是2024年3月15日，气温25.5度。"):
        "ʨi→ntʰjɛ→n ʂɨ↘ ɚ↘li↗ŋɚ↘ sɨ↘njɛ↗n sa→nɥe↘ ʂɨ↗u↓ɻɨ↘, ʨʰi↘wə→n ɚ↘ʂɨ↗u↓ tjɛ↓n u↓tu↘.",
    ("z", "我有3个苹果和12本书。"): "wo↓ jou↓ sa→nkɤ↘ pʰi↗ŋkwo↓ xɤ↗ ʂɨ↗ɚ↘ pə↓nʂu→.",
    ("j", "こんにちは、世界。"): "koɲɲiʨiβa, sekai.",
    ("j", "今日は2024年3月15日です。"):
        "kʲoː βa ɲi seɴ ɲiʥɨːjoɴ neɴ saɴ ɡaʦɨ ʥɨː ɡo ɲiʨi desɨ.",
    ("j", "東京タワーの高さは333メートルです。"):
        "toːkʲoː taβaː no takasa βa saɴ bʲija kɯsa ɴ ʥɨː saɴ meːtoɾɯ desɨ.",
}
# Sentences without numerals: their G2P words are pieces of the text as written.
SAMPLES = {
    "z": ("zf_xiaobei", "我们明天一起去北京看长城，然后回家吃饭。"),
    "j": ("jf_alpha", "東京タワーの高さはとても高いです。明日も晴れるでしょう。"),
}
# misaki's own segmentation of SAMPLES (jieba's words; cutlet's word groups)
SAMPLE_WORDS = {
    "z": ["我们", "明天", "一起", "去", "北京", "看", "长城", "然后", "回家", "吃饭"],
    "j": ["東京", "タワー", "の", "高さ", "は", "とても", "高い", "です",
          "明日", "も", "晴れる", "でしょう"],
}


@pytest.fixture(scope="module")
def phonemizer() -> Phonemizer:
    return Phonemizer("lite")


@pytest.fixture(scope="module")
def vocab(model_dir) -> dict[str, int]:
    return json.loads((model_dir / "kokoro" / "config.json").read_text())["vocab"]


def letters(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


@pytest.mark.parametrize("lang,text", sorted(GOLDEN))
def test_cjk_phonemes_equal_misakis_golden_output_within_the_vocabulary(
        phonemizer, vocab, lang, text):
    ps = phonemizer(text, lang)
    assert ps == GOLDEN[lang, text]
    assert set(ps) <= set(vocab), sorted(set(ps) - set(vocab))


@pytest.mark.parametrize("lang,text", [("z", "气温-3.5度，湿度50%。"), ("z", "2026年12月6日"),
                                       ("j", "12時30分に3人で来ました。")])
def test_cjk_numerals_and_dates_are_read_by_their_g2p(phonemizer, vocab, lang, text):
    ps = phonemizer(text, lang)
    assert ps and not re.search(r"\d", ps), ps
    assert set(ps) <= set(vocab), sorted(set(ps) - set(vocab))


@pytest.mark.parametrize("lang", ["j", "z"])
def test_english_normalisation_leaves_cjk_text_alone(lang):
    text = "3月15日は$5.50です。"
    assert normalized(text, lang, True, True) == (text, ())


@pytest.mark.parametrize("lang", sorted(SAMPLES))
def test_cjk_words_are_the_g2ps_own_words_in_order(phonemizer, lang):
    text = SAMPLES[lang][1]
    ps, words = phonemizer.align(text, lang)
    spoken = [w for w in words if letters(w.text)]
    assert [w.text for w in spoken] == SAMPLE_WORDS[lang]
    assert "".join(w.text for w in spoken) == letters(text)
    assert "".join(w.text for w in words) == text
    # each word holds one space-separated phoneme word (or several, where cutlet joins)
    for w in spoken:
        assert ps[w.start:w.end].strip() == ps[w.start:w.end] != ""
    assert [w.start for w in spoken] == sorted(w.start for w in spoken)


@pytest.mark.parametrize("lang,char", [("z", "国"), ("j", "あ")])
def test_long_cjk_text_is_chunked_within_one_pass_losing_nothing(phonemizer, lang, char):
    """No clause marks, no spaces: halved between characters, never cut short."""
    text = char * 700 + "。" + (SAMPLES[lang][1] * 20)
    chunks = list(chunk_text(text, lambda t: phonemizer.align(t, lang)))
    assert all(0 < len(c.phonemes) <= MAX_TOKENS for c in chunks)
    assert letters("".join(c.text for c in chunks)) == letters(text)


def forget_misaki_cjk(monkeypatch) -> None:
    """Make the next `from misaki import ja/zh` run those modules again (for this test)."""
    import misaki

    for name in ("ja", "zh", "cutlet"):
        monkeypatch.delitem(sys.modules, f"misaki.{name}", raising=False)
        monkeypatch.delattr(misaki, name, raising=False)


def test_the_pyopenjtalk_stand_in_is_never_called_on_the_cutlet_path(monkeypatch):
    """misaki/ja.py imports pyopenjtalk but the cutlet path must not use it: a stand-in
    that records every use is in its place while both G2Ps are built and run."""
    calls = []

    def record(name: str):
        if name.startswith("__"):  # the import system's own look-ups
            raise AttributeError(name)
        calls.append(name)
        raise AssertionError(f"misaki used pyopenjtalk.{name} on the cutlet path")

    recorder = types.ModuleType("pyopenjtalk")
    recorder.__getattr__ = record
    forget_misaki_cjk(monkeypatch)
    monkeypatch.setitem(sys.modules, "pyopenjtalk", recorder)
    run = cjk.make_ja()
    assert sys.modules["misaki.ja"].__dict__["pyopenjtalk"] is recorder
    for text in [t for lang, t in GOLDEN if lang == "j"] + [SAMPLES["j"][1]]:
        assert run(text)[0]
    assert calls == []


def test_the_stand_in_raises_if_called():
    cjk._stand_in_pyopenjtalk()
    stand_in = sys.modules["pyopenjtalk"]
    if getattr(stand_in, "__file__", None):
        pytest.skip("the real pyopenjtalk is installed here")
    with pytest.raises(RuntimeError, match="stand-in"):
        stand_in.run_frontend("テスト")


@pytest.mark.parametrize("lang,module", [("j", "fugashi"), ("j", "unidic_lite"),
                                         ("z", "jieba"), ("z", "cn2an")])
def test_a_build_without_the_cjk_extra_refuses_the_language_clearly(
        monkeypatch, lang, module):
    """As in an image built with LANGUAGE_EXTRAS= : the G2P's modules cannot be imported
    (None in sys.modules makes an import raise ModuleNotFoundError)."""
    forget_misaki_cjk(monkeypatch)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ApiError) as info:
        Phonemizer("lite").ensure(lang)
    err = info.value
    assert (err.status, err.code, err.param) == (400, "language_unavailable", "lang_code")
    assert module in err.message and "LANGUAGE_EXTRAS" in err.message


# ---- through HTTP, on the real model ----

def speak(client, text: str, voice: str, **extra) -> np.ndarray:
    r = client.post("/v1/audio/speech", json={"input": text, "voice": voice,
                                              "response_format": "pcm", "stream": False,
                                              **extra})
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, "<i2").astype(np.float32) / 32768


@pytest.mark.parametrize("lang", sorted(SAMPLES))
def test_cjk_speech_has_a_plausible_length_for_its_phonemes(client, lang):
    """The espeak languages' bounds (8-25 characters a second) applied to phonemes:
    there, one character is about one phoneme; here a character is several."""
    voice, text = SAMPLES[lang]
    phonemes = client.post("/v1/audio/phonemize", json={"input": text, "voice": voice})
    assert phonemes.status_code == 200, phonemes.text
    n = len(phonemes.json()["phonemes"])
    pcm = speak(client, text, voice)
    seconds = len(pcm) / 24000
    assert n / 25 < seconds < n / 8, (n, seconds)
    assert np.sqrt(np.mean(pcm**2)) > 0.01


def test_every_japanese_and_mandarin_voice_speaks(client):
    voices = client.get("/v1/audio/voices").json()["voices"]
    cjk_voices = [v for v in voices if v["lang_code"] in ("j", "z")]
    assert len(cjk_voices) == 13
    assert {v["language"] for v in cjk_voices} == {"Japanese", "Mandarin Chinese"}
    for v in cjk_voices:
        text = "こんにちは。" if v["lang_code"] == "j" else "你好。"
        pcm = speak(client, text, v["id"])
        assert len(pcm) > 24000 * 0.3 and np.sqrt(np.mean(pcm**2)) > 0.01, v["id"]


@pytest.mark.parametrize("lang", sorted(SAMPLES))
def test_cjk_phonemize_gives_the_g2ps_phonemes_and_token_ids(client, vocab, lang):
    text = next(t for (g, t) in sorted(GOLDEN) if g == lang)
    r = client.post("/v1/audio/phonemize", json={"input": text, "lang_code": lang})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["phonemes"] == GOLDEN[lang, text] and body["lang_code"] == lang
    assert body["tokens"] == [vocab[c] for c in GOLDEN[lang, text]]


@pytest.mark.parametrize("lang", sorted(SAMPLES))
def test_cjk_streamed_speech_equals_a_whole_file_in_length(client, lang):
    voice, text = SAMPLES[lang]
    body = {"input": text * 3, "voice": voice, "response_format": "pcm"}
    with client.stream("POST", "/v1/audio/speech", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        parts = list(r.iter_bytes())
    whole = client.post("/v1/audio/speech", json={**body, "stream": False}).content
    assert len(b"".join(parts)) == len(whole) > 24000 * 2 * 3


@pytest.mark.parametrize("lang", sorted(SAMPLES))
def test_cjk_captions_give_one_word_per_g2p_word_in_order(client, lang):
    voice, text = SAMPLES[lang]
    r = client.post("/v1/audio/speech/captioned",
                    json={"input": text, "voice": voice, "response_format": "pcm"})
    assert r.status_code == 200, r.text
    body = r.json()
    words = body["words"]
    assert [letters(w["word"]) for w in words] == SAMPLE_WORDS[lang]
    assert "".join(w["word"] for w in words) == text  # punctuation as written, with its word
    duration = len(base64.b64decode(body["audio"])) / 2 / 24000
    prev = 0.0
    for w in words:
        assert prev <= w["start"] < w["end"] <= duration, w
        prev = w["end"]


@pytest.mark.parametrize("lang,voice", [("j", "af_heart"), ("z", "af_heart")])
def test_lang_code_picks_the_cjk_g2p_for_any_voice(client, lang, voice):
    text = SAMPLES[lang][1]
    assert speak(client, text, voice, lang_code=lang).size > 24000


def test_an_unknown_lang_code_is_still_refused(client):
    r = client.post("/v1/audio/speech", json={"input": "你好", "lang_code": "zz"})
    assert_error(r, 400, "unsupported_language")


def test_voices_say_which_languages_this_build_can_speak(client, monkeypatch):
    listed = client.get("/v1/audio/voices").json()["voices"]
    assert all(v["available"] for v in listed)
    monkeypatch.setitem(sys.modules, "jieba", None)  # as if built with LANGUAGE_EXTRAS=ja
    listed = client.get("/v1/audio/voices").json()["voices"]
    assert {v["lang_code"] for v in listed if not v["available"]} == {"z"}
