"""Input cleaning, G2P per language, and chunking under Kokoro's 510-token cap."""
from __future__ import annotations

import pytest
from kokoro_server.errors import ApiError
from kokoro_server.text.chunking import (
    FIRST_CHARS,
    GROWTH,
    HEAD_MIN_WORDS,
    HEAD_PHONEMES,
    MAX_TOKENS,
    PRESPLIT_CHARS,
    chunk_text,
    lead_in,
    presplit,
    split_sentences,
)
from kokoro_server.text.clean import clean_input, has_speakable
from kokoro_server.text.g2p import Phonemizer, normalize_lang, reduced_english_warning


@pytest.fixture(scope="module")
def g2p():
    return Phonemizer("auto")


@pytest.mark.parametrize("bad", ["hi\x00there", "bell\x07", "esc\x1b[0m", "c1\x85x",
                                 "lone \ud800 surrogate", "non\ufffecharacter", "x\ufdd0"])
def test_clean_rejects_control_characters_surrogates_and_noncharacters(bad):
    with pytest.raises(ApiError) as err:
        clean_input(bad)
    assert err.value.status == 400 and err.value.code == "invalid_characters"


def test_clean_drops_invisible_format_characters_and_keeps_newlines():
    assert clean_input("zero\u200bwidth\u202e rtl\r\nnext") == "zerowidth rtl\nnext"
    assert not has_speakable("🙂 … !!")
    assert has_speakable("naïve 🙂")


def test_lang_codes_accept_kokoro_letters_and_iso_aliases():
    assert normalize_lang("a") == "a" and normalize_lang("en-GB") == "b"
    assert normalize_lang("fr") == "f" and normalize_lang(None) is None
    with pytest.raises(ApiError) as err:
        normalize_lang("xx")
    assert err.value.code == "unsupported_language"


def test_sentences_split_at_terminal_punctuation_and_newlines():
    assert split_sentences("One. Two!  Three?\nFour") == ["One.", "Two!", "Three?", "Four"]


def test_first_chunk_is_the_first_sentence_alone(g2p):
    text = "Short start. " + "Then a much longer second sentence follows here. " * 3
    chunks = list(chunk_text(text, lambda t: g2p(t, "a")))
    assert chunks[0].text == "Short start."
    assert len(chunks) >= 2


def test_every_sentence_lands_in_exactly_one_chunk_in_order(g2p):
    sentences = [f"Sentence number {i} talks about item {i * 7}." for i in range(60)]
    chunks = list(chunk_text(" ".join(sentences), lambda t: g2p(t, "a")))
    assert " ".join(c.text for c in chunks) == " ".join(sentences)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(0 < len(c.phonemes) <= MAX_TOKENS for c in chunks)


def test_a_sentence_over_the_token_cap_is_split_at_clauses_then_words(g2p):
    clause = "the committee reviewed the extraordinarily complicated proposal again"
    long_sentence = ", ".join([clause] * 12) + "."  # about 800 phonemes, one sentence
    assert len(g2p(long_sentence, "a")) > MAX_TOKENS
    chunks = list(chunk_text(long_sentence, lambda t: g2p(t, "a")))
    assert len(chunks) >= 2
    assert all(len(c.phonemes) <= MAX_TOKENS for c in chunks)
    assert " ".join(c.text for c in chunks).split() == long_sentence.split()
    no_commas = " ".join([clause] * 12) + "."
    chunks = list(chunk_text(no_commas, lambda t: g2p(t, "a")))
    assert all(len(c.phonemes) <= MAX_TOKENS for c in chunks)
    assert " ".join(c.text for c in chunks).split() == no_commas.split()


def test_a_run_on_text_reaches_the_g2p_one_window_at_a_time(g2p):
    """A raw transcript (no sentence punctuation): no G2P call reads more than a window,
    the first is shorter still, and every word is spoken once, in order."""
    words = [f"word{i % 97}" for i in range(3000)]  # about 20,000 characters
    text = " ".join(words)
    seen: list[str] = []

    def recording(t):
        seen.append(t)
        return g2p(t, "a")

    chunks = chunk_text(text, recording)
    first = next(chunks)
    assert len(seen) == 1 and 0 < len(seen[0]) <= FIRST_CHARS
    rest = list(chunks)
    assert max(len(t) for t in seen) <= PRESPLIT_CHARS
    assert " ".join(c.text for c in [first, *rest]).split() == words
    assert all(0 < len(c.phonemes) <= MAX_TOKENS for c in [first, *rest])


def test_presplit_prefers_clause_marks_then_spaces_and_cuts_unspaced_text():
    clause = "a" * 50 + ", "
    pieces = list(presplit(clause * 20, 150, 400))
    assert all(p.endswith(",") for p in pieces[:-1])
    assert " ".join(pieces).split() == (clause * 20).split()
    chinese = "我们今天讨论一个很长的问题" * 150  # 1,950 characters, no space or mark
    pieces = list(presplit(chinese, 150, 400))
    assert "".join(pieces) == chinese  # cut between characters, nothing lost
    assert len(pieces[0]) == 150 and all(len(p) <= 400 for p in pieces)


