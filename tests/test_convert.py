"""Upstream parameter names and this project's parameter paths."""

import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from gptsovits_jax.convert import sovits_param_path
from gptsovits_jax.train.sovits_step import init_sovits_variables


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("dec.ups.0.weight_g", "dec/ups_0/weight_g"),
        ("dec.resblocks.14.convs1.2.weight_v", "dec/resblocks_14/convs1_2/weight_v"),
        ("enc_p.encoder_text.norm_layers_1.5.gamma", "enc_p/encoder_text/norm_layers_1_5/gamma"),
        ("enc_p.text_embedding.weight", "enc_p/text_embedding/embedding"),
        ("enc_p.mrte.cross_attention.conv_q.weight", "enc_p/mrte/cross_attention/conv_q/kernel"),
        ("ref_enc.spectral.3.fc.bias", "ref_enc/spectral_3/bias"),
        ("ref_enc.temporal.1.conv1.conv.weight", "ref_enc/temporal_1/conv1/kernel"),
        ("ref_enc.slf_attn.w_qs.weight", "ref_enc/slf_attn/w_qs/kernel"),
        ("ref_enc.fc.fc.weight", "ref_enc/fc/kernel"),
        ("flow.flows.6.enc.cond_layer.weight_v", "flow/flows_6/enc/cond_layer/weight_v"),
        ("discriminators.5.convs.4.weight_g", "discriminators_5/convs_4/weight_g"),
    ],
)
def test_sovits_param_path_follows_the_naming_rules(key, path):
    assert sovits_param_path(key) == path


@pytest.mark.parametrize("part", ["generator", "discriminator"])
def test_every_upstream_v2_parameter_names_one_project_leaf_of_its_size(repo_root, v2_config, part):
    # The manifest: every parameter name and shape of upstream's v2 training generator (enc_q included) and discriminator.
    upstream = json.loads((repo_root / "tests/fixtures/upstream/init_stats_v2.json").read_text())[part]
    params_g, _, params_d = jax.eval_shape(lambda k: init_sovits_variables(v2_config, k), jax.random.PRNGKey(0))
    leaves = traverse_util.flatten_dict(params_g if part == "generator" else params_d, sep="/")
    mapped = {sovits_param_path(key): key for key in upstream}
    assert len(mapped) == len(upstream)
    assert sorted(mapped) == sorted(leaves)
    for path, key in mapped.items():
        assert np.prod(leaves[path].shape) == np.prod(upstream[key]["shape"]), key
