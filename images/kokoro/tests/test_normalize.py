"""English text normalisation: written forms -> what a reader says (pure functions)."""
from __future__ import annotations

import itertools

import pytest
from kokoro_server.api.speech import normalized
from kokoro_server.settings import Settings
from kokoro_server.text.normalize import cardinal, normalize, normalize_english, ordinal, year
from kokoro_testlib import HOSTILE, RULE_SAMPLES, rule_runs

CASES = [
    # cardinals
    ("I have 3 cats.", "I have three cats."),
    ("0", "zero"),
    ("13 and 42", "thirteen and forty two"),
    ("It took 100 tries.", "It took one hundred tries."),
    ("1,234 people", "one thousand two hundred thirty four people"),
    ("1,000,000", "one million"),
    ("7,000,000,001", "seven billion one"),
    ("2500000", "two million five hundred thousand"),
    ("Agent 007", "Agent zero zero seven"),
    # decimals and negatives
    ("3.14", "three point one four"),
    ("0.5", "zero point five"),
    ("1,234.56", "one thousand two hundred thirty four point five six"),
    ("It is -5 outside.", "It is minus five outside."),
    ("-3.5", "minus three point five"),
    ("\u22127", "minus seven"),
    # ordinals
    ("1st", "first"),
    ("2nd place", "second place"),
    ("the 3rd time", "the third time"),
    ("4th", "fourth"),
    ("12th", "twelfth"),
    ("22nd", "twenty second"),
    ("the 40th birthday", "the fortieth birthday"),
    ("101st", "one hundred first"),
    ("1,000th", "one thousandth"),
    # years and decades
    ("In 1999 it began.", "In nineteen ninety nine it began."),
    ("2005", "two thousand five"),
    ("2000", "two thousand"),
    ("1900", "nineteen hundred"),
    ("1905", "nineteen oh five"),
    ("2010", "twenty ten"),
    ("1066", "ten sixty six"),
    ("the 1900s", "the nineteen hundreds"),
    ("the 1990s", "the nineteen nineties"),
    ("the 2000s", "the two thousands"),
    ("the '80s", "the eighties"),
    ("from 1914-1918", "from nineteen fourteen to nineteen eighteen"),
    ("2024-03-15", "March fifteenth, twenty twenty four"),
    # money
    ("$5", "five dollars"),
    ("$1", "one dollar"),
    ("$5.50", "five dollars and fifty cents"),
    ("$0.99", "ninety nine cents"),
    ("$0.01", "one cent"),
    ("$1,234.56", "one thousand two hundred thirty four dollars and fifty six cents"),
    ("$5.00", "five dollars"),
    ("\u20ac20", "twenty euros"),
    ("\u00a33", "three pounds"),
    ("\u00a31.50", "one pound and fifty pence"),
    ("\u00a5100", "one hundred yen"),
    ("$1.2M", "one point two million dollars"),
    ("$3B", "three billion dollars"),
    ("$5k", "five thousand dollars"),
    ("$2.5 billion", "two point five billion dollars"),
    ("-$20", "minus twenty dollars"),
    ("20\u20ac", "twenty euros"),
    ("50\u00a2", "fifty cents"),
    ("100 USD", "one hundred US dollars"),
    # times
    ("3:30 pm", "three thirty P M"),
    ("14:05", "fourteen oh five"),
    ("at 9:45 a.m. sharp", "at nine forty five A M sharp"),
    ("3:00 PM", "three P M"),
    ("7:00", "seven o'clock"),
    ("18:00", "eighteen hundred"),
    ("5 pm", "five P M"),
    ("Meet at 10 a.m. Bring water.", "Meet at ten A M. Bring water."),
    ("12:15:30", "twelve fifteen and thirty seconds"),
    # percentages
    ("50%", "fifty percent"),
    ("3.5 %", "three point five percent"),
    ("-2%", "minus two percent"),
    ("10-15%", "ten to fifteen percent"),
    # units
    ("5 km", "five kilometers"),
    ("1 km", "one kilometer"),
    ("10 kg", "ten kilograms"),
    ("3.5 GB", "three point five gigabytes"),
    ("100 MB/s", "one hundred megabytes per second"),
    ("20\u00b0C", "twenty degrees Celsius"),
    ("1 \u00b0F", "one degree Fahrenheit"),
    ("90\u00b0", "ninety degrees"),
    ("-5\u00b0C", "minus five degrees Celsius"),
    ("60 mph", "sixty miles per hour"),
    ("100 km/h", "one hundred kilometers per hour"),
    ("5ms", "five milliseconds"),
    ("2.4 GHz", "two point four gigahertz"),
    ("6 ft", "six feet"),
    ("250 ml", "two hundred fifty milliliters"),
    ("1 lb", "one pound"),
    # URLs and e-mail
    ("example.com", "example dot com"),
    ("See https://example.com/docs.", "See example dot com slash docs."),
    ("www.python.org", "w w w dot python dot org"),
    ("docs.example.io/getting-started", "docs dot example dot io slash getting dash started"),
    ("http://example.com/v2/", "example dot com slash v two"),
    ("john.doe@example.com", "john dot doe at example dot com"),
    ("Mail jane_smith+news@mail.example.co.uk!",
     "Mail jane underscore smith plus news at mail dot example dot co dot uk!"),
    # phone numbers
    ("555-123-4567", "five five five, one two three, four five six seven"),
    ("(555) 123-4567", "five five five, one two three, four five six seven"),
    ("+1 555 123 4567", "plus one, five five five, one two three, four five six seven"),
    ("+44 20 7946 0958", "plus four four, two zero, seven nine four six, zero nine five eight"),
    ("Call 555-0199.", "Call five five five, zero one nine nine."),
    # abbreviations, symbols, mixed
    ("Dr. Smith", "Doctor Smith"),
    ("Mr. and Mrs. Jones", "Mister and Missus Jones"),
    ("St. Louis", "Saint Louis"),
    ("He lives on Main St.", "He lives on Main Street."),
    ("Elm Dr. is closed", "Elm Drive is closed"),
    ("apples, pears, etc. More later.", "apples, pears, et cetera. More later."),
    ("cats vs. dogs", "cats versus dogs"),
    ("No. 5", "number five"),
    ("#1 hit", "number one hit"),
    ("salt & pepper", "salt and pepper"),
    ("version 1.2.3", "version one point two point three"),
    ("pages 5-10", "pages five to ten"),
    ("mp3 and 3D", "mp three and three D"),
    # left alone
    ("Hello, world!", "Hello, world!"),
    ("[Kokoro](/kˈOkəɹO/) 2", "[Kokoro](/kˈOkəɹO/) two"),
    ("e.g. this", "e.g. this"),
]


