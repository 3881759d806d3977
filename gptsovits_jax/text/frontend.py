"""Text -> phonemes -> ids: the entry point the data pipeline and inference call.

Languages: "en" (English), "zh" (Mandarin) and "auto", which cuts mixed text into runs by
script (CJK ideographs -> zh, Latin letters -> en; digits, spaces and punctuation stay with
the run they follow, or the first run when they lead) and phonemises each run on its own,
as upstream's inference does for mixed text. As in upstream's ``clean_text``, an English run
with fewer than 4 phonemes gets a leading ","; a phoneme outside the table becomes "UNK".
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gptsovits_jax.text.chinese import g2p_chinese
from gptsovits_jax.text.english import g2p_english
from gptsovits_jax.text.normalize import normalize_chinese, normalize_english
from gptsovits_jax.text.symbols import PUNCTUATION, SYMBOL_TO_ID, UNK, symbols_to_ids

__all__ = [
    "SUPPORTED_LANGUAGES",
    "CleanedText",
    "TextError",
    "clean_runs",
    "clean_text",
    "split_by_script",
    "text_to_ids",
    "text_to_phonemes",
]

SUPPORTED_LANGUAGES = ("en", "zh", "auto")
_MIN_ENGLISH_PHONES = 4
_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")


class TextError(ValueError):
    """The text cannot be turned into phonemes (unsupported language, empty, nothing speakable)."""


class CleanedText(NamedTuple):
    """One utterance after the frontend.

    phonemes: Tx symbols of the 732-entry table.
    word2ph: for "zh", phonemes per character of ``norm_text`` (sums to Tx); None otherwise.
    norm_text: the normalised text the phonemes were read from (runs joined for "auto").
    """

    phonemes: list[str]
    word2ph: list[int] | None
    norm_text: str


def split_by_script(text: str) -> list[tuple[str, str]]:
    """Mixed text -> ``[(language, run), ...]`` with language "zh" or "en", runs in order.

    ``"我喜欢 Python 3" -> [("zh", "我喜欢 "), ("en", "Python 3")]``. Characters of neither
    script join the current run; text with no letter of either script is one "en" run.
    """
    runs: list[list[str]] = []
    leading = ""
    for char in text:
        language = "zh" if _CJK.match(char) else "en" if _LATIN.match(char) else None
        if language is None:
            if runs:
                runs[-1][1] += char
            else:
                leading += char
        elif runs and runs[-1][0] == language:
            runs[-1][1] += char
        else:
            runs.append([language, char])
    if not runs:
        return [("en", leading)]
    runs[0][1] = leading + runs[0][1]
    return [(language, run) for language, run in runs]


def _clean_english(text: str) -> CleanedText:
    norm_text = normalize_english(text)
    phones = g2p_english(norm_text)
    if phones and len(phones) < _MIN_ENGLISH_PHONES:
        phones = [",", *phones]
    return CleanedText(phones, None, norm_text)


def _clean_chinese(text: str) -> CleanedText:
    norm_text = normalize_chinese(text)
    phones, word2ph = g2p_chinese(norm_text)
    return CleanedText(phones, word2ph, norm_text)


def _mixed_runs(text: str) -> list[tuple[str, CleanedText]]:
    return [(language, _clean_chinese(run) if language == "zh" else _clean_english(run)) for language, run in split_by_script(text)]


def _clean_mixed(text: str) -> CleanedText:
    parts = [part for _, part in _mixed_runs(text)]
    phones = [p for part in parts for p in part.phonemes]
    return CleanedText(phones, None, " ".join(part.norm_text for part in parts if part.norm_text))


def clean_runs(text: str, language: str) -> list[tuple[str, CleanedText]]:
    """``clean_text`` run by run: ``[(run language "zh" or "en", CleanedText), ...]``.

    One run for "zh" and "en"; for "auto" the script runs of :func:`split_by_script`. The runs'
    phonemes, concatenated, are ``clean_text(text, language).phonemes`` (with the same "UNK"
    replacement); each "zh" run carries its ``word2ph`` and normalised text, which the BERT
    features of that run need (upstream computes them per language segment).
    """
    clean_text(text, language)  # the same validation and errors
    runs = _mixed_runs(text) if language == "auto" else [(language, (_clean_chinese if language == "zh" else _clean_english)(text))]
    return [(lang, part._replace(phonemes=[p if p in SYMBOL_TO_ID else UNK for p in part.phonemes])) for lang, part in runs]


def clean_text(text: str, language: str) -> CleanedText:
    """Raw text -> ``CleanedText`` (phonemes, word2ph for "zh", normalised text).

    Raises:
        TextError: ``language`` is not one of ``SUPPORTED_LANGUAGES``, ``text`` is empty, or
            it yields no phoneme other than punctuation.
    """
    if language not in SUPPORTED_LANGUAGES:
        raise TextError(f"unsupported language {language!r}: expected one of {', '.join(SUPPORTED_LANGUAGES)}")
    if not isinstance(text, str):
        raise TextError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise TextError(f"empty text for language {language!r}: {text!r}")
    cleaner = {"en": _clean_english, "zh": _clean_chinese, "auto": _clean_mixed}[language]
    cleaned = cleaner(text)
    if all(p in PUNCTUATION for p in cleaned.phonemes):
        raise TextError(f"text {text!r} yields no phonemes in language {language!r} (only punctuation, symbols or another script)")
    phonemes = [p if p in SYMBOL_TO_ID else UNK for p in cleaned.phonemes]
    return cleaned._replace(phonemes=phonemes)


def text_to_phonemes(text: str, language: str) -> list[str]:
    """Raw text -> Tx phoneme symbols; ``text_to_phonemes("Hi.", "en") == [",", "HH", "AY1", "."]``."""
    return clean_text(text, language).phonemes


def text_to_ids(text: str, language: str) -> list[int]:
    """Raw text -> Tx phoneme ids in ``[0, 732)``, the GPT and SoVITS text-encoder input."""
    return symbols_to_ids(text_to_phonemes(text, language))
