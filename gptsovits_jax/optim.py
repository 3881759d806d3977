"""Per-submodule optimizers: parameter groups chosen by regex over parameter paths.

One function turns an optimizer config and a parameter tree into one optax chain::

    zero frozen grads -> [clip by global norm] -> multi_transform(per-group AdamW) -> [reduce on plateau]
    wrapped in [MultiSteps gradient accumulation] and apply_if_finite (non-finite gradients skip the update),
    all run on layer stacks (AdamW: :class:`LayerStacking`, a smaller program for XLA, the same updates)

A parameter's path is its keys joined by ``/`` (``enc_p/text_embedding/embedding``,
``h/layers_3/linear1/kernel``). Groups are tried in order; each parameter joins
the first group whose ``pattern`` matches (``re.search``) and every parameter
must match one, otherwise :class:`UncoveredParametersError` lists the ones that
do not. A group with no schedule is frozen: ``optax.set_to_zero``, exactly zero
updates and no weight decay. Staged unfreezing is a schedule that is zero until
its start step (:func:`gptsovits_jax.schedules.delayed`).

This module imports only jax, optax and the standard library (and, for typing, the
dataclasses of :mod:`gptsovits_jax.config`, which import nothing else).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gptsovits_jax import schedules as schedules_lib
from gptsovits_jax.schedules import Schedule

__all__ = [
    "LayerStacking",
    "Optimizer",
    "ParamGroup",
    "ScheduleWarning",
    "UncoveredParametersError",
    "build_optimizer",
    "build_optimizer_from_groups",
    "check_step_size_adaptation",
    "groups_from_config",
    "label_params",
    "param_path",
    "plateau_scale",
    "skipped_updates",
    "stacked_layers",
    "update_count",
]


class UncoveredParametersError(ValueError):
    """Some parameters match no group pattern; ``paths`` lists them."""

    def __init__(self, paths: Sequence[str], group_names: Sequence[str]):
        self.paths = list(paths)
        shown = "\n  ".join(self.paths[:50])
        more = f"\n  ... and {len(self.paths) - 50} more" if len(self.paths) > 50 else ""
        super().__init__(
            f"{len(self.paths)} parameter(s) match no optimizer group (groups: {', '.join(group_names)}); "
            f"add a group whose pattern covers them, e.g. a last catch-all group with pattern '':\n  {shown}{more}"
        )


class ScheduleWarning(UserWarning):
    """A learning-rate schedule is combined with something that makes it misleading."""


@dataclass(frozen=True)
class ParamGroup:
    """A named group: parameters whose path matches ``pattern``, updated under ``schedule``.

    ``schedule`` is the group's effective learning rate (multiplier included), or
    ``None`` for a frozen group.
    """

    name: str
    pattern: str
    schedule: Schedule | None

    @property
    def frozen(self) -> bool:
        return self.schedule is None


def param_path(path: Sequence[Any]) -> str:
    """``'/'``-joined keys of a pytree path (``('enc_p', 'proj', 'kernel')`` -> ``enc_p/proj/kernel``)."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def label_params(params: Any, groups: Sequence[tuple[str, str]] | Sequence[ParamGroup]) -> Any:
    """A pytree like ``params`` holding each parameter's group name.

    Args:
      params: the parameter pytree (nested dicts, as Flax produces).
      groups: ordered ``(name, pattern)`` pairs or :class:`ParamGroup` s; first match wins.

    Raises:
      UncoveredParametersError: listing every path that matches no pattern.
    """
    pairs = [(g.name, g.pattern) if isinstance(g, ParamGroup) else (g[0], g[1]) for g in groups]
    compiled = [(name, re.compile(pattern)) for name, pattern in pairs]
    uncovered: list[str] = []

    def label(path, _):
        text = param_path(path)
        for name, regex in compiled:
            if regex.search(text):
                return name
        uncovered.append(text)
        return None

    labels = jax.tree_util.tree_map_with_path(label, params)
    if uncovered:
        raise UncoveredParametersError(uncovered, [name for name, _ in pairs])
    return labels


_LAYER_INDEX = re.compile(r"^(.*_)(\d+)$")


