"""Japanese G2P: text -> OpenJTalk phonemes with upstream v2's pitch-accent marks.

Upstream (``text/japanese.py``) cuts the text at every character that is not Japanese (kana,
kanji, the iteration mark, Latin letters, digits, full-width digits and letters, half-width
katakana), reads each piece with OpenJTalk and turns its full-context labels into phonemes
with prosody marks, then puts the cut characters back as punctuation. The marks, after
r9y9's recipe as in ESPnet:

- "[" after a mora where the pitch rises, "]" after the accent nucleus (pitch falls);
- "#" at an accent-phrase border. The v2 table has no "#", so upstream's cleaner turns every
  border into "UNK"; checkpoints were trained on that, so this frontend emits "UNK" there too;
- "_" for a pause inside a piece (the table's pad symbol);
- devoiced vowels (OpenJTalk's capital I, U) are read as plain vowels.

OpenJTalk comes from ``pyopenjtalk-plus``, which ships its dictionary in the wheel (the
original ``pyopenjtalk`` downloads it on first use). Needs the ``ja`` extra:
``pip install 'gptsovits-jax[ja]'``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re

from gptsovits_jax.text.extras import import_extra
from gptsovits_jax.text.normalize import collapse_punctuation
from gptsovits_jax.text.symbols import PUNCTUATION, UNK

__all__ = ["ACCENT_PHRASE_BORDER", "g2p_japanese", "normalize_japanese", "unreadable_characters"]

ACCENT_PHRASE_BORDER = UNK
_JAPANESE = r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
_NOT_JAPANESE = re.compile(f"([^{_JAPANESE}])")
_MARKS = {
    **dict.fromkeys("：；，·、", ","),
    **dict.fromkeys("。\n", "."),
    "！": "!",
    "？": "?",
}
_PHONE = re.compile(r"-(.*?)\+")
_A1 = re.compile(r"/A:([0-9\-]+)\+")
_A2 = re.compile(r"\+(\d+)\+")
_A3 = re.compile(r"\+(\d+)/")
_F1 = re.compile(r"/F:(\d+)_")
_E3 = re.compile(r"!(\d+)_")
_MISSING = -50


@functools.cache
def _openjtalk():
    # pyopenjtalk-plus prints a notice to stdout when onnxruntime (an optional reading model
    # for 何) is absent; that model is off here, as in the environment the fixtures came from.
    with contextlib.redirect_stdout(io.StringIO()):
        return import_extra("pyopenjtalk", "ja")


def normalize_japanese(text: str) -> str:
    """Upstream's only Japanese normalisation: a run of ASCII punctuation keeps its first mark."""
    return collapse_punctuation(text, "".join(PUNCTUATION), after_space=False)


def _feature(pattern: re.Pattern[str], label: str) -> int:
    match = pattern.search(label)
    return int(match.group(1)) if match else _MISSING


def _prosody_phonemes(text: str) -> list[str]:
    """One piece of Japanese -> phonemes and prosody marks, without the leading/trailing silence."""
    openjtalk = _openjtalk()
    labels = openjtalk.make_label(openjtalk.run_frontend(text))
    phones: list[str] = []
    for n, label in enumerate(labels):
        phone = _PHONE.search(label).group(1)
        if phone == "sil":
            continue
        if phone == "pau":
            phones.append("_")
            continue
        phones.append(phone.lower() if phone in ("A", "E", "I", "O", "U") else phone)
        a1, a2, a3, f1 = (_feature(p, label) for p in (_A1, _A2, _A3, _F1))
        a2_next = _feature(_A2, labels[n + 1])
        if a3 == 1 and a2_next == 1 and phone in "aeiouAEIOUNcl":
            phones.append(ACCENT_PHRASE_BORDER)
        elif a1 == 0 and a2_next == a2 + 1 and a2 != f1:
            phones.append("]")
        elif a2 == 1 and a2_next == 2:
            phones.append("[")
    return phones


def g2p_japanese(text: str) -> list[str]:
    """Normalised Japanese -> phonemes with prosody marks; non-Japanese characters stay as punctuation.

    ``"こんにちは。" -> ["k", "o", "[", "N", "n", "i", "ch", "i", "w", "a", "."]``. Spaces are
    dropped; a mark without a table symbol (a bracket, a quote) is kept as itself, and the
    cleaner makes it "UNK" as upstream's does.
    """
    text = text.replace("％", "パーセント").lower()
    phones: list[str] = []
    for index, piece in enumerate(_NOT_JAPANESE.split(text)):
        if index % 2 == 0:
            if piece:
                phones += _prosody_phonemes(piece)
        elif piece != " ":
            phones.append(_MARKS.get(piece, piece))
    return phones


def unreadable_characters(text: str) -> str:
    """The characters of ``text`` that ``g2p_japanese`` can only turn into "UNK" (brackets, quotes, symbols)."""
    found = {c for c in _NOT_JAPANESE.findall(text) if c != " " and c != "％" and _MARKS.get(c, c) not in PUNCTUATION}
    return "".join(sorted(found))
