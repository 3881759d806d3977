"""Mandarin G2P: normalised text -> pinyin initials and tone-numbered finals of the table.

Pipeline (upstream ``chinese2.py`` without the G2PW polyphone model): jieba segments each run
of characters with part-of-speech tags, ``tone_sandhi.merge_words`` regroups the words,
pypinyin reads each word (phrase-aware, neutral tone 5, "v" for ü), ``tone_sandhi.apply_sandhi``
changes tones, and each syllable is split into two symbols, opencpop-strict style
(``split_syllable``). Punctuation marks are one symbol each.
"""

from __future__ import annotations

import functools
import logging
import re

from pypinyin import Style, lazy_pinyin

from gptsovits_jax.text.normalize import ZH_PUNCT
from gptsovits_jax.text.symbols import UNK, ZH_FINALS_TONELESS, ZH_INITIALS
from gptsovits_jax.text.tone_sandhi import apply_sandhi, merge_words

__all__ = ["g2p_chinese", "split_syllable"]

# Longest first so "zh" wins over "z".
_CONSONANT_INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r", "z", "c", "s")
_ZERO_INITIALS = {"a": "AA", "e": "EE", "o": "OO"}
_INITIAL_SET = frozenset(ZH_INITIALS)
_FINAL_SET = frozenset(ZH_FINALS_TONELESS)
_CHUNK = re.compile(rf"([{re.escape(ZH_PUNCT)}])")


def split_syllable(syllable: str) -> tuple[str, str] | None:
    """Toneless pinyin as pypinyin spells it -> (initial, final) symbols, or None if the table has none.

    Zero-initial syllables get a pseudo-initial: "y"/"w" for i/u/ü syllables and AA/EE/OO
    for a-/e-/o- ones ("an" -> ("AA", "an"), "er" -> ("EE", "er")). Finals follow
    opencpop-strict: ü is "v" (ju -> v, yuan -> van), the apical vowel is "i0" after z/c/s
    and "ir" after zh/ch/sh/r, ye -> "E", yan -> "En". Interjections without a vowel
    (m, n, ng, hm) have no entry.
    """
    if not syllable:
        return None
    head, rest = syllable[0], syllable[1:]
    if head == "y":
        initial = "y"
        if rest.startswith(("u", "v")):
            final = "v" + rest[1:]
        else:
            final = {"an": "En", "e": "E"}.get(rest, rest)
    elif head == "w":
        initial, final = "w", rest
    elif head in _ZERO_INITIALS:
        initial, final = _ZERO_INITIALS[head], syllable
    else:
        initial = next((i for i in _CONSONANT_INITIALS if syllable.startswith(i)), "")
        final = syllable[len(initial) :]
        if initial in ("j", "q", "x") and final.startswith("u"):
            final = "v" + final[1:]
        elif final == "i" and initial in ("z", "c", "s"):
            final = "i0"
        elif final == "i" and initial in ("zh", "ch", "sh", "r"):
            final = "ir"
    if initial not in _INITIAL_SET or final not in _FINAL_SET:
        return None
    return initial, final


@functools.cache
def _posseg():
    """jieba's part-of-speech segmenter, with its dictionary-loading chatter silenced."""
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    return jieba.posseg


def _word_pinyin(word: str) -> list[str]:
    syllables = lazy_pinyin(word, style=Style.TONE3, neutral_tone_with_five=True)
    if len(syllables) != len(word):
        # pypinyin joins consecutive characters it cannot read; read them one by one instead.
        syllables = [lazy_pinyin(char, style=Style.TONE3, neutral_tone_with_five=True)[0] for char in word]
    return syllables


def _syllable_phones(syllable: str) -> list[str]:
    tone = syllable[-1:]
    parts = split_syllable(syllable[:-1]) if tone in ("1", "2", "3", "4", "5") else None
    if parts is None:
        return [UNK]
    initial, final = parts
    return [initial, final + tone]


def g2p_chinese(text: str) -> tuple[list[str], list[int]]:
    """Normalised Mandarin (``normalize.normalize_chinese``) -> (phonemes, word2ph).

    ``word2ph[i]`` is the number of phonemes of character ``text[i]``: 2 for a syllable,
    1 for a punctuation mark or an unreadable character ("UNK"), so ``sum(word2ph) ==
    len(phonemes)`` and ``len(word2ph) == len(text)`` (upstream repeats each character's BERT
    feature ``word2ph[i]`` times).
    ``"你好。" -> (["n", "i2", "h", "ao3", "."], [2, 2, 1])``.
    """
    phones: list[str] = []
    word2ph: list[int] = []
    for chunk in _CHUNK.split(text):
        if not chunk:
            continue
        if chunk in ZH_PUNCT:
            phones.append(chunk)
            word2ph.append(1)
            continue
        words = [(pair.word, pair.flag) for pair in _posseg().lcut(chunk)]
        for word, pos in merge_words(words):
            for syllable in apply_sandhi(word, pos, _word_pinyin(word)):
                syllable_phones = _syllable_phones(syllable)
                phones += syllable_phones
                word2ph.append(len(syllable_phones))
    return phones, word2ph
