"""The phoneme table must be upstream v2's (``GPT_SoVITS/text/symbols2.py``) entry for entry."""

import hashlib

import pytest

from gptsovits_jax.text import symbols
from gptsovits_jax.text.symbols import PAD, SYMBOL_TO_ID, SYMBOLS, symbols_to_ids

# sha256 of "\n".join(symbols) computed from upstream's own list (symbols2.py at 48b1a01).
UPSTREAM_SHA256 = "0771f6cd6f6201e8c2b0de921dc69cc04caf3f346c599d4a41413967d5674da7"


def test_table_has_732_distinct_symbols():
    assert len(SYMBOLS) == 732
    assert len(set(SYMBOLS)) == 732
    assert SYMBOL_TO_ID == {s: i for i, s in enumerate(SYMBOLS)}


def test_table_is_upstreams_in_order():
    assert hashlib.sha256("\n".join(SYMBOLS).encode()).hexdigest() == UPSTREAM_SHA256


@pytest.mark.parametrize(
    ("symbol", "index"),
    [
        ("!", 0),
        (",", 1),
        ("-", 2),
        (".", 3),
        ("?", 4),
        ("AA", 5),  # Mandarin pseudo-initial sorts before ARPAbet
        ("AA0", 6),  # first ARPAbet phoneme
        ("SP", 77),
        ("UNK", 86),
        ("_", 95),  # the pad symbol is not id 0
        ("a1", 97),  # a Mandarin toned final
        ("i01", 161),
        ("ir4", 214),
        ("zh", 320),
        ("…", 321),  # sorts last of the core block (U+2026)
        ("[", 322),
        ("]", 323),
        ("ㄱ", 324),  # first Korean entry
        ("空", 352),
        ("Ya", 353),  # first Cantonese entry
        ("Yz", 731),
    ],
)
def test_known_indices(symbol, index):
    assert SYMBOLS[index] == symbol
    assert SYMBOL_TO_ID[symbol] == index


def test_group_sizes_match_upstream():
    assert len(symbols.ZH_INITIALS) == 26
    assert len(symbols.ZH_FINALS) == 39 * 5
    assert len(symbols.JAPANESE) == 38
    assert len(symbols.ARPABET) == 71
    assert len(symbols.KOREAN) == 29
    assert len(symbols.CANTONESE) == 379


def test_pad_is_id_zero_which_is_the_exclamation_mark():
    assert PAD == 0
    assert SYMBOLS[PAD] == "!"


def test_symbols_to_ids_round_trips_every_symbol():
    ids = symbols_to_ids(SYMBOLS)
    assert ids == list(range(732))
    assert [SYMBOLS[i] for i in ids] == list(SYMBOLS)


def test_unknown_phonemes_map_to_unk():
    assert symbols_to_ids(["HH", "xyz", "", "a6", "AA3"]) == [51, 86, 86, 86, 86]
