"""The frontend entry points: language dispatch, mixed text, upstream's cleaner rules, errors, ids."""

import builtins
import importlib
import sys

import pytest

from gptsovits_jax.text import extras
from gptsovits_jax.text.frontend import (
    LANGUAGES,
    SUPPORTED_LANGUAGES,
    TextError,
    canonical_language,
    clean_runs,
    clean_text,
    split_by_script,
    text_to_ids,
    text_to_phonemes,
)
from gptsovits_jax.text.symbols import SYMBOL_TO_ID, SYMBOLS


def test_supported_languages():
    assert SUPPORTED_LANGUAGES == LANGUAGES
    assert LANGUAGES == ("en", "zh", "ja", "ko", "yue", "all_zh", "all_ja", "all_ko", "all_yue", "auto", "auto_yue")


@pytest.mark.parametrize(
    ("spelling", "language"),
    [
        ("ZH", "zh"),
        ("zh", "zh"),
        ("EN", "en"),
        ("En", "en"),
        ("JA", "ja"),
        ("ja", "ja"),
        ("JP", "ja"),
        ("jp", "ja"),
        ("KO", "ko"),
        ("Ko", "ko"),
        ("yue", "yue"),
        ("YUE", "yue"),
        ("Yue", "yue"),
        ("all_zh", "all_zh"),
        ("all_ja", "all_ja"),
        ("all_ko", "all_ko"),
        ("all_yue", "all_yue"),
        ("auto", "auto"),
        ("auto_yue", "auto_yue"),
        ("AUTO", "auto"),
    ],
)
def test_upstream_spellings(spelling, language):
    assert canonical_language(spelling) == language


@pytest.mark.parametrize(
    ("text", "spelling"),
    [("こんにちは。", "JP"), ("안녕하세요.", "KO"), ("你好。", "YUE"), ("你好。", "ZH"), ("Hello there.", "EN")],
)
def test_spellings_give_the_same_phonemes(text, spelling):
    assert text_to_phonemes(text, spelling) == text_to_phonemes(text, canonical_language(spelling))


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


@pytest.mark.parametrize("language", ["fr", "", "zh-cn", "all_en", None])
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


@pytest.mark.parametrize(
    ("text", "language", "runs"),
    [
        ("今日はNiceです", "auto", [("ja", "今日は"), ("en", "Nice"), ("ja", "です")]),
        ("안녕하세요 hello 你好", "auto", [("ko", "안녕하세요 "), ("en", "hello "), ("zh", "你好")]),
        ("안녕하세요 hello 你好", "auto_yue", [("ko", "안녕하세요 "), ("en", "hello "), ("yue", "你好")]),
        # kanji next to kana in one clause are Japanese; after a clause end they are Chinese again
        ("東京タワー。你好", "auto", [("ja", "東京タワー。"), ("zh", "你好")]),
        # all_*: Latin runs are English, everything else the named language
        ("TV를 봤어요.", "all_ko", [("en", "TV"), ("ko", "를 봤어요.")]),
        ("私はNHKで働く", "all_ja", [("ja", "私は"), ("en", "NHK"), ("ja", "で働く")]),
        ("我喜欢 Python", "all_yue", [("yue", "我喜欢 "), ("en", "Python")]),
        ("2024", "all_ja", [("ja", "2024")]),
    ],
)
def test_split_by_script_languages(text, language, runs):
    assert split_by_script(text, language) == runs


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("今日はNiceです", "auto"),
        ("안녕 hello 你好", "auto_yue"),
        ("TV를 봤어요.", "all_ko"),
        ("私はNHKで働く", "all_ja"),
        ("佢好叻 OK", "all_yue"),
    ],
)
def test_mixed_runs_are_each_read_in_their_language(text, language):
    expected = []
    for run_language, run in split_by_script(text, language):
        expected += text_to_phonemes(run, run_language)
    phonemes = text_to_phonemes(text, language)
    assert phonemes == expected
    assert all(p in SYMBOL_TO_ID for p in phonemes)


def test_word2ph_is_kept_for_a_single_cantonese_run():
    assert clean_text("你好", "all_yue").word2ph == [2, 2]
    assert clean_text("你好 ok", "all_yue").word2ph is None


