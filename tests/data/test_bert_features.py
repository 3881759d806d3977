"""Chinese BERT features per phoneme: the directory's own tokenizer, upstream's hidden_states[-3] and word2ph repetition, zeros elsewhere."""

import json
import shutil

import numpy as np
import pytest

from gptsovits_jax.data import bert_features
from gptsovits_jax.models.bert import BertConfigError
from gptsovits_jax.text.frontend import clean_text, text_to_phonemes
from tests.conftest import HF, hf_formats, hf_reference, relative_error

FORMATS = hf_formats("bert")
TEXTS = json.loads((HF / "tiny_bert.json").read_text(encoding="utf-8"))["texts"]
DIM = 16


@pytest.fixture(scope="module")
def reference():
    return hf_reference("bert")


@pytest.fixture(scope="module")
def extractors():
    return {name: bert_features.BertFeatureExtractor(path, DIM) for name, path in FORMATS.items()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_token_ids_are_transformers_ids_from_tokenizer_json_and_from_vocab_txt(fmt, extractors, reference):
    for i, text in enumerate(TEXTS):
        np.testing.assert_array_equal(extractors[fmt].token_ids(text), reference[f"ids_{i}"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_batched_character_features_are_hidden_states_minus_three_without_cls_and_sep(fmt, extractors, reference):
    features = extractors[fmt].char_features_batch(TEXTS)
    for i, (text, ours) in enumerate(zip(TEXTS, features)):
        expected = reference[f"hidden_{i}"][1:-1]
        assert ours.dtype == np.float32 and ours.shape == (len(text), DIM)
        assert relative_error(ours, expected) < 1e-4, text


def test_each_character_row_is_repeated_word2ph_times(extractors, reference):
    cleaned = clean_text("你好，天气很好。", "zh")
    assert cleaned.norm_text == TEXTS[0] and cleaned.word2ph == [2, 2, 1, 2, 2, 2, 2, 1]
    features = extractors["bin"].phoneme_features(cleaned.norm_text, cleaned.word2ph)
    assert features.shape == (len(cleaned.phonemes), DIM) == (14, DIM)
    rows = reference["hidden_0"][1:-1]
    expected = np.concatenate([np.repeat(rows[i : i + 1], n, axis=0) for i, n in enumerate(cleaned.word2ph)])
    assert relative_error(features, expected) < 1e-4
    np.testing.assert_array_equal(features[0], features[1])
    assert not np.array_equal(features[1], features[2])


def test_utterance_features_follow_the_phonemes_chinese_runs_only(extractors, reference):
    extractor = extractors["safetensors"]
    zh, en, auto = bert_features.utterance_features_batch(
        [("你好，天气很好。", "zh"), ("The quick brown fox.", "en"), ("你好 world, 天气很好", "auto")], extractor, DIM
    )
    assert zh.shape == (len(text_to_phonemes("你好，天气很好。", "zh")), DIM)
    assert en.shape == (len(text_to_phonemes("The quick brown fox.", "en")), DIM) and not en.any()
    phonemes = text_to_phonemes("你好 world, 天气很好", "auto")
    assert auto.shape == (len(phonemes), DIM) == (17, DIM)
    # Runs "你好" (4 phonemes), "world," (5, zeros), "天气很好" (8), each Chinese run through BERT alone.
    np.testing.assert_array_equal(auto[4:9], 0.0)
    alone = extractor.phoneme_features("你好", [2, 2])
    assert relative_error(auto[:4], alone) < 1e-6 and auto[9:].any()
    assert not bert_features.utterance_features("你好，天气很好。", "zh", None, DIM).any()


def test_a_final_period_is_read_by_bert_in_a_chinese_run_and_is_a_zero_row_otherwise(extractors):
    extractor = extractors["bin"]
    zh = bert_features.utterance_features("你好", "zh", extractor, DIM, final_period=True)
    with_period = extractor.phoneme_features("你好.", [2, 2, 1])
    assert zh.shape == (5, DIM) and relative_error(zh, with_period) < 1e-6
    en = bert_features.utterance_features("Hello world", "en", extractor, DIM, final_period=True)
    assert en.shape == (len(text_to_phonemes("Hello world", "en")) + 1, DIM) and not en.any()


def test_text_that_is_not_one_token_per_character_is_an_error_naming_it(extractors):
    extractor = extractors["bin"]
    with pytest.raises(
        bert_features.BertTextError, match=r"'ab好': the vocabulary of .*tiny-bert-bin \(text.bert_path\) does not tokenise"
    ):
        extractor.char_features_batch(["你好", "ab好"])
    with pytest.raises(bert_features.BertTextError, match=r"'你 好'.*3 characters, tokens '你'@0:1, '好'@2:3"):
        extractor.token_ids("你 好")
    with pytest.raises(bert_features.BertTextError, match=r"reads at most 30 \(max_position_embeddings minus \[CLS\] and \[SEP\]\)"):
        extractor.token_ids("好" * 31)
    # A character outside the vocabulary is one [UNK] token, as upstream reads it.
    np.testing.assert_array_equal(extractor.token_ids("龘好."), [2, 1, 12, 6, 3])


def test_directory_problems_are_raised_before_any_work(tmp_path):
    directory = tmp_path / "bert"
    shutil.copytree(FORMATS["bin"], directory)
    (directory / "vocab.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"no BERT vocabulary \(tokenizer.json or vocab.txt\) in this directory \(text.bert_path\)"):
        bert_features.BertFeatureExtractor(directory, DIM)
    with pytest.raises(BertConfigError, match=r"hidden_size 16 does not match gpt.bert_dim 1024"):
        bert_features.BertFeatureExtractor(FORMATS["bin"], 1024)


def test_identity_names_the_weights_and_vocabulary(extractors):
    a, b = extractors["safetensors"].identity, extractors["bin"].identity
    assert a["extractor"] == b["extractor"] == "bert" and a["code"] == b["code"]
    assert a["weights"] != b["weights"] and a["vocabulary"] != b["vocabulary"]


def test_token_buckets_double_from_sixteen_up_to_the_position_limit():
    assert [bert_features.bucket_tokens(n, 512) for n in (1, 16, 17, 100, 300, 512)] == [16, 16, 32, 128, 512, 512]
    assert bert_features.bucket_tokens(40, 32) == 32
