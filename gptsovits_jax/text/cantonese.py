"""Cantonese G2P: text -> Jyutping pieces of the table ("Y"-prefixed), with word2ph, as upstream v2.

Upstream (``text/cantonese.py``) normalises with its Mandarin normaliser (traditional characters
to simplified, numbers read as Chinese numerals), maps punctuation, keeps only ideographs and
``! ? … , . -``, reads each character with ToJyutping and splits each syllable into an onset
and a toned rest by matching a fixed list of onsets in order. Both pieces get a "Y" prefix so
they cannot collide with Mandarin symbols; the onset carries no tone. Unlike Mandarin, runs of
punctuation are kept as they are.

Needs the ``yue`` extra (ToJyutping, hanziconv); ``pip install 'gptsovits-jax[yue]'``.
"""

from __future__ import annotations

import functools
import re

from gptsovits_jax.text.extras import import_extra
from gptsovits_jax.text.normalize import verbalize_chinese_numbers
from gptsovits_jax.text.symbols import PUNCTUATION

__all__ = ["CantoneseError", "g2p_cantonese", "normalize_cantonese", "split_jyutping", "to_simplified"]

# Onsets tried in this order (upstream's list): zero-onset syllables match a rhyme such as
# "aa" or "ou" here, so "aai1" splits as "aa" + "i1" and "ou3" as "ou" + "u3" (a bare rest
# repeats the onset's last letter).
_ONSETS = (
    "aa aai aak aap aat aau ai au ap at ak a p b e ts t dz d kw k gw g f h l m ng n s y w c z j ong on ou oi ok o uk ung sp spl spn sil"
).split()
_SYLLABLE = re.compile(r"^([a-z]+[1-6]+[ ]?)+$")

# Only full-width digits, letters and the ideographic space become ASCII (upstream's
# normaliser leaves full-width punctuation for the mapping below).
_FULL_WIDTH_ALNUM = {
    **{code: code - 0xFEE0 for code in range(0xFF10, 0xFF1A)},
    **{code: code - 0xFEE0 for code in range(0xFF21, 0xFF3B)},
    **{code: code - 0xFEE0 for code in range(0xFF41, 0xFF5B)},
    0x3000: ord(" "),
}
# Arithmetic signs are read as words; "-" is 减 here ("-3" was already 负三).
_SIGNS = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等", "/": "每"}
_PUNCT_MAP = {
    **dict.fromkeys("：；，·、", ","),
    **dict.fromkeys("。\n$", "."),
    "！": "!",
    "？": "?",
    **dict.fromkeys("—～~", "-"),
}
_KEPT = re.compile(rf"[^\u4e00-\u9fa5{re.escape(''.join(PUNCTUATION))}]+")
# Where hanziconv's traditional -> simplified map changes a character's Cantonese reading and
# upstream's conversion does not: Cantonese characters it should leave alone (冇, 喎), plain
# mistakes (錫 -> 钖, 峽 -> 崃, 濾 -> 泸) and common forms it keeps but upstream simplifies
# (爲, 舖, 佔). Rarer characters still differ (tests/fixtures/README.md).
_T2S_CORRECTIONS = {
    **dict.fromkeys("冇喎呼劈摺撚藉閤", None),
    "錫": "锡",
    "峽": "峡",
    "濾": "滤",
    "麼": "麽",
    "爲": "为",
    "舖": "铺",
    "佔": "占",
    "併": "并",
    "彿": "佛",
    "桿": "杆",
    "鍊": "炼",
    "荳": "豆",
    "罈": "坛",
    "嚥": "咽",
}


class CantoneseError(ValueError):
    """Characters ToJyutping has no reading for; ``characters`` lists them."""

    def __init__(self, characters: str):
        super().__init__(f"no Cantonese reading for {characters!r}")
        self.characters = characters


@functools.cache
def _converters():
    tojyutping = import_extra("ToJyutping", "yue")
    hanziconv = import_extra("hanziconv", "yue")
    return tojyutping, hanziconv.HanziConv


def to_simplified(text: str) -> str:
    """Traditional -> simplified characters, one for one (hanziconv, with ``_T2S_CORRECTIONS``)."""
    _, hanzi = _converters()
    simplified = hanzi.toSimplified(text)
    if len(simplified) != len(text):  # hanziconv maps character by character; guard the zip below
        simplified = "".join(hanzi.toSimplified(char) for char in text)
    return "".join((_T2S_CORRECTIONS[char] or char) if char in _T2S_CORRECTIONS else converted for char, converted in zip(text, simplified))


def normalize_cantonese(text: str) -> str:
    """Cantonese text -> simplified ideographs and ``! ? … , . -``; digits become Chinese numerals.

    ``"佢今年3歲！"`` -> ``"佢今年三岁!"``. Quotes, brackets and Latin letters are removed.
    """
    text = to_simplified(text).translate(_FULL_WIDTH_ALNUM)
    text = re.sub(r"\s+", "", text)
    text = verbalize_chinese_numbers(text)
    text = "".join(_SIGNS.get(c, c) for c in text)
    text = text.replace("...", "…")
    text = "".join(_PUNCT_MAP.get(c, c) for c in text)
    return _KEPT.sub("", text)


def split_jyutping(syllable: str) -> list[str]:
    """One Jyutping syllable -> [onset, toned rest] as table symbols: ``"gwong2" -> ["Ygw", "Yong2"]``.

    Returns [] when no onset of upstream's list matches (upstream then drops the syllable).
    """
    tone = syllable[-1] if syllable[-1:].isdigit() else ""
    base = syllable[:-1] if tone else syllable
    if base.startswith("nga"):
        return ["Y" + base[:2], "Y" + (base[2:] or base[-1]) + tone]
    onset = next((o for o in _ONSETS if base.startswith(o)), None)
    if onset is None:
        return []
    return ["Y" + onset, "Y" + (base[len(onset) :] or onset[-1]) + tone]


def g2p_cantonese(text: str) -> tuple[list[str], list[int]]:
    """Normalised Cantonese (``normalize_cantonese``) -> (phonemes, word2ph).

    ``word2ph[i]`` is the number of phonemes of ``text[i]``: 2 per syllable, 1 per punctuation
    mark, so ``sum(word2ph) == len(phonemes)``.
    ``"你好." -> (["Yn", "Yei5", "Yh", "You2", "."], [2, 2, 1])``.

    Raises:
        CantoneseError: a character has no reading (upstream raises too).
    """
    tojyutping, _ = _converters()
    phones: list[str] = []
    word2ph: list[int] = []
    unreadable = ""
    for word, reading in tojyutping.get_jyutping_list(text):
        if all(char in PUNCTUATION for char in word):
            phones += list(word)
            word2ph += [1] * len(word)
            continue
        syllables = reading.split() if reading and _SYLLABLE.match(reading) else []
        pieces = [split_jyutping(s) for s in syllables]
        if len(syllables) != len(word) or not all(pieces):
            unreadable += word
            continue
        for piece in pieces:
            phones += piece
            word2ph.append(len(piece))
    if unreadable:
        raise CantoneseError(unreadable)
    return phones, word2ph