class LayerStacking:
    """Stacks the leaves that repeat across layers into ``[n_layers, ...]`` arrays, and back.

    Leaves whose paths differ only in layer indices (``h/layers_3/linear1/kernel`` and
    ``h/layers_7/linear1/kernel``: a path component ``name_N``), with the same group label, shape
    and dtype, form one stack; every other leaf stays as it is. The stacked form is a flat dict
    keyed by ``.``-joined paths (checkpoint-friendly: no ``/``), a stack's key naming its layers in
    place of the varying component (``h.layers_0-11.linear1.kernel``; ``resblocks_0+3+6`` when not
    contiguous). Members are ordered by layer index.

    Args:
      params: the parameter tree (arrays or ``jax.ShapeDtypeStruct`` s).
      labels: each parameter's group name (:func:`label_params`).
    """

    def __init__(self, params: Any, labels: Any):
        paths_leaves, self.treedef = jax.tree_util.tree_flatten_with_path(params)
        label_leaves = self.treedef.flatten_up_to(labels)
        groups: dict[tuple, list[tuple[tuple[int, ...], int, list[str]]]] = {}
        for i, ((path, leaf), label) in enumerate(zip(paths_leaves, label_leaves)):
            parts = param_path(path).split("/")
            matches = [_LAYER_INDEX.match(c) for c in parts]
            pattern = tuple(m.group(1) + "*" if m else c for m, c in zip(matches, parts))
            indices = tuple(int(m.group(2)) for m in matches if m)
            groups.setdefault((pattern, label, tuple(leaf.shape), str(leaf.dtype)), []).append((indices, i, parts))
        self.keys: list[str] = []
        self.members: list[tuple[int, ...]] = []
        for members in groups.values():
            members.sort()
            columns = zip(*(parts for _, _, parts in members))
            self.keys.append(".".join(self._merged(column) for column in columns))
            self.members.append(tuple(i for _, i, _ in members))
        self.stacked_labels = self.first_of_each(labels)

    @staticmethod
    def _merged(column: tuple[str, ...]) -> str:
        if len(set(column)) == 1:
            return column[0]
        indices = [int(_LAYER_INDEX.match(c).group(2)) for c in column]
        contiguous = indices == list(range(indices[0], indices[0] + len(indices)))
        listed = f"{indices[0]}-{indices[-1]}" if contiguous else "+".join(map(str, indices))
        return _LAYER_INDEX.match(column[0]).group(1) + listed

    def first_of_each(self, tree: Any) -> dict[str, Any]:
        """A per-leaf property (a label, a weight-decay flag; the same for every member of a stack) per stacked key."""
        leaves = self.treedef.flatten_up_to(tree)
        return {key: leaves[m[0]] for key, m in zip(self.keys, self.members)}

    def stack(self, tree: Any) -> dict[str, Any]:
        """``tree`` (shaped like ``params``) -> the flat stacked dict."""
        leaves = self.treedef.flatten_up_to(tree)
        return {key: leaves[m[0]] if len(m) == 1 else _stack([leaves[i] for i in m]) for key, m in zip(self.keys, self.members)}

    def unstack(self, flat: Mapping[str, Any]) -> Any:
        """The flat stacked dict -> a tree shaped like ``params``."""
        leaves: list[Any] = [None] * self.treedef.num_leaves
        for key, m in zip(self.keys, self.members):
            value = flat[key]
            if len(m) == 1:
                leaves[m[0]] = value
            else:
                for j, i in enumerate(m):
                    leaves[i] = value[j]
        return self.treedef.unflatten(leaves)


def _stack(leaves: list[Any]) -> Any:
    if isinstance(leaves[0], jax.ShapeDtypeStruct):  # abstract trees (shapes only) stay abstract
        return jax.ShapeDtypeStruct((len(leaves), *leaves[0].shape), leaves[0].dtype)
    return jnp.stack(leaves)


