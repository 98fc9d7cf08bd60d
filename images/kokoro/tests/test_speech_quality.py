"""Speech is intelligible, not just non-silent: an offline recogniser hears the words."""
from __future__ import annotations

import numpy as np
import pytest
from kokoro_server.text.g2p import Phonemizer
from kokoro_testlib import decode_audio

SENTENCES = [
    "The weather is nice today and the children are playing in the park.",
    "Please call me back tomorrow morning when you have time.",
]


def recovered(expected: str, heard: list[str]) -> float:
    words = [w.strip(".,").lower() for w in expected.split()]
    pool = list(heard)
    hits = 0
    for w in words:
        if w in pool:
            pool.remove(w)
            hits += 1
    return hits / len(words)


@pytest.mark.parametrize("voice", ["af_heart", "am_michael", "bf_emma"])
def test_recogniser_recovers_most_words_spoken_by_the_server(client, recognise, voice):
    for sentence in SENTENCES:
        r = client.post("/v1/audio/speech", json={"input": sentence, "voice": voice,
                                                  "response_format": "wav", "stream": False})
        pcm, rate = decode_audio(r.content)
        heard = recognise(pcm, rate)
        assert recovered(sentence, heard) >= 0.6, (voice, sentence, heard)


def test_recogniser_hears_nothing_in_noise(recognise):
    noise = np.random.default_rng(0).normal(0, 0.1, 24000 * 3).astype(np.float32)
    assert recovered(SENTENCES[0], recognise(noise)) < 0.2


def test_english_without_the_spacy_model_is_still_intelligible(onnx_server, recognise):
    """The 'lite' G2P (no en_core_web_sm) feeding the real engine and voice."""
    state = onnx_server.state
    lite = Phonemizer("lite")
    pack, _ = state.voices.resolve("af_heart")
    for sentence in SENTENCES:
        audio = state.engine.synthesize(lite(sentence, "a"), pack)
        assert recovered(sentence, recognise(audio)) >= 0.6


ESPEAK_SAMPLES = {
    "e": ("ef_dora", "Buenos días, me llamo Dora y vivo en una ciudad pequeña."),
    "f": ("ff_siwis", "Bonjour, je m'appelle Siwis et j'habite dans une petite ville."),
    "h": ("hf_alpha", "नमस्ते, मेरा नाम अल्फा है और मैं एक छोटे शहर में रहती हूँ।"),
    "i": ("if_sara", "Buongiorno, mi chiamo Sara e vivo in una piccola città."),
    "p": ("pf_dora", "Bom dia, meu nome é Dora e eu moro em uma pequena cidade."),
}


@pytest.mark.parametrize("lang", sorted(ESPEAK_SAMPLES))
def test_espeak_languages_give_audio_of_plausible_length(client, lang):
    voice, text = ESPEAK_SAMPLES[lang]
    r = client.post("/v1/audio/speech", json={"input": text, "voice": voice,
                                              "response_format": "pcm", "stream": False})
    assert r.status_code == 200, r.text
    pcm = np.frombuffer(r.content, "<i2").astype(np.float32) / 32768
    seconds = len(pcm) / 24000
    # people speak these sentences at 8-25 characters a second
    assert len(text) / 25 < seconds < len(text) / 8, seconds
    assert np.sqrt(np.mean(pcm**2)) > 0.01
