"""Orbax checkpoints of a train state, the data iterator position and the config.

Layout of a work directory::

    checkpoints/<step>/{state,data,meta}   the last ``keep`` checkpoints (asynchronous saves)
    best/<step>/{state,data,meta}          the checkpoint with the lowest validation loss

``state`` is the whole train-state pytree (parameters, optimizer state, quantizer
codebook, step, base rng); ``data`` the input iterator's position; ``meta`` the
config and the stage, so that a checkpoint from another config is refused with
the list of mismatching shapes instead of a deep orbax error.

A *fields* checkpoint (:func:`save_fields`, what ``import-upstream`` writes) holds
only some top-level fields of the state (parameters and codebook, in the dtype they came in, e.g.
float16), named under ``meta["state_fields"]``; restoring one fills those fields of the target
state (cast to its dtypes) and keeps the rest of the target (a fresh optimizer state, step 0).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gptsovits_jax.config import Config, to_dict
from gptsovits_jax.optim import param_path

log = logging.getLogger(__name__)

ITEMS = ("state", "data", "meta")

FIELDS_KEY = "state_fields"
"""``meta`` key of a fields checkpoint: the top-level state fields it holds (absent in whole-state checkpoints)."""


def _handlers() -> dict[str, Any]:
    """Handlers named up front, so a manager opened on existing checkpoints can read their metadata."""
    return {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the current config (another model size or stage)."""


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def shape_mismatches(saved: Any, target: Any) -> list[str]:
    """Lines ``path: checkpoint <shape> vs config <shape>`` for every differing leaf (and missing ones)."""
    saved_leaves = {param_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(saved) if hasattr(x, "shape")}
    target_leaves = {param_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(target) if hasattr(x, "shape")}
    lines = []
    # Parameters first: they say which model sizes differ; optimizer moments repeat them.
    for path in sorted(set(saved_leaves) | set(target_leaves), key=lambda p: (not p.startswith("params"), p)):
        a, b = saved_leaves.get(path), target_leaves.get(path)
        if a != b:
            lines.append(f"{path}: checkpoint {list(a) if a is not None else 'absent'} vs config {list(b) if b is not None else 'absent'}")
    return lines


def listed_mismatches(mismatches: list[str], limit: int = 40) -> str:
    """``"N array(s) differ:"`` and the first ``limit`` lines of :func:`shape_mismatches`, one per line."""
    listed = "\n  ".join(mismatches[:limit])
    more = f"\n  ... and {len(mismatches) - limit} more" if len(mismatches) > limit else ""
    return f"{len(mismatches)} array(s) differ:\n  {listed}{more}"