def stacked_layers(tx: optax.GradientTransformation, stacking: LayerStacking) -> optax.GradientTransformation:
    """``tx`` run on :meth:`LayerStacking.stack` ed trees: its state holds ``[n_layers, ...]`` stacks.

    Exact for element-wise transformations (Adam, decoupled weight decay, learning rates; a global
    norm sums the same squares in another order): the point is a smaller program, one update per
    stack instead of one per layer (XLA compiles a 24-layer GPT's optimizer update several times
    faster). Not for transformations that reduce per leaf (LAMB's trust ratio, Adafactor).
    """

    def init_fn(params):
        return tx.init(stacking.stack(params))

    def update_fn(updates, state, params=None, **extra_args):
        stacked_params = None if params is None else stacking.stack(params)
        new_updates, state = tx.update(stacking.stack(updates), state, stacked_params, **extra_args)
        return stacking.unstack(new_updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def group_sizes(params: Any, labels: Any) -> dict[str, int]:
    """Number of scalar parameters in each group."""
    sizes: dict[str, int] = {}
    for leaf, name in zip(jax.tree.leaves(params), jax.tree.leaves(labels)):
        sizes[name] = sizes.get(name, 0) + int(leaf.size)
    return sizes


def _collect(tree: Any, state_type: type) -> list[Any]:
    return [x for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, state_type)) if isinstance(x, state_type)]


def update_count(opt_state: Any) -> jax.Array:
    """Optimizer updates applied so far (skipped non-finite steps and accumulation micro-steps excluded).

    This is the step every group's schedule is evaluated at.
    """
    for state_type in (optax.ScaleByScheduleState, optax.ScaleByAdamState):
        found = _collect(opt_state, state_type)
        if found:
            return found[0].count
    return jnp.zeros((), jnp.int32)


def skipped_updates(opt_state: Any) -> jax.Array:
    """Total updates skipped because a gradient was NaN or infinite (0 without ``apply_if_finite``)."""
    found = _collect(opt_state, optax.ApplyIfFiniteState)
    return found[0].total_notfinite if found else jnp.zeros((), jnp.int32)


def plateau_scale(opt_state: Any) -> jax.Array:
    """Current reduce-on-plateau factor (1.0 without a plateau element)."""
    found = _collect(opt_state, schedules_lib.PlateauState)
    return found[0].plateau.scale if found else jnp.ones((), jnp.float32)


@dataclass(frozen=True)
class Optimizer:
    """The optax transformation plus what the loop needs to log and inspect it.

    Attributes:
      tx: the full transformation (``tx.init(params)``, ``tx.update(grads, state, params)``).
      labels: pytree like params with each parameter's group name.
      groups: the groups, in matching order.
      sizes: scalar parameter count per group.
      stacking: the layer stacks ``tx`` runs on (``stack_layers``), or ``None``.
    """

    tx: optax.GradientTransformation
    labels: Any
    groups: tuple[ParamGroup, ...]
    sizes: Mapping[str, int]
    stacking: LayerStacking | None = None

    def stacked(self, tree: Any) -> Any:
        """``tree`` (shaped like the parameters) as the layer stacks ``tx`` runs on, or unchanged without stacking.

        For reductions over a whole gradient tree (its norm, its finiteness): on the stacks, the same
        ones ``tx`` builds from the gradients (XLA computes them once), a reduction is one per stack
        instead of one per layer, which makes the compiled step much smaller.
        """
        return tree if self.stacking is None else self.stacking.stack(tree)

    def global_norm(self, tree: Any) -> jax.Array:
        """The L2 norm of all of ``tree`` (shaped like the parameters), over :meth:`stacked` (the squares summed in another order)."""
        return optax.tree.norm(self.stacked(tree))

    def learning_rates(self, step: Any, scale: Any = 1.0) -> dict[str, jax.Array]:
        """Every group's learning rate at optimizer step ``step`` (frozen groups: 0), times ``scale``.

        Pass ``scale=plateau_scale(opt_state)`` to include reduce-on-plateau.
        """
        out = {}
        for group in self.groups:
            lr = jnp.zeros((), jnp.float32) if group.schedule is None else jnp.asarray(group.schedule(step), jnp.float32)
            out[group.name] = lr * scale
        return out

    def current_learning_rates(self, opt_state: Any) -> dict[str, jax.Array]:
        """Every group's learning rate for the next update of ``opt_state``."""
        return self.learning_rates(update_count(opt_state), plateau_scale(opt_state))


