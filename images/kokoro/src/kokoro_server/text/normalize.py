"""English text normalisation: write out what a reader says for digits and symbols.

Runs before misaki's G2P for English (lang a, b) only, so that it is the one place where
numbers, money, times, units, URLs, e-mail addresses and phone numbers are read; misaki
then sees words (it has number and currency reading of its own, which no longer fires).
Other languages are passed through untouched: espeak-ng reads their numbers itself.

One left-to-right pass with one combined pattern: at each position the first rule in
RULES that matches wins, so "$5.50" is money, not a number. Each replacement is
recorded as a Span (where it sits in the output, and the original text), so captions can
show "$5.50" over the time of "five dollars and fifty cents".

The pass is linear in the text: no rule's match crosses more than a bounded stretch of
whitespace, and a run of over MAX_RUN characters without whitespace ("a.a.a...", a
pasted blob) is matched in pieces of MAX_RUN, so no match attempt scans further than
that (on whole runs, the domain and number rules took quadratic time: 24 s for
"a." * 10000).

Choices, kept simple on purpose:
- A bare four-digit number from 1000 to 2099 (no comma, no decimals) is read as a year
  ("1999" -> "nineteen ninety nine"); write "1,999" for a quantity.
- "St." and "Dr." before a capitalised word are "Saint"/"Doctor", otherwise
  "Street"/"Drive".
- Spoken forms use spaces, not hyphens ("twenty two"): without spaCy's model (lite G2P) a
  hyphen inside a word is read as a pause.
- "AM"/"PM" are spelled "A M"/"P M" (letters; "a.m." would end a sentence).
- URLs and e-mail addresses are spelled out by their parts: "." dot, "/" slash, "@" at,
  "-" dash, "_" underscore; the scheme ("https://") is not read; digit runs in them are
  read digit by digit. Phone numbers are read digit by digit, groups separated by commas.
- misaki's pronunciation markup "[word](/phonemes/)" is left as it is.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES = ((10**15, "quadrillion"), (10**12, "trillion"), (10**9, "billion"),
          (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                  "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


@dataclass(frozen=True)
class Span:
    """A replacement: output text[start:end] is the spoken form of `original`."""
    start: int
    end: int
    original: str


@dataclass(frozen=True)
class Normalized:
    text: str
    spans: tuple[Span, ...] = ()


# ---- number words -------------------------------------------------------------------

def digits(s: str) -> str:
    """'405' -> 'four zero five'."""
    return " ".join(ONES[int(c)] for c in s if c.isdigit())


def cardinal(n: int, british: bool = False) -> str:
    """0 -> 'zero', 1234 -> 'one thousand two hundred thirty four' (British: '... and
    thirty four'). Numbers of 10^18 and more are read digit by digit."""
    if n < 0:
        return "minus " + cardinal(-n, british)
    if n >= 10**18:
        return digits(str(n))
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + (" " + ONES[n % 10] if n % 10 else "")
    if n < 1000:
        head, rest = divmod(n, 100)
        tail = (" and " if british else " ") + cardinal(rest) if rest else ""
        return ONES[head] + " hundred" + tail
    for value, name in SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            words = cardinal(head, british) + " " + name
            if rest:
                words += (" and " if british and rest < 100 else " ") + cardinal(rest, british)
            return words
    raise AssertionError(n)  # unreachable


def ordinal(n: int, british: bool = False) -> str:
    """1 -> 'first', 22 -> 'twenty second', 100 -> 'one hundredth'."""
    words = cardinal(n, british).split(" ")
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year(n: int, british: bool = False) -> str:
    """1999 -> 'nineteen ninety nine', 2005 -> 'two thousand five', 1905 -> 'nineteen oh
    five', 1900 -> 'nineteen hundred', 2010 -> 'twenty ten'."""
    if n % 1000 == 0 or 2000 < n < 2010 or not 1000 <= n <= 9999:
        return cardinal(n, british)
    head, rest = divmod(n, 100)
    if rest == 0:
        return cardinal(head) + " hundred"
    if rest < 10:
        return cardinal(head) + " oh " + ONES[rest]
    return cardinal(head) + " " + cardinal(rest)


def _plural(word: str) -> str:
    if word.endswith("y"):
        return word[:-1] + "ies"
    return word + "s"


def number(s: str, british: bool = False) -> str:
    """A written number ('1,234.5', '-3', '007') -> words; decimals digit by digit."""
    s = s.replace("−", "-").replace(",", "")
    neg = s.startswith("-")
    s = s.lstrip("-")
    whole, _, frac = s.partition(".")
    if (len(whole) > 1 and whole.startswith("0") and not frac) or len(whole) > 18:
        words = digits(whole)  # beyond 10^18 digit by digit (and never int() of a huge run)
    else:
        words = cardinal(int(whole or "0"), british)
    if frac:
        words += " point " + digits(frac)
    return ("minus " + words) if neg else words


def _is_one(s: str) -> bool:
    return s.replace(",", "").lstrip("-−") == "1"


# ---- rules --------------------------------------------------------------------------

NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
_NEG = r"(?:(?<![\w.,])[-−])"
# Common top-level domains; two-letter ones that are English words (in, it, me, us, to,
# be, no, so, is, at) are left out so "home.It" typos are not read as addresses.
_TLDS = ("com|org|net|io|dev|ai|app|edu|gov|co|uk|de|fr|es|nl|eu|info|biz|tv|ca|au|jp"
         "|ly|sh|gg|xyz|cloud|tech|site|online")
_URL_TAIL = r"(?:/[^\s<>\"']*[^\s<>\"'.,;:!?)\]}])?/?"

CURRENCIES = {  # symbol -> (unit, units, subunit, subunits)
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", None, None),
}
MONEY_SCALES = {"k": "thousand", "m": "million", "mn": "million", "b": "billion",
                "bn": "billion", "t": "trillion", "tn": "trillion", "thousand": "thousand",
                "million": "million", "billion": "billion", "trillion": "trillion"}

UNITS = {  # symbol (case-sensitive) -> (singular, plural)
    "km": ("kilometer", "kilometers"), "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"), "µm": ("micrometer", "micrometers"),
    "nm": ("nanometer", "nanometers"), "m": ("meter", "meters"),
    "mi": ("mile", "miles"), "ft": ("foot", "feet"), "yd": ("yard", "yards"),
    "kg": ("kilogram", "kilograms"), "mg": ("milligram", "milligrams"),
    "µg": ("microgram", "micrograms"), "g": ("gram", "grams"),
    "lbs": ("pound", "pounds"), "lb": ("pound", "pounds"), "oz": ("ounce", "ounces"),
    "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"),
    "l": ("liter", "liters"), "L": ("liter", "liters"),
    "KB": ("kilobyte", "kilobytes"), "kB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"), "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"), "PB": ("petabyte", "petabytes"),
    "KiB": ("kibibyte", "kibibytes"), "MiB": ("mebibyte", "mebibytes"),
    "GiB": ("gibibyte", "gibibytes"), "TiB": ("tebibyte", "tebibytes"),
    "Mb": ("megabit", "megabits"), "Gb": ("gigabit", "gigabits"),
    "kbps": ("kilobit per second", "kilobits per second"),
    "Mbps": ("megabit per second", "megabits per second"),
    "Gbps": ("gigabit per second", "gigabits per second"),
    "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"),
    "MHz": ("megahertz", "megahertz"), "GHz": ("gigahertz", "gigahertz"),
    "kWh": ("kilowatt hour", "kilowatt hours"), "kW": ("kilowatt", "kilowatts"),
    "MW": ("megawatt", "megawatts"), "W": ("watt", "watts"), "V": ("volt", "volts"),
    "mAh": ("milliamp hour", "milliamp hours"), "mA": ("milliamp", "milliamps"),
    "ms": ("millisecond", "milliseconds"), "µs": ("microsecond", "microseconds"),
    "ns": ("nanosecond", "nanoseconds"), "sec": ("second", "seconds"),
    "s": ("second", "seconds"), "min": ("minute", "minutes"), "hrs": ("hour", "hours"),
    "hr": ("hour", "hours"), "h": ("hour", "hours"),
    "mph": ("mile per hour", "miles per hour"), "kph": ("kilometer per hour",
                                                       "kilometers per hour"),
    "°C": ("degree Celsius", "degrees Celsius"), "°F": ("degree Fahrenheit",
                                                       "degrees Fahrenheit"),
    "°": ("degree", "degrees"), "px": ("pixel", "pixels"), "dB": ("decibel", "decibels"),
    "fps": ("frame per second", "frames per second"),
    "€": ("euro", "euros"), "¢": ("cent", "cents"),
    "USD": ("US dollar", "US dollars"), "EUR": ("euro", "euros"),
    "GBP": ("British pound", "British pounds"), "JPY": ("yen", "yen"),
}
PER = {"s": "second", "sec": "second", "h": "hour", "hr": "hour", "min": "minute",
       "ms": "millisecond", "day": "day", "week": "week", "month": "month", "year": "year"}
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
_PER_ALT = "|".join(sorted(PER, key=len, reverse=True))