def _manager(directory: Path, name: str, keep: int, asynchronous: bool) -> ocp.CheckpointManager:
    """A manager whose cross-process barriers are named after ``name``.

    With several processes, orbax names the barriers of a save after the step only
    (``async_write_complete.<step>``, ``set_value_start``), some of them waited for in
    background threads. Two managers saving the same step (``checkpoints/`` and ``best/``)
    would then wait at one barrier from two threads of a process, which the coordination
    service refuses ("Barrier ... is already ongoing") and the checkpoint is never committed.
    The prefix gives each manager its own barriers.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=asynchronous,
        create=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name),
    )
    return ocp.CheckpointManager(directory, options=options, item_handlers=_handlers())


class Checkpointer:
    """Keeps the last ``keep`` checkpoints and the best one by validation loss.

    Args:
      workdir: run directory (``checkpoints/`` and ``best/`` are created inside).
      config: the run's config, stored with every checkpoint.
      stage: ``"sovits"`` or ``"gpt"``; a checkpoint of the other stage is refused.
      keep: how many recent checkpoints to keep.
      asynchronous: save in a background thread (the loop continues while writing).
    """

    def __init__(self, workdir: str | Path, config: Config, stage: str, keep: int = 3, asynchronous: bool = True):
        self.workdir = Path(workdir).absolute()
        self.config = config
        self.stage = stage
        self._latest = _manager(self.workdir / "checkpoints", "latest", keep, asynchronous)
        self._best = _manager(self.workdir / "best", "best", 1, asynchronous)
        self.best_loss = self._stored_best_loss()

    def _meta(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"stage": self.stage, "config": to_dict(self.config), **(extra or {})}

    def _args(self, state: Any, data_state: dict[str, Any], meta: dict[str, Any]) -> ocp.args.Composite:
        return ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta))

    def save(self, step: int, state: Any, data_state: dict[str, Any], *, force: bool = False) -> None:
        """Save (asynchronously) unless a checkpoint of ``step`` exists already."""
        if step in self._latest.all_steps():
            return
        self._latest.save(step, args=self._args(state, data_state, self._meta()), force=force)

    def save_if_best(self, step: int, state: Any, data_state: dict[str, Any], validation_loss: float) -> bool:
        """Save into ``best/`` when ``validation_loss`` is the lowest so far; return whether it was."""
        if not validation_loss < self.best_loss:
            return False
        self.best_loss = float(validation_loss)
        self._best.save(step, args=self._args(state, data_state, self._meta({"validation_loss": self.best_loss})), force=True)
        return True

    def _stored_best_loss(self) -> float:
        step = self._best.latest_step()
        if step is None:
            return float("inf")
        meta = self._best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return float(meta.get("validation_loss", float("inf")))

    def latest_step(self) -> int | None:
        """The newest saved step in ``checkpoints/`` (None when there is none)."""
        return self._latest.latest_step()

    def restore(self, target_state: Any, step: int | None = None, *, best: bool = False) -> tuple[Any, dict[str, Any], int]:
        """Restore into the structure of ``target_state``; returns ``(state, data_state, step)``.

        Raises:
          FileNotFoundError: there is no checkpoint.
          CheckpointMismatchError: the checkpoint belongs to another stage or its array
            shapes differ from ``target_state`` (every mismatch is listed).
        """
        manager = self._best if best else self._latest
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {manager.directory}")
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        where = f"checkpoint {manager.directory / str(step)}"
        if meta.get("stage") != self.stage:
            raise CheckpointMismatchError(f"{where} is a {meta.get('stage')!r} checkpoint, not {self.stage!r}")
        fields = meta.get(FIELDS_KEY)
        target = target_state if fields is None else {name: getattr(target_state, name) for name in fields}
        saved_tree = manager.item_metadata(step)["state"].tree
        mismatches = shape_mismatches(saved_tree, target)
        if mismatches:
            saved_name = meta.get("config", {}).get("name", "?")
            hint = ""
            if all(line.startswith("opt_state") for line in mismatches):
                hint = (
                    "\nOnly the optimizer state differs: the checkpoint was written with another optimizer layout "
                    "(e.g. another optim.stack_layers, or before it existed: set optim.stack_layers=false to resume it), "
                    "or start from its parameters with --init-from."
                )
            raise CheckpointMismatchError(
                f"{where} (config {saved_name!r}) does not fit config {self.config.name!r}: {listed_mismatches(mismatches)}{hint}"
            )
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(target)), data=ocp.args.JsonRestore()),
        )
        state = restored["state"] if fields is None else target_state.replace(**restored["state"])
        return state, dict(restored["data"] or {}), step

    def wait(self) -> None:
        """Block until asynchronous saves have finished."""
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._latest.close()
        self._best.close()


def save_fields(workdir: str | Path, config: Config, stage: str, step: int, fields: dict[str, Any]) -> None:
    """Save only ``fields`` (top-level state field name -> tree of arrays, any dtype) as ``workdir/checkpoints/<step>``.

    For starting points such as imported weights: no optimizer moments (twice the parameters with
    Adam) are built or written, and float16 values stay float16 until they are restored. Written
    synchronously and uncompressed: ``jax.Array`` leaves are then written from their own buffers,
    without a copy (numpy leaves and compression would cost one more copy of every array).
    """
    handlers = {**_handlers(), "state": ocp.PyTreeCheckpointHandler(use_compression=False)}
    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
    manager = ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options, item_handlers=handlers)
    meta = {"stage": stage, "config": to_dict(config), FIELDS_KEY: sorted(fields)}
    try:
        args = ocp.args.Composite(state=ocp.args.PyTreeSave(fields), data=ocp.args.JsonSave({}), meta=ocp.args.JsonSave(meta))
        manager.save(step, args=args, force=True)
        manager.wait_until_finished()
    finally:
        manager.close()


def _checkpoint_dir(path: str | Path) -> tuple[Path, int | None]:
    """A run directory, its ``checkpoints``/``best`` folder, or one step's folder -> (manager folder, step)."""
    path = Path(path).absolute()
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", None
    if path.name.isdigit() and (path / "meta").exists():
        return path.parent, int(path.name)
    if any(p.name.isdigit() for p in path.glob("*")):
        return path, None
    raise FileNotFoundError(f"{path}: not a run directory, checkpoints folder or checkpoint")