def check_step_size_adaptation(tx: optax.GradientTransformation | None, params: Any, context: str, *, trust_ratio: bool = False) -> bool:
    """Warn (:class:`ScheduleWarning`) when a schedule would not be the step size; return whether it warned.

    Two cases make a learning-rate schedule misleading:

    - ``trust_ratio``: LAMB/LARS rescale each layer's update to ``||w|| / ||u||``, so
      the schedule only sets a relative factor and the logged ``lr/<group>`` is not
      the step size;
    - ``tx`` already applies a learning rate of its own (an optax optimizer built
      with a schedule or through ``inject_hyperparams``): it multiplies the group
      schedule (double scaling). A constant learning rate folded into ``tx`` leaves
      no trace in its state and cannot be detected; pass ``optax.scale_by_adam(...)``
      style transformations, not full optimizers.
    """
    warned = False
    if trust_ratio:
        warnings.warn(
            f"{context}: a trust-ratio optimizer (LAMB/LARS) rescales every layer's update to ||w||/||u||, so the "
            "learning-rate schedule only sets a relative factor and the logged lr/<group> is not the step size; "
            "use adamw if you want the schedule to be the step size",
            ScheduleWarning,
            stacklevel=3,
        )
        warned = True
    if tx is not None:
        state = jax.eval_shape(tx.init, params)
        nodes = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, tuple) and hasattr(x, "_fields"))
        if any(isinstance(x, optax.ScaleByScheduleState) or "learning_rate" in (getattr(x, "hyperparams", None) or {}) for x in nodes):
            warnings.warn(
                f"{context}: the transformation already applies a learning rate; the group schedules multiply it "
                "(double scaling) and the logged learning rates are wrong. Pass a transformation without a learning "
                "rate, e.g. optax.scale_by_adam(...)",
                ScheduleWarning,
                stacklevel=3,
            )
            warned = True
    return warned


def groups_from_config(optim_cfg: Any, total_steps: int | None = None) -> tuple[ParamGroup, ...]:
    """:class:`ParamGroup` s from an :class:`~gptsovits_jax.config.OptimConfig`.

    Each group's schedule is its own ``schedule`` or the config's, delayed to
    ``unfreeze_step`` when set, and multiplied by ``lr_mult``.
    """
    groups = []
    for g in optim_cfg.groups:
        if g.frozen:
            groups.append(ParamGroup(g.name, g.pattern, None))
            continue
        schedule = schedules_lib.from_config(g.schedule or optim_cfg.schedule, total_steps=total_steps)
        if g.unfreeze_step:
            schedule = schedules_lib.delayed(schedule, g.unfreeze_step)
        groups.append(ParamGroup(g.name, g.pattern, schedules_lib.scaled(schedule, g.lr_mult)))
    return tuple(groups)


def _plateau_from_config(cfg: Any) -> optax.GradientTransformationExtraArgs | None:
    if cfg is None:
        return None
    return schedules_lib.reduce_on_plateau(
        factor=cfg.factor, patience=cfg.patience, rtol=cfg.rtol, cooldown=cfg.cooldown, min_scale=cfg.min_scale
    )


def build_optimizer(
    optim_cfg: Any, params: Any, *, total_steps: int | None = None, base_transform: optax.GradientTransformation | None = None
) -> Optimizer:
    """Build the optimizer an :class:`~gptsovits_jax.config.OptimConfig` describes for ``params``.

    ``params`` may be concrete arrays or ``jax.ShapeDtypeStruct`` s (only paths and
    sizes are read). ``base_transform`` replaces the per-group ``scale_by_adam`` (it
    must not apply a learning rate itself; a warning says so if it does).
    """
    return build_optimizer_from_groups(
        groups_from_config(optim_cfg, total_steps),
        params,
        name=optim_cfg.name,
        b1=optim_cfg.b1,
        b2=optim_cfg.b2,
        eps=optim_cfg.eps,
        weight_decay=optim_cfg.weight_decay,
        weight_decay_pattern=optim_cfg.weight_decay_pattern,
        clip_norm=optim_cfg.clip_norm,
        grad_accum_steps=optim_cfg.grad_accum_steps,
        skip_nonfinite=optim_cfg.skip_nonfinite,
        # Never apply a non-finite update: the run's ``max_nonfinite_steps`` stops training instead.
        max_consecutive_nonfinite=2**31 - 1,
        plateau=_plateau_from_config(optim_cfg.plateau),
        base_transform=base_transform,
        stack_layers=optim_cfg.stack_layers,
    )


