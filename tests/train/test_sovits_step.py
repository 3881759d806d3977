"""The SoVITS GAN step: upstream's order, metrics, gradients, freezing, NaN skipping, learning."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptsovits_jax import losses
from gptsovits_jax.config import GroupConfig, load_config
from gptsovits_jax.optim import param_path
from gptsovits_jax.train.loop import split_keys
from gptsovits_jax.train.sovits_step import (
    create_sovits_state,
    init_sovits_variables,
    jit_sovits_train_step,
    sovits_gradients,
    sovits_synthesizer,
)
from gptsovits_jax.train.synthetic import synthetic_sovits_batch
from tests.conftest import SMALL_SOVITS, assert_loss_and_grads_close, random_params

FRAMES = 24


@pytest.fixture(scope="module")
def batch(small_sovits_config):
    arrays, _ = split_keys(synthetic_sovits_batch(small_sovits_config, 2, FRAMES, 12, seed=0))
    return arrays


@pytest.fixture(scope="module")
def step(small_sovits_config):
    _, setup = create_sovits_state(small_sovits_config)
    return setup, jit_sovits_train_step(setup)


@pytest.fixture(scope="module")
def gradients(step):
    """``sovits_gradients`` compiled once for the module."""
    setup, _ = step
    return jax.jit(lambda s, b, r: sovits_gradients(setup, s, b, r))


@pytest.fixture(scope="module")
def frozen_config(small_sovits_config):
    """Upstream v2's default freezing (``freeze_quantizer``, ``ssl_proj`` in the frozen group), at a learning rate that shows learning in 80 steps."""
    train = small_sovits_config.sovits_train
    optim_g = train.optim_g
    groups = (GroupConfig(name="frozen", pattern="^(ssl_proj|quantizer)/", frozen=True), *optim_g.groups[1:])
    schedule = dataclasses.replace(optim_g.schedule, peak_lr=1e-3, warmup_steps=5)
    return dataclasses.replace(
        small_sovits_config,
        sovits=dataclasses.replace(small_sovits_config.sovits, freeze_quantizer=True),
        sovits_train=dataclasses.replace(train, optim_g=dataclasses.replace(optim_g, groups=groups, schedule=schedule)),
    )


@pytest.fixture(scope="module")
def frozen_step(frozen_config):
    _, setup = create_sovits_state(frozen_config)
    return jit_sovits_train_step(setup)


def leaves_by_path(tree):
    return {param_path(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_metrics_have_upstream_names_and_every_group_learning_rate(small_sovits_config, step, batch):
    _, train_step = step
    state, _ = create_sovits_state(small_sovits_config)
    state, metrics = train_step(state, batch, jax.random.PRNGKey(0))
    expected = {
        "loss/g/total",
        "loss/g/mel",
        "loss/g/kl",
        "loss/g/fm",
        "loss/g/gen",
        "loss/g/commit",
        "loss/d/total",
        "grad_norm/g",
        "grad_norm/d",
        "skipped/g",
        "skipped/d",
        "lr/frozen",
        "lr/text_low_lr",
        "lr/generator",
        "lr/discriminator",
    }
    assert set(metrics) == expected
    m = {k: float(v) for k, v in metrics.items()}
    parts = m["loss/g/mel"] + m["loss/g/kl"] + m["loss/g/fm"] + m["loss/g/gen"] + m["loss/g/commit"]
    assert m["loss/g/total"] == pytest.approx(parts, rel=1e-5)
    assert m["lr/text_low_lr"] == pytest.approx(0.4 * m["lr/generator"], rel=1e-6)
    assert m["lr/frozen"] == 0.0
    assert int(state.step) == 1


def test_generator_loss_uses_the_updated_discriminator(small_sovits_config, step, gradients, batch):
    """Upstream's order: D is updated first, then the adversarial and feature-matching terms use the new D."""
    setup, _ = step
    state, _ = create_sovits_state(small_sovits_config)
    rng = jax.random.PRNGKey(3)
    g = gradients(state, batch, rng)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params_d), jax.tree.leaves(g.params_d)))

    # Score the generated audio with the old and the new discriminator.
    k_drop_d = jax.random.split(rng, 3)[2]

    @jax.jit
    def adversarial(params_d):
        logits, _ = setup.disc.apply({"params": params_d}, g.audio_fake, rngs={"dropout": k_drop_d})
        return losses.generator_adversarial_loss(logits)

    assert float(g.terms["gen"]) == pytest.approx(float(adversarial(g.params_d)), rel=1e-4)
    assert float(g.terms["gen"]) != pytest.approx(float(adversarial(state.params_d)), rel=1e-4)


