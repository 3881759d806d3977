"""Upstream GPT-SoVITS v2 weights into the project's trees and back, checked against upstream's own files and outputs.

Fixtures (``tests/fixtures/upstream``, written by ``tools/make_upstream_fixtures.py``): the key/shape
manifest of upstream's three full-size v2 files, and small upstream models saved as upstream saves
them together with the outputs of upstream's forward code on fixed inputs.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from gptsovits_jax.config import load_config
from gptsovits_jax.convert import sovits_param_path
from gptsovits_jax.models.gpt import Text2SemanticDecoder
from gptsovits_jax.models.hifigan import MultiPeriodDiscriminator
from gptsovits_jax.models.layers import sequence_mask
from gptsovits_jax.models.sovits import build_synthesizer
from gptsovits_jax.torch_checkpoint import read_torch_checkpoint, write_torch_checkpoint
from gptsovits_jax.upstream_weights import (
    PARTS,
    V2_SIZES,
    WeightMappingError,
    abstract_target,
    check_config_holds_v2,
    load_upstream_checkpoint,
    project_to_upstream,
    upstream_shapes,
    upstream_state_dict,
    upstream_to_project,
)

RTOL = 1e-4  # max |project - upstream| / max |upstream|, per output, in float32
FILES = {"gpt": "parity_s1.ckpt", "generator": "parity_s2G.pth", "discriminator": "parity_s2D.pth"}


def relative_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float32), np.asarray(theirs, np.float32)
    assert ours.shape == theirs.shape
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def flat(tree) -> dict:
    return traverse_util.flatten_dict(tree, sep="/")


@pytest.fixture(scope="module")
def fixtures(repo_root):
    return repo_root / "tests" / "fixtures" / "upstream"


@pytest.fixture(scope="module")
def manifest(fixtures):
    return json.loads((fixtures / "manifest_v2.json").read_text())


@pytest.fixture(scope="module")
def v2_targets(v2_config):
    return {part: abstract_target(part, v2_config) for part in PARTS}


@pytest.fixture(scope="module")
def small_config(fixtures):
    """configs/tiny.yaml resized to the small upstream models the tool built."""
    meta = json.loads((fixtures / "parity_v2.json").read_text())
    return load_config(fixtures.parents[2] / "configs" / "tiny.yaml", meta["project_overrides"])


@pytest.fixture(scope="module")
def reference(fixtures):
    with np.load(fixtures / "parity_v2.npz") as data:
        return {k: data[k].astype(np.float32) if data[k].dtype == np.float16 else data[k] for k in data.files}


@pytest.fixture(scope="module")
def files(fixtures):
    return {part: read_torch_checkpoint(fixtures / name) for part, name in FILES.items()}


@pytest.fixture(scope="module")
def small_targets(small_config):
    return {part: abstract_target(part, small_config) for part in PARTS}


@pytest.fixture(scope="module")
def imported(files, small_targets):
    return {part: upstream_to_project(part, upstream_state_dict(part, files[part]), small_targets[part]) for part in PARTS}


def manifest_state_dict(manifest, part):
    """A state dict of the manifest's keys and shapes whose arrays take no memory (zero strides)."""
    return {key: np.broadcast_to(np.zeros((), np.float16), rec["shape"]) for key, rec in manifest[part].items()}


# --------------------------------------------------------------------------- configs


def test_v2_config_has_the_sizes_of_upstream_v2(v2_config):
    check_config_holds_v2(v2_config)


def test_v2_sizes_are_those_of_configs_v2_yaml(v2_config):
    for part in PARTS:
        for name, value in V2_SIZES[part].items():
            section, field = name.split(".")
            actual = getattr(getattr(v2_config, section), field)
            assert jax.tree.leaves(actual) == jax.tree.leaves(value), name


def test_tiny_config_is_refused_before_the_file_is_read(tiny_config, tmp_path):
    # The file does not exist: the config check must come first and say which sizes differ.
    with pytest.raises(WeightMappingError) as err:
        load_upstream_checkpoint("generator", tmp_path / "s2G2333k.pth", tiny_config)
    message = str(err.value)
    assert "sovits.hidden_channels: 32 (v2: 192)" in message
    assert "sovits.resblock_kernel_sizes: [3, 5] (v2: [3, 7, 11])" in message
    assert "gpt." not in message  # only the part being imported is checked
    with pytest.raises(WeightMappingError, match=r"gpt\.hidden_dim: 64 \(v2: 512\)"):
        load_upstream_checkpoint("gpt", tmp_path / "missing.ckpt", tiny_config)


# --------------------------------------------------------------------------- full-size coverage


