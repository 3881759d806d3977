"""Cantonese: Jyutping pieces and word2ph.

``tests/fixtures/frontend/yue.json`` holds upstream's ``clean_text(text, "yue")``
(``tools/make_frontend_fixtures.py``); ``test_frontend_fixtures.py`` checks phonemes and word2ph
match exactly and pins the sentences whose normalised text differs. Here: the rules on their own.
"""

import pytest

from gptsovits_jax.text.cantonese import g2p_cantonese, normalize_cantonese, split_jyutping, to_simplified
from gptsovits_jax.text.frontend import TextError, clean_text


@pytest.mark.parametrize(
    ("syllable", "pieces"),
    [
        ("gwong2", ["Ygw", "Yong2"]),
        ("ngo5", ["Yng", "Yo5"]),
        ("aai1", ["Yaa", "Yi1"]),  # zero onset: the first rhyme of upstream's onset list matches
        ("m4", ["Ym", "Ym4"]),  # syllabic m repeats the onset
        ("ng5", ["Yng", "Yg5"]),
        ("jyut6", ["Yj", "Yyut6"]),
    ],
)
def test_split_jyutping(syllable, pieces):
    assert split_jyutping(syllable) == pieces


def test_numbers_are_read_as_chinese_numerals():
    assert normalize_cantonese("有3個，增長50%") == "有三个,增长百分之五十"
    assert normalize_cantonese("3:05到-2度，1/3，3~5日") == "三点零五分到零下二度,三分之一,三到五日"


def test_punctuation_runs_are_kept():
    phones, word2ph = g2p_cantonese(normalize_cantonese("等一陣……"))
    assert phones[-2:] == ["…", "…"] and word2ph[-2:] == [1, 1]


def test_character_without_reading_is_a_text_error_naming_it():
    # 艹 (the grass radical) has no Jyutping; upstream raises too
    with pytest.raises(TextError, match="cannot read: '艹'"):
        clean_text("你好艹", "yue")


def test_to_simplified_keeps_cantonese_characters_and_fixes_hanziconv():
    assert to_simplified("冇問題喎") == "冇问题喎"  # 冇 and 喎 are Cantonese, not traditional forms
    assert to_simplified("錫峽濾") == "锡峡滤"
    assert to_simplified("個鋤頭") == "个锄头"