@pytest.mark.parametrize(
    ("text", "language", "message"),
    [
        ("我喜欢Python", "zh", "text in a language other than 'zh': 'Python' (Latin letters)"),
        ("你好，안녕", "zh", "'안녕' (Hangul)"),
        ("今日は안녕", "ja", "text in a language other than 'ja': '안녕' (Hangul)"),
        ("안녕 漢字", "ko", "'漢字' (Chinese characters)"),
        ("你好こんにちは", "yue", "'こんにちは' (kana)"),
        ("Hello 你好", "en", "'你好' (Chinese characters)"),
        ("今日は「いい」天気", "ja", "characters the frontend cannot read: '「」' in 'ja'"),
        ("안녕 「친구」", "ko", "characters the frontend cannot read: '「」' in 'ko'"),
        ("噷好", "zh", "characters the frontend cannot read: '噷' in 'zh'"),
        ("Nice, 今日は「いい」", "auto", "'「」' in 'ja'"),
    ],
)
def test_strict_rejects_other_scripts_and_unreadable_characters(text, language, message):
    clean_text(text, language)  # lenient by default, as at inference
    with pytest.raises(TextError) as caught:
        clean_text(text, language, strict=True)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "language"),
    [("我喜欢 Python", "auto"), ("今日はNHKで働く。", "ja"), ("TV를 봤어요.", "ko"), ("佢好叻。", "yue"), ("Hello.", "en")],
)
def test_strict_accepts_readable_text(text, language):
    assert clean_text(text, language, strict=True).phonemes


@pytest.mark.parametrize(
    ("language", "module", "extra"),
    [("ja", "pyopenjtalk", "ja"), ("ko", "mecab_ko", "ko"), ("yue", "ToJyutping", "yue"), ("all_yue", "ToJyutping", "yue")],
)
def test_missing_extra_names_the_pip_install(monkeypatch, language, module, extra):
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def blocked(name):
        if name == module or name.startswith(module + "."):
            raise ModuleNotFoundError(f"No module named {module!r}")

    def failing_import(name, *args, **kwargs):
        blocked(name)
        return real_import(name, *args, **kwargs)

    def failing_import_module(name, package=None):
        blocked(name)
        return real_import_module(name, package)

    from gptsovits_jax.text import cantonese, japanese, korean

    # the frontends cache their libraries; forget them so the next import is attempted (and fails)
    for cached in (japanese._openjtalk, korean._tools, cantonese._converters):
        cached.cache_clear()
    for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", failing_import)
    monkeypatch.setattr(importlib, "import_module", failing_import_module)
    text = {"ja": "こんにちは", "ko": "안녕", "yue": "你好", "all_yue": "你好"}[language]
    with pytest.raises(extras.MissingExtraError, match=rf"pip install 'gptsovits-jax\[{extra}\]'") as caught:
        clean_text(text, language)
    assert "; " not in str(caught.value)


def test_english_and_mandarin_need_no_extra(monkeypatch):
    blocked = ("pyopenjtalk", "g2pk2", "jamo", "mecab_ko", "ToJyutping", "hanziconv")
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    assert text_to_phonemes("Hello 你好", "auto")
    assert text_to_phonemes("你好", "zh")


def test_strict_rejects_phonemes_outside_the_table(monkeypatch):
    from gptsovits_jax.text import frontend

    monkeypatch.setitem(frontend._CLEANERS, "en", lambda text: frontend.CleanedText(["HH", "XX1", "AY1"], None, text))
    assert text_to_phonemes("hi", "en") == ["HH", "UNK", "AY1"]  # lenient: UNK, as upstream's cleaner
    with pytest.raises(TextError, match=r"phonemes outside the 732-symbol table \(they would be UNK\) in 'en': 'XX1'"):
        text_to_phonemes("hi", "en", strict=True)


def test_strict_messages_are_one_problem_each():
    # preprocessing joins a line's problems with "; " and counts them by that separator
    with pytest.raises(TextError) as caught:
        clean_text("我喜欢Python。", "zh", strict=True)
    assert "; " not in str(caught.value)
