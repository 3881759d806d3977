"""Parameter groups, freezing, staged unfreezing, weight decay, non-finite skipping, accumulation."""

import dataclasses
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptsovits_jax import optim, schedules
from gptsovits_jax.config import GroupConfig, OptimConfig, PlateauConfig, ScheduleConfig


def toy_params():
    """A GPT-shaped tree: two layers, an embedding and a head."""
    key = jax.random.PRNGKey(0)
    k = jax.random.split(key, 5)
    return {
        "ar_text_embedding": {"embedding": jax.random.normal(k[0], (7, 4))},
        "h": {
            "layers_0": {"linear1": {"kernel": jax.random.normal(k[1], (4, 4)), "bias": jnp.ones(4)}},
            "layers_1": {"linear1": {"kernel": jax.random.normal(k[2], (4, 4)), "bias": jnp.ones(4)}},
        },
        "ar_predict_layer": {"kernel": jax.random.normal(k[3], (4, 3))},
    }


def loss_fn(params, x):
    h = params["ar_text_embedding"]["embedding"][x]
    for name in ("layers_0", "layers_1"):
        layer = params["h"][name]["linear1"]
        h = jnp.tanh(h @ layer["kernel"] + layer["bias"])
    return jnp.mean(jnp.square(h @ params["ar_predict_layer"]["kernel"] - 1.0))


def optim_config(**kwargs):
    base = dict(
        schedule=ScheduleConfig(name="constant", peak_lr=1e-2, total_steps=100),
        groups=(
            GroupConfig(name="frozen", pattern="^ar_text_embedding/", frozen=True),
            GroupConfig(name="gpt_frozen_bottom", pattern="^h/layers_0/", unfreeze_step=3),
            GroupConfig(name="gpt", pattern=""),
        ),
        weight_decay=0.0,
    )
    base.update(kwargs)
    return OptimConfig(**base)


def run(opt, params, steps, x=None):
    x = jnp.array([1, 2, 3]) if x is None else x
    state = opt.tx.init(params)
    update = jax.jit(opt.tx.update)
    history = [params]
    for _ in range(steps):
        grads = jax.grad(loss_fn)(params, x)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
    return history, state


def changed(a, b):
    return jax.tree.map(lambda x, y: bool(jnp.any(x != y)), a, b)


def test_labels_follow_first_matching_pattern():
    opt = optim.build_optimizer(optim_config(), toy_params())
    assert opt.labels["ar_text_embedding"]["embedding"] == "frozen"
    assert opt.labels["h"]["layers_0"]["linear1"]["kernel"] == "gpt_frozen_bottom"
    assert opt.labels["h"]["layers_1"]["linear1"]["bias"] == "gpt"
    assert dict(opt.sizes) == {"frozen": 28, "gpt_frozen_bottom": 20, "gpt": 32}


def test_uncovered_parameters_raise_with_their_paths():
    cfg = optim_config(groups=(GroupConfig(name="bottom", pattern="^h/layers_0/"), GroupConfig(name="head", pattern="^ar_predict")))
    with pytest.raises(optim.UncoveredParametersError) as err:
        optim.build_optimizer(cfg, toy_params())
    assert sorted(err.value.paths) == ["ar_text_embedding/embedding", "h/layers_1/linear1/bias", "h/layers_1/linear1/kernel"]
    assert "h/layers_1/linear1/kernel" in str(err.value)


def test_frozen_group_gets_exactly_zero_updates():
    params = toy_params()
    history, _ = run(optim.build_optimizer(optim_config(), params), params, 6)
    final = history[-1]
    np.testing.assert_array_equal(final["ar_text_embedding"]["embedding"], params["ar_text_embedding"]["embedding"])
    assert changed(params["ar_predict_layer"], final["ar_predict_layer"])["kernel"]


def test_staged_unfreezing_starts_at_its_step_and_not_before():
    params = toy_params()
    opt = optim.build_optimizer(optim_config(), params)
    history, _ = run(opt, params, 6)
    bottom = [h["h"]["layers_0"] for h in history]
    top = [h["h"]["layers_1"] for h in history]
    # Update k (0-based) produces history[k + 1]; the bottom group is unfrozen at update 3.
    for k in range(3):
        assert not any(jax.tree.leaves(changed(bottom[k], bottom[k + 1]))), f"bottom layer moved at update {k}"
        assert all(jax.tree.leaves(changed(top[k], top[k + 1])))
    for k in range(3, 6):
        assert all(jax.tree.leaves(changed(bottom[k], bottom[k + 1]))), f"bottom layer frozen at update {k}"
    lrs = [opt.learning_rates(s)["gpt_frozen_bottom"] for s in range(6)]
    assert [float(x) for x in lrs] == [0.0, 0.0, 0.0, pytest.approx(1e-2), pytest.approx(1e-2), pytest.approx(1e-2)]


