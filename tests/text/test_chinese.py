"""Mandarin G2P: syllable splitting (opencpop-strict) and whole sentences with tone sandhi.

Expected syllables are the standard readings (pypinyin agrees on every one used here)
after the sandhi rules described in ``tone_sandhi.py``; each is split by the
opencpop-strict table upstream ships (``GPT_SoVITS/text/opencpop-strict.txt``).
"""

import pytest

from gptsovits_jax.text.chinese import g2p_chinese, split_syllable
from gptsovits_jax.text.normalize import normalize_chinese
from gptsovits_jax.text.symbols import SYMBOL_TO_ID


@pytest.mark.parametrize(
    ("syllable", "parts"),
    [
        # entries of upstream's opencpop-strict.txt
        ("a", ("AA", "a")),
        ("ang", ("AA", "ang")),
        ("e", ("EE", "e")),
        ("er", ("EE", "er")),
        ("o", ("OO", "o")),
        ("ou", ("OO", "ou")),
        ("yi", ("y", "i")),
        ("ye", ("y", "E")),
        ("yan", ("y", "En")),
        ("you", ("y", "ou")),
        ("yong", ("y", "ong")),
        ("yu", ("y", "v")),
        ("yuan", ("y", "van")),
        ("yue", ("y", "ve")),
        ("yun", ("y", "vn")),
        ("wu", ("w", "u")),
        ("wei", ("w", "ei")),
        ("ju", ("j", "v")),
        ("quan", ("q", "van")),
        ("xue", ("x", "ve")),
        ("lv", ("l", "v")),
        ("nve", ("n", "ve")),
        ("zi", ("z", "i0")),
        ("si", ("s", "i0")),
        ("zhi", ("zh", "ir")),
        ("ri", ("r", "ir")),
        ("shuang", ("sh", "uang")),
        ("dui", ("d", "ui")),
        ("liu", ("l", "iu")),
        ("lun", ("l", "un")),
    ],
)
def test_split_syllable_matches_opencpop_strict(syllable, parts):
    assert split_syllable(syllable) == parts


@pytest.mark.parametrize("syllable", ["m", "n", "ng", "hm", "hng", "ê", "", "xyz"])
def test_syllables_without_an_entry(syllable):
    assert split_syllable(syllable) is None


SENTENCES = [
    # 3-3 sandhi inside a word, zh + apical final
    ("你好，世界！", "n i2 h ao3 , sh ir4 j ie4 !"),
    # three third tones merged into one unit, read as 我/很好
    ("我很好。", "w o3 h en2 h ao3 ."),
    # three third tones read as 展览/馆
    ("展览馆。", "zh an2 l an2 g uan3 ."),
    # zero-initial syllables and the neutral 的
    ("安全的欧洲", "AA an1 q van2 d e5 OO ou1 zh ou1"),
    # a digit; 个 after a numeral is neutral; 我有 is 3-3
    ("我有3个苹果。", "w o2 y ou3 s an1 g e5 p ing2 g uo3 ."),
    # a year read digit by digit and a percentage
    ("2024年增长50%", "EE er4 l ing2 EE er4 s i04 n ian2 z eng1 zh ang3 b ai3 f en1 zh ir1 w u3 sh ir2"),
    # ü after l and the zero initial y
    ("绿色的雨", "l v4 s e4 d e5 y v3"),
    # i0 after z, ir after r, neutral 子
    ("资料和日子", "z i01 l iao4 h e2 r ir4 z i05"),
    # neutral-tone word and suffix, V一V
    ("朋友们，看一看！", "p eng2 y ou5 m en5 , k an4 y i5 k an4 !"),
    # 不 before a 4th tone, 一 before a 1st tone
    ("不怕，一天。", "b u2 p a4 , y i4 t ian1 ."),
    # 嗯 is read as 恩 (as upstream); "..." is the ellipsis symbol
    ("嗯...", "EE en1 …"),
]


@pytest.mark.parametrize(("text", "phones"), SENTENCES)
def test_sentences(text, phones):
    got, word2ph = g2p_chinese(normalize_chinese(text))
    assert got == phones.split()
    assert sum(word2ph) == len(got)


def test_every_phoneme_is_in_the_table():
    for text, _ in SENTENCES:
        assert all(p in SYMBOL_TO_ID for p in g2p_chinese(normalize_chinese(text))[0])


def test_word2ph_counts_phonemes_per_character():
    text = normalize_chinese("你好，世界！")
    phones, word2ph = g2p_chinese(text)
    assert word2ph == [2, 2, 1, 2, 2, 1]
    assert len(word2ph) == len(text)
    assert sum(word2ph) == len(phones)


def test_unreadable_character_is_one_unk():
    # 噷 reads "hm", a syllable with no final in the table
    phones, word2ph = g2p_chinese("噷好")
    assert phones == ["UNK", "h", "ao3"]
    assert word2ph == [1, 2]