@pytest.mark.parametrize("part", PARTS)
def test_mapping_covers_every_tensor_of_upstreams_v2_files_both_ways(manifest, v2_targets, part):
    expected = {key: tuple(rec["shape"]) for key, rec in manifest[part].items()}
    ours = upstream_shapes(part, v2_targets[part])
    assert sorted(set(ours) - set(expected)) == []  # every project leaf is some upstream tensor
    assert sorted(set(expected) - set(ours)) == []  # every upstream tensor is some project leaf
    assert ours == expected
    assert len(ours) == len(flat(v2_targets[part]))  # one leaf per key
    if part == "gpt":
        assert len(ours) == 295


@pytest.mark.parametrize("part", ["generator", "discriminator"])
def test_upstream_keys_follow_the_naming_rules_of_sovits_param_path(manifest, v2_targets, part):
    leaves = flat(v2_targets[part]["params"] if part == "generator" else v2_targets[part])
    for key in manifest[part]:
        if not key.startswith("quantizer.vq."):
            assert sovits_param_path(key) in leaves, key


@pytest.mark.parametrize("part", PARTS)
def test_full_size_v2_files_fit_except_for_an_injected_key(manifest, v2_targets, part):
    # Zero-stride arrays carry the real names and shapes without 700 MB of weights; the injected key makes
    # the check fail before anything is converted, and the message shows it is the only problem.
    state_dict = manifest_state_dict(manifest, part)
    if part == "generator":
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("enc_q.")}  # an inference export
    state_dict["injected.unknown"] = np.zeros(1, np.float16)
    with pytest.raises(WeightMappingError) as err:
        upstream_to_project(part, state_dict, v2_targets[part])
    assert str(err.value).endswith("keys in the file that no project leaf takes (1):\n  injected.unknown [1]")


# --------------------------------------------------------------------------- numerical parity


@pytest.fixture(scope="module")
def gpt_outputs(small_config, imported, reference):
    params, _ = imported["gpt"]
    model = Text2SemanticDecoder(small_config.gpt)
    phonemes, semantic = reference["gpt/phoneme_ids"], reference["gpt/semantic_ids"]
    batch = phonemes.shape[0]

    @jax.jit
    def forward(params):
        return model.apply(
            {"params": params},
            phonemes,
            jnp.full((batch,), phonemes.shape[1]),
            reference["gpt/bert"],
            semantic,
            jnp.full((batch,), semantic.shape[1]),
            deterministic=True,
        )

    return forward(params)


def test_gpt_teacher_forced_logits_match_upstream(gpt_outputs, reference):
    np.testing.assert_array_equal(gpt_outputs.targets, reference["gpt/targets"])
    assert relative_error(gpt_outputs.logits, reference["gpt/logits"]) < RTOL


@pytest.fixture(scope="module")
def generator_outputs(small_config, imported, reference):
    variables, _ = imported["generator"]
    synth = build_synthesizer(small_config)

    def channels_last(name):
        return jnp.asarray(reference[f"generator/{name}"]).transpose(0, 2, 1)

    def pieces(module):
        spec, lengths = channels_last("spec"), jnp.asarray(reference["generator/spec_lens"])
        text = jnp.asarray(reference["generator/text"])
        mask = sequence_mask(lengths, spec.shape[1])
        ge = module._reference(spec, mask, True)
        quantized, codes, _ = module._quantize(channels_last("ssl"), lengths, False, False)
        text_mask = sequence_mask(jnp.asarray(reference["generator/text_lens"]), text.shape[1])
        _, m_p, logs_p = module.enc_p(quantized, mask, text, text_mask, ge)
        _, m_q, logs_q = module.enc_q(spec, mask, ge)
        return {
            "ge": ge,
            "codes": codes,
            "quantized": quantized[:, ::2],  # back at 25 Hz
            "m_p": m_p,
            "logs_p": logs_p,
            "m_q": m_q,
            "logs_q": logs_q,
            "flow_forward": module.flow(m_q, mask, ge),
            "flow_reverse": module.flow(m_p, mask, ge, reverse=True),
            "audio": module.dec(channels_last("latent"), ge),
        }

    out = jax.jit(lambda v: synth.apply(v, method=pieces, rngs={"sample": jax.random.PRNGKey(0)}))(variables)
    return {k: np.asarray(v).transpose(0, 2, 1) if v.ndim == 3 and k != "codes" else np.asarray(v) for k, v in out.items()}


def test_quantizer_codes_match_upstream(generator_outputs, reference):
    np.testing.assert_array_equal(generator_outputs["codes"], reference["generator/codes"])


