"""Pieces both train steps share: compute dtypes, the initialisation key, finiteness and learning-rate metrics."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gptsovits_jax.optim import Optimizer, plateau_scale, update_count

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def init_key(seed: int) -> jax.Array:
    """The key parameters are initialised from.

    XLA's RNG-bit-generator (``unsafe_rbg``) instead of threefry: compiling a
    model's ``init`` takes seconds instead of minutes on CPU. Values are
    deterministic for a backend; the randomness of training steps (dropout, noise,
    slices) keeps threefry, whose numbers do not depend on how arrays are sharded.
    """
    return jax.random.key(seed, impl="unsafe_rbg")


def step_key(state: Any) -> jax.Array:
    """The randomness of the step about to run: ``fold_in(state.rng, state.step)`` (computed on the device)."""
    return jax.random.fold_in(state.rng, state.step)


def jit_step(fn, state_sharding: Any = None, batch_sharding: Any = None, *, rng_from_state: bool = False):
    """``fn(state, batch, rng)`` compiled with the state donated (sharded when shardings are given).

    With ``rng_from_state`` the compiled function is ``(state, batch) -> ...`` and draws
    its key with :func:`step_key` inside the step, so the training loop dispatches one
    computation per step and moves nothing between host and device for it.
    """
    if rng_from_state:
        step_fn = fn

        def fn(state, batch):
            return step_fn(state, batch, step_key(state))

        fn.__name__ = getattr(step_fn, "func", step_fn).__name__  # compile logs and stats name the step
    if state_sharding is None:
        return jax.jit(fn, donate_argnums=0)
    shardings = (state_sharding, batch_sharding) if rng_from_state else (state_sharding, batch_sharding, state_sharding)
    return jax.jit(fn, in_shardings=shardings, out_shardings=(state_sharding, state_sharding), donate_argnums=0)


def tree_is_finite(tree: Any) -> jax.Array:
    """True when every element of every leaf is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def lr_metrics(opt: Optimizer, opt_state: Any) -> dict[str, jax.Array]:
    """``lr/<group>`` of the update just applied (the optimizer's count has already advanced)."""
    step = jnp.maximum(update_count(opt_state) - 1, 0)
    return {f"lr/{k}": v for k, v in opt.learning_rates(step, plateau_scale(opt_state)).items()}