def test_every_trainable_parameter_gets_a_gradient(small_sovits_config, step, gradients, batch):
    state, _ = create_sovits_state(small_sovits_config)
    # Upstream zero-initialises the coupling layers' output convs, which blocks the gradient of
    # everything before them at step 0; one step moves them off zero.
    state, _ = step[1](state, batch, jax.random.PRNGKey(1))
    g = gradients(state, batch, jax.random.PRNGKey(2))
    zero_g = [k for k, v in leaves_by_path(g.grads_g).items() if not np.any(v)]
    zero_d = [k for k, v in leaves_by_path(g.grads_d).items() if not np.any(v)]
    assert zero_g == [] and zero_d == []
    assert all(np.all(np.isfinite(v)) for v in leaves_by_path(g.grads_g).values())


def test_nan_batch_is_skipped_counted_and_changes_nothing(small_sovits_config, step, batch):
    _, train_step = step
    state, _ = create_sovits_state(small_sovits_config)
    state, _ = train_step(state, batch, jax.random.PRNGKey(0))
    before = jax.tree.map(np.asarray, (state.params_g, state.params_d, state.quantizer))
    bad = dict(batch)
    bad["spec"] = np.where(np.arange(FRAMES)[None, :, None] == 3, np.nan, batch["spec"]).astype(np.float32)
    state, metrics = train_step(state, bad, jax.random.PRNGKey(1))
    assert not np.isfinite(float(metrics["loss/g/total"]))
    assert (int(metrics["skipped/g"]), int(metrics["skipped/d"])) == (1, 1)
    after = jax.tree.map(np.asarray, (state.params_g, state.params_d, state.quantizer))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    state, metrics = train_step(state, batch, jax.random.PRNGKey(2))
    assert np.isfinite(float(metrics["loss/g/total"])) and int(metrics["skipped/g"]) == 1
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(before[0]), jax.tree.leaves(state.params_g)))


def test_frozen_quantizer_and_ssl_proj_stay_bit_identical(frozen_config, frozen_step, batch):
    state, _ = create_sovits_state(frozen_config)
    frozen_before = leaves_by_path(state.params_g["ssl_proj"])
    others_before = leaves_by_path(state.params_g["enc_p"])
    # A fresh codebook is k-means initialised once (as upstream, even when frozen); after that it is fixed.
    state, _ = frozen_step(state, batch, jax.random.PRNGKey(0))
    inited = [v for k, v in leaves_by_path(state.quantizer).items() if k.endswith("inited")]
    assert inited and all(bool(v) for v in inited)
    codebook_before = jax.tree.map(np.asarray, state.quantizer)
    for s in range(1, 4):
        state, metrics = frozen_step(state, batch, jax.random.PRNGKey(s))
    assert float(metrics["loss/g/commit"]) == 0.0
    for k, v in leaves_by_path(state.params_g["ssl_proj"]).items():
        np.testing.assert_array_equal(v, frozen_before[k])
    jax.tree.map(np.testing.assert_array_equal, codebook_before, jax.tree.map(np.asarray, state.quantizer))
    changed = [k for k, v in leaves_by_path(state.params_g["enc_p"]).items() if not np.array_equal(v, others_before[k])]
    assert len(changed) > 0.9 * len(others_before)


def test_mel_loss_falls_on_a_fixed_batch(frozen_config, frozen_step, batch):
    state, _ = create_sovits_state(frozen_config, seed=5)
    mel = []
    for s in range(80):
        state, metrics = frozen_step(state, batch, jax.random.fold_in(state.rng, s))
        mel.append(float(metrics["loss/g/mel"]))
    first, last = np.mean(mel[:10]), np.mean(mel[-10:])
    print(f"SoVITS small, fixed synthetic batch: mel loss (x45) {first:.1f} -> {last:.1f}, mean of the first and last 10 of 80 steps")
    assert last < 0.93 * first


