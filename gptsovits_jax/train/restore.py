"""What each use reads from a stage's checkpoint.

* Resuming training reads the whole train state (:meth:`Checkpointer.restore <gptsovits_jax.train.checkpoint.Checkpointer.restore>`
  in the loop).
* Inference, semantic extraction, export and ``--init-from`` need the parameters and, for SoVITS,
  the quantizer's codebook: :func:`restore_variables` reads those fields and nothing else, so the
  optimizer moments (twice the parameters with Adam) cost neither memory nor reading time.
* :func:`restore_train_state` builds and restores the whole state from the checkpoint's own config,
  for tools and tests that look at the optimizer state.

This module knows both stages' state fields and initialisers; :mod:`gptsovits_jax.train.checkpoint`
stays generic (orbax, the stored config, shape mismatches).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax

from gptsovits_jax.config import Config, config_from_dict
from gptsovits_jax.train import gpt_step, sovits_step
from gptsovits_jax.train.checkpoint import (
    FIELDS_KEY,
    CheckpointMismatchError,
    listed_mismatches,
    read_checkpoint_config,
    read_checkpoint_meta,
    restore_state,
    restore_state_fields,
    shape_mismatches,
)

STAGE_FIELDS = {"gpt": ("params",), "sovits": ("params_g", "quantizer", "params_d")}
"""The train-state fields a stage starts from: parameters and the codebook, never optimizer moments."""

INFERENCE_FIELDS = {"gpt": ("params",), "sovits": ("params_g", "quantizer")}
"""What synthesis, semantic extraction and export read: the discriminator is for training only."""


def abstract_variables(stage: str, config: Config) -> dict[str, Any]:
    """Shapes of ``stage``'s :data:`STAGE_FIELDS` for ``config`` (``jax.eval_shape``: nothing is initialised)."""
    key = jax.random.PRNGKey(0)
    if stage == "gpt":
        return {"params": jax.eval_shape(lambda k: gpt_step.init_gpt_params(config, k), key)}
    params_g, quantizer, params_d = jax.eval_shape(lambda k: sovits_step.init_sovits_variables(config, k), key)
    return {"params_g": params_g, "quantizer": quantizer, "params_d": params_d}


@dataclasses.dataclass(frozen=True)
class StageVariables:
    """Some fields of a stage's checkpoint.

    Attributes:
      variables: field name -> its tree (e.g. ``{"params_g": ..., "quantizer": ...}``).
      config: the config stored with the checkpoint.
      step: the checkpoint's step.
      data_state: the input iterator's position saved with it.
    """

    variables: dict[str, Any]
    config: Config
    step: int
    data_state: dict[str, Any]


def restore_variables(
    path: str | Path,
    stage: str,
    fields: tuple[str, ...] | None = None,
    *,
    config: Config | None = None,
    device: jax.Device | None = None,
) -> StageVariables:
    """``fields`` (default :data:`STAGE_FIELDS`) of a ``stage`` checkpoint; nothing else is read.

    Args:
      path: a run directory (newest checkpoint), its ``checkpoints`` or ``best`` folder, or one step's folder.
      stage: ``"gpt"`` or ``"sovits"``; a checkpoint of the other stage is refused.
      fields: some of ``STAGE_FIELDS[stage]``.
      config: the arrays must have this config's shapes (``--init-from`` into another run); default
        the checkpoint's own config, which catches a checkpoint written by other model code.
      device: restore onto this device (``jax.Array`` s); None gives numpy arrays on the host.

    Raises:
      FileNotFoundError: there is no checkpoint at ``path``.
      CheckpointMismatchError: a checkpoint of the other stage, or arrays of other shapes (all listed).
    """
    fields = STAGE_FIELDS[stage] if fields is None else fields
    saved_config, saved_stage, step = read_checkpoint_config(path)
    if saved_stage != stage:
        raise CheckpointMismatchError(f"{path} holds a {saved_stage!r} checkpoint, expected {stage!r}")
    variables, data_state, _, _, step = restore_state_fields(path, fields, device)
    target = config or saved_config
    expected = {name: tree for name, tree in abstract_variables(stage, target).items() if name in fields}
    mismatches = shape_mismatches(variables, expected)
    if mismatches:
        raise CheckpointMismatchError(f"{path} (step {step}) does not fit config {target.name!r}: {listed_mismatches(mismatches)}")
    # A fields checkpoint may hold float16 (imported) values: they are used as the model's dtypes.
    variables = jax.tree.map(lambda x, want: x if x.dtype == want.dtype else x.astype(want.dtype), variables, expected)
    return StageVariables(variables, saved_config, step, data_state)


def initial_state(stage: str, config: Config, variables: dict[str, Any]) -> tuple[Any, Any]:
    """``(train state, setup)`` of ``stage`` starting from ``variables`` (its :data:`STAGE_FIELDS`), with a fresh optimizer state at step 0."""
    if stage == "gpt":
        return gpt_step.create_gpt_state(config, params=variables["params"])
    return sovits_step.create_sovits_state(config, variables=tuple(variables[name] for name in STAGE_FIELDS[stage]))


def restore_train_state(path: str | Path, stage: str) -> tuple[Any, Any, Config]:
    """The whole train state (optimizer state included) onto this process's first device: ``(state, setup, config)``.

    ``path`` as for :func:`restore_variables`; a fields checkpoint (``import-upstream``'s) gets a fresh
    optimizer state at step 0 around its parameters. The config comes from the checkpoint itself; the
    checkpoint may come from any number of devices and processes. Inference and export need only
    :func:`restore_variables`.
    """
    meta, _ = read_checkpoint_meta(path)
    config, saved_stage = config_from_dict(meta["config"]), meta["stage"]
    if saved_stage != stage:
        raise CheckpointMismatchError(f"{path} holds a {saved_stage!r} checkpoint, expected {stage!r}")
    if FIELDS_KEY in meta:  # parameters only (import-upstream): a fresh optimizer state around them
        state, setup = initial_state(stage, config, restore_variables(path, stage, device=jax.local_devices()[0]).variables)
        return state, setup, config
    create = sovits_step.create_sovits_state if stage == "sovits" else gpt_step.create_gpt_state
    built = {}

    def abstract_state():
        state, built["setup"] = create(config)
        return state

    # Shapes only: no parameter is initialised or compiled just to be overwritten. Without a
    # sharding, orbax would restore onto the devices that saved, which may not exist here.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    fresh = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), jax.eval_shape(abstract_state))
    return restore_state(path, fresh), built["setup"], config