def test_english_without_spacy_model_keeps_lexicon_numbers_and_punctuation():
    lite = Phonemizer("lite")
    ps = lite("Hello, world! I have 3 cats.", "a")
    assert ps.startswith("həlˈO,") and "θɹˈi" in ps and ps.endswith(".")


@pytest.mark.parametrize("lang,text", [("e", "Hola, ¿cómo estás?"), ("f", "Bonjour à tous."),
                                       ("h", "नमस्ते दुनिया"), ("i", "Ciao a tutti."),
                                       ("p", "Olá, tudo bem?")])
def test_espeak_languages_phonemize_offline(g2p, lang, text):
    ps = g2p(text, lang)
    assert len(ps) >= len(text) // 2
    assert not any(c.isascii() and c.isupper() for c in ps.replace("A", "").replace("O", ""))


def test_chunks_carry_each_words_place_in_their_phonemes(g2p):
    text = ("Hello, world! " + "The cat, a small one, sat on the mat all day long. " * 8).strip()
    chunks = list(chunk_text(text, lambda t: g2p.align(t, "a")))
    assert len(chunks) >= 2
    for chunk in chunks:
        spoken = [w for w in chunk.words if any(c.isalpha() for c in w.text)]
        assert [w.text for w in spoken] == [w.strip(",.!") for w in chunk.text.split()]
        for w in chunk.words:
            assert 0 <= w.start < w.end <= len(chunk.phonemes)
            assert " " not in chunk.phonemes[w.start:w.end]
        # each word's phonemes are the word's own: "cat" -> kˈæt wherever it is
        cats = [chunk.phonemes[w.start:w.end] for w in chunk.words if w.text == "cat"]
        assert set(cats) <= {"kˈæt"}


def test_espeak_words_pair_with_their_phonemes_by_spaces(g2p):
    ps, words = g2p.align("Hola amigo mío", "e")
    assert [w.text for w in words] == ["Hola", "amigo", "mío"]
    assert " ".join(ps[w.start:w.end] for w in words) == ps


@pytest.mark.parametrize("requested,mode,warned", [
    ("auto", "lite", True),    # the model is missing and nobody chose that: say so
    ("auto", "full", False),
    ("full", "full", False),
    ("lite", "lite", False),   # chosen knowingly
])
def test_english_without_spacys_model_is_announced_at_start(requested, mode, warned):
    warning = reduced_english_warning(requested, mode)
    assert (warning is not None) == warned
    if warned:
        assert "en_core_web_sm" in warning and "KOKORO_ENGLISH_G2P=lite" in warning


@pytest.mark.parametrize("sentence, head", [
    ("The old lighthouse stood at the edge of the cliff, its paint peeling.",
     "The old lighthouse stood"),  # before an unstressed word ("at")
    ("In part one, the old river was quiet in the morning air today.", "In part one,"),
])
def test_the_first_sentence_starts_with_a_short_head_at_a_phrase_boundary(
        g2p, sentence, head):
    chunks = list(chunk_text(sentence, lambda t: g2p.align(t, "a")))
    assert chunks[0].text == head
    assert " ".join(c.text for c in chunks) == sentence
    for i, chunk in enumerate(chunks):
        assert len(chunk.text.split()) >= HEAD_MIN_WORDS
        assert [w.text for w in chunk.words if w.text.isalpha()] == \
            [w.strip(",.") for w in chunk.text.split()]
        if i:  # each at most doubles what came before
            assert len(chunk.phonemes) <= GROWTH * sum(len(c.phonemes) for c in chunks[:i])


@pytest.mark.parametrize("sentence", [
    "Short start.", "Hello there, my friend.", "Captions follow the voice closely.",
    # no phrase boundary in the head: a number read aloud is not cut inside
    "It costs one thousand two hundred thirty four dollars and fifty six cents today."])
def test_a_short_first_sentence_is_not_cut(g2p, sentence):
    assert lead_in(g2p(sentence, "a")) == []


def test_chunks_grow_from_a_short_head_to_the_target(g2p):
    text = " ".join(["The keeper climbed the spiral stairs to light the lamp, and "
                     "ships passing in the night relied on its steady beam."] * 8)
    chunks = list(chunk_text(text, lambda t: g2p(t, "a")))
    assert len(chunks[0].phonemes) <= HEAD_PHONEMES
    assert len(chunks[0].text.split()) >= HEAD_MIN_WORDS
    for i, chunk in enumerate(chunks[1:], 1):
        before = sum(len(c.phonemes) for c in chunks[:i])
        # a piece is a clause of the first sentence or a whole sentence: it may pass
        # the budget alone, never with another piece merged in
        assert len(chunk.phonemes) <= max(GROWTH * before, 120), i
    assert max(len(c.phonemes) for c in chunks) > 200  # later chunks reach the target
    assert " ".join(c.text for c in chunks) == text
    plain = list(chunk_text(text, lambda t: g2p(t, "a"), short_first=False))
    assert plain[0].text == split_sentences(text)[0]
