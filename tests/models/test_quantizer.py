"""Residual VQ: nearest-code lookup, one-time k-means init, EMA updates on request, straight-through and frozen modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptsovits_jax.models.quantizer import COLLECTION, ResidualVectorQuantizer

DIM, BINS, DECAY = 4, 8, 0.9
RNG = np.random.default_rng(0)


def _quantizer(**kwargs):
    defaults = {"n_q": 1, "decay": DECAY, "kmeans_iters": 50, "dead_code_threshold": 0.0, "frozen": False}
    return ResidualVectorQuantizer(DIM, BINS, **{**defaults, **kwargs})


def _state(quantizer, x):
    return quantizer.init(jax.random.key(0), x, train=False)


def _apply(quantizer, *, train, update, mutable=True):
    """One jitted call: (variables, x, mask, key) -> ((quantized, codes, commit), new variables)."""

    @jax.jit
    def run(variables, x, mask, key):
        out, updates = quantizer.apply(
            variables, x, mask, train=train, update_codebook=update, rngs={"sample": key}, mutable=[COLLECTION] if mutable else False
        )
        return out, {**variables, **updates}

    if mutable:
        return run

    @jax.jit
    def run_immutable(variables, x, mask, key):
        return quantizer.apply(variables, x, mask, train=train, update_codebook=update, rngs={"sample": key}), variables

    return run_immutable


def _clusters(n_per=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(BINS, DIM)) * 10
    frames = centers[:, None, :] + spread * rng.normal(size=(BINS, n_per, DIM))
    return rng.permutation(frames.reshape(-1, DIM)).reshape(4, -1, DIM).astype(np.float32)


def _with_codebook(variables, embed, cluster_size, layer=0):
    book = dict(variables[COLLECTION][f"layers_{layer}"])
    book.update(embed=jnp.asarray(embed, jnp.float32), cluster_size=jnp.asarray(cluster_size, jnp.float32))
    book.update(embed_avg=book["embed"] * book["cluster_size"][:, None], inited=jnp.ones((), bool))
    return {**variables, COLLECTION: {**variables[COLLECTION], f"layers_{layer}": book}}


def _book(variables, layer=0):
    return {k: np.asarray(v) for k, v in variables[COLLECTION][f"layers_{layer}"].items()}


@pytest.fixture(scope="module")
def plain():
    return _quantizer()


@pytest.fixture(scope="module")
def lookup(plain):
    return _apply(plain, train=False, update=False)


@pytest.fixture(scope="module")
def ema(plain):
    return _apply(plain, train=True, update=True)


def test_codebook_is_state_not_parameters(plain):
    variables = _state(plain, np.zeros((2, 5, DIM), np.float32))
    assert "params" not in variables
    book = _book(variables)
    assert book["embed"].shape == (BINS, DIM) and book["embed_avg"].shape == (BINS, DIM) and book["cluster_size"].shape == (BINS,)
    # Module.init must not run k-means on its dummy input.
    assert not book["inited"] and np.all(book["embed"] == 0)


def test_kmeans_init_runs_exactly_once(plain, lookup):
    x = _clusters()
    variables = _state(plain, x)
    (_, codes, _), variables = lookup(variables, x, None, jax.random.key(1))
    book = _book(variables)
    assert book["inited"]
    flat = x.reshape(-1, DIM)
    nearest = np.argmin(((flat[:, None] - book["embed"][None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(np.asarray(codes).reshape(-1), nearest)
    # Converged Lloyd iterations: every used code is the mean of its frames, and the counts are the last assignment.
    for k in np.unique(nearest):
        np.testing.assert_allclose(book["embed"][k], flat[nearest == k].mean(0), atol=1e-4)
    np.testing.assert_allclose(book["cluster_size"], np.bincount(nearest, minlength=BINS))
    np.testing.assert_array_equal(book["embed_avg"], book["embed"])

    (_, _, _), again = lookup(variables, _clusters(seed=5), None, jax.random.key(2))
    for name, value in _book(again).items():
        np.testing.assert_array_equal(value, book[name], err_msg=name)


def test_codes_are_brute_force_argmin_per_residual_stage():
    rvq = _quantizer(n_q=2)
    x = RNG.normal(size=(2, 6, DIM)).astype(np.float32)
    variables = _state(rvq, x)
    books = [RNG.normal(size=(BINS, DIM)).astype(np.float32), 0.3 * RNG.normal(size=(BINS, DIM)).astype(np.float32)]
    for i, embed in enumerate(books):
        variables = _with_codebook(variables, embed, np.ones(BINS), layer=i)
    (quantized, codes, commit), _ = _apply(rvq, train=False, update=False, mutable=False)(variables, x, None, jax.random.key(0))
    residual = x.reshape(-1, DIM)
    expected_q = np.zeros_like(residual)
    for i, embed in enumerate(books):
        dist = np.array([[np.sum((r - e) ** 2) for e in embed] for r in residual])
        expected = dist.argmin(axis=1)
        np.testing.assert_array_equal(np.asarray(codes[i]).reshape(-1), expected)
        residual = residual - embed[expected]
        expected_q += embed[expected]
    np.testing.assert_allclose(np.asarray(quantized).reshape(-1, DIM), expected_q, rtol=1e-6)
    assert float(commit) == 0.0
    np.testing.assert_array_equal(rvq.apply(variables, x, method=rvq.encode), codes)
    np.testing.assert_allclose(rvq.apply(variables, codes, method=rvq.decode), quantized, rtol=1e-6)


def test_ema_changes_codebook_only_when_asked(plain, lookup, ema):
    x = _clusters()
    embed = x.reshape(-1, DIM)[:BINS] + 0.5
    variables = _with_codebook(_state(plain, x), embed, np.full(BINS, 5.0))
    before = _book(variables)

    _, unchanged = lookup(variables, x, None, jax.random.key(0))
    for name, value in _book(unchanged).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    (q_immutable, _, _), _ = _apply(plain, train=True, update=True, mutable=False)(variables, x, None, jax.random.key(0))

    (quantized, codes, _), updated = ema(variables, x, None, jax.random.key(0))
    flat = x.reshape(-1, DIM)
    c = np.asarray(codes).reshape(-1)
    counts = np.bincount(c, minlength=BINS)
    sums = np.zeros((BINS, DIM))
    np.add.at(sums, c, flat)
    cluster_size = DECAY * before["cluster_size"] + (1 - DECAY) * counts
    embed_avg = DECAY * before["embed_avg"] + (1 - DECAY) * sums
    n = cluster_size.sum()
    smoothed = (cluster_size + 1e-5) / (n + BINS * 1e-5) * n
    book = _book(updated)
    np.testing.assert_allclose(book["cluster_size"], cluster_size, rtol=1e-5)
    np.testing.assert_allclose(book["embed_avg"], embed_avg, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(book["embed"], embed_avg / smoothed[:, None], rtol=1e-5, atol=1e-5)
    assert not np.allclose(book["embed"], before["embed"])
    # The output uses the codebook from before the update; an immutable collection gives the same output.
    np.testing.assert_allclose(np.asarray(quantized).reshape(-1, DIM), before["embed"][c], rtol=1e-6)
    np.testing.assert_allclose(q_immutable, quantized, rtol=1e-6)


def test_padding_is_kept_out_of_statistics_and_dead_code_samples():
    rvq = _quantizer(dead_code_threshold=1e9)  # every code is "dead" after the update
    x = _clusters()
    mask = np.ones(x.shape[:2], np.float32)
    mask[:, -3:] = 0
    x_padded = x.copy()
    x_padded[:, -3:] = 1000.0
    variables = _with_codebook(_state(rvq, x), x.reshape(-1, DIM)[:BINS], np.full(BINS, 5.0))
    run = _apply(rvq, train=True, update=True)
    (_, codes, commit), updated = run(variables, x_padded, mask, jax.random.key(3))
    book = _book(updated)
    valid = x.reshape(-1, DIM)[mask.reshape(-1) > 0]
    # Every code was replaced by a valid frame of the batch; no padded frame (value 1000) was drawn.
    for row in book["embed"]:
        assert np.min(np.abs(valid - row).sum(-1)) < 1e-6
    c = np.asarray(codes).reshape(-1)[mask.reshape(-1) > 0]
    np.testing.assert_allclose(book["cluster_size"], DECAY * 5.0 + (1 - DECAY) * np.bincount(c, minlength=BINS), rtol=1e-5)
    q = variables[COLLECTION]["layers_0"]["embed"][np.asarray(codes)[0]]
    expected_commit = np.sum(((np.asarray(q) - x_padded) ** 2) * mask[..., None]) / (mask.sum() * DIM)
    np.testing.assert_allclose(commit, expected_commit, rtol=1e-5)


def test_straight_through_and_commitment_loss_when_training(plain):
    x = RNG.normal(size=(2, 5, DIM)).astype(np.float32)
    weights = RNG.normal(size=x.shape).astype(np.float32)
    variables = _with_codebook(_state(plain, x), RNG.normal(size=(BINS, DIM)), np.ones(BINS))

    def objective(x):
        (q, _, commit), _ = plain.apply(variables, x, train=True, mutable=[COLLECTION])
        return jnp.sum(q * weights), (q, commit)

    grad, (q, commit) = jax.grad(objective, has_aux=True)(x)
    np.testing.assert_allclose(grad, weights, rtol=1e-6)  # identity through the quantizer
    np.testing.assert_allclose(commit, np.mean((np.asarray(q) - x) ** 2), rtol=1e-5)
    commit_grad = jax.grad(lambda x: plain.apply(variables, x, train=True, mutable=[COLLECTION])[0][2])(x)
    np.testing.assert_allclose(commit_grad, 2 * (x - np.asarray(q)) / x.size, rtol=1e-4, atol=1e-7)


def test_frozen_quantizer_is_a_plain_lookup():
    frozen = _quantizer(frozen=True)
    x = RNG.normal(size=(2, 5, DIM)).astype(np.float32)
    embed = RNG.normal(size=(BINS, DIM)).astype(np.float32)
    variables = _with_codebook(_state(frozen, x), embed, np.ones(BINS))

    def objective(x):
        (q, codes, commit), updates = frozen.apply(variables, x, train=True, update_codebook=True, mutable=[COLLECTION])
        return jnp.sum(q) + commit, (q, codes, commit, updates)

    grad, (q, codes, commit, updates) = jax.grad(objective, has_aux=True)(x)
    assert float(commit) == 0.0
    assert np.all(np.asarray(grad) == 0)
    np.testing.assert_allclose(q, embed[np.asarray(codes)[0]], rtol=1e-6)
    np.testing.assert_array_equal(updates[COLLECTION]["layers_0"]["embed"], embed)  # no EMA when frozen
