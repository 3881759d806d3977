"""HiFi-GAN generator and multi-period discriminator: upstream sizes, logit lengths, reflect padding, init."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptsovits_jax.models.hifigan import DiscriminatorP, Generator, MultiPeriodDiscriminator
from gptsovits_jax.models.layers import SPECTRAL_COLLECTION


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _generator(c):
    return Generator(
        c.resblock_kernel_sizes,
        c.resblock_dilation_sizes,
        c.upsample_rates,
        c.upsample_initial_channel,
        c.upsample_kernel_sizes,
        c.gin_channels,
    )


@pytest.fixture(scope="module")
def v2_discriminator(v2_config):
    disc = MultiPeriodDiscriminator(v2_config.discriminator)
    audio = jnp.zeros((2, 20480))
    variables = jax.eval_shape(lambda: disc.init(jax.random.key(0), audio))
    logits, fmaps = jax.eval_shape(lambda v: disc.apply(v, audio), variables)
    return variables, logits, fmaps


def test_discriminator_parameter_counts_match_upstream_v2(v2_discriminator):
    variables, _, _ = v2_discriminator
    params = variables["params"]
    assert _count(params) == 46_747_132
    assert {name: _count(sub) for name, sub in params.items()} == {
        "discriminators_0": 5_641_362,
        **{f"discriminators_{i}": 8_221_154 for i in range(1, 6)},
    }
    assert set(params["discriminators_0"]) == {*(f"convs_{i}" for i in range(6)), "conv_post"}
    assert params["discriminators_0"]["convs_4"]["weight_v"].shape == (41, 4, 1024)  # groups=256
    assert params["discriminators_1"]["convs_0"]["weight_v"].shape == (5, 1, 1, 32)


def test_discriminator_logit_lengths_match_upstream_v2(v2_discriminator):
    _, logits, fmaps = v2_discriminator
    assert [lg.shape for lg in logits] == [(2, 80), (2, 254), (2, 255), (2, 255), (2, 259), (2, 253)]
    assert [len(f) for f in fmaps] == [7, 6, 6, 6, 6, 6]
    assert fmaps[0][0].shape == (2, 20480, 16) and fmaps[0][4].shape == (2, 80, 1024)
    assert fmaps[1][0].shape == (2, 3414, 2, 32)  # period 2: 10240 rows, stride 3


def test_spectral_norm_option_keeps_upstream_parameter_names(v2_config):
    cfg = dataclasses.replace(v2_config.discriminator, use_spectral_norm=True)
    disc = MultiPeriodDiscriminator(cfg)
    variables = jax.eval_shape(lambda: disc.init(jax.random.key(0), jnp.zeros((1, 4096))))
    conv = variables["params"]["discriminators_2"]["convs_1"]
    assert set(conv) == {"weight_orig", "bias"}
    assert variables[SPECTRAL_COLLECTION]["discriminators_2"]["convs_1"]["weight_u"].shape == (128,)
    # weight_orig + bias only: the weight-norm count minus every weight_g (one per output channel).
    n_weight_g = sum(cfg.scale_channels) + 1 + len(cfg.periods) * (sum(cfg.period_channels) + 1)
    assert _count(variables["params"]) == 46_747_132 - n_weight_g


@pytest.mark.parametrize("config_name", ["tiny", "v2"])
def test_generator_upsamples_by_hop(config_name, tiny_config, v2_config):
    cfg = {"tiny": tiny_config, "v2": v2_config}[config_name]
    c = cfg.sovits
    gen = _generator(c)
    z = jnp.zeros((2, c.segment_frames, c.inter_channels))
    g = jnp.zeros((2, c.gin_channels))
    variables = jax.eval_shape(lambda: gen.init(jax.random.key(0), z, g))
    audio = jax.eval_shape(lambda v: gen.apply(v, z, g), variables)
    assert audio.shape == (2, c.segment_frames * cfg.audio.hop_length)
    params = variables["params"]
    n_kernels = len(c.resblock_kernel_sizes)
    assert set(params) == {
        "conv_pre",
        "cond",
        "conv_post",
        *(f"ups_{i}" for i in range(5)),
        *(f"resblocks_{i}" for i in range(5 * n_kernels)),
    }
    assert set(params["conv_post"]) == {"kernel"}  # plain, no bias
    assert set(params["conv_pre"]) == {"kernel", "bias"}
    if config_name == "v2":
        assert _count(params) == 14_662_144
        assert params["ups_0"]["weight_v"].shape == (16, 512, 256) and params["ups_0"]["weight_g"].shape == (512,)
        assert params["resblocks_14"]["convs1_2"]["weight_v"].shape == (11, 16, 16)


def test_small_generator_runs_with_upstream_init():
    gen = Generator((3,), ((1, 2),), (4, 2), 16, (8, 4), gin_channels=4)
    z = np.random.default_rng(0).normal(size=(2, 6, 5)).astype(np.float32)
    g = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    variables = jax.jit(lambda: gen.init(jax.random.key(0), z, g))()
    v = np.asarray(variables["params"]["ups_0"]["weight_v"])
    # PyTorch's default U(-b, b), b = 1/sqrt(fan_in), fan_in = out * k = 8 * 8 for the [in, out, k] weight:
    # upstream's N(0, 0.01) `init_weights` runs after `weight_norm` and changes nothing. 8 * 16 * 8 values.
    bound = 1 / np.sqrt(8 * 8)
    assert np.abs(v).max() <= bound and 0.9 < v.std() / (bound / np.sqrt(3)) < 1.1 and abs(v.mean()) < 0.01
    np.testing.assert_allclose(variables["params"]["ups_0"]["weight_g"], np.sqrt((v**2).sum(axis=(0, 2))), rtol=1e-5)
    audio = np.asarray(gen.apply(variables, z, g))
    assert audio.shape == (2, 6 * 8)
    assert np.all(np.isfinite(audio)) and np.all(np.abs(audio) < 1) and audio.std() > 0


def test_period_discriminator_reflect_pads_to_a_multiple_of_the_period():
    disc = DiscriminatorP(3, (4, 4))
    audio = np.random.default_rng(2).normal(size=(2, 100)).astype(np.float32)
    variables = jax.jit(lambda: disc.init(jax.random.key(0), audio))()
    apply = jax.jit(lambda a: disc.apply(variables, a))
    logits, fmaps = apply(audio)
    padded_logits, padded_fmaps = apply(np.pad(audio, ((0, 0), (0, 2)), mode="reflect"))
    np.testing.assert_allclose(logits, padded_logits, rtol=1e-6)
    assert logits.shape == (2, 3 * 12)  # 34 rows -> 12 (stride 3) -> 12 (stride 1) -> post, times 3 columns
    assert fmaps[0].shape == (2, 12, 3, 4) and len(fmaps) == len(padded_fmaps) == 3
    zero_padded_logits, _ = apply(np.pad(audio, ((0, 0), (0, 2))))
    assert not np.allclose(logits, zero_padded_logits)
