"""The frontend entry points: language dispatch, mixed text, upstream's cleaner rules, errors, ids."""

import pytest

from gptsovits_jax.text.frontend import (
    SUPPORTED_LANGUAGES,
    TextError,
    clean_runs,
    clean_text,
    split_by_script,
    text_to_ids,
    text_to_phonemes,
)
from gptsovits_jax.text.symbols import SYMBOLS


def test_supported_languages():
    assert SUPPORTED_LANGUAGES == ("en", "zh", "auto")


@pytest.mark.parametrize(
    ("text", "language", "phones"),
    [
        # fewer than 4 English phonemes: a leading "," (upstream clean_text)
        ("Hi.", "en", ", HH AY1 ."),
        ("ok", "en", ", OW1 K EY1"),
        # exactly 4: unchanged
        ("Cat.", "en", "K AE1 T ."),
        ("Hello.", "en", "HH AH0 L OW1 ."),
        # the rule is English only
        ("好。", "zh", "h ao3 ."),
        # mixed: runs by script, the digit stays with the English run
        ("我喜欢 Python 3", "auto", "w o2 x i3 h uan5 P AY1 TH AA0 N TH R IY1"),
        # a leading digit joins the first run; each run is normalised in its own language
        ("3个apple", "auto", "s an1 g e5 AE1 P AH0 L"),
        ("Hello，世界", "auto", "HH AH0 L OW1 , sh ir4 j ie4"),
        # the 4-phoneme rule applies per English run
        ("OK 好", "auto", ", OW1 K EY1 h ao3"),
        ("hello world", "auto", "HH AH0 L OW1 W ER1 L D"),
        ("你好", "auto", "n i2 h ao3"),
    ],
)
def test_text_to_phonemes(text, language, phones):
    assert text_to_phonemes(text, language) == phones.split()


@pytest.mark.parametrize(
    ("text", "runs"),
    [
        ("我喜欢 Python 3", [("zh", "我喜欢 "), ("en", "Python 3")]),
        ("3个apple", [("zh", "3个"), ("en", "apple")]),
        ("Hi, 你好! ok", [("en", "Hi, "), ("zh", "你好! "), ("en", "ok")]),
        ("123", [("en", "123")]),
    ],
)
def test_split_by_script(text, runs):
    assert split_by_script(text) == runs


def test_clean_text_gives_word2ph_for_mandarin_only():
    zh = clean_text("你好，世界！", "zh")
    assert zh.norm_text == "你好,世界!"
    assert zh.word2ph == [2, 2, 1, 2, 2, 1]
    assert sum(zh.word2ph) == len(zh.phonemes)
    en = clean_text("Hello 2 you", "en")
    assert en.word2ph is None
    assert en.norm_text == "Hello two you"


def test_clean_runs_split_the_phonemes_by_language_with_word2ph_per_chinese_run():
    runs = clean_runs("你好 world, 天气很好", "auto")
    assert [(language, part.norm_text, part.word2ph) for language, part in runs] == [
        ("zh", "你好", [2, 2]),
        ("en", "world,", None),
        ("zh", "天气很好", [2, 2, 2, 2]),
    ]
    assert [p for _, part in runs for p in part.phonemes] == text_to_phonemes("你好 world, 天气很好", "auto")
    assert [language for language, _ in clean_runs("你好。", "zh")] == ["zh"]
    assert clean_runs("Hello there.", "en")[0][1].phonemes == text_to_phonemes("Hello there.", "en")
    with pytest.raises(TextError):
        clean_runs("   ", "auto")


def test_text_to_ids_uses_the_table():
    # n=227, i2=167, h=158, ao3=119 in upstream's table
    assert text_to_ids("你好", "zh") == [227, 167, 158, 119]
    assert text_to_ids("Hi.", "en") == [1, 51, 22, 3]
    ids = text_to_ids("我喜欢 Python 3", "auto")
    assert [SYMBOLS[i] for i in ids] == text_to_phonemes("我喜欢 Python 3", "auto")


@pytest.mark.parametrize("language", ["ja", "EN", "", "yue", None])
def test_unsupported_language(language):
    with pytest.raises(TextError, match="unsupported language"):
        text_to_phonemes("hello", language)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_empty_text(text, language):
    with pytest.raises(TextError, match="empty text"):
        text_to_ids(text, language)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("？！", "zh"),
        ("...", "en"),
        ("@#*^", "en"),
        ("@#*^", "auto"),
        ("!!!", "auto"),
        ("hello", "zh"),  # Latin letters are dropped in Mandarin text
        ("你好", "en"),  # and ideographs in English text
    ],
)
def test_text_without_phonemes(text, language):
    with pytest.raises(TextError, match="yields no phonemes"):
        text_to_phonemes(text, language)


def test_non_string_text():
    with pytest.raises(TextError, match="must be a str"):
        text_to_phonemes(b"hello", "en")


def test_text_error_is_a_value_error():
    assert issubclass(TextError, ValueError)
