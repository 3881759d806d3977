"""Semantic-token extraction: upstream's TSV format, exact codes under padding and batching, resume."""

import json

import numpy as np
import pytest

from gptsovits_jax.data import preprocess, semantic
from tests.data.test_preprocess import demo_subset, with_data

CODEBOOK = 64


class FakeEncoder:
    """Frame-local like ``ssl_proj`` + VQ: code ``t`` depends on frames ``2t`` and ``2t + 1`` only.

    Counts the rows it is given and records the shapes it is called with.
    """

    def __init__(self, scale: float = 7.0):
        self.scale = scale
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, ssl: np.ndarray) -> np.ndarray:
        assert ssl.dtype == np.float32 and ssl.shape[1] % 2 == 0
        self.shapes.append(ssl.shape)
        pairs = ssl.reshape(ssl.shape[0], -1, 2, ssl.shape[2]).sum(axis=(2, 3))
        return np.floor(np.abs(pairs) * self.scale).astype(np.int64) % CODEBOOK


def reference_codes(cache, key, encoder):
    """Codes of one utterance on its own, unpadded: floor(T / 2) of them."""
    ssl = preprocess.load_utterance(cache, key)["ssl"].astype(np.float32)
    even = ssl.shape[0] - ssl.shape[0] % 2
    return encoder(ssl[None, :even])[0]


@pytest.fixture(scope="module")
def cache(tiny_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    path = demo_subset(root, (0, 1, 2, 3, 5, 90))
    out = tmp_path_factory.mktemp("cache")
    preprocess.preprocess(with_data(tiny_config, eval_utterances=1), list_path=path, cache_dir=out, num_workers=1, progress=False)
    return out


def test_tsv_has_upstream_format_and_exact_codes(cache):
    encoder = FakeEncoder()
    path = semantic.extract_semantic(cache, encoder, batch_size=4, progress=False)
    lines = path.read_text().splitlines()
    assert path == cache / "semantic.tsv"
    assert lines[0] == "item_name\tsemantic_audio"
    index = preprocess.load_index(cache)
    assert [line.split("\t")[0] for line in lines[1:]] == [u["key"] for u in index["utterances"]]
    table = semantic.load_semantic(cache)
    for u in index["utterances"]:
        codes = table[u["key"]]
        assert codes.dtype == np.int32 and codes.shape == (u["frames"] // 2,)
        np.testing.assert_array_equal(codes, reference_codes(cache, u["key"], FakeEncoder()))
    assert all(shape[0] == 4 and shape[1] % 64 == 0 for shape in encoder.shapes)


def test_second_run_only_probes_the_encoder(cache):
    semantic.extract_semantic(cache, FakeEncoder(), batch_size=4, progress=False)
    encoder = FakeEncoder()
    semantic.extract_semantic(cache, encoder, batch_size=4, progress=False)
    assert encoder.shapes == [(4, 64, 64)]


def test_resume_encodes_only_missing_utterances(cache):
    encoder = FakeEncoder()
    semantic.extract_semantic(cache, encoder, batch_size=1, progress=False)
    signature = json.loads((cache / "semantic.json").read_text())["signature"]
    for key in ("ava__001", "mei__023"):
        (cache / "semantic" / signature / f"{key}.npy").unlink()
    encoder.shapes.clear()
    semantic.extract_semantic(cache, encoder, batch_size=1, progress=False)
    assert len(encoder.shapes) == 1 + 2


def test_another_encoder_gets_a_new_signature_and_fresh_codes(cache):
    semantic.extract_semantic(cache, FakeEncoder(), batch_size=4, progress=False)
    before = semantic.load_semantic(cache)
    other = FakeEncoder(scale=3.0)
    semantic.extract_semantic(cache, other, batch_size=4, progress=False)
    after = semantic.load_semantic(cache)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    for key, codes in after.items():
        np.testing.assert_array_equal(codes, reference_codes(cache, key, FakeEncoder(scale=3.0)))
    assert len(list((cache / "semantic").iterdir())) == 1


def test_upstream_code_layout_with_a_leading_quantizer_axis_is_accepted(cache):
    encoder = FakeEncoder()
    semantic.extract_semantic(cache, lambda ssl: encoder(ssl)[None], batch_size=2, encoder_id="n_q axis", progress=False)
    for key, codes in semantic.load_semantic(cache).items():
        np.testing.assert_array_equal(codes, reference_codes(cache, key, FakeEncoder()))


def test_wrong_code_shape_is_a_clear_error(cache):
    with pytest.raises(ValueError, match=r"encode_fn returned codes of shape \(4, 64\) for ssl \(4, 64, 64\); expected \(4, 32\)"):
        semantic.extract_semantic(cache, lambda ssl: np.zeros(ssl.shape[:2], np.int64), batch_size=4, progress=False)
