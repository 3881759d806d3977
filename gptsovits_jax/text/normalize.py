"""Text normalisation before G2P: numbers to words, abbreviations, punctuation into the table's set.

``normalize_english`` returns text made only of ASCII letters, apostrophes, spaces and the
punctuation ``, . ! ? -``; ``normalize_chinese`` returns text made only of CJK ideographs and
the punctuation ``, . ! ? - …``. Both collapse a run of punctuation to its first mark, as
upstream does (``replace_consecutive_punctuation``), so repeated marks cannot leak from a
reference transcript.
"""

from __future__ import annotations

import re
import unicodedata

from gptsovits_jax.text.numbers import (
    chinese_cardinal,
    chinese_digits,
    english_cardinal,
    english_digits,
    english_number,
    english_ordinal,
)

__all__ = ["ZH_PUNCT", "collapse_punctuation", "full_width_to_ascii", "normalize_chinese", "normalize_english", "verbalize_chinese_numbers"]

# Full-width forms U+FF01..U+FF5E are the ASCII characters U+0021..U+007E shifted by 0xFEE0.
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_FULL_WIDTH[0x3000] = ord(" ")


def full_width_to_ascii(text: str) -> str:
    """``"１２，ＡＢ" -> "12,AB"``: full-width digits, letters and marks to their ASCII forms."""
    return text.translate(_FULL_WIDTH)


# --- English -----------------------------------------------------------------------------------

_EN_PUNCT_MAP = (
    ("…", "..."),
    ("。", "."),
    ("、", ","),
    ("’", "'"),
    ("‘", "'"),
    ("—", "-"),
    ("–", "-"),
)
# Upstream maps ";" and ":" to "," and keeps only these marks; a lone quote is dropped here
# (upstream turns it into "-").
_EN_TO_COMMA = re.compile(r"[;:]")
_EN_PUNCT = ",.!?-"

# Longest abbreviations first; "St." is "saint" before a capitalised name, else "street". The
# period of an abbreviation that ends the text also ends the sentence, so it is kept.
_ABBREVIATIONS = (
    (re.compile(r"\be\.g\.", re.IGNORECASE), "for example"),
    (re.compile(r"\bi\.e\.", re.IGNORECASE), "that is"),
    (re.compile(r"\betc\.", re.IGNORECASE), "et cetera"),
    (re.compile(r"\bvs\.", re.IGNORECASE), "versus"),
    (re.compile(r"\bmrs\.", re.IGNORECASE), "missus"),
    (re.compile(r"\bmr\.", re.IGNORECASE), "mister"),
    (re.compile(r"\bdr\.", re.IGNORECASE), "doctor"),
    (re.compile(r"\bprof\.", re.IGNORECASE), "professor"),
    (re.compile(r"\bjr\.", re.IGNORECASE), "junior"),
    (re.compile(r"\bsr\.", re.IGNORECASE), "senior"),
    (re.compile(r"\b(?i:st)\.(?=\s+[A-Z])"), "saint"),
    (re.compile(r"\bst\.", re.IGNORECASE), "street"),
)

# "12,000" but not the list "1,2,3" or "1,2345"; a comma after the number is punctuation.
_GROUPED_NUMBER = re.compile(r"(?<!\d)(?<!\d,)\d{1,3}(?:,\d{3})+(?!\d)(?!,\d)")
_CURRENCY = re.compile(r"([$£])(\d+)(?:\.(\d+))?")
_CURRENCY_UNITS = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence")}
_NEGATIVE = re.compile(r"(?<![\w.])-(?=\d)")
_PERCENT = re.compile(r"(\d)\s*%")
_DECIMAL = re.compile(r"(\d+)\.(\d+)")
_FRACTION = re.compile(r"(\d+)/(\d+)")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_INTEGER = re.compile(r"\d+")
# Longer digit strings (ids, phone numbers) are read digit by digit.
_MAX_CARDINAL_DIGITS = 15
_NOT_ENGLISH = re.compile(r"[^ A-Za-z'.,?!\-]")
# "GPT" -> "G P T", "iPhone" -> "i Phone": each capital inside a word starts a new token (upstream).
_INNER_CAPITAL = re.compile(r"(?<=[A-Za-z'])(?=[A-Z])")


