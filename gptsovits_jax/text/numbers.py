"""Numbers as words: English (cardinal, ordinal, year-style) and Mandarin (Chinese numerals).

Pure functions of non-negative integers or digit strings; the normalisers in
``normalize.py`` find the numbers in text and call these.
"""

from __future__ import annotations

__all__ = [
    "chinese_cardinal",
    "chinese_digits",
    "english_cardinal",
    "english_digits",
    "english_number",
    "english_ordinal",
]

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_IRREGULAR_ORDINALS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def _check_non_negative(n: int) -> None:
    if n < 0:
        raise ValueError(f"expected a non-negative integer, got {n}")


def _below_hundred(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    tens, ones = divmod(n, 10)
    return [_TENS[tens]] + ([_ONES[ones]] if ones else [])


def _below_thousand(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    words = [_ONES[hundreds], "hundred"] if hundreds else []
    return words + (_below_hundred(rest) if rest else [])


def english_cardinal(n: int) -> str:
    """``123 -> "one hundred twenty three"``: American style, no "and", words separated by spaces."""
    _check_non_negative(n)
    if n == 0:
        return "zero"
    words: list[str] = []
    for value, name in _SCALES:
        count, n = divmod(n, value)
        if count:
            words += [english_cardinal(count), name]
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def english_number(n: int) -> str:
    """An integer as read in running text, upstream's rule: 1001..2999 are read like years.

    ``1999 -> "nineteen ninety nine"``, ``1905 -> "nineteen oh five"``, ``2024 -> "twenty twenty four"``,
    ``2000 -> "two thousand"``, ``2005 -> "two thousand five"``, ``1500 -> "fifteen hundred"``;
    every other value is ``english_cardinal``.
    """
    _check_non_negative(n)
    if not 1000 < n < 3000:
        return english_cardinal(n)
    if n == 2000 or 2000 < n < 2010:
        return english_cardinal(n)
    century, rest = divmod(n, 100)
    if rest == 0:
        return f"{english_cardinal(century)} hundred"
    tail = f"oh {_ONES[rest]}" if rest < 10 else english_cardinal(rest)
    return f"{english_cardinal(century)} {tail}"


def english_ordinal(n: int) -> str:
    """``1 -> "first"``, ``22 -> "twenty second"``, ``40 -> "fortieth"``, ``100 -> "one hundredth"``."""
    *head, last = english_cardinal(n).split()
    if last in _IRREGULAR_ORDINALS:
        last = _IRREGULAR_ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def english_digits(digits: str) -> str:
    """``"014" -> "zero one four"``: one word per digit (decimal fractions, long digit strings)."""
    return " ".join(_ONES[int(d)] for d in digits)


_ZH_DIGITS = "零一二三四五六七八九"
_ZH_PLACES = ("千", "百", "十", "")
# Sections of four digits: ones, 万 (1e4), 亿 (1e8), 万亿 (1e12).
_ZH_SECTIONS = ("", "万", "亿", "万亿")


def chinese_digits(digits: str) -> str:
    """``"2024" -> "二零二四"``: one numeral per digit (years, decimal fractions, codes)."""
    return "".join(_ZH_DIGITS[int(d)] for d in digits)


def _chinese_section(n: int) -> str:
    """1..9999 with place words; one 零 stands for any run of inner zeros (1001 -> 一千零一)."""
    out = ""
    pending_zero = False
    for digit, place in zip(f"{n:04d}", _ZH_PLACES):
        if digit == "0":
            pending_zero = bool(out)
            continue
        if pending_zero:
            out += "零"
            pending_zero = False
        out += _ZH_DIGITS[int(digit)] + place
    return out


def chinese_cardinal(n: int) -> str:
    """``10010 -> "一万零一十"``, ``15 -> "十五"``, ``0 -> "零"``; supports ``n < 10**16``.

    A section below 1000 after a non-empty higher section is preceded by 零, and a leading
    一十 is read 十 (the usual spoken forms).
    """
    _check_non_negative(n)
    if n >= 10**16:
        raise ValueError(f"{n} is too large for Chinese place-value reading (limit 10**16); read it digit by digit")
    if n == 0:
        return _ZH_DIGITS[0]
    sections = []
    while n:
        n, section = divmod(n, 10_000)
        sections.append(section)
    out = ""
    pending_zero = False
    for index in reversed(range(len(sections))):
        section = sections[index]
        if section == 0:
            pending_zero = bool(out)
            continue
        if out and (pending_zero or section < 1000):
            out += "零"
        out += _chinese_section(section) + _ZH_SECTIONS[index]
        pending_zero = False
    return out[1:] if out.startswith("一十") else out
