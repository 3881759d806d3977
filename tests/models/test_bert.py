"""BERT in Flax: parity with transformers' BertForMaskedLM hidden states, strict loading, config refusals, full-size shapes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptsovits_jax.models import bert
from tests.conftest import HF, apply_params, copy_of, hf_formats, hf_reference, relative_error

FORMATS = hf_formats("bert")
TINY_DIM = 16
TEXTS = json.loads((HF / "tiny_bert.json").read_text(encoding="utf-8"))["texts"]


@pytest.fixture(scope="module")
def reference():
    return hf_reference("bert")


@pytest.fixture(scope="module")
def loaded():
    return {name: bert.load_bert(path, expected_dim=TINY_DIM) for name, path in FORMATS.items()}


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("fmt", FORMATS)
def test_hidden_states_minus_three_match_transformers_for_each_weight_format(fmt, loaded, reference):
    config, params = loaded[fmt]
    module = bert.Bert(config)
    for i in range(len(TEXTS)):
        expected = reference[f"hidden_{i}"]
        ours = np.asarray(apply_params(module, bert.params_for_layer(params, config), jnp.asarray(reference[f"ids_{i}"])[None]))[0]
        assert ours.shape == expected.shape == (len(TEXTS[i]) + 2, TINY_DIM)
        assert relative_error(ours, expected) < 1e-4, (fmt, TEXTS[i])


@pytest.mark.parametrize("fmt", FORMATS)
def test_padded_batch_matches_transformers_on_every_real_token(fmt, loaded, reference):
    config, params = loaded[fmt]
    module = bert.Bert(config)
    ids, mask = jnp.asarray(reference["batch_ids"]), jnp.asarray(reference["batch_mask"])
    ours = np.asarray(apply_params(module, bert.params_for_layer(params, config), ids, mask))
    valid = reference["batch_mask"].astype(bool)
    assert valid.sum() == sum(len(text) + 2 for text in TEXTS) and not valid.all()
    assert relative_error(ours[valid], reference["batch_hidden"][valid]) < 1e-4


def test_both_weight_formats_give_identical_parameters(loaded):
    jax.tree.map(np.testing.assert_array_equal, loaded["safetensors"][1], loaded["bin"][1])


def test_every_hidden_state_is_available_and_minus_three_skips_the_last_two_layers(loaded, reference):
    config, params = loaded["bin"]
    ids = jnp.asarray(reference["ids_0"])[None]
    every = np.asarray(apply_params(bert.Bert(config, None), params, ids))
    assert every.shape == (config.num_hidden_layers + 1, 1, len(TEXTS[0]) + 2, TINY_DIM)
    np.testing.assert_allclose(every[-3, 0], reference["hidden_0"], rtol=0, atol=1e-4 * np.abs(reference["hidden_0"]).max())
    pruned = bert.params_for_layer(params, config)
    assert sorted(pruned["encoder"]) == [f"layer_{i}" for i in range(config.num_hidden_layers - 2)]
    assert not np.allclose(every[-1], every[-3])


# --------------------------------------------------------------------------- full size


def test_full_size_shapes_match_transformers_bert_for_masked_lm_at_the_real_config():
    config = bert.read_config_file(HF / "chinese-roberta-wwm-ext-large.config.json")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (1024, 24, 16, 4096)
    assert (config.vocab_size, config.max_position_embeddings, config.type_vocab_size) == (21128, 512, 2)
    manifest = json.loads((HF / "chinese-roberta-wwm-ext-large.manifest.json").read_text())
    torch_shapes = {key: tuple(shape) for key, shape in bert.canonical_keys(manifest["shapes"]).items()}
    abstract = bert.abstract_params(config)
    ours = bert.checkpoint_shapes(abstract)
    ignored = {key for key in torch_shapes if key.startswith(bert.IGNORED_PREFIXES)}
    assert set(torch_shapes) - set(ours) == ignored
    assert {key: torch_shapes[key] for key in ours} == ours
    assert all(key.startswith("cls.") for key in ignored) and "cls.predictions.decoder.weight" in ignored
    # torch counts the MLM head once: its decoder weight and bias are the word embeddings and cls.predictions.bias.
    tied = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
    head = sum(int(np.prod(torch_shapes[key])) for key in ignored if key not in tied)
    assert bert.count_params(abstract) + head == manifest["parameters"] == 325_545_608
    assert bert.count_params(bert.abstract_params(config, bert.FEATURE_LAYER)) == bert.count_params(abstract) - 2 * 12_596_224


# --------------------------------------------------------------------------- strict loading and errors


def test_every_weight_problem_is_listed_in_one_error(loaded):
    config, _ = loaded["bin"]
    state = bert.read_state_dict(FORMATS["bin"] / "pytorch_model.bin")
    assert "bert.embeddings.position_ids" in state and "cls.predictions.bias" in state  # ignored by name
    del state["bert.encoder.layer.1.output.LayerNorm.bias"]
    state["bert.encoder.layer.0.attention.self.query.weight"] = np.zeros((3, 3), np.float32)
    state["bert.encoder.layer.9.output.dense.weight"] = np.zeros((16, 32), np.float32)
    with pytest.raises(bert.BertWeightsError) as info:
        bert.params_from_state_dict(state, config, "x.bin")
    message = str(info.value)
    assert "1 unexpected keys:\n  encoder.layer.9.output.dense.weight" in message
    assert "1 missing keys:\n  encoder.layer.1.output.LayerNorm.bias" in message
    assert "encoder.layer.0.attention.self.query.weight: checkpoint (3, 3), model (16, 16)" in message


def test_tf_era_layer_norm_names_and_a_missing_prefix_load_the_same(loaded):
    config, params = loaded["bin"]
    state = bert.read_state_dict(FORMATS["bin"] / "pytorch_model.bin")
    renamed = {
        key.removeprefix("bert.").replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for key, v in state.items()
    }
    jax.tree.map(np.testing.assert_array_equal, bert.params_from_state_dict(renamed, config), params)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("model_type", "roberta", r"model_type is 'roberta'; this BERT port supports only model_type: \"bert\""),
        ("hidden_act", "gelu_new", r"hidden_act is 'gelu_new'"),
        ("position_embedding_type", "relative_key", r"position_embedding_type is 'relative_key'"),
        ("is_decoder", True, r"is_decoder is True"),
        ("num_attention_heads", 5, r"num_attention_heads 5 does not divide hidden_size 16"),
        ("num_hidden_layers", 1, r"num_hidden_layers 1: upstream's hidden_states\[-3\] needs at least 2 layers"),
        ("vocab_size", None, r"missing field\(s\) vocab_size"),
    ],
)
def test_configs_it_cannot_honour_are_refused_naming_path_and_field(tmp_path, field, value, match):
    directory = copy_of(FORMATS["bin"], tmp_path)
    raw = json.loads((directory / "config.json").read_text())
    if value is None:
        del raw[field]
    else:
        raw[field] = value
    (directory / "config.json").write_text(json.dumps(raw))
    with pytest.raises(bert.BertConfigError, match=match) as info:
        bert.check_directory(directory)
    assert str(directory / "config.json") in str(info.value)


def test_hidden_size_must_match_gpt_bert_dim():
    with pytest.raises(bert.BertConfigError, match=r"config.json: hidden_size 16 does not match gpt.bert_dim 1024"):
        bert.check_directory(FORMATS["bin"], expected_dim=1024)


def test_missing_directory_config_and_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"BERT directory does not exist \(text.bert_path\)") as info:
        bert.check_directory(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    directory = copy_of(FORMATS["bin"], tmp_path)
    (directory / "pytorch_model.bin").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"no BERT weights \(model.safetensors or pytorch_model.bin\) in this directory \(text.bert_path\)"
    ):
        bert.check_directory(directory)
    (directory / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config.json: missing"):
        bert.check_directory(directory)
