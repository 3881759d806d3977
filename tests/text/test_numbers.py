"""Numbers as English words and Chinese numerals."""

import pytest

from gptsovits_jax.text.numbers import (
    chinese_cardinal,
    chinese_digits,
    english_cardinal,
    english_digits,
    english_number,
    english_ordinal,
)


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (20, "twenty"),
        (42, "forty two"),
        (100, "one hundred"),
        (115, "one hundred fifteen"),
        (1000, "one thousand"),
        (3456, "three thousand four hundred fifty six"),
        (12000, "twelve thousand"),
        (1_000_001, "one million one"),
        (2_500_000_000, "two billion five hundred million"),
    ],
)
def test_english_cardinal(n, words):
    assert english_cardinal(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (1000, "one thousand"),
        (1001, "ten oh one"),
        (1905, "nineteen oh five"),
        (1999, "nineteen ninety nine"),
        (1500, "fifteen hundred"),
        (2000, "two thousand"),
        (2007, "two thousand seven"),
        (2024, "twenty twenty four"),
        (3000, "three thousand"),
        (999, "nine hundred ninety nine"),
    ],
)
def test_english_number_reads_1001_to_2999_like_years(n, words):
    assert english_number(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (1, "first"),
        (2, "second"),
        (3, "third"),
        (5, "fifth"),
        (12, "twelfth"),
        (21, "twenty first"),
        (40, "fortieth"),
        (100, "one hundredth"),
    ],
)
def test_english_ordinal(n, words):
    assert english_ordinal(n) == words


def test_english_digits():
    assert english_digits("3014") == "three zero one four"


@pytest.mark.parametrize(
    ("n", "numerals"),
    [
        (0, "零"),
        (10, "十"),
        (15, "十五"),
        (20, "二十"),
        (101, "一百零一"),
        (110, "一百一十"),
        (1001, "一千零一"),
        (2024, "二千零二十四"),
        (10010, "一万零一十"),
        (100000, "十万"),
        (120000, "十二万"),
        (1000000, "一百万"),
        (100010000, "一亿零一万"),
        (100000001, "一亿零一"),
        (10**12 + 5, "一万亿零五"),
    ],
)
def test_chinese_cardinal(n, numerals):
    assert chinese_cardinal(n) == numerals


def test_chinese_digits():
    assert chinese_digits("2024") == "二零二四"


def test_negative_and_too_large_are_rejected():
    with pytest.raises(ValueError, match="-1"):
        english_cardinal(-1)
    with pytest.raises(ValueError, match="digit by digit"):
        chinese_cardinal(10**16)