@pytest.mark.parametrize("written,spoken", CASES, ids=[c[0] for c in CASES])
def test_english_normalisation_reads_written_forms_aloud(written, spoken):
    assert normalize_english(written) == spoken


def test_the_table_covers_at_least_sixty_cases():
    assert len(CASES) >= 60


def test_british_english_says_and_after_hundred():
    assert normalize_english("105 and 2,005", british=True) == \
        "one hundred and five and two thousand and five"
    assert normalize_english("2024-03-15", british=True) == \
        "the fifteenth of March twenty twenty four"


def test_spans_point_at_each_spoken_form_and_keep_the_original():
    result = normalize("Pay $5.50 at 3:30 pm to john@example.com now.")
    assert [s.original for s in result.spans] == ["$5.50", "3:30 pm", "john@example.com"]
    for s in result.spans:
        assert result.text[s.start:s.end] in ("five dollars and fifty cents", "three thirty P M",
                                              "john at example dot com")
    assert result.text == ("Pay five dollars and fifty cents at three thirty P M to "
                           "john at example dot com now.")


def test_spans_shift_when_glued_words_get_a_space():
    result = normalize("mp3")
    assert result.text == "mp three"
    (span,) = result.spans
    assert result.text[span.start:span.end] == "three" and span.original == "3"


def test_number_words_helpers():
    assert cardinal(999_999) == "nine hundred ninety nine thousand nine hundred ninety nine"
    assert cardinal(10**18) == " ".join(["one"] + ["zero"] * 18)  # digit by digit
    assert ordinal(20) == "twentieth" and ordinal(3) == "third"
    assert year(1800) == "eighteen hundred" and year(2009) == "two thousand nine"


def test_text_without_anything_to_normalise_is_returned_as_is():
    text = "Plain words only, nothing to read differently."
    assert normalize(text).text == text and normalize(text).spans == ()


def test_the_setting_and_the_request_field_switch_normalisation_for_english_only():
    on = Settings.from_env({}).normalize
    off = Settings.from_env({"KOKORO_NORMALIZE": "false"}).normalize
    assert on is True and off is False
    assert normalized("5 km", "a", None, on)[0] == "five kilometers"
    assert normalized("5 km", "b", None, on)[0] == "five kilometers"
    assert normalized("5 km", "a", None, off)[0] == "5 km"
    assert normalized("5 km", "a", True, off)[0] == "five kilometers"
    assert normalized("5 km", "a", False, on)[0] == "5 km"
    for lang in "efhipjz":  # espeak-ng and CJK G2P read numbers in their own language
        assert normalized("5 km", lang, True, on) == ("5 km", ())


def test_the_pattern_never_runs_over_more_than_max_run_characters_without_whitespace():
    from kokoro_server.text.normalize import MAX_RUN, _windows

    for text in [*HOSTILE.values(), "x" * (3 * MAX_RUN + 7) + " tail", "short text", ""]:
        windows = list(_windows(text))
        # the windows tile the text, in order
        assert [w for w in windows if w[0] >= w[1]] == []
        assert "".join(text[a:b] for a, b in windows) == text
        assert all(a == prev_b for (_, prev_b), (a, _) in itertools.pairwise(windows))
        for a, b in windows:
            assert max(map(len, text[a:b].split()), default=0) <= MAX_RUN, (a, b)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_input_is_normalised_piece_by_piece_without_error(name):
    text = HOSTILE[name]
    result = normalize(text)
    assert result.text and len(result.text) >= len(text) // 2
    for span in result.spans:  # every span still points at its spoken form
        assert result.text[span.start:span.end].strip() == result.text[span.start:span.end]


def test_every_rule_has_a_hostile_sample():
    from kokoro_server.text.normalize import RULES

    assert set(RULE_SAMPLES) == {name for name, _ in RULES}


@pytest.mark.parametrize("name", rule_runs())
def test_each_rule_repeated_into_a_20000_character_run_is_read(name):
    text = rule_runs()[name]
    result = normalize(text)
    assert result.text.strip()
    if not name.startswith("markup"):  # phoneme markup is kept for the G2P, not read
        assert result.spans and result.spans[-1].end <= len(result.text)


def test_a_long_run_keeps_the_rules_working_after_it():
    text = "x" * 1000 + " costs $5 and 5 km"
    assert normalize(text).text == "x" * 1000 + " costs five dollars and five kilometers"


def test_numbers_beyond_a_quintillion_are_read_digit_by_digit():
    nine = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert normalize("1234567890123456789").text == " ".join([*nine, "zero", *nine])
