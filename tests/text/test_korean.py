"""Korean: pronounced Hangul jamo (g2pk2's rules).

``tests/fixtures/frontend/ko.json`` holds upstream's ``clean_text(text, "ko")`` for each
sentence (``tools/make_frontend_fixtures.py``, with upstream's g2pk2 ``G2p`` and
python-mecab-ko); this frontend runs g2pk2's rules with mecab-ko and must agree exactly
(``test_frontend_fixtures.py``). Here: the rules on their own.
"""

from gptsovits_jax.text.korean import PAUSE, SPACE, g2p_korean, pronounce, unreadable_characters


def test_pronunciation_rules():
    assert pronounce("같이 갑시다") == "가치 갑씨다"  # palatalisation, tensing
    assert pronounce("국물") == "궁물"  # nasalisation


def test_numbers_before_counters_are_native_korean():
    assert pronounce("사과 3개") == "사과 세개"


def test_latin_letters_are_spelled_out():
    assert pronounce("TV") == "티브이"


def test_space_and_trailing_letter():
    phones = g2p_korean("안녕 친구")
    assert SPACE in phones
    assert phones[-1] == "."  # text ending in a letter gets a full stop, as upstream


def test_other_scripts_become_pause_and_are_reported():
    assert PAUSE in g2p_korean("안녕 「친구」")
    assert unreadable_characters("안녕 「친구」 漢字 ok!") == "「」字漢"
