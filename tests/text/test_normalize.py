"""Normalisation: the exact text each G2P receives."""

import pytest

from gptsovits_jax.text.normalize import full_width_to_ascii, normalize_chinese, normalize_english


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Dr. Smith paid $5 on the 2nd.", "doctor Smith paid five dollars on the second."),
        ("It costs $6.24 or 3.5%.", "It costs six dollars and twenty four cents or three point five percent."),
        ("$1 and $0.01", "one dollar and one cent"),
        ("$1,250", "one thousand two hundred fifty dollars"),
        ("1/2, 3/2, 1/3, 3/4, 6/1", "one half, three halves, one third, three fourths, six"),
        ("rock&roll and/or jazz", "rock and roll and or jazz"),
        ("12,000 people in 1999", "twelve thousand people in nineteen ninety nine"),
        ("1,000, 1,2,3", "one thousand, one,two,three"),
        ("Mr. and Mrs. Jones on Baker St. near St. Paul", "mister and missus Jones on Baker street near saint Paul"),
        ("e.g. the 21st; wow: -5 degrees", "for example the twenty first, wow, negative five degrees"),
        ("GPT-SoVITS", "G P T-So V I T S"),
        ("Hello!!! How are you??", "Hello! How are you?"),
        ("Wait - what?!", "Wait what?"),
        ("Well… fine", "Well. fine"),
        ("café  naïve\nno", "cafe naive no"),
        ("don’t “quote” me", "don't quote me"),
        ("１２ apples", "twelve apples"),
        ("I live on Baker St.", "I live on Baker street."),
    ],
)
def test_normalize_english(text, normalized):
    assert normalize_english(text) == normalized


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("今天是2024年，气温-3.5度，湿度50%！", "今天是二零二四年,气温零下三点五度,湿度百分之五十!"),
        ("我有3个苹果...真的吗？？", "我有三个苹果…真的吗?"),
        ("嗯，好的~", "恩,好的…"),
        ("呣", "母"),
        ("编号007、第10010号", "编号零零七,第一万零一十号"),
        ("12,000人，12024年", "一万二千人,一万二千零二十四年"),
        ("Hello世界（你好）", "世界你好"),
        ("一：二；三/四—五", "一,二,三,四-五"),
        ("你好\n再见", "你好.再见"),
        # clock times, fractions and ranges as upstream's zh_normalization reads them
        ("会议8:30开始，9:05结束", "会议八点半开始,九点零五分结束"),
        ("1/3的人，等2~3天", "三分之一的人,等二到三天"),
    ],
)
def test_normalize_chinese(text, normalized):
    assert normalize_chinese(text) == normalized


def test_full_width_to_ascii():
    assert full_width_to_ascii("ＡＢ１２，！") == "AB12,!"