def _currency(match: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCY_UNITS[match.group(1)]
    whole = int(match.group(2))
    # "$6.5" is six dollars fifty: the fraction is hundredths, padded on the right.
    cents = int(match.group(3)[:2].ljust(2, "0")) if match.group(3) else 0
    parts = []
    if whole or not cents:
        parts.append(f"{english_cardinal(whole)} {one if whole == 1 else many}")
    if cents:
        parts.append(f"{english_cardinal(cents)} {sub_one if cents == 1 else sub_many}")
    return " and ".join(parts)


def _fraction(match: re.Match[str]) -> str:
    """Upstream's reading: ``1/2 -> "one half"``, ``3/4 -> "three fourths"``, ``6/1 -> "six"``."""
    numerator, denominator = int(match.group(1)), int(match.group(2))
    head = english_cardinal(numerator)
    if denominator == 1:
        return head
    if denominator == 2:
        return f"{head} {'half' if numerator == 1 else 'halves'}"
    if denominator == 0:
        return f"{head} over zero"
    return f"{head} {english_ordinal(denominator)}{'s' if numerator > 1 else ''}"


def _integer(match: re.Match[str]) -> str:
    digits = match.group(0)
    if len(digits) > _MAX_CARDINAL_DIGITS:
        return english_digits(digits)
    return english_number(int(digits))


def collapse_punctuation(text: str, marks: str, *, after_space: bool) -> str:
    """Keep only the first of consecutive marks; with ``after_space`` a mark after a space is dropped too (upstream English)."""
    escaped = re.escape(marks)
    lead = rf"[{escaped}\s]" if after_space else rf"[{escaped}]"
    return re.sub(rf"({lead})[{escaped}]+", r"\1", text)


def normalize_english(text: str) -> str:
    """English text -> words, apostrophes and ``, . ! ? -``, with numbers and abbreviations spelled out.

    Numbers: integers (1001..2999 read like years, as upstream), decimals (digits after
    "point"), ordinals (1st, 22nd), fractions (3/4), percentages, $ and £ amounts, negatives.
    ``"Dr. Smith paid $5 on the 2nd."`` -> ``"doctor Smith paid five dollars on the second."``.
    Case is kept (single capitals are read as letter names by the G2P); whitespace is collapsed;
    other symbols are removed.
    """
    text = full_width_to_ascii(text)
    for source, target in _EN_PUNCT_MAP:
        text = text.replace(source, target)
    text = _EN_TO_COMMA.sub(",", text)
    text = re.sub(r"\s+", " ", text)
    for pattern, words in _ABBREVIATIONS:
        text = pattern.sub(lambda m, words=words: words + ("." if not m.string[m.end() :].strip() else ""), text)
    text = _GROUPED_NUMBER.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _CURRENCY.sub(_currency, text)
    text = _NEGATIVE.sub("negative ", text)
    text = _PERCENT.sub(r"\1 percent", text)
    text = _DECIMAL.sub(lambda m: f"{m.group(1)} point {english_digits(m.group(2))}", text)
    text = _FRACTION.sub(_fraction, text)
    text = text.replace("/", " ").replace("&", " and ")
    text = _ORDINAL.sub(lambda m: english_ordinal(int(m.group(1))), text)
    text = _INTEGER.sub(_integer, text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = _NOT_ENGLISH.sub("", text)
    text = _INNER_CAPITAL.sub(" ", text)
    text = collapse_punctuation(text, _EN_PUNCT, after_space=True)
    return re.sub(r" +", " ", text).strip()


# --- Mandarin ----------------------------------------------------------------------------------

ZH_PUNCT = ",.!?-…"
_ZH_REPLACEMENTS = (
    ("...", "…"),
    ("嗯", "恩"),
    ("呣", "母"),
)
_ZH_PUNCT_CHARS = {
    **dict.fromkeys("，,：:；;、·/", ","),
    **dict.fromkeys("。.\n", "."),
    **dict.fromkeys("！!", "!"),
    **dict.fromkeys("？?", "?"),
    **dict.fromkeys("~～", "…"),
    **dict.fromkeys("—–", "-"),
}
_ZH_YEAR = re.compile(r"(?<!\d)(\d{4})(?=年)")
# Clock times "8:05", "14:30:10" (upstream: 八点零五分, 十四点半十秒).
_ZH_TIME = re.compile(r"(?<!\d)([0-1]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?(?!\d)")
# "-3.5度", "20℃" (零下 for a minus sign).
_ZH_TEMPERATURE = re.compile(r"(-?)(\d+(?:\.\d+)?)(°C|℃|度|摄氏度)")
_ZH_FRACTION = re.compile(r"(-?)(\d+)/(\d+)")
# "3~5", "3-5" between numbers that are not part of an expression: 三到五.
_ZH_RANGE = re.compile(r"(?<![\d+\-×÷=])(-?\d+(?:\.\d+)?)[-~](-?\d+(?:\.\d+)?)(?![\d+\-×÷=])")
_ZH_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")
_ZH_DECIMAL = re.compile(r"(\d+)\.(\d+)")
_ZH_NEGATIVE = re.compile(r"(?<![0-9A-Za-z])-(?=\d)")
_ZH_INTEGER = re.compile(r"\d+")
_ZH_MAX_CARDINAL_DIGITS = 16
_NOT_CHINESE = re.compile(rf"[^\u4e00-\u9fa5{re.escape(ZH_PUNCT)}]")


def _zh_integer(digits: str) -> str:
    # Leading zeros ("007") and very long strings are codes, read digit by digit.
    if (len(digits) > 1 and digits.startswith("0")) or len(digits) > _ZH_MAX_CARDINAL_DIGITS:
        return chinese_digits(digits)
    return chinese_cardinal(int(digits))


def _zh_number(text: str) -> str:
    """A number that may have a fraction: ``"3.14" -> "三点一四"``."""
    whole, _, fraction = text.partition(".")
    return _zh_integer(whole) + (f"点{chinese_digits(fraction)}" if fraction else "")


def _zh_signed(text: str) -> str:
    return ("负" if text.startswith("-") else "") + _zh_number(text.removeprefix("-"))


def _zh_time_part(digits: str) -> str:
    """Minutes and seconds: a leading zero is read (``"05" -> "零五"``), as upstream."""
    return ("零" if digits.startswith("0") else "") + _zh_integer(digits.lstrip("0"))


def _zh_time(match: re.Match[str]) -> str:
    hour, minute, second = match.groups()
    result = _zh_integer(str(int(hour))) + "点"
    if int(minute):
        result += "半" if int(minute) == 30 else _zh_time_part(minute) + "分"
    if second and int(second):
        result += _zh_time_part(second) + "秒"
    return result


def _zh_temperature(match: re.Match[str]) -> str:
    sign, value, unit = match.groups()
    return ("零下" if sign else "") + _zh_number(value) + ("摄氏度" if unit == "摄氏度" else "度")


def verbalize_chinese_numbers(text: str) -> str:
    """ASCII digits -> Chinese numerals, as Mandarin reads them: ``"2024年增长50%"`` -> ``"二零二四年增长百分之五十"``.

    Years before 年 digit by digit, clock times (``"3:15"`` -> 三点十五分), temperatures
    (``"-3度"`` -> 零下三度), fractions (``"1/2"`` -> 二分之一), ranges (``"3~5"`` -> 三到五),
    percentages, negatives (负), decimals (点), grouped thousands ("12,000"); leading-zero and
    very long digit strings digit by digit. Shared by the Mandarin and Cantonese normalisers
    (upstream reads numbers for both with the same normaliser, in this order).
    """
    text = _GROUPED_NUMBER.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _ZH_YEAR.sub(lambda m: chinese_digits(m.group(1)), text)
    text = _ZH_TIME.sub(_zh_time, text)
    text = _ZH_TEMPERATURE.sub(_zh_temperature, text)
    text = _ZH_FRACTION.sub(lambda m: ("负" if m.group(1) else "") + f"{_zh_integer(m.group(3))}分之{_zh_integer(m.group(2))}", text)
    text = _ZH_PERCENT.sub(lambda m: "百分之" + _zh_number(m.group(1)), text)
    text = _ZH_RANGE.sub(lambda m: f"{_zh_signed(m.group(1))}到{_zh_signed(m.group(2))}", text)
    text = _ZH_NEGATIVE.sub("负", text)
    text = _ZH_DECIMAL.sub(lambda m: _zh_number(m.group(0)), text)
    return _ZH_INTEGER.sub(lambda m: _zh_integer(m.group(0)), text)


def normalize_chinese(text: str) -> str:
    """Mandarin text -> CJK ideographs and ``, . ! ? - …``; digits become Chinese numerals.

    ``"今天是2024年，气温-3.5度，湿度50%！"`` -> ``"今天是二零二四年,气温零下三点五度,湿度百分之五十!"``.
    Anything else (Latin letters, brackets, quotes) is removed, as upstream does for "zh".
    """
    text = full_width_to_ascii(text)
    for source, target in _ZH_REPLACEMENTS:
        text = text.replace(source, target)
    text = verbalize_chinese_numbers(text)
    text = "".join(_ZH_PUNCT_CHARS.get(c, c) for c in text)
    text = _NOT_CHINESE.sub("", text)
    return collapse_punctuation(text, ZH_PUNCT, after_space=False)