def test_learning_rates_per_group_include_multiplier_and_count():
    cfg = optim_config(
        schedule=ScheduleConfig(name="warmup_cosine", peak_lr=1e-3, init_lr=0.0, end_lr=0.0, warmup_steps=4, total_steps=20),
        groups=(
            GroupConfig(name="frozen", pattern="^ar_text_embedding/", frozen=True),
            GroupConfig(name="text_low_lr", pattern="^h/", lr_mult=0.4),
            GroupConfig(name="generator", pattern=""),
        ),
    )
    params = toy_params()
    opt = optim.build_optimizer(cfg, params)
    base = schedules.warmup_cosine(1e-3, 4, 20)
    for step in (0, 2, 4, 11, 20, 30):
        lrs = opt.learning_rates(step)
        assert float(lrs["generator"]) == pytest.approx(float(base(step)), abs=1e-12)
        assert float(lrs["text_low_lr"]) == pytest.approx(0.4 * float(base(step)), rel=1e-6, abs=1e-12)
        assert float(lrs["frozen"]) == 0.0
    _, state = run(opt, params, 5)
    assert int(optim.update_count(state)) == 5
    assert float(opt.current_learning_rates(state)["generator"]) == pytest.approx(float(base(5)))


def test_group_update_equals_adamw_at_group_learning_rate():
    """One group at 0.4x is updated exactly as optax.adamw with 0.4x the learning rate."""
    params = toy_params()
    cfg = optim_config(
        groups=(GroupConfig(name="low", pattern="^h/", lr_mult=0.4), GroupConfig(name="rest", pattern="")),
        weight_decay=0.01,
    )
    opt = optim.build_optimizer(cfg, params)
    history, _ = run(opt, params, 3)
    mask = jax.tree_util.tree_map_with_path(lambda p, _: optim.param_path(p).endswith("kernel"), params["h"])
    ref = optax.adamw(0.4 * 1e-2, b1=0.8, b2=0.99, eps=1e-9, weight_decay=0.01, mask=mask)
    ref_params, state = params["h"], ref.init(params["h"])
    for k in range(3):
        grads = jax.grad(loss_fn)(history[k], jnp.array([1, 2, 3]))["h"]
        updates, state = ref.update(grads, state, ref_params)
        ref_params = optax.apply_updates(ref_params, updates)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ref_params, history[k + 1]["h"])


def test_weight_decay_applies_to_kernels_only():
    params = toy_params()
    cfg = optim_config(groups=(GroupConfig(name="all", pattern=""),), weight_decay=0.1)
    opt = optim.build_optimizer(cfg, params)
    state = opt.tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.tx.update(zero, state, params)
    kernel = params["h"]["layers_0"]["linear1"]["kernel"]
    np.testing.assert_allclose(updates["h"]["layers_0"]["linear1"]["kernel"], -1e-2 * 0.1 * kernel, rtol=1e-6)
    np.testing.assert_array_equal(updates["h"]["layers_0"]["linear1"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["ar_text_embedding"]["embedding"], 0.0)


def test_nan_gradient_is_skipped_and_leaves_state_as_it_was():
    params = toy_params()
    opt = optim.build_optimizer(optim_config(), params)
    _, state = run(opt, params, 2)
    grads = jax.tree.map(jnp.ones_like, params)
    grads["h"]["layers_1"]["linear1"]["bias"] = grads["h"]["layers_1"]["linear1"]["bias"].at[0].set(jnp.nan)
    updates, new_state = jax.jit(opt.tx.update)(grads, state, params)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    assert int(optim.skipped_updates(new_state)) == 1
    assert int(optim.update_count(new_state)) == int(optim.update_count(state)) == 2
    inner_before, inner_after = state.inner_state, new_state.inner_state
    jax.tree.map(np.testing.assert_array_equal, inner_before, inner_after)
    # A finite gradient afterwards updates again and counts on from 2.
    updates, after = jax.jit(opt.tx.update)(jax.tree.map(jnp.ones_like, params), new_state, params)
    assert int(optim.update_count(after)) == 3
    assert any(bool(jnp.any(u != 0)) for u in jax.tree.leaves(updates))


def test_clipping_bounds_the_global_norm_of_trainable_gradients():
    params = toy_params()
    cfg = optim_config(
        groups=(GroupConfig(name="frozen", pattern="^ar_text", frozen=True), GroupConfig(name="all", pattern="")), clip_norm=1.0
    )
    # An identity base transformation exposes the clipped gradient: update = -lr * clip(g).
    opt = optim.build_optimizer(cfg, params, base_transform=optax.identity())
    big = jax.tree.map(lambda x: 100.0 * jnp.ones_like(x), params)
    updates, _ = opt.tx.update(big, opt.tx.init(params), params)
    assert float(optax.tree.norm(updates)) == pytest.approx(1e-2, rel=1e-5)
    assert float(jnp.abs(updates["ar_text_embedding"]["embedding"]).max()) == 0.0
    trainable = [x for path, x in jax.tree_util.tree_leaves_with_path(updates) if "ar_text" not in optim.param_path(path)]
    assert all(float(jnp.std(x)) == 0.0 for x in trainable)  # uniform direction preserved


def test_gradient_accumulation_equals_one_step_on_the_mean_gradient():
    params = toy_params()
    cfg = optim_config(groups=(GroupConfig(name="all", pattern=""),), grad_accum_steps=2)
    acc = optim.build_optimizer(cfg, params)
    one = optim.build_optimizer(dataclasses.replace(cfg, grad_accum_steps=1), params)
    g1 = jax.grad(loss_fn)(params, jnp.array([1, 2]))
    g2 = jax.grad(loss_fn)(params, jnp.array([3, 4]))
    state = acc.tx.init(params)
    u1, state = acc.tx.update(g1, state, params)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(u1))
    assert int(optim.update_count(state)) == 0
    u2, state = acc.tx.update(g2, state, params)
    assert int(optim.update_count(state)) == 1
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    ref, _ = one.tx.update(mean, one.tx.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9), u2, ref)


