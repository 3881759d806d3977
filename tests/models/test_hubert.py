"""HuBERT in Flax: parity with transformers' HubertModel, strict loading, config refusals, upstream's frame count."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptsovits_jax import audio
from gptsovits_jax.config import AudioConfig, SSLConfig
from gptsovits_jax.data import ssl
from gptsovits_jax.models import hubert
from tests.conftest import HF, apply_params, copy_of, hf_formats, hf_reference, relative_error

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FORMATS = hf_formats("hubert")
LENGTHS = (16000, 16321, 7999, 400, 719)
TINY_DIM = 32


@pytest.fixture(scope="module")
def reference():
    return hf_reference("hubert")


@pytest.fixture(scope="module")
def loaded():
    return {name: hubert.load_hubert(path, expected_dim=TINY_DIM) for name, path in FORMATS.items()}


def tiny_raw_config() -> dict:
    return json.loads((FORMATS["bin"] / "config.json").read_text())


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("fmt", FORMATS)
def test_matches_transformers_for_each_weight_format_and_length(fmt, loaded, reference):
    module, params = loaded[fmt]
    for n in LENGTHS:
        expected = reference[f"hidden_{n}"]
        ours = np.asarray(apply_params(module, params, jnp.asarray(reference[f"wave_{n}"])[None]))[0]
        assert ours.shape == expected.shape == (module.config.num_frames(n), TINY_DIM)
        assert relative_error(ours, expected) < 1e-4, (fmt, n)


def test_both_weight_formats_give_identical_parameters(loaded):
    (_, from_safetensors), (_, from_bin) = loaded["safetensors"], loaded["bin"]
    jax.tree.map(np.testing.assert_array_equal, from_safetensors, from_bin)


def test_padded_batch_matches_each_utterance_alone(loaded, reference):
    module, params = loaded["safetensors"]
    waves = [reference[f"wave_{n}"] for n in LENGTHS]
    batch = np.zeros((len(waves), 17000), np.float32)
    for row, wave in enumerate(waves):
        batch[row, : len(wave)] = wave
    out = np.asarray(apply_params(module, params, jnp.asarray(batch), jnp.asarray([len(w) for w in waves])))
    for row, n in enumerate(LENGTHS):
        expected = reference[f"hidden_{n}"]
        assert relative_error(out[row, : len(expected)], expected) < 1e-4, n


def test_frame_count_is_upstreams_conv_arithmetic():
    config = hubert.HubertConfig()
    assert (config.receptive_field, config.total_stride) == (400, 320)
    assert [config.num_frames(n) for n in (399, 400, 719, 720, 16000, 16079, 16080)] == [0, 1, 1, 2, 49, 49, 50]


# --------------------------------------------------------------------------- full size


def test_full_size_shapes_and_count_match_transformers_at_the_real_config():
    config = hubert.read_config_file(HF / "chinese-hubert-base.config.json")
    manifest = json.loads((HF / "chinese-hubert-base.manifest.json").read_text())
    torch_shapes = {key: tuple(shape) for key, shape in hubert._canonical_keys(manifest["shapes"]).items()}
    abstract = hubert.abstract_params(config)
    ours = {key: slot.shape for key, slot in hubert._slots(abstract).items()}
    assert set(torch_shapes) - set(ours) == set(hubert.UNUSED_KEYS)
    assert {key: torch_shapes[key] for key in ours} == ours
    unused = sum(int(np.prod(torch_shapes[key])) for key in hubert.UNUSED_KEYS)
    assert hubert.count_params(abstract) + unused == manifest["parameters"] == 94_371_712
    assert (config.hidden_size, config.num_hidden_layers, config.num_conv_pos_embeddings, config.conv_bias) == (768, 12, 128, False)


# --------------------------------------------------------------------------- strict loading


def test_hubert_prefix_of_task_checkpoints_is_stripped(loaded):
    module, params = loaded["bin"]
    state = hubert.read_state_dict(FORMATS["bin"] / "pytorch_model.bin")
    prefixed = hubert.params_from_state_dict({f"hubert.{k}": v for k, v in state.items()}, module.config)
    jax.tree.map(np.testing.assert_array_equal, prefixed, params)


def test_every_weight_problem_is_listed_in_one_error(loaded):
    module, _ = loaded["bin"]
    state = hubert.read_state_dict(FORMATS["bin"] / "pytorch_model.bin")
    del state["encoder.layer_norm.bias"]
    state["encoder.layers.0.attention.q_proj.weight"] = np.zeros((3, 3), np.float32)
    state["lm_head.weight"] = np.zeros((5, 32), np.float32)
    with pytest.raises(hubert.HubertWeightsError) as info:
        hubert.params_from_state_dict(state, module.config, "x.bin")
    message = str(info.value)
    assert "1 unexpected keys:\n  lm_head.weight" in message
    assert "1 missing keys:\n  encoder.layer_norm.bias" in message
    assert "encoder.layers.0.attention.q_proj.weight: checkpoint (3, 3), model (32, 32)" in message


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("do_stable_layer_norm", True, r"do_stable_layer_norm is True; this HuBERT port supports only do_stable_layer_norm: false"),
        ("feat_extract_norm", "layer", r"feat_extract_norm is 'layer'"),
        ("hidden_act", "gelu_new", r"hidden_act is 'gelu_new'"),
        ("feat_extract_activation", "relu", r"feat_extract_activation is 'relu'"),
        ("model_type", "wav2vec2", r"model_type is 'wav2vec2'"),
        ("conv_pos_batch_norm", True, r"conv_pos_batch_norm is True"),
        ("num_attention_heads", 5, r"num_attention_heads 5 does not divide hidden_size 32"),
        ("num_conv_pos_embedding_groups", 3, r"num_conv_pos_embedding_groups 3 does not divide hidden_size 32"),
        ("conv_kernel", [10, 3], r"conv_dim, conv_kernel and conv_stride must each have num_feat_extract_layers \(7\) entries"),
        ("hidden_size", None, r"missing field\(s\) hidden_size"),
    ],
)
def test_configs_it_cannot_honour_are_refused_naming_the_field(tmp_path, field, value, match):
    raw = tiny_raw_config()
    if value is None:
        del raw[field]
    else:
        raw[field] = value
    directory = copy_of(FORMATS["bin"], tmp_path)
    (directory / "config.json").write_text(json.dumps(raw))
    with pytest.raises(hubert.HubertConfigError, match=match) as info:
        hubert.load_hubert(directory)
    assert str(directory / "config.json") in str(info.value)


def test_hidden_size_must_match_ssl_dim():
    with pytest.raises(hubert.HubertConfigError, match=r"hidden_size 32 does not match ssl.dim 768"):
        hubert.load_hubert(FORMATS["bin"], expected_dim=768)


def test_missing_directory_config_and_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"HuBERT directory does not exist \(ssl.hubert_path\)") as info:
        hubert.load_hubert(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    directory = copy_of(FORMATS["bin"], tmp_path)
    (directory / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"no HuBERT weights \(model.safetensors or pytorch_model.bin\)"):
        hubert.load_hubert(directory)
    (directory / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config.json: missing"):
        hubert.load_hubert(directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(hubert.HubertConfigError, match=r"not valid JSON"):
        hubert.load_hubert(directory)


# --------------------------------------------------------------------------- the extractor


@pytest.fixture(scope="module")
def extractor():
    return ssl.make_ssl_extractor(SSLConfig(extractor="hubert", dim=TINY_DIM, hubert_path=str(FORMATS["safetensors"])))


def test_extractor_runs_the_model_on_upstreams_input_and_aligns_with_the_spectrogram(extractor, loaded):
    config = AudioConfig()
    wave_32k = audio.load_audio(FIXTURES / "speech_cmn.wav", config.sample_rate)
    for n_32k in (len(wave_32k), 640 * 50, 640 * 50 + 100, 640 * 50 + 639):
        cut = wave_32k[:n_32k]
        wave_16k = audio.ssl_input_waveform(cut, config)
        n_spec = audio.num_frames(len(cut), config)
        features = extractor.extract(wave_16k)
        assert features.dtype == np.float32
        assert features.shape == ((len(wave_16k) - 400) // 320 + 1, TINY_DIM)
        assert n_spec - features.shape[0] in (0, 1)
        # Bucket padding is exact: the same as the model on the unpadded wave.
        module, params = loaded["safetensors"]
        alone = np.asarray(apply_params(module, params, jnp.asarray(wave_16k)[None]))[0]
        assert relative_error(features, alone) < 1e-5
        aligned = ssl.align_frames(features, n_spec)
        assert aligned.shape == (n_spec, TINY_DIM)
        np.testing.assert_array_equal(aligned[: features.shape[0]], features[:n_spec])


def test_extract_batch_equals_one_at_a_time(extractor, reference):
    waves = [reference[f"wave_{n}"] for n in LENGTHS] + [np.zeros(399, np.float32)]
    batched = extractor.extract_batch(waves)
    assert batched[-1].shape == (0, TINY_DIM)
    for wave, features in zip(waves[:-1], batched[:-1]):
        assert relative_error(features, extractor.extract(wave)) < 1e-5


def test_extractor_identity_names_the_weights(extractor):
    assert extractor.identity["extractor"] == "hubert"
    assert extractor.identity["weights"] == hubert.weights_fingerprint(FORMATS["safetensors"])
    assert extractor.identity["weights"] != hubert.weights_fingerprint(FORMATS["bin"])


def test_bucket_lengths_are_four_per_octave():
    assert ssl.bucket_samples(100) == ssl.bucket_samples(16000) == 16000
    assert [ssl.bucket_samples(n) for n in (16001, 20481, 32768, 32769, 54 * 16000)] == [16384, 24576, 32768, 40960, 917504]
    lengths = {ssl.bucket_samples(n) for n in range(16000, 54 * 16000, 997)}
    assert len(lengths) <= 24
