"""The 732-entry phoneme table of GPT-SoVITS v2 and the phoneme -> id mapping.

Upstream checkpoints embed phoneme ids (``text_embedding`` is ``[732, C]``), so the order
here must be exactly upstream's (``GPT_SoVITS/text/symbols2.py``). Upstream builds it as

    sorted(set(pad + zh initials + zh toned finals + ja + punctuation + specials + ARPAbet))
    + ["[", "]"] + sorted(Korean jamo) + sorted(Cantonese)

Python's default string order puts "!" (0x21) first, so id 0 is "!", which is also what
both upstream collates pad phoneme sequences with (``PAD`` = 0); the pad symbol "_" sits at
95; of the frontends only Japanese emits it (a pause inside a phrase, as upstream). Every
language group is produced: English, Mandarin, Japanese, Korean, Cantonese, punctuation and
the specials.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ARPABET",
    "CANTONESE",
    "JAPANESE",
    "KOREAN",
    "PAD",
    "PAD_SYMBOL",
    "PUNCTUATION",
    "SPECIALS",
    "SYMBOLS",
    "SYMBOL_TO_ID",
    "UNK",
    "UNK_ID",
    "ZH_FINALS",
    "ZH_FINALS_TONELESS",
    "ZH_INITIALS",
    "symbols_to_ids",
]

PAD_SYMBOL = "_"
PUNCTUATION = ("!", "?", "…", ",", ".", "-")
UNK = "UNK"
# "SP2"/"SP3" are the pauses upstream writes for "￥" and "^" in Mandarin text.
SPECIALS = ("SP", "SP2", "SP3", UNK)

# Mandarin (opencpop-strict): zero-initial syllables get the pseudo-initials AA/EE/OO (a-, e-,
# o-) or y/w; "i0" is the apical vowel after z/c/s, "ir" after zh/ch/sh/r, "E"/"En" are the
# finals of ye/yan.
ZH_INITIALS = ("AA", "EE", "OO", *"b c ch d f g h j k l m n p q r s sh t w x y z zh".split())
ZH_FINALS_TONELESS = tuple(
    "E En a ai an ang ao e ei en eng er i i0 ia ian iang iao ie in ing iong ir iu o ong ou u ua uai uan uang ui un uo v van ve vn".split()
)
ZH_TONES = "12345"
ZH_FINALS = tuple(final + tone for tone in ZH_TONES for final in ZH_FINALS_TONELESS)

# Japanese (pyopenjtalk phones): capital I/U are devoiced vowels, N the moraic nasal, cl the
# geminate closure. Pitch marks "[" and "]" are appended after the sorted block.
JAPANESE = tuple("I N U a b by ch cl d dy e f g gy h hy i j k ky m my n ny o p py r ry s sh t ts u v w y z".split())

# ARPAbet as upstream lists it: 15 vowels with stress 0/1/2, plus bare "ER" and "IH", plus 24 consonants.
_ARPA_VOWELS = "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()
_ARPA_CONSONANTS = "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split()
ARPABET = tuple(sorted([v + s for v in _ARPA_VOWELS for s in "012"] + ["ER", "IH"] + _ARPA_CONSONANTS))

# Korean: 19 jamo initials, 8 vowels, and the space/pause markers 空/停.
KOREAN = tuple(sorted("ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎㄲㄸㅃㅆㅉㅏㅓㅗㅜㅡㅣㅐㅔ空停"))

# Cantonese (Jyutping pieces, prefixed "Y" to stay distinct from the other groups): toneless
# initials, finals that occur with all six tones, and finals that also occur without a tone.
_YUE_INITIALS = "b c d f g gw h j k kw l m n ng p s t w z".split()
_YUE_TONED = (
    "a aa aai aak aam aan aang aap aat aau ai ak am an ang ap at au e ei ek eng eoi eon eot g i ik im in ing ip it iu "
    "k m n o oe oek oeng oi ok on ong ot ou p t u ui uk un ung ut yu yun yut"
).split()
_YUE_TONELESS_FINALS = "a aa ai ak au e o oi ok on ou uk".split()
CANTONESE = tuple(sorted({"Y" + x for x in _YUE_INITIALS + _YUE_TONELESS_FINALS} | {f"Y{f}{t}" for f in _YUE_TONED for t in "123456"}))

_SORTED_CORE = sorted({PAD_SYMBOL, *ZH_INITIALS, *ZH_FINALS, *JAPANESE, *PUNCTUATION, *SPECIALS, *ARPABET})
SYMBOLS: tuple[str, ...] = (*_SORTED_CORE, "[", "]", *KOREAN, *CANTONESE)
SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}
PAD: int = 0
UNK_ID: int = SYMBOL_TO_ID[UNK]


def symbols_to_ids(phonemes: Iterable[str]) -> list[int]:
    """Phoneme strings -> ids in ``[0, 732)``; a phoneme outside the table maps to the "UNK" id (86).

    Args:
        phonemes: sequence of length Tx (phonemes).
    Returns:
        list of Tx ints.
    """
    return [SYMBOL_TO_ID.get(p, UNK_ID) for p in phonemes]
