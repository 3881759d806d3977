"""Cantonese: Jyutping pieces and word2ph, checked against upstream's own output.

``tests/fixtures/frontend/yue.json`` holds upstream's ``clean_text(text, "yue")``
(``tools/make_frontend_fixtures.py``): phonemes and word2ph must match exactly. The normalised
text may differ where upstream's traditional-to-simplified table and hanziconv's map a
character differently (``KNOWN_NORM_TEXT_DIFFERENCES``); the readings agree there.
"""

import json
from pathlib import Path

import pytest

from gptsovits_jax.text.cantonese import g2p_cantonese, normalize_cantonese, split_jyutping, to_simplified
from gptsovits_jax.text.frontend import TextError, clean_text
from gptsovits_jax.text.symbols import SYMBOL_TO_ID

TABLE = json.loads((Path(__file__).parents[1] / "fixtures" / "frontend" / "yue.json").read_text(encoding="utf-8"))
ROWS = TABLE["sentences"]
# upstream's table maps 鍾 to 锺, hanziconv to 钟; both read zung1.
KNOWN_NORM_TEXT_DIFFERENCES = {"我鍾意睇書、聽歌同埋行山。": "我钟意睇书,听歌同埋行山."}
# Upstream reads a bare number of 3 or more digits not followed by a measure word digit by
# digit, 1 as 幺 (its RE_DEFAULT_NUM with a long list of measure words); this normaliser
# reads it as a cardinal. The table keeps the sentence so the difference stays visible.
KNOWN_NUMBER_DIFFERENCES = {"ＡＢＣ１２３": "一百二十三", "我有1000蚊。": "我有一千蚊."}


@pytest.mark.parametrize("row", [r for r in ROWS if r["text"] not in KNOWN_NUMBER_DIFFERENCES], ids=lambda row: row["text"])
def test_phonemes_and_word2ph_match_upstream(row):
    cleaned = clean_text(row["text"], "yue")
    assert cleaned.phonemes == row["phonemes"]
    assert cleaned.word2ph == row["word2ph"]
    assert cleaned.norm_text == KNOWN_NORM_TEXT_DIFFERENCES.get(row["text"], row["norm_text"])


@pytest.mark.parametrize(("text", "norm_text"), KNOWN_NUMBER_DIFFERENCES.items())
def test_known_number_differences_stay_as_recorded(text, norm_text):
    [row] = [r for r in ROWS if r["text"] == text]
    cleaned = clean_text(text, "yue")
    assert cleaned.norm_text == norm_text != row["norm_text"]


def test_every_phoneme_is_in_the_table_and_word2ph_adds_up():
    for row in ROWS:
        cleaned = clean_text(row["text"], "yue")
        assert all(p in SYMBOL_TO_ID for p in cleaned.phonemes)
        assert sum(cleaned.word2ph) == len(cleaned.phonemes)
        assert len(cleaned.word2ph) == len(cleaned.norm_text)


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