def test_plateau_scale_is_reported_and_applied():
    params = toy_params()
    cfg = optim_config(
        groups=(GroupConfig(name="all", pattern=""),), plateau=PlateauConfig(factor=0.5, patience=1, rtol=1e-4, min_scale=0.1)
    )
    opt = optim.build_optimizer(cfg, params)
    state = opt.tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = opt.tx.update(grads, state, params, validation_loss=1.0, validation_round=1)
    assert float(optim.plateau_scale(state)) == 1.0
    _, state = opt.tx.update(grads, state, params, validation_loss=2.0, validation_round=2)
    assert float(optim.plateau_scale(state)) == 0.5
    assert float(opt.current_learning_rates(state)["all"]) == pytest.approx(0.5e-2)


def test_lamb_and_scheduled_base_transforms_warn():
    params = toy_params()
    with pytest.warns(optim.ScheduleWarning, match="trust-ratio"):
        optim.build_optimizer(optim_config(name="lamb"), params)
    with pytest.warns(optim.ScheduleWarning, match="double scaling"):
        optim.build_optimizer(optim_config(), params, base_transform=optax.inject_hyperparams(optax.adam)(learning_rate=1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optim.build_optimizer(optim_config(), params, base_transform=optax.scale_by_adam())


def test_public_modules_import_only_jax_optax_and_stdlib():
    code = (
        "import sys\n"
        "import gptsovits_jax.schedules, gptsovits_jax.optim\n"
        "heavy = [m for m in ('flax', 'librosa', 'grain', 'orbax', 'yaml', 'soundfile', 'tensorboardX', 'matplotlib', 'gptsovits_jax.models', 'gptsovits_jax.config')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == ""


def deep_params(n_layers=11):
    """A GPT-shaped tree with ``n_layers`` layers (indices past 9 sort before 2 as strings)."""
    keys = jax.random.split(jax.random.PRNGKey(1), 2 * n_layers + 2)
    layers = {
        f"layers_{i}": {"linear1": {"kernel": jax.random.normal(keys[2 * i], (4, 4)), "bias": jax.random.normal(keys[2 * i + 1], (4,))}}
        for i in range(n_layers)
    }
    return {
        "ar_text_embedding": {"embedding": jax.random.normal(keys[-2], (7, 4))},
        "h": layers,
        "head": {"kernel": jax.random.normal(keys[-1], (4, 3))},
    }


def deep_loss(params, x):
    h = params["ar_text_embedding"]["embedding"][x]
    for i in range(len(params["h"])):
        layer = params["h"][f"layers_{i}"]["linear1"]
        h = jnp.tanh(h @ layer["kernel"] + layer["bias"])
    return jnp.mean(jnp.square(h @ params["head"]["kernel"] - 1.0))


DEEP_GROUPS = (
    GroupConfig(name="frozen", pattern="^ar_text_embedding/", frozen=True),
    GroupConfig(name="bottom", pattern=r"^h/layers_[0-3]/", unfreeze_step=3),
    GroupConfig(name="rest", pattern=""),
)


def test_layer_stacking_groups_repeated_leaves_by_label_in_layer_order():
    params = deep_params()
    opt = optim.build_optimizer(optim_config(groups=DEEP_GROUPS), params)
    stacking = optim.LayerStacking(params, opt.labels)
    assert sorted(stacking.keys) == [
        "ar_text_embedding.embedding",
        "h.layers_0-3.linear1.bias",
        "h.layers_0-3.linear1.kernel",
        "h.layers_4-10.linear1.bias",
        "h.layers_4-10.linear1.kernel",
        "head.kernel",
    ]
    stacked = stacking.stack(params)
    assert stacked["h.layers_4-10.linear1.kernel"].shape == (7, 4, 4)
    np.testing.assert_array_equal(stacked["h.layers_4-10.linear1.kernel"][6], params["h"]["layers_10"]["linear1"]["kernel"])
    assert stacking.stacked_labels["h.layers_0-3.linear1.bias"] == "bottom"
    back = stacking.unstack(stacked)
    jax.tree.map(np.testing.assert_array_equal, back, params)
    # The optimizer state holds one Adam moment per stack, not per layer.
    adam_states = optim._collect(opt.tx.init(params), optax.ScaleByAdamState)
    mu_shapes = sorted(x.shape for state in adam_states for x in jax.tree.leaves(state.mu))
    assert mu_shapes == [(4, 3), (4, 4), (4, 4, 4), (7, 4), (7, 4, 4)]  # bottom and rest stacks, the head


def test_gradient_norm_is_taken_over_the_stacks_and_equals_the_per_leaf_norm():
    params = deep_params()
    grads = jax.grad(deep_loss)(params, jnp.array([1, 2, 3, 5]))
    stacked = optim.build_optimizer(optim_config(groups=DEEP_GROUPS), params)
    per_layer = optim.build_optimizer(optim_config(groups=DEEP_GROUPS, stack_layers=False), params)
    assert set(stacked.stacked(grads)) == set(stacked.stacking.keys)  # the reduction runs on the 6 stacks, not 24 leaves
    assert per_layer.stacked(grads) is grads
    expected = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in jax.tree.leaves(grads)))
    for opt in (stacked, per_layer):
        assert float(opt.global_norm(grads)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("extra", [{}, {"weight_decay": 0.1, "clip_norm": 0.5}, {"grad_accum_steps": 2}])
def test_stacked_optimizer_updates_equal_the_per_layer_ones(extra):
    params = deep_params()
    x = jnp.array([1, 2, 3, 5])
    histories = {}
    for stack in (True, False):
        opt = optim.build_optimizer(optim_config(groups=DEEP_GROUPS, stack_layers=stack, **extra), params)
        state, p, trace = opt.tx.init(params), params, []
        update = jax.jit(opt.tx.update)
        for step in range(6):
            grads = jax.grad(deep_loss)(p, x + step)
            updates, state = update(grads, state, p)
            p = optax.apply_updates(p, updates)
            trace.append(p)
        histories[stack] = trace
    for stacked, per_layer in zip(histories[True], histories[False]):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), stacked, per_layer)
    # Frozen stays exactly frozen; the bottom layers do not move before their unfreeze step.
    np.testing.assert_array_equal(histories[True][-1]["ar_text_embedding"]["embedding"], params["ar_text_embedding"]["embedding"])
    first = 2 if extra.get("grad_accum_steps") else 1
    np.testing.assert_array_equal(
        histories[True][first]["h"]["layers_2"]["linear1"]["kernel"], params["h"]["layers_2"]["linear1"]["kernel"]
    )
    assert not np.array_equal(histories[True][first]["h"]["layers_5"]["linear1"]["kernel"], params["h"]["layers_5"]["linear1"]["kernel"])


def test_lamb_is_not_stacked():
    # LAMB's trust ratio is a norm per leaf: stacking layers would change it.
    params = deep_params(3)
    with pytest.warns(optim.ScheduleWarning, match="trust-ratio"):
        opt = optim.build_optimizer(optim_config(groups=DEEP_GROUPS, name="lamb"), params)
    adam_states = optim._collect(opt.tx.init(params), optax.ScaleByAdamState)
    mu_shapes = sorted(x.shape for state in adam_states for x in jax.tree.leaves(state.mu))
    assert mu_shapes == sorted(x.shape for x in jax.tree.leaves(params) if x.shape != (7, 4))  # the frozen embedding has none
