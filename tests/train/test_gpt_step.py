"""The GPT train step: metrics, learning rates per group, staged unfreezing, NaN skipping, learning."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptsovits_jax.config import load_config
from gptsovits_jax.optim import param_path
from gptsovits_jax.schedules import warmup_cosine
from gptsovits_jax.train.gpt_step import create_gpt_state, gpt_eval_step, jit_gpt_train_step
from gptsovits_jax.train.loop import split_keys
from gptsovits_jax.train.synthetic import synthetic_gpt_batch
from tests.conftest import assert_loss_and_grads_close

UNFREEZE = 4


@pytest.fixture(scope="module")
def config(repo_root):
    """Tiny GPT whose bottom layer unfreezes at update ``UNFREEZE``."""
    config = load_config(repo_root / "configs/tiny.yaml", ["gpt_train.batch_size=4", "gpt_train.steps=200"])
    optim = config.gpt_train.optim
    groups = (dataclasses.replace(optim.groups[0], unfreeze_step=UNFREEZE), *optim.groups[1:])
    return dataclasses.replace(config, gpt_train=dataclasses.replace(config.gpt_train, optim=dataclasses.replace(optim, groups=groups)))


@pytest.fixture(scope="module")
def step(config):
    """The compiled step, shared by the tests (each test makes its own state: the step donates it)."""
    _, setup = create_gpt_state(config)
    return jit_gpt_train_step(setup)


@pytest.fixture(scope="module")
def batch(config):
    arrays, _ = split_keys(synthetic_gpt_batch(config, 4, 24, 40, seed=3))
    return arrays


def bottom(params):
    return {param_path(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(params) if param_path(p).startswith("h/layers_0/")}


def test_staged_unfreezing_and_learning_rates_per_group(config, step, batch):
    state, _ = create_gpt_state(config)
    base = warmup_cosine(1e-3, 20, 200, init_lr=1e-5, end_lr=1e-5)
    history = [bottom(state.params)]
    lrs = []
    for s in range(UNFREEZE + 2):
        state, metrics = step(state, batch, jax.random.fold_in(state.rng, s))
        history.append(bottom(state.params))
        lrs.append((float(metrics["lr/gpt"]), float(metrics["lr/gpt_frozen_bottom"])))
        assert int(metrics["optimizer_updates"]) == s + 1
        assert float(metrics["lr/gpt"]) == pytest.approx(float(base(s)), rel=1e-6)
    for s in range(UNFREEZE):
        assert all(np.array_equal(history[s][k], history[s + 1][k]) for k in history[s]), f"layer 0 moved at update {s}"
        assert lrs[s][1] == 0.0
    for s in range(UNFREEZE, UNFREEZE + 2):
        assert all(not np.array_equal(history[s][k], history[s + 1][k]) for k in history[s]), f"layer 0 frozen at update {s}"
        assert lrs[s][1] > 0.0


def test_nan_batch_is_skipped_and_counted(config, step, batch):
    state, _ = create_gpt_state(config)
    good = dict(batch)
    good["bert"] = jnp.zeros((*batch["phoneme_ids"].shape, config.gpt.bert_dim))
    state, _ = step(state, good, jax.random.fold_in(state.rng, 0))
    before = jax.tree.map(np.asarray, state.params)
    bad = dict(batch)
    bad["bert"] = jnp.full((*batch["phoneme_ids"].shape, config.gpt.bert_dim), jnp.nan)
    state, metrics = step(state, bad, jax.random.fold_in(state.rng, 1))
    assert not np.isfinite(float(metrics["loss/ce"]))
    assert int(metrics["skipped/gpt"]) == 1
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, state.params))
    state, metrics = step(state, good, jax.random.fold_in(state.rng, 2))
    assert np.isfinite(float(metrics["loss/ce"])) and int(metrics["skipped/gpt"]) == 1
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)))


def test_cross_entropy_falls_on_a_fixed_batch(config, batch):
    state, setup = create_gpt_state(config, seed=7)
    step = jit_gpt_train_step(setup)
    evaluate = jax.jit(lambda s, b: gpt_eval_step(setup, s, b))
    first = float(evaluate(state, batch)["val/ce"])
    for s in range(60):
        state, metrics = step(state, batch, jax.random.fold_in(state.rng, s))
    last = evaluate(state, batch)
    print(
        f"GPT tiny, fixed synthetic batch: mean CE {first:.3f} -> {float(last['val/ce']):.3f} after 60 steps, top-3 {float(last['val/top3']):.2f}"
    )
    assert float(last["val/ce"]) < 0.6 * first
    assert float(metrics["loss/ce"]) > 0


def test_bfloat16_compute_keeps_float32_parameters_and_optimizer_state(config, batch):
    results = {}
    for precision in ("float32", "bfloat16"):
        cfg = dataclasses.replace(config, gpt_train=dataclasses.replace(config.gpt_train, precision=precision))
        state, setup = create_gpt_state(cfg, seed=11)
        step = jit_gpt_train_step(setup)
        for s in range(3):
            state, metrics = step(state, batch, jax.random.fold_in(state.rng, s))
        assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
        assert {x.dtype for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
        results[precision] = float(metrics["loss/ce"])
    assert results["bfloat16"] == pytest.approx(results["float32"], rel=0.05)


def test_scanned_and_rematerialised_layer_stacks_match_the_layer_loop(config, batch):
    """Same parameters (per-layer names), same loss and gradients, whichever way the step runs the stack."""
    from gptsovits_jax.train.gpt_step import _forward, make_gpt_setup

    state, _ = create_gpt_state(config)
    device_batch = {k: jnp.asarray(v) for k, v in batch.items()}

    def loss_and_grads(scan, remat, rng):
        variant = dataclasses.replace(config, gpt_train=dataclasses.replace(config.gpt_train, scan_layers=scan, remat=remat))
        setup = make_gpt_setup(variant, state.params)
        fn = jax.jit(jax.value_and_grad(lambda p: _forward(setup, p, device_batch, rng)[0]))
        return fn(state.params)

    loop = loss_and_grads(False, "none", None)
    assert "h/layers_1/linear1/kernel" in {param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(loop[1])}
    for remat in ("none", "dots", "full"):
        assert_loss_and_grads_close(loss_and_grads(True, remat, None), loop, leaf_atol=1e-7)
    # With dropout the scanned stack draws one key per layer; remat recomputes the same masks.
    rng = jax.random.PRNGKey(5)
    scanned = loss_and_grads(True, "none", rng)
    assert float(scanned[0]) != pytest.approx(float(loop[0]), rel=1e-4)  # dropout is on
    for remat in ("dots", "full"):
        assert_loss_and_grads_close(loss_and_grads(True, remat, rng), scanned, leaf_atol=1e-7)