@pytest.mark.parametrize(
    "name",
    ["ge", "quantized", "m_p", "logs_p", "m_q", "logs_q", "flow_forward", "flow_reverse", "audio"],
)
def test_generator_outputs_match_upstream(generator_outputs, reference, name):
    # ge: reference encoder; m_p/logs_p: text encoder (prior); m_q/logs_q: posterior encoder;
    # flow both ways; audio: the HiFi-GAN decoder on a fixed latent.
    assert relative_error(generator_outputs[name], reference[f"generator/{name}"]) < RTOL


def test_discriminator_outputs_match_upstream(small_config, imported, reference):
    params, _ = imported["discriminator"]
    disc = MultiPeriodDiscriminator(small_config.discriminator)
    logits, fmaps = jax.jit(lambda p: disc.apply({"params": p}, reference["discriminator/audio"]))(params)
    assert len(logits) == 1 + len(small_config.discriminator.periods)
    for i, (logit, fmap) in enumerate(zip(logits, fmaps, strict=True)):
        assert relative_error(logit, reference[f"discriminator/{i}/logits"]) < RTOL, i
        for j, feature in enumerate(fmap):
            # Project feature maps are channels-last: [B, T, C] or [B, H, period, C]; upstream's channels-first.
            assert relative_error(np.moveaxis(np.asarray(feature), -1, 1), reference[f"discriminator/{i}/fmap_{j}"]) < RTOL, (i, j)


# --------------------------------------------------------------------------- import details and round trips


def test_import_reports_every_tensor_and_the_upcast(imported, files):
    for part in PARTS:
        _, report = imported[part]
        assert report.tensors == len(upstream_state_dict(part, files[part]))
        assert report.source_dtypes == ("float16",)
        assert report.fresh == ()
        assert f"imported {report.tensors} tensors" in str(report)
    tree, _ = imported["generator"]
    assert all(np.asarray(leaf).dtype in (np.float32, np.bool_) for leaf in jax.tree.leaves(tree))


def test_imported_codebook_is_marked_inited_and_kmeans_leaves_it(small_config, imported, reference):
    variables, _ = imported["generator"]
    codebook = variables["quantizer"]["quantizer"]["layers_0"]
    assert codebook["inited"].dtype == np.bool_ and bool(codebook["inited"])
    synth = build_synthesizer(small_config)
    ssl = jnp.asarray(reference["generator/ssl"]).transpose(0, 2, 1)
    lengths = jnp.asarray(reference["generator/spec_lens"])
    _, state = synth.apply(
        variables,
        ssl,
        lengths,
        False,
        False,
        method=lambda m, *a: m._quantize(*a),
        mutable=["quantizer"],
        rngs={"sample": jax.random.PRNGKey(1)},
    )
    np.testing.assert_array_equal(state["quantizer"]["quantizer"]["layers_0"]["embed"], codebook["embed"])


@pytest.mark.parametrize("part", PARTS)
def test_export_of_an_imported_float16_file_gives_back_its_exact_bits(files, imported, part):
    original = upstream_state_dict(part, files[part])
    exported = project_to_upstream(part, imported[part][0], dtype=np.float16)
    assert set(exported) == set(original)
    for key, value in original.items():
        assert exported[key].dtype == np.float16 and exported[key].shape == value.shape, key
        np.testing.assert_array_equal(exported[key].view(np.uint16), value.view(np.uint16), err_msg=key)


@pytest.mark.parametrize("part", PARTS)
def test_float32_round_trip_from_the_project_is_bit_exact(small_targets, part):
    rng = np.random.default_rng(0)
    tree = jax.tree.map(
        lambda leaf: np.ones((), np.bool_) if leaf.dtype == np.bool_ else rng.standard_normal(leaf.shape).astype(np.float32),
        small_targets[part],
    )
    state_dict = project_to_upstream(part, tree, dtype=np.float32)
    back, _ = upstream_to_project(part, state_dict, small_targets[part])
    for path, value in flat(tree).items():
        np.testing.assert_array_equal(flat(back)[path], value, err_msg=path)


def test_export_without_enc_q_imports_with_enc_q_initialised_fresh(imported, small_config):
    variables, _ = imported["generator"]
    exported = project_to_upstream("generator", variables, include_enc_q=False)
    assert not [k for k in exported if k.startswith("enc_q.")]
    fresh = jax.tree.map(lambda leaf: np.full(leaf.shape, 7, leaf.dtype), abstract_target("generator", small_config))
    tree, report = upstream_to_project("generator", exported, fresh)
    assert len(report.fresh) == 1 and report.fresh[0].startswith("enc_q")
    assert "initialised fresh" in str(report)
    assert set(report.fresh_leaves) == {p for p in flat(tree) if p.startswith("params/enc_q/")}
    for path, value in flat(tree).items():
        np.testing.assert_array_equal(value, 7 if path in report.fresh_leaves else flat(variables)[path], err_msg=path)