def test_tensorboard_sample_is_the_first_utterance_resynthesised_whole(small_sovits_config, step, batch):
    """The loop's audio sample: row 0 of ``resynthesize`` on the eval batch, cut to its valid samples."""
    from gptsovits_jax.train.sovits_step import resynthesize
    from gptsovits_jax.train.stages import sovits_sample_audio

    setup, _ = step
    state, _ = create_sovits_state(small_sovits_config)
    wave, sample_rate = sovits_sample_audio(setup, batch)(state)
    hop = small_sovits_config.audio.hop_length
    assert sample_rate == small_sovits_config.audio.sample_rate
    assert wave.shape == (int(batch["spec_lens"][0]) * hop,)
    assert np.all(np.isfinite(wave)) and np.std(wave) > 0
    both = np.asarray(jax.jit(lambda p, q, b: resynthesize(setup.synth, p, q, b))(state.params_g, state.quantizer, batch))
    assert both.shape == (2, FRAMES * hop)
    np.testing.assert_allclose(wave, both[0, : len(wave)], rtol=1e-4, atol=1e-5)


def test_scanned_and_rematerialised_layer_stacks_match_the_layer_loop(repo_root, batch):
    """Same parameters (per-layer names), same outputs and gradients whichever way the synthesizer's stacks run.

    Stacks of 2 to 4 layers: the text encoder's three transformers, the posterior and flow WaveNets.
    The loss sees the prior (``m_p``, ``logs_p``), the posterior's ``logs_q`` and the flowed ``z_p``,
    which reach every parameter outside the HiFi-GAN decoder (never scanned, so it drops out of the
    compiled program). Random parameters (no initialiser to compile) give the flow's zero-initialised
    ``post`` weights, so the flow's WaveNet gets gradients too; at half ``random_params``' scale the
    activations stay small enough that the loop and the scan differ by rounding only (1e-7 in norm).
    """
    # No dropout in the stacks: the scan draws other masks than the loop. The reference encoder keeps its masks (not scanned).
    stacks = ["sovits.n_layers=4", "sovits.posterior_layers=3", "sovits.flow_layers=3", "sovits.dropout=0.0"]
    base = load_config(repo_root / "configs/tiny.yaml", [*SMALL_SOVITS, *stacks])
    abstract_g, abstract_q, _ = jax.eval_shape(lambda k: init_sovits_variables(base, k), jax.random.PRNGKey(0))
    params = jax.tree.map(lambda x: 0.5 * x, random_params(abstract_g, 0))
    codebook = random_params(abstract_q, 1)  # an initialised codebook: ``inited`` true, random entries
    quantizer = jax.tree_util.tree_map_with_path(lambda p, x: jnp.ones_like(x) if p[-1].key == "inited" else x, codebook)
    device_batch = {k: jnp.asarray(v) for k, v in batch.items()}
    k_drop, k_sample = jax.random.split(jax.random.PRNGKey(5))

    def loss_and_grads(scan, remat):
        synth = sovits_synthesizer(
            dataclasses.replace(base, sovits_train=dataclasses.replace(base.sovits_train, scan_layers=scan, remat=remat))
        )

        def loss(p):
            inputs = (device_batch[k] for k in ("ssl", "spec", "spec_lens", "text", "text_lens"))
            out = synth.apply({"params": p, "quantizer": quantizer}, *inputs, train=True, rngs={"dropout": k_drop, "sample": k_sample})
            return sum(jnp.sum(jnp.sin(x)) for x in (out.z_p, out.logs_q, out.m_p, out.logs_p))

        return jax.jit(jax.value_and_grad(loss))(params)

    # The other remat policies and dropout under the scan are checked stack by stack in tests/models/test_layers.py.
    loop = loss_and_grads(False, "none")
    norms = {param_path(p): float(jnp.linalg.norm(g)) for p, g in jax.tree_util.tree_leaves_with_path(loop[1])}
    assert {
        "enc_p/encoder_ssl/attn_layers_1/conv_q/kernel",
        "enc_p/encoder_text/attn_layers_3/conv_q/kernel",
        "enc_p/encoder2/ffn_layers_1/conv_2/kernel",
        "enc_q/enc/in_layers_2/weight_v",
        "flow/flows_0/enc/res_skip_layers_2/bias",
    } <= norms.keys()
    assert not [name for name, norm in norms.items() if norm == 0 and not name.startswith("dec/")]
    assert_loss_and_grads_close(loss_and_grads(True, "full"), loop, leaf_atol=1e-6)