def read_checkpoint_config(path: str | Path) -> tuple[Config, str, int]:
    """``(config, stage, step)`` stored with a checkpoint.

    ``path`` is a run directory (newest checkpoint), its ``checkpoints`` or ``best`` folder, or one step's folder.
    """
    from gptsovits_jax.config import config_from_dict

    meta, step = read_checkpoint_meta(path)
    return config_from_dict(meta["config"]), meta["stage"], step


def read_checkpoint_meta(path: str | Path) -> tuple[dict[str, Any], int]:
    """``(meta, step)`` of a checkpoint: its stored config (a dict), stage and, for a fields checkpoint, :data:`FIELDS_KEY`.

    ``path`` as for :func:`read_checkpoint_config`.
    """
    folder, step = _checkpoint_dir(path)
    manager = ocp.CheckpointManager(folder, item_handlers=_handlers(), options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {folder}")
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    finally:
        manager.close()
    return dict(meta), step


def restore_state(path: str | Path, target: Any) -> Any:
    """The whole saved state (optimizer state included) into the structure of ``target``.

    ``path`` as for :func:`read_checkpoint_config`; ``target`` holds ``jax.ShapeDtypeStruct`` s
    whose shardings say where the arrays go.
    """
    folder, step = _checkpoint_dir(path)
    manager = ocp.CheckpointManager(folder, item_handlers=_handlers(), options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {folder}")
        return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    finally:
        manager.close()


def restore_state_fields(
    path: str | Path, fields: tuple[str, ...], device: jax.Device | None = None
) -> tuple[dict[str, Any], dict[str, Any], Config, str, int]:
    """Only the named top-level fields of a saved train state, e.g. ``("params",)``: nothing else is read.

    An orbax partial restore: the arrays of other fields (the optimizer moments, twice the
    parameters with Adam) are not read from disk. Nothing is built: the arrays' shapes and dtypes
    come from the checkpoint's own metadata.

    Args:
      path: a run directory (newest checkpoint), its ``checkpoints`` or ``best`` folder, or one step's folder.
      fields: top-level names of the saved state.
      device: restore onto this device as ``jax.Array`` s; None gives numpy arrays on the host.

    Returns:
      ``(fields, data_state, config, stage, step)``: field name -> its tree; the input iterator's
      position saved with the state; the config, stage and step stored with the checkpoint.
    """
    config, stage, step = read_checkpoint_config(path)
    folder, _ = _checkpoint_dir(path)
    handlers = {"state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    manager = ocp.CheckpointManager(folder, item_handlers=handlers, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        saved = manager.item_metadata(step)["state"].tree
        missing = [name for name in fields if name not in saved]
        if missing:
            raise CheckpointMismatchError(f"{folder / str(step)}: the {stage} state has no {', '.join(missing)}")
        target = {name: saved[name] for name in fields}
        if device is None:
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        else:
            # Without a sharding, orbax would restore onto the devices that saved, which may not exist here.
            sharding = jax.sharding.SingleDeviceSharding(device)
            restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=sharding, global_shape=x.shape, dtype=x.dtype), target)
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True), data=ocp.args.JsonRestore()
            ),
        )
    finally:
        manager.close()
    return dict(restored["state"]), dict(restored["data"] or {}), config, stage, step
