"""Learning-rate schedule factories: plain optax schedules ``step -> lr``.

Every factory returns a jittable function of the optimizer step (the number of
updates applied so far, starting at 0) and is defined by a closed form given in
its docstring. ``end_lr`` is a floor: after warmup no schedule here goes below it.

This module imports only jax, optax and the standard library, so training code
elsewhere can use it without pulling in the rest of gptsovits-jax::

    from gptsovits_jax import schedules
    lr = schedules.warmup_cosine(peak_lr=2e-4, warmup_steps=1000, total_steps=100_000, end_lr=1e-5)
    tx = optax.adamw(lr, b1=0.8, b2=0.99)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[Any], Any]

__all__ = [
    "Schedule",
    "constant",
    "delayed",
    "from_config",
    "linear",
    "per_step_decay",
    "reduce_on_plateau",
    "scaled",
    "warmup_cosine",
    "warmup_exponential",
    "warmup_step",
]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_lr(**values: float) -> None:
    for name, value in values.items():
        _require(math.isfinite(value) and value >= 0, f"{name} must be finite and >= 0, got {value}")


def _warmup(init_lr: float, peak_lr: float, warmup_steps: int, after: Schedule) -> Schedule:
    """``init + (peak - init) * s / warmup`` for ``s < warmup``, then ``after(s - warmup)``."""
    if warmup_steps == 0:
        return after
    ramp = optax.linear_schedule(init_lr, peak_lr, warmup_steps)
    return optax.join_schedules([ramp, after], [warmup_steps])


def _floored(schedule: Schedule, end_lr: float, warmup_steps: int) -> Schedule:
    """``max(schedule(s), end_lr)`` after warmup: float32 rounding in the decay never dips below the floor."""

    def fn(step):
        lr = schedule(step)
        return jnp.where(jnp.asarray(step) < warmup_steps, lr, jnp.maximum(lr, end_lr))

    return fn


def constant(lr: float) -> Schedule:
    """``lr(s) = lr`` for every step."""
    _check_lr(lr=lr)
    return optax.constant_schedule(lr)


def linear(peak_lr: float, total_steps: int, end_lr: float = 0.0, warmup_steps: int = 0, init_lr: float = 0.0) -> Schedule:
    """Linear warmup to ``peak_lr``, then linear decay to ``end_lr`` at ``total_steps``.

    ``lr(s) = init + (peak - init) s / w`` for ``s < w``;
    ``peak + (end - peak) (s - w) / (T - w)`` for ``w <= s <= T``; ``end`` after ``T``.
    """
    _check_lr(peak_lr=peak_lr, end_lr=end_lr, init_lr=init_lr)
    _require(0 <= warmup_steps < total_steps, f"warmup_steps ({warmup_steps}) must be in [0, total_steps={total_steps})")
    decay = optax.linear_schedule(peak_lr, end_lr, total_steps - warmup_steps)
    return _floored(_warmup(init_lr, peak_lr, warmup_steps, decay), min(end_lr, peak_lr), warmup_steps)


def warmup_cosine(peak_lr: float, warmup_steps: int, total_steps: int, init_lr: float = 0.0, end_lr: float = 0.0) -> Schedule:
    """Linear warmup from ``init_lr`` to ``peak_lr``, cosine decay to ``end_lr``, then constant.

    With ``w = warmup_steps`` and ``T = total_steps``:

    - ``s < w``:        ``init + (peak - init) * s / w``
    - ``w <= s <= T``:  ``end + (peak - end) * (1 + cos(pi * (s - w) / (T - w))) / 2``
    - ``s > T``:        ``end``

    Built on ``optax.warmup_cosine_decay_schedule`` (whose ``decay_steps`` is ``T``).
    This is the schedule upstream GPT-SoVITS stage 1 defines and then overrides with a constant.
    """
    _check_lr(peak_lr=peak_lr, end_lr=end_lr, init_lr=init_lr)
    _require(0 <= warmup_steps < total_steps, f"warmup_steps ({warmup_steps}) must be in [0, total_steps={total_steps})")
    _require(end_lr <= peak_lr, f"end_lr ({end_lr}) must not exceed peak_lr ({peak_lr})")
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=init_lr, peak_value=peak_lr, warmup_steps=warmup_steps, decay_steps=total_steps, end_value=end_lr
    )
    return _floored(schedule, end_lr, warmup_steps)


def per_step_decay(decay_per_epoch: float, steps_per_epoch: int) -> float:
    """Per-step factor equivalent to ``decay_per_epoch`` applied once every ``steps_per_epoch`` steps.

    ``per_step_decay(0.999875, 500) ** 500 == 0.999875``: upstream SoVITS decays by
    0.999875 once per epoch; the per-step form makes the same decay smooth and
    independent of where epochs fall.
    """
    _require(0 < decay_per_epoch <= 1, f"decay_per_epoch must be in (0, 1], got {decay_per_epoch}")
    _require(steps_per_epoch >= 1, f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return decay_per_epoch ** (1.0 / steps_per_epoch)


def warmup_exponential(
    peak_lr: float,
    decay_rate: float,
    warmup_steps: int = 0,
    init_lr: float = 0.0,
    end_lr: float = 0.0,
    decay_every: int = 1,
) -> Schedule:
    """Linear warmup, then exponential decay floored at ``end_lr``.

    - ``s < w``:  ``init + (peak - init) * s / w``
    - ``s >= w``: ``max(end, peak * decay_rate ** ((s - w) / decay_every))``

    ``decay_rate`` is the factor per ``decay_every`` steps; use :func:`per_step_decay`
    to convert a per-epoch factor such as upstream's 0.999875.
    """
    _check_lr(peak_lr=peak_lr, end_lr=end_lr, init_lr=init_lr)
    _require(0 < decay_rate <= 1, f"decay_rate must be in (0, 1], got {decay_rate}")
    _require(decay_every >= 1, f"decay_every must be >= 1, got {decay_every}")
    _require(warmup_steps >= 0, f"warmup_steps must be >= 0, got {warmup_steps}")
    _require(end_lr <= peak_lr, f"end_lr ({end_lr}) must not exceed peak_lr ({peak_lr})")
    log_rate = math.log(decay_rate)

    def decay(step):
        lr = peak_lr * jnp.exp(log_rate * jnp.asarray(step, jnp.float32) / decay_every)
        return jnp.maximum(lr, end_lr)

    return _warmup(init_lr, peak_lr, warmup_steps, decay)


def warmup_step(
    peak_lr: float,
    boundaries: tuple[int, ...] | list[int],
    drop_factor: float = 0.1,
    warmup_steps: int = 0,
    init_lr: float = 0.0,
    end_lr: float = 0.0,
) -> Schedule:
    """Linear warmup, then piecewise-constant drops at absolute steps, floored at ``end_lr``.

    - ``s < w``:  ``init + (peak - init) * s / w``
    - ``s >= w``: ``max(end, peak * drop_factor ** #{b in boundaries : b <= s})``
    """
    _check_lr(peak_lr=peak_lr, end_lr=end_lr, init_lr=init_lr)
    bounds = tuple(int(b) for b in boundaries)
    _require(
        list(bounds) == sorted(set(bounds)) and all(b > 0 for b in bounds),
        f"boundaries must be strictly increasing positive steps, got {bounds}",
    )
    _require(0 < drop_factor <= 1, f"drop_factor must be in (0, 1], got {drop_factor}")
    _require(warmup_steps >= 0, f"warmup_steps must be >= 0, got {warmup_steps}")
    _require(end_lr <= peak_lr, f"end_lr ({end_lr}) must not exceed peak_lr ({peak_lr})")
    bounds_arr = jnp.asarray(bounds if bounds else (2**31 - 1,), jnp.int32)

    def stepped(step):
        step = jnp.asarray(step, jnp.int32)
        drops = jnp.sum(bounds_arr <= step) if bounds else 0
        return jnp.maximum(peak_lr * jnp.power(drop_factor, drops), end_lr)

    if warmup_steps == 0:
        return stepped
    ramp = optax.linear_schedule(init_lr, peak_lr, warmup_steps)

    def schedule(step):
        step = jnp.asarray(step)
        return jnp.where(step < warmup_steps, ramp(step), stepped(step))

    return schedule


def scaled(schedule: Schedule, factor: float) -> Schedule:
    """``lr(s) = factor * schedule(s)`` (a per-group learning-rate multiplier)."""
    _require(math.isfinite(factor) and factor >= 0, f"factor must be finite and >= 0, got {factor}")
    if factor == 1.0:
        return schedule
    return lambda step: factor * schedule(step)


def delayed(schedule: Schedule, start_step: int) -> Schedule:
    """Zero before ``start_step``, then ``schedule(s - start_step)``: staged unfreezing as a schedule.

    The parameters under this schedule receive exactly zero updates (and no weight
    decay, which optax scales by the learning rate) for steps ``s < start_step``.
    """
    _require(start_step >= 0, f"start_step must be >= 0, got {start_step}")
    if start_step == 0:
        return schedule

    def fn(step):
        step = jnp.asarray(step)
        return jnp.where(step < start_step, 0.0, schedule(jnp.maximum(step - start_step, 0)))

    return fn


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def from_config(cfg: Any, total_steps: int | None = None) -> Schedule:
    """Build a schedule from a :class:`gptsovits_jax.config.ScheduleConfig` or an equivalent mapping.

    Keys: ``name`` (constant, linear, warmup_cosine, warmup_exponential, warmup_step),
    ``peak_lr``, ``init_lr``, ``end_lr``, ``warmup_steps``, ``total_steps`` (falls back to
    the ``total_steps`` argument), ``decay_rate``, ``decay_every``, ``boundaries``, ``drop_factor``.
    """
    name = _get(cfg, "name", "warmup_cosine")
    peak = float(_get(cfg, "peak_lr"))
    init = float(_get(cfg, "init_lr", 0.0))
    end = float(_get(cfg, "end_lr", 0.0))
    warmup = int(_get(cfg, "warmup_steps", 0))
    total = _get(cfg, "total_steps") or total_steps
    if name == "constant":
        return constant(peak)
    if name in ("linear", "warmup_cosine"):
        _require(total is not None, f"schedule {name!r} needs total_steps")
        if name == "linear":
            return linear(peak, int(total), end_lr=end, warmup_steps=warmup, init_lr=init)
        return warmup_cosine(peak, warmup, int(total), init_lr=init, end_lr=end)
    if name == "warmup_exponential":
        return warmup_exponential(
            peak,
            float(_get(cfg, "decay_rate", 1.0)),
            warmup_steps=warmup,
            init_lr=init,
            end_lr=end,
            decay_every=int(_get(cfg, "decay_every", 1)),
        )
    if name == "warmup_step":
        return warmup_step(
            peak,
            tuple(_get(cfg, "boundaries", ())),
            drop_factor=float(_get(cfg, "drop_factor", 0.1)),
            warmup_steps=warmup,
            init_lr=init,
            end_lr=end,
        )
    raise ValueError(f"unknown schedule {name!r}; choose one of constant, linear, warmup_cosine, warmup_exponential, warmup_step")


class PlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`: optax's plateau state and the last validation round seen."""

    plateau: Any
    seen_round: Any


def reduce_on_plateau(
    factor: float = 0.5, patience: int = 5, rtol: float = 1e-4, atol: float = 0.0, cooldown: int = 0, min_scale: float = 0.0
) -> optax.GradientTransformationExtraArgs:
    """Chain element scaling updates by ``optax.contrib.reduce_on_plateau``, driven by validation losses.

    ``update(updates, state, params, validation_loss=..., validation_round=...)``: the
    plateau logic runs once per new ``validation_round`` (an int counter the training
    loop increments after each evaluation), so patience counts evaluations, not
    steps. Without these arguments, updates are scaled by the current scale. The
    current scale is ``state.plateau.scale``; multiply a group's scheduled learning
    rate by it to log the effective rate.
    """
    inner = optax.contrib.reduce_on_plateau(factor=factor, patience=patience, rtol=rtol, atol=atol, cooldown=cooldown, min_scale=min_scale)

    def init_fn(params):
        return PlateauState(plateau=inner.init(params), seen_round=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None, *, validation_loss=None, validation_round=None, **extra_args):
        del params, extra_args
        plateau, seen = state.plateau, state.seen_round
        if validation_loss is not None and validation_round is not None:
            validation_round = jnp.asarray(validation_round, jnp.int32)
            is_new = validation_round > seen

            def step_plateau(s):
                return inner.update((), s, value=jnp.asarray(validation_loss, jnp.float32))[1]

            plateau = jax.lax.cond(is_new, step_plateau, lambda s: s, plateau)
            seen = jnp.maximum(seen, validation_round)
        scale = plateau.scale
        updates = jax.tree.map(lambda u: (scale * u).astype(u.dtype), updates)
        return updates, PlateauState(plateau=plateau, seen_round=seen)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