def build_optimizer_from_groups(
    groups: Sequence[ParamGroup],
    params: Any,
    *,
    name: str = "adamw",
    b1: float = 0.8,
    b2: float = 0.99,
    eps: float = 1e-9,
    weight_decay: float = 0.01,
    weight_decay_pattern: str = r"(kernel|weight_v)$",
    clip_norm: float | None = None,
    grad_accum_steps: int = 1,
    skip_nonfinite: bool = True,
    max_consecutive_nonfinite: int = 1000,
    plateau: optax.GradientTransformationExtraArgs | None = None,
    base_transform: optax.GradientTransformation | None = None,
    stack_layers: bool = True,
) -> Optimizer:
    """Build the chain described in the module docstring from explicit groups.

    Weight decay is decoupled (AdamW: ``p -= lr * wd * p``) and applies to
    parameters whose path matches ``weight_decay_pattern`` (kernels by default),
    never to frozen groups. ``stack_layers`` runs the chain on :class:`LayerStacking`
    stacks (:func:`stacked_layers`; AdamW without ``base_transform`` only, where it is exact).
    """
    if name not in ("adamw", "lamb"):
        raise ValueError(f"unknown optimizer {name!r}; choose adamw or lamb")
    groups = tuple(groups)
    original_labels = labels = label_params(params, groups)
    stacking = LayerStacking(params, labels) if stack_layers and name == "adamw" and base_transform is None else None
    if stacking is not None:
        labels = stacking.stacked_labels
    decay_regex = re.compile(weight_decay_pattern)

    def decided_by_path(tree):
        return jax.tree_util.tree_map_with_path(lambda p, _: bool(decay_regex.search(param_path(p))), tree)

    if stacking is None:
        decay_mask = decided_by_path
    else:  # a stack decays as its members do (they share the leaf name)
        stacked_flags = stacking.first_of_each(decided_by_path(params))

        def decay_mask(tree):
            return jax.tree_util.tree_map_with_path(lambda p, _: stacked_flags[param_path(p)], tree)

    def group_transform(group: ParamGroup) -> optax.GradientTransformation:
        if group.frozen:
            return optax.set_to_zero()
        parts = [base_transform if base_transform is not None else optax.scale_by_adam(b1=b1, b2=b2, eps=eps)]
        if weight_decay > 0:
            parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
        if name == "lamb":
            parts.append(optax.scale_by_trust_ratio())
        parts.append(optax.scale_by_learning_rate(group.schedule))
        return optax.chain(*parts)

    transforms = {g.name: group_transform(g) for g in groups}
    check_step_size_adaptation(base_transform, params, f"optimizer {name!r}", trust_ratio=name == "lamb")
    frozen_names = {g.name for g in groups if g.frozen}
    chain = []
    if frozen_names:
        # Frozen gradients are zeroed first so they never enter the clipping norm.
        chain.append(optax.masked(optax.set_to_zero(), jax.tree.map(lambda label: label in frozen_names, labels)))
    if clip_norm is not None:
        chain.append(optax.clip_by_global_norm(clip_norm))
    chain.append(optax.multi_transform(transforms, labels))
    if plateau is not None:
        chain.append(plateau)
    tx: optax.GradientTransformation = optax.chain(*chain)
    if grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=grad_accum_steps).gradient_transformation()
    if skip_nonfinite:
        tx = optax.apply_if_finite(tx, max_consecutive_errors=max_consecutive_nonfinite)
    if stacking is not None:
        tx = stacked_layers(tx, stacking)
    return Optimizer(tx=tx, labels=original_labels, groups=groups, sizes=group_sizes(params, original_labels), stacking=stacking)
