"""Pieces both train steps share: compute dtypes, the initialisation key and program, finiteness and learning-rate metrics."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gptsovits_jax.optim import Optimizer, plateau_scale, update_count

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def init_key(seed: int) -> jax.Array:
    """The key parameters are initialised from: threefry, whose draws do not depend on the sharding.

    With ``jax_threefry_partitionable`` (JAX's default) each device draws exactly its own part of
    an array, so an initialisation compiled with sharded outputs (:func:`jit_init`) gives bitwise
    the values of one device, on any mesh and any number of processes. XLA's RngBitGenerator
    (``unsafe_rbg``) compiles faster but draws differently once partitioned: a two-process run
    started from other values than one process.
    """
    return jax.random.key(seed, impl="threefry2x32")


def jit_init(fn, sharding: Any = None, static_argnums: int | tuple[int, ...] = ()):
    """``fn`` compiled as an initialisation whose outputs are created with ``sharding``.

    ``sharding``: one ``jax.sharding.Sharding`` for every output array or a tree of them matching
    the outputs (None: the default device). Every device computes only its own shards of the
    outputs, so a state larger than one device's memory never exists whole on one device, and
    with :func:`init_key` the values do not depend on the sharding.
    """
    if not jax.config.jax_threefry_partitionable:
        raise ValueError(
            "parameter initialisation needs jax_threefry_partitionable=True (JAX's default): without it the values depend on the sharding"
        )
    shardings = {} if sharding is None else {"out_shardings": sharding}
    return jax.jit(fn, static_argnums=static_argnums, **shardings)


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
