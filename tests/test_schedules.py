"""Every schedule against its closed form, at the boundaries and between them."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptsovits_jax import schedules
from gptsovits_jax.config import ScheduleConfig


def _steps(*, warmup: int, total: int) -> list[int]:
    """Step 0, around the warmup boundary, the middle, around the end, and well past it."""
    points = {0, 1, warmup - 1, warmup, warmup + 1, (warmup + total) // 2, total - 1, total, total + 1, 3 * total}
    points.update(range(0, 3 * total, max(1, total // 37)))
    return sorted(p for p in points if p >= 0)


def _close(schedule, expected, steps, peak, rtol=1e-5):
    """Equal to float32 resolution: relative ``rtol``, or a few float32 ulps of the peak (cancellation in optax's forms)."""
    got = np.asarray([float(schedule(s)) for s in steps])
    want = np.asarray([expected(s) for s in steps])
    np.testing.assert_allclose(got, want, rtol=rtol, atol=8 * np.finfo(np.float32).eps * peak)


def warmup_cosine_closed_form(s, peak, warmup, total, init, end):
    if s < warmup:
        return init + (peak - init) * s / warmup
    if s > total:
        return end
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))


@pytest.mark.parametrize(
    ("peak", "warmup", "total", "init", "end"),
    [(2e-4, 100, 1000, 0.0, 0.0), (1e-2, 2000, 40000, 1e-5, 1e-4), (1e-3, 0, 500, 0.0, 1e-5), (5e-4, 1, 10, 1e-6, 1e-6)],
)
def test_warmup_cosine_matches_closed_form(peak, warmup, total, init, end):
    schedule = schedules.warmup_cosine(peak, warmup, total, init_lr=init, end_lr=end)
    steps = _steps(warmup=warmup, total=total)
    _close(schedule, lambda s: warmup_cosine_closed_form(s, peak, warmup, total, init, end), steps, peak)
    after = [float(schedule(s)) for s in range(warmup, 3 * total, max(1, total // 301))]
    assert min(after) >= np.float32(end)  # the floor is never crossed


def test_warmup_cosine_key_values():
    schedule = schedules.warmup_cosine(1e-2, warmup_steps=2000, total_steps=40000, init_lr=1e-5, end_lr=1e-4)
    assert float(schedule(0)) == pytest.approx(1e-5, rel=1e-4)
    assert float(schedule(2000)) == pytest.approx(1e-2)
    assert float(schedule(21000)) == pytest.approx((1e-2 + 1e-4) / 2, rel=1e-5)
    assert float(schedule(40000)) == pytest.approx(1e-4)
    assert float(schedule(10**7)) == pytest.approx(1e-4)


def test_warmup_exponential_matches_closed_form_and_floor():
    peak, rate, warmup, init, end = 1e-3, 0.99, 50, 1e-5, 2e-4
    schedule = schedules.warmup_exponential(peak, rate, warmup_steps=warmup, init_lr=init, end_lr=end)

    def expected(s):
        if s < warmup:
            return init + (peak - init) * s / warmup
        return max(end, peak * rate ** (s - warmup))

    steps = _steps(warmup=warmup, total=400)
    _close(schedule, expected, steps, peak)
    after = np.asarray([float(schedule(s)) for s in range(warmup, 2000)])
    assert after.min() >= np.float32(end)
    assert float(schedule(1999)) == pytest.approx(end)


def test_warmup_exponential_decay_every():
    schedule = schedules.warmup_exponential(1.0, 0.5, decay_every=10)
    assert float(schedule(10)) == pytest.approx(0.5, rel=1e-6)
    assert float(schedule(5)) == pytest.approx(0.5**0.5, rel=1e-6)


def test_per_step_decay_reproduces_upstream_epoch_gamma():
    gamma = schedules.per_step_decay(0.999875, steps_per_epoch=250)
    assert gamma**250 == pytest.approx(0.999875, rel=1e-12)
    schedule = schedules.warmup_exponential(1e-4, gamma)
    for epoch in (1, 2, 10, 100):
        assert float(schedule(250 * epoch)) == pytest.approx(1e-4 * 0.999875**epoch, rel=1e-5)


def test_warmup_step_matches_closed_form_and_floor():
    peak, warmup, init, end = 1e-3, 10, 0.0, 5e-6
    bounds = (100, 200, 300)
    schedule = schedules.warmup_step(peak, bounds, drop_factor=0.1, warmup_steps=warmup, init_lr=init, end_lr=end)

    def expected(s):
        if s < warmup:
            return init + (peak - init) * s / warmup
        return max(end, peak * 0.1 ** sum(b <= s for b in bounds))

    steps = sorted({*range(0, 400, 7), 9, 10, 11, 99, 100, 101, 199, 200, 299, 300, 301, 10**6})
    _close(schedule, expected, steps, peak)
    assert float(schedule(10**6)) == pytest.approx(end)


def test_linear_and_constant():
    schedule = schedules.linear(1e-3, total_steps=100, end_lr=1e-4, warmup_steps=10, init_lr=0.0)

    def expected(s):
        if s < 10:
            return 1e-3 * s / 10
        if s > 100:
            return 1e-4
        return 1e-3 + (1e-4 - 1e-3) * (s - 10) / 90

    _close(schedule, expected, _steps(warmup=10, total=100), 1e-3)
    const = schedules.constant(3e-4)
    assert [float(const(s)) for s in (0, 1, 10**9)] == pytest.approx([3e-4] * 3)


def test_delayed_is_zero_before_start_and_shifted_after():
    base = schedules.warmup_cosine(1e-3, 10, 100, init_lr=1e-5)
    schedule = schedules.delayed(base, 50)
    assert [float(schedule(s)) for s in (0, 1, 49)] == [0.0, 0.0, 0.0]
    for s in (50, 55, 60, 149, 150, 400):
        assert float(schedule(s)) == float(base(s - 50))
    assert float(schedule(50)) == pytest.approx(1e-5, rel=1e-3)


def test_scaled_multiplies():
    schedule = schedules.scaled(schedules.constant(1e-4), 0.4)
    assert float(schedule(7)) == pytest.approx(4e-5)


def test_schedules_jit_and_vectorise():
    schedule = schedules.warmup_cosine(1e-3, 10, 100, end_lr=1e-5)
    steps = jnp.arange(0, 300)
    batched = jax.jit(jax.vmap(schedule))(steps)
    np.testing.assert_allclose(np.asarray(batched), [float(schedule(int(s))) for s in steps], rtol=1e-5, atol=1e-12)
    for fn in (
        schedules.warmup_exponential(1e-3, 0.99, warmup_steps=5),
        schedules.warmup_step(1e-3, (20, 40), warmup_steps=5),
        schedules.delayed(schedule, 30),
    ):
        assert jax.jit(fn)(jnp.int32(25)).shape == ()


def test_from_config_builds_each_schedule():
    cfg = ScheduleConfig(name="warmup_cosine", peak_lr=1e-3, init_lr=0.0, end_lr=1e-5, warmup_steps=10, total_steps=100)
    assert float(schedules.from_config(cfg)(55)) == pytest.approx(warmup_cosine_closed_form(55, 1e-3, 10, 100, 0.0, 1e-5), rel=1e-6)
    mapping = {"name": "warmup_step", "peak_lr": 1.0, "boundaries": [5], "drop_factor": 0.5}
    assert float(schedules.from_config(mapping)(6)) == pytest.approx(0.5)
    assert float(schedules.from_config({"name": "constant", "peak_lr": 2e-4})(999)) == pytest.approx(2e-4)
    exp = {"name": "warmup_exponential", "peak_lr": 1.0, "decay_rate": 0.9, "decay_every": 1}
    assert float(schedules.from_config(exp)(2)) == pytest.approx(0.81, rel=1e-6)
    linear = {"name": "linear", "peak_lr": 1.0, "end_lr": 0.0}
    assert float(schedules.from_config(linear, total_steps=10)(5)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.from_config({"name": "cosine_restarts", "peak_lr": 1.0})
    with pytest.raises(ValueError, match="needs total_steps"):
        schedules.from_config({"name": "warmup_cosine", "peak_lr": 1.0})


@pytest.mark.parametrize(
    "build",
    [
        lambda: schedules.warmup_cosine(1e-3, 100, 100),
        lambda: schedules.warmup_cosine(-1e-3, 10, 100),
        lambda: schedules.warmup_cosine(1e-3, 10, 100, end_lr=1e-2),
        lambda: schedules.warmup_exponential(1e-3, 1.5),
        lambda: schedules.warmup_step(1e-3, (20, 10)),
        lambda: schedules.constant(float("nan")),
        lambda: schedules.per_step_decay(0.9, 0),
    ],
)
def test_impossible_schedules_raise(build):
    with pytest.raises(ValueError):
        build()


def test_reduce_on_plateau_counts_validation_rounds_not_steps():
    plateau = schedules.reduce_on_plateau(factor=0.5, patience=2, rtol=0.0, atol=1e-6)
    params = {"w": jnp.ones(2)}
    state = plateau.init(params)
    grads = {"w": jnp.ones(2)}
    update = jax.jit(plateau.update)

    def run(loss, rnd):
        nonlocal state
        out, state = update(grads, state, params, validation_loss=jnp.float32(loss), validation_round=jnp.int32(rnd))
        return float(out["w"][0])

    assert run(1.0, 1) == 1.0  # first value sets the best
    for _ in range(5):  # the same round seen again at many steps changes nothing
        assert run(5.0, 1) == 1.0
    assert run(1.0, 2) == 1.0  # one round without improvement: patience 2 not reached
    assert run(1.0, 3) == 0.5  # the second round without improvement halves
    assert float(state.plateau.scale) == 0.5
    out, _ = plateau.update(grads, state, params)
    assert float(out["w"][0]) == 0.5


def test_schedule_is_a_plain_optax_schedule():
    lr = schedules.warmup_cosine(1e-2, 1, 10)
    tx = optax.sgd(lr)
    params = jnp.ones(3)
    state = tx.init(params)
    upd, state = tx.update(jnp.ones(3), state)
    assert float(upd[0]) == 0.0  # step 0 of a warmup from 0
    upd, state = tx.update(jnp.ones(3), state)
    assert float(upd[0]) == pytest.approx(-1e-2)
