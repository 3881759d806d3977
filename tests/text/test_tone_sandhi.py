"""Tone sandhi rules, one rule per case, on given syllables (independent of pypinyin's readings)."""

import pytest

from gptsovits_jax.text.tone_sandhi import apply_sandhi, merge_words, tones_of


@pytest.mark.parametrize(
    ("word", "pos", "syllables", "expected"),
    [
        # 3-3 -> 2-3
        ("你好", "l", "ni3 hao3", "ni2 hao3"),
        ("老虎", "n", "lao3 hu3", "lao2 hu3"),
        # three third tones: 2+1 and 1+2 sub-words
        ("展览馆", "n", "zhan3 lan3 guan3", "zhan2 lan2 guan3"),
        ("纸老虎", "n", "zhi3 lao3 hu3", "zhi3 lao2 hu3"),
        # 2+1 sub-words where only the first two are third tone
        ("蒙古包", "n", "meng3 gu3 bao1", "meng2 gu3 bao1"),
        # four characters: two halves
        ("美好理想", "n", "mei3 hao3 li3 xiang3", "mei2 hao3 li2 xiang3"),
        # 不
        ("不怕", "v", "bu4 pa4", "bu2 pa4"),
        ("不好", "d", "bu4 hao3", "bu4 hao3"),
        ("看不懂", "v", "kan4 bu4 dong3", "kan4 bu5 dong3"),
        # 一
        ("一段", "m", "yi1 duan4", "yi2 duan4"),
        ("一天", "m", "yi1 tian1", "yi4 tian1"),
        ("看一看", "v", "kan4 yi1 kan4", "kan4 yi5 kan4"),
        ("第一", "m", "di4 yi1", "di4 yi1"),
        ("一二三", "m", "yi1 er4 san1", "yi1 er4 san1"),
        # neutral tones
        ("奶奶", "n", "nai3 nai3", "nai3 nai5"),
        ("桌子", "n", "zhuo1 zi3", "zhuo1 zi5"),
        ("男子", "n", "nan2 zi3", "nan2 zi3"),
        ("好吧", "y", "hao3 ba1", "hao3 ba5"),
        ("了", "ul", "le4", "le5"),
        ("喜欢", "v", "xi3 huan1", "xi3 huan5"),
        ("进来", "v", "jin4 lai2", "jin4 lai5"),
        ("三个", "m", "san1 ge4", "san1 ge5"),
        # 好/喜欢: a third tone before a word starting with one
        ("好喜欢", "v", "hao3 xi3 huan1", "hao2 xi3 huan5"),
    ],
)
def test_apply_sandhi(word, pos, syllables, expected):
    assert apply_sandhi(word, pos, syllables.split()) == expected.split()


def test_apply_sandhi_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="你好"):
        apply_sandhi("你好", "l", ["ni3"])


@pytest.mark.parametrize(
    ("words", "merged"),
    [
        # 不 joins the next word, which keeps its tag (as upstream)
        ([("不", "d"), ("怕", "v")], [("不怕", "v")]),
        ([("好", "a"), ("不", "d")], [("好", "a"), ("不", "d")]),
        ([("看", "v"), ("一", "m"), ("看", "v")], [("看一看", "v")]),
        ([("一", "m"), ("天", "q")], [("一天", "m")]),
        ([("说", "v"), ("说", "v")], [("说说", "v")]),
        # all third tones: 我+很 join, 好 joins the result by the second rule (3 meets 3)
        ([("我", "r"), ("很", "d"), ("好", "a")], [("我很好", "r")]),
        # a just-joined word does not take the next one; the 4-character result is too long
        ([("我", "r"), ("也", "d"), ("想", "v"), ("买", "v")], [("我也", "r"), ("想买", "v")]),
        ([("我", "r"), ("喜欢", "v")], [("我喜欢", "r")]),
        ([("花", "n"), ("儿", "n")], [("花儿", "n")]),
        ([("今天", "t"), ("很", "d"), ("热", "a")], [("今天", "t"), ("很", "d"), ("热", "a")]),
    ],
)
def test_merge_words(words, merged):
    assert merge_words(words) == merged


def test_tones_of():
    assert tones_of("你好") == ["3", "3"]
    assert tones_of("我们") == ["3", "5"]
    assert tones_of("噷") == [""]
