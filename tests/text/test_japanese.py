"""Japanese: OpenJTalk phonemes with upstream v2's prosody marks.

``tests/fixtures/frontend/ja.json`` holds what upstream's ``clean_text(text, "ja")`` returned
for each sentence (``tools/make_frontend_fixtures.py``); ``test_frontend_fixtures.py`` checks the
frontend gives the same phonemes, including the "UNK" upstream writes for every accent-phrase
border. Here: what the table covers, and the rules on their own.
"""

import json
from pathlib import Path

from gptsovits_jax.text.japanese import g2p_japanese, normalize_japanese, unreadable_characters

ROWS = json.loads((Path(__file__).parents[1] / "fixtures" / "frontend" / "ja.json").read_text(encoding="utf-8"))["sentences"]


def test_table_covers_numbers_punctuation_full_width_and_long_vowels():
    texts = "".join(row["text"] for row in ROWS)
    assert any(c.isdigit() and c.isascii() for c in texts)
    assert "１" in texts and "％" in texts and "！！" in texts and "…" in texts and "ー" in texts
    assert any(c.isascii() and c.isalpha() for c in texts)


def test_prosody_marks():
    # rise after the first mora, the moraic nasal N, no fall in a flat (heiban) word
    assert g2p_japanese("こんにちは") == ["k", "o", "[", "N", "n", "i", "ch", "i", "w", "a"]
    # the nucleus of an accented word is followed by "]"
    assert "]" in g2p_japanese("雨")


def test_pause_and_marks():
    # an ideographic comma becomes ",", a space between pieces is dropped
    assert g2p_japanese("はい、 いいえ") == ["h", "a", "]", "i", ",", "i", "[", "i", "e"]
    assert g2p_japanese("はい いいえ") == ["h", "a", "]", "i", "i", "[", "i", "e"]


def test_consecutive_ascii_punctuation_keeps_the_first_mark():
    assert normalize_japanese("はい!?...") == "はい!"


def test_unreadable_characters_are_the_marks_without_a_symbol():
    assert unreadable_characters("「はい」、そう。 50％") == "「」"
    assert unreadable_characters("はい、そう。") == ""
