"""Stage 1: the GPT train and eval steps.

Batches (right-padded):

- ``phoneme_ids`` ``[B, Tx]`` int32, ``phoneme_lens`` ``[B]``;
- ``bert`` ``[B, Tx, bert_dim]`` (optional; zeros when absent, as upstream for non-Chinese text);
- ``semantic_ids`` ``[B, Ty]`` int32 tokens at 25 Hz, ``semantic_lens`` ``[B]``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from gptsovits_jax.config import Config, optimizer_steps
from gptsovits_jax.models.gpt import Text2SemanticDecoder, gpt_loss
from gptsovits_jax.optim import Optimizer, build_optimizer, skipped_updates, update_count
from gptsovits_jax.train.common import COMPUTE_DTYPES, init_key, jit_step, lr_metrics


@flax.struct.dataclass
class GPTTrainState:
    """Everything that changes during stage-1 training (a pytree; checkpointed whole).

    Step ``s`` draws its dropout from ``fold_in(rng, s)``.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    validation_loss: jax.Array
    validation_round: jax.Array


@dataclasses.dataclass(frozen=True)
class GPTSetup:
    """The static parts of stage 1: the module, its optimizer and the config."""

    model: Text2SemanticDecoder
    opt: Optimizer
    config: Config


def example_gpt_batch(config: Config, batch_size: int, text_len: int, semantic_len: int) -> dict[str, jax.Array]:
    """A batch of the right shapes (zeros, all positions valid)."""
    return {
        "phoneme_ids": jnp.zeros((batch_size, text_len), jnp.int32),
        "phoneme_lens": jnp.full((batch_size,), text_len, jnp.int32),
        "semantic_ids": jnp.zeros((batch_size, semantic_len), jnp.int32),
        "semantic_lens": jnp.full((batch_size,), semantic_len, jnp.int32),
    }


def init_gpt_params(config: Config, rng: jax.Array) -> Any:
    """Fresh GPT parameters for ``config``."""
    model = Text2SemanticDecoder(config.gpt)
    b = example_gpt_batch(config, 1, 4, 4)
    return model.init(rng, b["phoneme_ids"], b["phoneme_lens"], None, b["semantic_ids"], b["semantic_lens"], deterministic=True)["params"]


def gpt_model(config: Config) -> Text2SemanticDecoder:
    """The module as training runs it (compute dtype of ``gpt_train.precision``, layer scan, remat)."""
    train = config.gpt_train
    return Text2SemanticDecoder(config.gpt, dtype=COMPUTE_DTYPES[train.precision], scan_layers=train.scan_layers, remat=train.remat)


def make_gpt_setup(config: Config, params: Any) -> GPTSetup:
    """Module and optimizer for ``config`` (params may be abstract)."""
    model = gpt_model(config)
    opt = build_optimizer(config.gpt_train.optim, params, total_steps=optimizer_steps(config.gpt_train.steps, config.gpt_train.optim))
    return GPTSetup(model=model, opt=opt, config=config)


def create_gpt_state(config: Config, seed: int | None = None, params: Any = None) -> tuple[GPTTrainState, GPTSetup]:
    """A fresh train state (or one starting from ``params``) and its setup."""
    seed = config.gpt_train.seed if seed is None else seed
    if params is None:
        params = jax.jit(init_gpt_params, static_argnums=0)(config, init_key(seed))
    run_key = jax.random.PRNGKey(seed)
    setup = make_gpt_setup(config, params)
    state = GPTTrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=setup.opt.tx.init(params),
        rng=run_key,
        validation_loss=jnp.full((), jnp.inf, jnp.float32),
        validation_round=jnp.zeros((), jnp.int32),
    )
    return state, setup


def _forward(setup: GPTSetup, params: Any, batch: dict[str, jax.Array], rng: jax.Array | None):
    outputs = setup.model.apply(
        {"params": params},
        batch["phoneme_ids"],
        batch["phoneme_lens"],
        batch.get("bert"),
        batch["semantic_ids"],
        batch["semantic_lens"],
        deterministic=rng is None,
        rngs=None if rng is None else {"dropout": rng},
    )
    return gpt_loss(outputs, setup.config.gpt.loss_reduction)


def gpt_train_step(
    setup: GPTSetup, state: GPTTrainState, batch: dict[str, jax.Array], rng: jax.Array
) -> tuple[GPTTrainState, dict[str, jax.Array]]:
    """One optimizer step (or accumulation micro-step). Pure: ``(state, batch, rng) -> (state, metrics)``."""
    (loss, metrics), grads = jax.value_and_grad(lambda p: _forward(setup, p, batch, rng), has_aux=True)(state.params)
    updates, opt_state = setup.opt.tx.update(
        grads, state.opt_state, state.params, validation_loss=state.validation_loss, validation_round=state.validation_round
    )
    params = optax.apply_updates(state.params, updates)
    metrics = {
        **metrics,
        "grad_norm/gpt": setup.opt.global_norm(grads),
        "skipped/gpt": skipped_updates(opt_state),
        "optimizer_updates": update_count(opt_state),
        **lr_metrics(setup.opt, opt_state),
    }
    del loss
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def gpt_eval_step(setup: GPTSetup, state: GPTTrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Validation cross-entropy per real target (whatever the training reduction) and top-3 accuracy.

    Rows where the optional ``valid [B]`` is false (filler rows of the last eval batch) do not count.
    """
    outputs = setup.model.apply(
        {"params": state.params},
        batch["phoneme_ids"],
        batch["phoneme_lens"],
        batch.get("bert"),
        batch["semantic_ids"],
        batch["semantic_lens"],
        deterministic=True,
    )
    rows = batch["valid"].astype(jnp.float32) if "valid" in batch else jnp.ones(batch["phoneme_lens"].shape, jnp.float32)
    outputs = outputs._replace(target_mask=outputs.target_mask * rows[:, None])
    loss, metrics = gpt_loss(outputs, "mean")
    return {"val/ce": loss, "val/top3": metrics["acc/top3"], "val/rows": jnp.sum(rows)}


def jit_gpt_train_step(setup: GPTSetup, state_sharding: Any = None, batch_sharding: Any = None, *, rng_from_state: bool = False):
    """``gpt_train_step`` compiled for ``setup`` with the state donated (:func:`~gptsovits_jax.train.common.jit_step`)."""
    return jit_step(functools.partial(gpt_train_step, setup), state_sharding, batch_sharding, rng_from_state=rng_from_state)