ABBREVIATIONS = {"Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Prof": "Professor",
                 "Mt": "Mount", "Jr": "Junior", "Sr": "Senior", "vs": "versus",
                 "etc": "et cetera", "approx": "approximately", "Ave": "Avenue"}
# (before a capitalised word, otherwise)
AMBIGUOUS = {"St": ("Saint", "Street"), "Dr": ("Doctor", "Drive")}
_CAN_END_SENTENCE = {"etc", "Jr", "Sr", "Ave", "St", "Dr"}

RULES: list[tuple[str, str]] = [
    ("markup", r"\[[^\]\n]{1,200}\]\(/[^)\n]{0,200}/\)"),
    ("url", r"(?i:\b(?:https?|ftp)://)[^\s<>\"']*[^\s<>\"'.,;:!?)\]}]"),
    ("email", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    ("domain", rf"(?i:\b(?:www\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:{_TLDS})\b){_URL_TAIL}"),
    ("phone", r"(?<![\w+])(?:\+?1[\s.-])?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\w)"
              r"|(?<![\w+])\+\d{1,3}(?:[\s.-]\d{1,4}){2,5}(?![\w])"
              r"|(?<![\w-])\d{3}-\d{4}(?![\w-])"),
    ("date", r"\b(?P<date_y>\d{4})-(?P<date_m>0[1-9]|1[0-2])-(?P<date_d>0[1-9]|[12]\d|3[01])\b"),
    ("money", rf"(?P<money_neg>{_NEG})?(?P<money_cur>[$€£¥])\s?(?P<money_num>{NUM})"
              r"(?:\s?(?P<money_scale>(?i:thousand|million|billion|trillion|bn|mn|tn|[kmbt]))"
              r"(?![\w]))?"),
    ("time", r"(?<![\d:.])(?P<time_h>[01]?\d|2[0-3]):(?P<time_m>[0-5]\d)"
             r"(?::(?P<time_s>[0-5]\d))?(?![\d:])"
             r"(?:\s?(?P<time_ampm>(?i:[ap]\.?m\.?))(?![\w]))?"),
    ("clock", r"(?<![\d.,:])(?P<clock_h>1[0-2]|0?[1-9])\s?(?P<clock_ampm>(?i:[ap]\.?m\.?))"
              r"(?![\w])"),
    ("percent", rf"(?P<pct_neg>{_NEG})?(?P<pct_num>{NUM})\s?%"),
    ("decade", r"(?<![\w'’])(?P<dec_q>['’])?(?P<dec_num>(?:1\d|20)?\d0)s\b"),
    ("unit", rf"(?P<unit_neg>{_NEG})?(?P<unit_num>{NUM})\s?(?P<unit_sym>{_UNIT_ALT})"
             rf"(?:/(?P<unit_per>{_PER_ALT}))?(?![\w°])"),
    ("ordinal", r"(?<![\d.,])(?P<ord_num>\d{1,3}(?:,\d{3})+|\d+)(?i:st|nd|rd|th)\b"),
    ("version", r"(?<![\d.])\d+(?:\.\d+){2,}(?![\d.]\d)"),
    ("range", rf"(?<![\w.,-])(?P<range_a>{NUM})[-–](?P<range_b>{NUM})(?P<range_pct>\s?%)?"
              r"(?![\w-])"),
    ("number", rf"(?P<num_neg>{_NEG})?(?P<num_val>{NUM})(?![\d])"),
    ("abbr", r"\b(?P<abbr_word>" + "|".join([*ABBREVIATIONS, *AMBIGUOUS]) + r")\."),
    ("numero", r"(?:\bNo\.|#)(?=\s?\d)"),
    ("amp", r"(?<=\s)&(?=\s)"),
]
_PATTERN = re.compile("|".join(f"(?P<{name}>{pat})" for name, pat in RULES))
MAX_RUN = 100  # longest run without whitespace matched as one piece (a URL is shorter)
_LONG_RUN = re.compile(rf"\S{{{MAX_RUN + 1},}}")


def _windows(text: str) -> Iterator[tuple[int, int]]:
    """The [start, end) stretches the pattern runs over: the text between long runs
    whole, and each long run in pieces of MAX_RUN characters."""
    pos = 0
    for run in _LONG_RUN.finditer(text):
        if run.start() > pos:
            yield pos, run.start()
        for start in range(run.start(), run.end(), MAX_RUN):
            yield start, min(start + MAX_RUN, run.end())
        pos = run.end()
    if pos < len(text):
        yield pos, len(text)


def _sentence_ends_after(text: str, end: int) -> bool:
    """A period we consumed also ended the sentence (end of text, a newline, or a
    capitalised word next)."""
    rest = text[end:]
    return not rest.strip() or bool(re.match(r"\s*\n|\s+[A-Z\"“(]", rest))


def _spell(part: str) -> str:
    """Spell a URL/e-mail fragment: separators as words, digit runs digit by digit."""
    names = {".": " dot ", "/": " slash ", "@": " at ", "-": " dash ", "_": " underscore ",
             ":": " colon ", "?": " question mark ", "=": " equals ", "&": " and ",
             "+": " plus ", "#": " hash ", "%": " percent ", "~": " tilde "}
    out = []
    for piece in re.split(r"(\d+|[./@\-_:?=&+#%~])", part):
        if not piece:
            continue
        out.append(digits(piece) if piece.isdigit() else names.get(piece, piece))
    return re.sub(r"\s+", " ", " ".join(out)).strip()


def _url(m: re.Match, text: str, british: bool) -> str:
    raw = re.sub(r"(?i)^(?:https?|ftp)://", "", m.group())
    if raw.lower().startswith("www."):
        raw = "w w w." + raw[4:]
    return _spell(raw.rstrip("/"))


def _phone(m: re.Match, text: str, british: bool) -> str:
    raw = m.group()
    groups = re.findall(r"\d+", raw)
    words = ", ".join(digits(g) for g in groups)
    return ("plus " + words) if raw.startswith("+") else words


def _date(m: re.Match, text: str, british: bool) -> str:
    y, mo, d = int(m["date_y"]), int(m["date_m"]), int(m["date_d"])
    if british:
        return f"the {ordinal(d)} of {MONTHS[mo - 1]} {year(y)}"
    return f"{MONTHS[mo - 1]} {ordinal(d)}, {year(y)}"


def _money(m: re.Match, text: str, british: bool) -> str:
    unit, units, sub, subs = CURRENCIES[m["money_cur"]]
    num = m["money_num"]
    neg = "minus " if m["money_neg"] else ""
    if m["money_scale"]:
        scale = MONEY_SCALES[m["money_scale"].lower()]
        return f"{neg}{number(num, british)} {scale} {units}"
    whole, _, frac = num.replace(",", "").partition(".")
    n = int(whole or "0")
    if frac and (len(frac) != 2 or sub is None):
        return f"{neg}{number(num, british)} {units}"
    cents = int(frac) if frac else 0
    main = f"{cardinal(n, british)} {unit if n == 1 else units}"
    if not cents:
        return neg + main
    small = f"{cardinal(cents, british)} {sub if cents == 1 else subs}"
    return neg + (small if n == 0 else f"{main} and {small}")


def _ampm(raw: str | None, text: str, end: int) -> str:
    if not raw:
        return ""
    words = " A M" if raw[0] in "aA" else " P M"
    return words + ("." if raw.endswith(".") and _sentence_ends_after(text, end) else "")


def _time(m: re.Match, text: str, british: bool) -> str:
    h, mi = int(m["time_h"]), int(m["time_m"])
    ampm = _ampm(m["time_ampm"], text, m.end())
    if mi == 0:
        spoken = cardinal(h) + ("" if ampm else " o'clock" if 0 < h <= 12 else " hundred")
    elif mi < 10:
        spoken = f"{cardinal(h)} oh {ONES[mi]}"
    else:
        spoken = f"{cardinal(h)} {cardinal(mi)}"
    if m["time_s"]:
        s = int(m["time_s"])
        spoken += f" and {cardinal(s)} {'second' if s == 1 else 'seconds'}"
    return spoken + ampm


def _clock(m: re.Match, text: str, british: bool) -> str:
    return cardinal(int(m["clock_h"])) + _ampm(m["clock_ampm"], text, m.end())


def _percent(m: re.Match, text: str, british: bool) -> str:
    neg = "minus " if m["pct_neg"] else ""
    return f"{neg}{number(m['pct_num'], british)} percent"


def _unit(m: re.Match, text: str, british: bool) -> str:
    num, sym = m["unit_num"], m["unit_sym"]
    one, many = UNITS[sym]
    neg = "minus " if m["unit_neg"] else ""
    words = f"{neg}{number(num, british)} {one if _is_one(num) else many}"
    if m["unit_per"]:
        words += " per " + PER[m["unit_per"]]
    return words


def _ordinal(m: re.Match, text: str, british: bool) -> str:
    return ordinal(int(m["ord_num"].replace(",", "")), british)


def _decade(m: re.Match, text: str, british: bool) -> str:
    n = int(m["dec_num"])
    if n < 100:
        return _plural(cardinal(n))
    head, rest = divmod(n, 100)
    if rest == 0:
        return _plural(year(n)) if n % 1000 else _plural(cardinal(n))
    return cardinal(head) + " " + _plural(cardinal(rest))


def _version(m: re.Match, text: str, british: bool) -> str:
    return " point ".join(number(p, british) for p in m.group().split("."))


def _range_end(s: str, british: bool) -> str:
    plain = s.isdigit() and len(s) == 4 and 1000 <= int(s) <= 2099
    return year(int(s), british) if plain else number(s, british)


def _range(m: re.Match, text: str, british: bool) -> str:
    pct = " percent" if m["range_pct"] else ""
    return f"{_range_end(m['range_a'], british)} to {_range_end(m['range_b'], british)}{pct}"


def _number(m: re.Match, text: str, british: bool) -> str:
    val = m["num_val"]
    neg = "minus " if m["num_neg"] else ""
    if val.isdigit() and len(val) == 4 and 1000 <= int(val) <= 2099:
        return neg + year(int(val), british)
    return neg + number(val, british)


def _abbr(m: re.Match, text: str, british: bool) -> str:
    word = m["abbr_word"]
    before_name = bool(re.match(r"\s+[A-Z]", text[m.end():]))
    if word in AMBIGUOUS:
        spoken = AMBIGUOUS[word][0 if before_name else 1]
        if before_name:
            return spoken
    else:
        spoken = ABBREVIATIONS[word]
    if word in _CAN_END_SENTENCE and _sentence_ends_after(text, m.end()):
        return spoken + "."
    return spoken


HANDLERS: dict[str, Callable[[re.Match, str, bool], str]] = {
    "markup": lambda m, t, b: m.group(), "url": _url, "email": _url, "domain": _url,
    "phone": _phone, "date": _date, "money": _money, "time": _time, "clock": _clock,
    "percent": _percent, "unit": _unit, "ordinal": _ordinal, "decade": _decade,
    "version": _version, "range": _range, "number": _number, "abbr": _abbr,
    "numero": lambda m, t, b: "number", "amp": lambda m, t, b: "and",
}


def normalize(text: str, british: bool = False) -> Normalized:
    """Spoken form of English text, with a Span for every replacement made."""
    out: list[str] = []
    spans: list[Span] = []
    pos = length = 0
    matches = (m for start, end in _windows(text) for m in _PATTERN.finditer(text, start, end))
    for m in matches:
        spoken = HANDLERS[m.lastgroup](m, text, british)
        if spoken == m.group():
            continue
        # keep words apart from letters or digits they were glued to ("mp3", "3D")
        if m.start() > 0 and text[m.start() - 1].isalnum() and spoken[:1].isalnum():
            spoken = " " + spoken
        if m.end() < len(text) and text[m.end()].isalnum() and spoken[-1:].isalnum():
            spoken += " "
        out.append(text[pos:m.start()])
        length += m.start() - pos
        lead = len(spoken) - len(spoken.lstrip())
        core = spoken.strip()
        spans.append(Span(length + lead, length + lead + len(core), m.group()))
        out.append(spoken)
        length += len(spoken)
        pos = m.end()
    out.append(text[pos:])
    return Normalized("".join(out), tuple(spans))


def normalize_english(text: str, british: bool = False) -> str:
    return normalize(text, british).text
