"""SoVITS synthesizer: upstream parameter counts, shapes, masking, flow invertibility, inference paths and gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptsovits_jax import losses
from gptsovits_jax.models.hifigan import MultiPeriodDiscriminator
from gptsovits_jax.models.layers import sequence_mask
from gptsovits_jax.models.quantizer import COLLECTION
from gptsovits_jax.models.sovits import (
    MelStyleEncoder,
    PosteriorEncoder,
    ResidualCouplingBlock,
    ResidualCouplingLayer,
    TextEncoder,
    build_synthesizer,
    rand_slice_segments,
    slice_segments,
)
from tests.conftest import random_params

B, T, L = 2, 40, 12
LENS = np.array([40, 34])
TEXT_LENS = np.array([12, 7])


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _inputs(cfg, seed=0):
    rng = np.random.default_rng(seed)
    ssl = rng.normal(size=(B, T, cfg.ssl.dim)).astype(np.float32)
    spec = np.abs(rng.normal(size=(B, T, cfg.audio.spec_channels))).astype(np.float32)
    text = rng.integers(0, cfg.text.phoneme_vocab_size, (B, L)).astype(np.int32)
    mask = np.asarray(sequence_mask(jnp.asarray(LENS), T))[..., None]
    return ssl * mask, spec * mask, jnp.asarray(LENS), text, jnp.asarray(TEXT_LENS)


def _rngs(seed):
    return {"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1), "sample": jax.random.key(seed + 2)}


def _abstract_variables(model, inputs):
    return jax.eval_shape(lambda: model.init(_rngs(0), *inputs, train=False))


# --------------------------------------------------------------------------- sizes


def test_parameter_counts_match_upstream_v2(v2_config):
    model = build_synthesizer(v2_config)
    ssl = jnp.zeros((1, 64, 768))
    spec = jnp.zeros((1, 64, 1025))
    variables = _abstract_variables(model, (ssl, spec, jnp.array([64]), jnp.zeros((1, 8), jnp.int32), jnp.array([8])))
    counts = {name: _count(sub) for name, sub in variables["params"].items()}
    assert counts == {
        "enc_p": 14_146_048,
        "dec": 14_662_144,
        "enc_q": 10_494_336,
        "flow": 10_260_096,
        "ref_enc": 567_040,
        "ssl_proj": 1_180_416,
    }
    assert _count(variables["params"]) == 51_310_080
    book = variables[COLLECTION]["quantizer"]["layers_0"]
    assert book["embed"].shape == (1024, 768) and book["cluster_size"].shape == (1024,) and book["inited"].shape == ()
    enc_p = variables["params"]["enc_p"]
    assert set(enc_p) == {"ssl_proj", "encoder_ssl", "text_embedding", "encoder_text", "mrte", "encoder2", "proj"}
    assert set(enc_p["mrte"]) == {"c_pre", "text_pre", "cross_attention", "c_post"}
    assert set(variables["params"]["flow"]) == {"flows_0", "flows_2", "flows_4", "flows_6"}
    assert enc_p["encoder_text"]["attn_layers_0"]["emb_rel_k"].shape == (1, 9, 96)
    assert variables["params"]["dec"]["ups_0"]["weight_g"].shape == (512,)  # ConvTranspose1d: per input channel
    assert variables["params"]["enc_q"]["enc"]["in_layers_0"]["weight_g"].shape == (384,)


def test_mrte_needs_gin_equal_to_mrte_hidden(tiny_config):
    cfg = dataclasses.replace(tiny_config, sovits=dataclasses.replace(tiny_config.sovits, mrte_hidden=48, mrte_heads=2))
    with pytest.raises(ValueError, match="mrte_hidden"):
        _abstract_variables(build_synthesizer(cfg), _inputs(cfg))


# --------------------------------------------------------------------------- forward


@pytest.fixture(scope="module")
def tiny(tiny_config):
    model = build_synthesizer(tiny_config)
    inputs = _inputs(tiny_config)
    abstract = _abstract_variables(model, inputs)
    variables = {"params": random_params(abstract["params"], 0), COLLECTION: jax.tree_util.tree_map(jnp.zeros_like, abstract[COLLECTION])}
    return model, inputs, variables


@pytest.fixture(scope="module")
def trained_forward(tiny):
    """A training forward with codebook updates; the first call runs the k-means init."""
    model, inputs, variables = tiny

    @jax.jit
    def run(variables, key):
        out, updates = model.apply(
            variables, *inputs, train=True, update_codebook=True, rngs={"dropout": key, "sample": key}, mutable=[COLLECTION]
        )
        return out, {**variables, **updates}

    out, updated = run(variables, jax.random.key(7))
    return out, updated


def test_training_forward_shapes_and_masking(tiny_config, tiny, trained_forward):
    _, _, variables = tiny
    out, updated = trained_forward
    c = tiny_config.sovits
    seg = c.segment_frames
    assert out.audio.shape == (B, seg * 640)
    assert out.ids_slice.shape == (B,) and out.ids_slice.dtype == jnp.int32
    assert np.all(np.asarray(out.ids_slice) >= 0) and np.all(np.asarray(out.ids_slice) <= LENS - seg)
    for name in ("z", "z_p", "m_p", "logs_p", "m_q", "logs_q"):
        value = np.asarray(getattr(out, name))
        assert value.shape == (B, T, c.inter_channels), name
        assert np.all(value[1, LENS[1] :] == 0), f"{name} is not zero at padding"
    np.testing.assert_array_equal(out.mask, sequence_mask(jnp.asarray(LENS), T))
    assert out.codes.shape == (c.n_q, B, T // 2) and out.codes.dtype == jnp.int32
    assert np.all((np.asarray(out.codes) >= 0) & (np.asarray(out.codes) < c.codebook_size))
    assert np.all(np.abs(np.asarray(out.audio)) <= 1.0) and np.isfinite(float(out.commit_loss)) and float(out.commit_loss) > 0
    assert not bool(variables[COLLECTION]["quantizer"]["layers_0"]["inited"])
    assert bool(updated[COLLECTION]["quantizer"]["layers_0"]["inited"])


def test_extract_latent_gives_the_forward_codes(tiny, trained_forward):
    model, inputs, _ = tiny
    _, state = trained_forward
    out = jax.jit(lambda v: model.apply(v, *inputs, train=False, rngs={"sample": jax.random.key(0)}))(state)
    codes = jax.jit(lambda v: model.apply(v, inputs[0], method=model.extract_latent))(state)
    assert codes.shape == out.codes.shape
    np.testing.assert_array_equal(codes, out.codes)


def test_decode_of_extracted_codes_equals_full_inference(tiny, trained_forward):
    # With even lengths, decoding the utterance's own codes with itself as reference is the same
    # computation as infer_full: same speaker vector, same quantized content, same mask.
    model, inputs, _ = tiny
    _, state = trained_forward
    ssl, spec, lens, text, text_lens = inputs
    key = jax.random.key(11)
    full = jax.jit(lambda v: model.apply(v, *inputs, noise_scale=0.5, rng=key, method=model.infer_full))(state)
    codes = model.apply(state, ssl, method=model.extract_latent)
    decoded = jax.jit(
        lambda v: model.apply(v, codes, text, text_lens, spec, lens, noise_scale=0.5, rng=key, code_lens=lens // 2, method=model.decode)
    )(state)
    assert full.shape == decoded.shape == (B, T * 640)
    np.testing.assert_allclose(decoded, full, atol=1e-5)
    assert np.abs(np.asarray(full)).max() > 0


def test_rand_slice_segments_follows_upstream_formula():
    x = jnp.arange(2 * 20 * 3, dtype=jnp.float32).reshape(2, 20, 3)
    lengths = jnp.array([20, 11])
    key = jax.random.key(3)
    slices, ids = rand_slice_segments(key, x, lengths, 8)
    u = np.asarray(jax.random.uniform(key, (2,)))
    np.testing.assert_array_equal(ids, np.floor(u * (np.asarray(lengths) - 8 + 1)).astype(np.int32))
    for b in range(2):
        np.testing.assert_array_equal(slices[b], x[b, int(ids[b]) : int(ids[b]) + 8])
    np.testing.assert_array_equal(slice_segments(jnp.arange(10.0)[None], jnp.array([3]), 4), [[3.0, 4.0, 5.0, 6.0]])


# --------------------------------------------------------------------------- submodules


def _module_params(module, *args, seed=0, **kwargs):
    abstract = jax.eval_shape(lambda: module.init(_rngs(0), *args, **kwargs))
    return {"params": random_params(abstract["params"], seed)}


def test_flow_reverse_inverts_forward(tiny_config):
    c = tiny_config.sovits
    flow = ResidualCouplingBlock(c.inter_channels, c.hidden_channels, c.flow_kernel, 1, c.flow_layers, c.n_flows, c.gin_channels)
    rng = np.random.default_rng(1)
    mask = sequence_mask(jnp.array([T, 30]), T)
    x = rng.normal(size=(B, T, c.inter_channels)).astype(np.float32) * np.asarray(mask)[..., None]
    g = rng.normal(size=(B, c.gin_channels)).astype(np.float32)
    # random_params gives every `post` non-zero weights, so the couplings really move x.
    variables = _module_params(flow, x, mask, g)
    z = jax.jit(lambda x: flow.apply(variables, x, mask, g))(x)
    back = jax.jit(lambda z: flow.apply(variables, z, mask, g, reverse=True))(z)
    assert np.abs(np.asarray(z) - x[..., ::-1]).max() > 0.1
    np.testing.assert_allclose(back, x, atol=1e-5)
    # Scanned WaveNets (inference runs them too) give the same flow both ways.
    scanned = ResidualCouplingBlock(
        c.inter_channels, c.hidden_channels, c.flow_kernel, 1, c.flow_layers, c.n_flows, c.gin_channels, scan_layers=True
    )
    np.testing.assert_allclose(jax.jit(lambda x: scanned.apply(variables, x, mask, g))(x), z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda z: scanned.apply(variables, z, mask, g, reverse=True))(z), back, rtol=1e-5, atol=1e-6)


def test_coupling_post_starts_at_zero():
    layer = ResidualCouplingLayer(4, 4, 3, 1, 1)
    x = np.random.default_rng(2).normal(size=(1, 5, 4)).astype(np.float32)
    mask = jnp.ones((1, 5))
    variables = jax.jit(lambda: layer.init(jax.random.key(0), x, mask))()
    assert np.all(np.asarray(variables["params"]["post"]["kernel"]) == 0) and np.all(np.asarray(variables["params"]["post"]["bias"]) == 0)
    np.testing.assert_array_equal(layer.apply(variables, x, mask), x)


def _check_padding_invariance(apply, clean, changed, valid):
    a, b = apply(clean), apply(changed)
    for out_a, out_b in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(out_a)[valid], np.asarray(out_b)[valid], atol=1e-5)


def test_text_encoder_valid_outputs_ignore_padding(tiny_config):
    enc = TextEncoder(tiny_config.sovits, tiny_config.text.phoneme_vocab_size)
    rng = np.random.default_rng(3)
    y_mask, t_mask = sequence_mask(jnp.asarray(LENS), T), sequence_mask(jnp.asarray(TEXT_LENS), L)
    y = rng.normal(size=(B, T, tiny_config.ssl.dim)).astype(np.float32)
    text = rng.integers(0, 732, (B, L)).astype(np.int32)
    ge = rng.normal(size=(B, tiny_config.sovits.gin_channels)).astype(np.float32)
    variables = _module_params(enc, y, y_mask, text, t_mask, ge)
    apply = jax.jit(lambda args: enc.apply(variables, args[0], y_mask, args[1], t_mask, ge))
    y2, text2 = y.copy(), text.copy()
    y2[1, LENS[1] :] = 7.0
    text2[1, TEXT_LENS[1] :] = 5
    _, m_p, logs_p = apply((y, text))
    assert np.all(np.asarray(m_p)[1, LENS[1] :] == 0) and np.all(np.asarray(logs_p)[1, LENS[1] :] == 0)
    valid = (slice(None), slice(None, LENS[1]))
    _check_padding_invariance(apply, (y, text), (y2, text2), valid)
    text3 = text.copy()
    text3[1, 0] = (text[1, 0] + 1) % 732
    assert not np.allclose(np.asarray(apply((y, text3))[1])[1, : LENS[1]], np.asarray(m_p)[1, : LENS[1]])  # valid tokens do matter


def test_posterior_encoder_valid_outputs_ignore_padding(tiny_config):
    c = tiny_config.sovits
    enc = PosteriorEncoder(c.inter_channels, c.hidden_channels, c.posterior_kernel, 1, c.posterior_layers, c.gin_channels)
    rng = np.random.default_rng(4)
    mask = sequence_mask(jnp.asarray(LENS), T)
    spec = np.abs(rng.normal(size=(B, T, 1025))).astype(np.float32)
    g = rng.normal(size=(B, c.gin_channels)).astype(np.float32)
    variables = _module_params(enc, spec, mask, g)
    apply = jax.jit(lambda s: enc.apply(variables, s, mask, g, rngs={"sample": jax.random.key(0)}))
    spec2 = spec.copy()
    spec2[1, LENS[1] :] = 9.0
    _check_padding_invariance(apply, spec, spec2, (1, slice(None, LENS[1])))
    z, m_q, logs_q = apply(spec)
    assert all(np.all(np.asarray(a)[1, LENS[1] :] == 0) for a in (z, m_q, logs_q))
    g_grad = jax.grad(lambda g: jnp.sum(enc.apply(variables, spec, mask, g, rngs={"sample": jax.random.key(0)})[0]))(g)
    assert np.all(np.asarray(g_grad) == 0)  # the speaker vector is detached, as upstream


def test_reference_encoder_ignores_padded_frames(tiny_config):
    enc = MelStyleEncoder(tiny_config.sovits.ref_hidden, tiny_config.sovits.gin_channels)
    rng = np.random.default_rng(5)
    mask = sequence_mask(jnp.asarray(LENS), T)
    spec = np.abs(rng.normal(size=(B, T, 704))).astype(np.float32) * np.asarray(mask)[..., None]
    variables = _module_params(enc, spec, mask)
    apply = jax.jit(lambda s: enc.apply(variables, s * mask[..., None], mask))
    spec2 = spec.copy()
    spec2[1, LENS[1] :] = 3.0
    ge = apply(spec)
    assert ge.shape == (B, tiny_config.sovits.gin_channels)
    np.testing.assert_allclose(apply(spec2), ge, atol=1e-5)


# --------------------------------------------------------------------------- gradients


def test_every_trainable_parameter_gets_a_gradient(tiny_config):
    """Generator loss (KL + audio L1 + LSGAN + feature matching + commitment) and discriminator loss.

    Run with the upstream v2 setting ``freeze_quantizer=True``: ``ssl_proj`` then has an exactly
    zero gradient (the frozen quantizer is a plain lookup with ``stop_gradient`` on its input), as
    upstream's eval-mode quantizer leaves it. Every other generator parameter and every
    discriminator parameter must get a non-zero gradient. ``random_params`` makes the flow's
    ``post`` non-zero; with upstream's zero init, the flow's ``pre``/``enc`` gradients vanish at
    step 0 by construction.
    """
    cfg = dataclasses.replace(tiny_config, sovits=dataclasses.replace(tiny_config.sovits, freeze_quantizer=True))
    model, disc = build_synthesizer(cfg), MultiPeriodDiscriminator(cfg.discriminator)
    inputs = _inputs(cfg, seed=1)
    seg = cfg.sovits.segment_frames * 640
    wav = jnp.asarray(np.random.default_rng(6).uniform(-0.5, 0.5, (B, T * 640)), jnp.float32)
    abstract = _abstract_variables(model, inputs)
    params_g = random_params(abstract["params"], 1)
    params_d = random_params(jax.eval_shape(lambda: disc.init(jax.random.key(0), wav[:, :seg]))["params"], 2)
    books = jax.tree_util.tree_map(jnp.zeros_like, abstract[COLLECTION])

    def generator_loss(params_g, params_d, key):
        out, _ = model.apply(
            {"params": params_g, COLLECTION: books},
            *inputs,
            train=True,
            update_codebook=True,
            rngs={"dropout": key, "sample": key},
            mutable=[COLLECTION],
        )
        real = slice_segments(wav, out.ids_slice * 640, seg)
        logits_fake, fmaps_fake = disc.apply({"params": params_d}, out.audio)
        _, fmaps_real = disc.apply({"params": params_d}, real)
        loss = (
            losses.kl_loss(out.z_p, out.logs_q, out.m_p, out.logs_p, out.mask)
            + jnp.mean(jnp.abs(out.audio - real))
            + losses.generator_adversarial_loss(logits_fake)
            + losses.feature_matching_loss(fmaps_real, fmaps_fake)
            + out.commit_loss
        )
        return loss, (out.audio, real, out.commit_loss)

    def discriminator_loss(params_d, fake, real):
        logits_fake, _ = disc.apply({"params": params_d}, fake)
        logits_real, _ = disc.apply({"params": params_d}, real)
        return losses.discriminator_loss(logits_real, logits_fake)[0]

    @jax.jit
    def grads(params_g, params_d, key):
        (_, (fake, real, commit)), grad_g = jax.value_and_grad(generator_loss, has_aux=True)(params_g, params_d, key)
        grad_d = jax.grad(discriminator_loss)(params_d, jax.lax.stop_gradient(fake), real)
        return grad_g, grad_d, commit

    grad_g, grad_d, commit = grads(params_g, params_d, jax.random.key(5))

    def zero_paths(tree):
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        return sorted("/".join(p.key for p in path) for path, g in leaves if not np.any(np.asarray(g) != 0)), len(leaves)

    zero_g, n_g = zero_paths(grad_g)
    zero_d, n_d = zero_paths(grad_d)
    assert zero_g == ["ssl_proj/bias", "ssl_proj/kernel"], zero_g
    assert zero_d == [], zero_d
    d = cfg.discriminator
    n_convs = len(d.scale_channels) + 1 + len(d.periods) * (len(d.period_channels) + 1)
    assert n_g > 250 and n_d == 3 * n_convs  # weight_v, weight_g, bias per convolution
    assert float(commit) == 0.0
