"""espeak-ng, as Kokoro's G2P needs it: every espeak-backed Kokoro language phonemises
a real sentence in its own script, and that language's voice data is on disk.

Runs from Molecule against test hosts, and against real hosts as part of the
acceptance suite (see tests/acceptance/README.md).
"""

import re

import pytest

# Kokoro lang_code -> (espeak-ng voice, a sentence, IPA that the sentence must yield,
# the voice data file). The IPA fragments are stable parts of espeak-ng 1.51/1.52
# output; each proves the language's own rules ran, not an English fallback.
LANGUAGES = {
    "a": ("en-us", "The weather is lovely today.", ["wˈɛðɚ", "tədˈeɪ"], "en_dict"),
    "b": ("en-gb", "The weather is lovely today.", ["wˈɛðə", "tədˈeɪ"], "en_dict"),
    "e": ("es", "El tiempo es muy agradable hoy.", ["tjˈempo", "aɣɾaðˈaβle"], "es_dict"),
    "f": ("fr", "Il fait très beau aujourd'hui.", ["tʁɛ", "ʒuʁd"], "fr_dict"),
    "h": ("hi", "आज मौसम बहुत अच्छा है।", ["mˈɔːsəm", "ʌcʰcʰaː"], "hi_dict"),
    "i": ("it", "Oggi il tempo è bellissimo.", ["tˈɛmpo", "bellˈissimo"], "it_dict"),
    "p": ("pt-br", "O tempo está muito bom hoje.", ["tˈeɪmp", "mwˈiŋt"], "pt_dict"),
}


def _data_dir(host) -> str:
    out = host.check_output("espeak-ng --version")
    match = re.search(r"Data at: (\S+)", out)
    assert match, f"espeak-ng --version did not name its data folder: {out!r}"
    return match.group(1)


def test_espeak_ng_is_installed(host):
    assert host.package("espeak-ng").is_installed
    assert host.package("espeak-ng-data").is_installed
    assert host.exists("espeak-ng")


@pytest.mark.parametrize("lang_code", sorted(LANGUAGES))
def test_espeak_ng_phonemises_kokoro_language(host, lang_code):
    voice, sentence, expected, _ = LANGUAGES[lang_code]
    cmd = host.run("espeak-ng -q --ipa -v %s %s", voice, sentence)
    assert cmd.rc == 0, f"espeak-ng -v {voice} failed: {cmd.stderr}"
    ipa = cmd.stdout.strip()
    # A language switch marker such as "(en)" means espeak-ng fell back to English.
    assert not re.search(r"\((en|en-us)\)", ipa) or voice.startswith("en"), ipa
    for fragment in expected:
        assert fragment in ipa, f"{voice}: expected {fragment!r} in {ipa!r}"


@pytest.mark.parametrize("lang_code", sorted(LANGUAGES))
def test_espeak_ng_voice_data_is_present(host, lang_code):
    voice, _, _, dict_file = LANGUAGES[lang_code]
    data = _data_dir(host)
    dictionary = host.file(f"{data}/{dict_file}")
    assert dictionary.is_file, f"{data}/{dict_file} missing: reinstall espeak-ng-data"
    assert dictionary.size > 1000
    listed = host.check_output("espeak-ng --voices=%s", voice.split("-")[0])
    assert re.search(rf"\s{re.escape(voice)}\s", listed), f"voice {voice} not listed: {listed}"