def test_export_refuses_values_beyond_float16(imported):
    params, _ = imported["discriminator"]
    params = jax.tree.map(np.copy, params)
    params["discriminators_0"]["conv_post"]["bias"][0] = 1e6
    with pytest.raises(WeightMappingError, match=r"discriminators\.0\.conv_post\.bias"):
        project_to_upstream("discriminator", params)
    assert project_to_upstream("discriminator", params, dtype=np.float32)["discriminators.0.conv_post.bias"][0] == 1e6


def test_load_upstream_checkpoint_reads_exported_files(tmp_path, imported, small_config):
    params, _ = imported["gpt"]
    path = tmp_path / "voice-e8.ckpt"
    write_torch_checkpoint({"weight": project_to_upstream("gpt", params), "config": {"model": {"head": 2}}, "info": "GPT-e8"}, path)
    back, report = load_upstream_checkpoint("gpt", path, small_config, require_v2=False)
    assert report.tensors == 31
    for path_, value in flat(params).items():
        np.testing.assert_array_equal(flat(back)[path_], value)


# --------------------------------------------------------------------------- bad input


def test_v1_shaped_generator_is_refused_naming_each_mismatch_and_both_shapes(manifest, v2_targets):
    # Upstream v1: a 322-symbol phoneme table and a reference encoder on all 1025 spectrogram bins.
    state_dict = manifest_state_dict(manifest, "generator")
    state_dict["enc_p.text_embedding.weight"] = np.zeros((322, 192), np.float16)
    state_dict["ref_enc.spectral.0.fc.weight"] = np.zeros((128, 1025), np.float16)
    with pytest.raises(WeightMappingError) as err:
        upstream_to_project("generator", state_dict, v2_targets["generator"])
    message = str(err.value)
    assert "shape mismatches (2)" in message
    assert (
        "enc_p.text_embedding.weight: file [322, 192], expected [732, 192] (project params/enc_p/text_embedding/embedding [732, 192])"
        in message
    )
    assert "ref_enc.spectral.0.fc.weight: file [128, 1025], expected [128, 704]" in message


def test_unknown_and_missing_keys_are_one_error_listing_both(files, small_targets):
    state_dict = dict(upstream_state_dict("generator", files["generator"]))
    del state_dict["dec.conv_post.weight"]
    state_dict["dec.conv_post.bias"] = np.zeros(1, np.float16)
    with pytest.raises(WeightMappingError) as err:
        upstream_to_project("generator", state_dict, small_targets["generator"])
    message = str(err.value)
    assert "keys in the file that no project leaf takes (1):\n  dec.conv_post.bias [1]" in message
    assert "project leaves the file does not fill (1):\n  dec.conv_post.weight [1, 1, 7] (project params/dec/conv_post/kernel)" in message


def test_a_partial_enc_q_is_an_error_not_a_fresh_part(files, small_targets):
    state_dict = dict(upstream_state_dict("generator", files["generator"]))
    del state_dict["enc_q.proj.weight"]
    with pytest.raises(WeightMappingError, match=r"does not fill \(1\):\n  enc_q\.proj\.weight"):
        upstream_to_project("generator", state_dict, small_targets["generator"])


def test_a_file_of_another_part_is_named_as_such(files, small_targets):
    with pytest.raises(WeightMappingError, match="not an upstream v2 generator state dict"):
        upstream_to_project("generator", upstream_state_dict("discriminator", files["discriminator"]), small_targets["generator"])


def test_state_dicts_are_found_where_upstream_keeps_them(files):
    weights = upstream_state_dict("discriminator", files["discriminator"])
    assert upstream_state_dict("discriminator", {"model": weights, "iteration": 3, "optimizer": None}) is weights  # D_*.pth
    assert upstream_state_dict("gpt", {"state_dict": weights}) is weights  # a Lightning checkpoint
    with pytest.raises(WeightMappingError, match="expected a dict with 'weight' or 'model'; found iteration"):
        upstream_state_dict("generator", {"iteration": 3})


def test_a_file_whose_config_has_other_head_counts_is_refused(tmp_path, files, small_config):
    checkpoint = dict(files["gpt"], config={"model": {"head": 4}})
    path = tmp_path / "heads.ckpt"
    write_torch_checkpoint(checkpoint, path)
    with pytest.raises(WeightMappingError, match=r"model\.head = 4, the project config gpt\.num_heads = 2"):
        load_upstream_checkpoint("gpt", path, small_config, require_v2=False)
