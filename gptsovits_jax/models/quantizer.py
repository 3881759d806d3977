"""Residual vector quantizer of SSL features with an EMA codebook (upstream ``quantize.py`` / ``core_vq.py``).

The codebooks are not trainable parameters: each codebook ``layers_{i}`` keeps
``embed [bins, D]``, ``cluster_size [bins]``, ``embed_avg [bins, D]`` and ``inited`` (bool)
in the :data:`COLLECTION` variable collection (upstream buffers
``quantizer.vq.layers.{i}._codebook.{embed,cluster_size,embed_avg,inited}``).

State changes happen only when the caller makes that collection mutable:

* k-means initialisation on the first batch (``kmeans_iters`` Lloyd iterations on at
  most ``kmeans_frames`` random valid frames), guarded by ``inited`` with ``lax.cond``
  so it runs once and stays jittable; it is skipped while ``Module.init`` builds the
  variables;
* EMA updates (decay, Laplace smoothing eps 1e-5) and dead-code replacement (codes whose
  EMA cluster size is below ``dead_code_threshold`` get a random frame of the batch)
  only when also ``update_codebook=True`` and the quantizer is not frozen.

Frames are ``[B, T, D]`` at 25 Hz. An optional ``mask [B, T]`` keeps padded frames out of
the k-means, EMA statistics, dead-code samples and commitment loss; without it every
frame counts (upstream). Random draws use the ``sample`` rng stream when the caller
provides it and a fixed key otherwise.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

COLLECTION = "quantizer"
RNG_STREAM = "sample"


def squared_distances(x: jax.Array, embed: jax.Array) -> jax.Array:
    """``||x_n - e_k||^2`` for ``x [N, D]`` and ``embed [K, D]`` -> ``[N, K]``."""
    return jnp.sum(jnp.square(x), axis=-1, keepdims=True) - 2.0 * x @ embed.T + jnp.sum(jnp.square(embed), axis=-1)[None, :]


def nearest_codes(x: jax.Array, embed: jax.Array) -> jax.Array:
    """Index of the nearest codebook row (squared L2) for each row of ``x [N, D]`` -> ``[N]`` int32."""
    return jnp.argmin(squared_distances(x, embed), axis=-1).astype(jnp.int32)


def _random_valid_order(key: jax.Array, valid: jax.Array) -> jax.Array:
    """A permutation of ``arange(N)`` with the valid rows first, in random order."""
    scores = jnp.where(valid > 0, jax.random.uniform(key, valid.shape), 2.0)
    return jnp.argsort(scores)


def sample_rows(key: jax.Array, x: jax.Array, valid: jax.Array, num: int) -> jax.Array:
    """``num`` random valid rows of ``x [N, D]``: without replacement when there are enough, with it otherwise."""
    k_order, k_draw = jax.random.split(key)
    order = _random_valid_order(k_order, valid)
    n_valid = jnp.sum(valid > 0)
    distinct = jnp.minimum(jnp.arange(num), x.shape[0] - 1)
    repeated = jax.random.randint(k_draw, (num,), 0, jnp.maximum(n_valid, 1))
    return x[order[jnp.where(n_valid >= num, distinct, repeated)]]


def kmeans(
    key: jax.Array, x: jax.Array, valid: jax.Array, num_clusters: int, num_iters: int, max_frames: int = 10_000
) -> tuple[jax.Array, jax.Array]:
    """Lloyd's k-means on the valid rows of ``x [N, D]`` (upstream ``core_vq.kmeans``).

    Uses at most ``max_frames`` random valid rows; means start at random rows; a cluster
    left empty keeps its previous mean.

    Returns:
      ``(means [num_clusters, D], counts [num_clusters])``, counts from the last assignment.
    """
    k_subset, k_init = jax.random.split(key)
    valid = valid.astype(x.dtype)
    if x.shape[0] > max_frames:
        keep = _random_valid_order(k_subset, valid)[:max_frames]
        x, valid = x[keep], valid[keep]
    means = sample_rows(k_init, x, valid, num_clusters)

    def step(_, carry):
        means, _counts = carry
        codes = nearest_codes(x, means)
        counts = jax.ops.segment_sum(valid, codes, num_clusters)
        sums = jax.ops.segment_sum(x * valid[:, None], codes, num_clusters)
        new = sums / jnp.maximum(counts, 1.0)[:, None]
        return jnp.where(counts[:, None] > 0, new, means), counts

    return lax.fori_loop(0, num_iters, step, (means, jnp.zeros((num_clusters,), x.dtype)))


class EuclideanCodebook(nn.Module):
    """One EMA codebook: nearest-neighbour lookup plus the state updates described in the module docstring."""

    dim: int
    codebook_size: int
    decay: float = 0.99
    kmeans_iters: int = 50
    kmeans_frames: int = 10_000
    dead_code_threshold: float = 2.0
    epsilon: float = 1e-5

    def setup(self):
        k, d = self.codebook_size, self.dim
        self.embed = self.variable(COLLECTION, "embed", jnp.zeros, (k, d), jnp.float32)
        self.cluster_size = self.variable(COLLECTION, "cluster_size", jnp.zeros, (k,), jnp.float32)
        self.embed_avg = self.variable(COLLECTION, "embed_avg", jnp.zeros, (k, d), jnp.float32)
        self.inited = self.variable(COLLECTION, "inited", lambda: jnp.zeros((), jnp.bool_))

    def __call__(self, x: jax.Array, valid: jax.Array, *, update: bool) -> tuple[jax.Array, jax.Array]:
        """``x [N, D]`` float32, ``valid [N]`` -> ``(codes [N], quantized [N, D])`` from the codebook before any EMA update."""
        if not self.is_mutable_collection(COLLECTION) or self.is_initializing():
            codes = nearest_codes(x, self.embed.value)
            return codes, self.embed.value[codes]
        key = self.make_rng(RNG_STREAM) if self.has_rng(RNG_STREAM) else jax.random.key(0)
        k_init, k_dead = jax.random.split(key)
        self._maybe_init(k_init, x, valid)
        embed = self.embed.value
        codes = nearest_codes(x, embed)
        if update:
            self._ema_update(k_dead, x, valid, codes)
        return codes, embed[codes]

    def decode(self, codes: jax.Array) -> jax.Array:
        """Codebook rows for integer ``codes`` of any shape -> ``codes.shape + (D,)``."""
        return self.embed.value[codes]

    def _maybe_init(self, key: jax.Array, x: jax.Array, valid: jax.Array) -> None:
        state = (self.embed.value, self.embed_avg.value, self.cluster_size.value, self.inited.value)

        def run_kmeans(_):
            means, counts = kmeans(key, x, valid, self.codebook_size, self.kmeans_iters, self.kmeans_frames)
            return means, means, counts, jnp.ones((), jnp.bool_)

        embed, embed_avg, cluster_size, inited = lax.cond(self.inited.value, lambda s: s, run_kmeans, state)
        self.embed.value, self.embed_avg.value, self.cluster_size.value, self.inited.value = embed, embed_avg, cluster_size, inited

    def _ema_update(self, key: jax.Array, x: jax.Array, valid: jax.Array, codes: jax.Array) -> None:
        k = self.codebook_size
        counts = jax.ops.segment_sum(valid, codes, k)
        sums = jax.ops.segment_sum(x * valid[:, None], codes, k)
        cluster_size = self.decay * self.cluster_size.value + (1.0 - self.decay) * counts
        embed_avg = self.decay * self.embed_avg.value + (1.0 - self.decay) * sums
        n = jnp.sum(cluster_size)
        smoothed = (cluster_size + self.epsilon) / (n + k * self.epsilon) * n
        embed = embed_avg / smoothed[:, None]
        if self.dead_code_threshold > 0:
            # As upstream, only `embed` is replaced; the EMA statistics keep their values.
            expired = cluster_size < self.dead_code_threshold
            embed = jnp.where(expired[:, None], sample_rows(key, x, valid, k), embed)
        self.cluster_size.value, self.embed_avg.value, self.embed.value = cluster_size, embed_avg, embed


class ResidualVectorQuantizer(nn.Module):
    """Residual VQ with ``n_q`` EMA codebooks of ``codebook_size`` entries in ``dim`` dimensions.

    Attributes:
      frozen: upstream's ``freeze_quantizer`` (eval-mode quantizer): plain lookup, no
        straight-through path, zero commitment loss, no EMA update, and no gradient to
        the input (``stop_gradient``), so the projection before it is frozen too.
    """

    dim: int
    codebook_size: int
    n_q: int = 1
    decay: float = 0.99
    kmeans_iters: int = 50
    kmeans_frames: int = 10_000
    dead_code_threshold: float = 2.0
    frozen: bool = False

    def setup(self):
        self.layers = [
            EuclideanCodebook(
                self.dim,
                self.codebook_size,
                decay=self.decay,
                kmeans_iters=self.kmeans_iters,
                kmeans_frames=self.kmeans_frames,
                dead_code_threshold=self.dead_code_threshold,
                name=f"layers_{i}",
            )
            for i in range(self.n_q)
        ]

    def __call__(
        self, x: jax.Array, mask: jax.Array | None = None, *, train: bool, update_codebook: bool = False
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Quantize ``x [B, T, D]`` (25 Hz frames).

        Args:
          mask: ``[B, T]`` valid frames, or ``None`` for all.
          train: straight-through estimator and commitment loss (unless frozen).
          update_codebook: EMA + dead-code update (needs the collection mutable; ignored when frozen).

        Returns:
          ``(quantized [B, T, D] float32, codes [n_q, B, T] int32, commit_loss scalar)``; the
          commitment loss is the mean over codebooks of ``mse(stop_gradient(q), residual)``.
        """
        batch, length, dim = x.shape
        if dim != self.dim:
            raise ValueError(f"{self.name}: expected {self.dim} feature channels, got {dim}")
        x = x.astype(jnp.float32).reshape(batch * length, dim)
        valid = jnp.ones((batch * length,), jnp.float32) if mask is None else mask.astype(jnp.float32).reshape(-1)
        if self.frozen:
            x = lax.stop_gradient(x)
        straight_through = train and not self.frozen
        residual = x
        quantized_out = jnp.zeros_like(x)
        all_codes, losses = [], []
        for layer in self.layers:
            codes, q = layer(lax.stop_gradient(residual), valid, update=update_codebook and not self.frozen)
            if straight_through:
                commit = jnp.sum(jnp.square(lax.stop_gradient(q) - residual) * valid[:, None]) / (jnp.maximum(jnp.sum(valid), 1.0) * dim)
                losses.append(commit)
                q = residual + lax.stop_gradient(q - residual)
            residual = residual - q
            quantized_out = quantized_out + q
            all_codes.append(codes.reshape(batch, length))
        commit_loss = jnp.mean(jnp.stack(losses)) if losses else jnp.zeros((), jnp.float32)
        return quantized_out.reshape(batch, length, dim), jnp.stack(all_codes), commit_loss

    def encode(self, x: jax.Array) -> jax.Array:
        """Codes ``[n_q, B, T]`` of ``x [B, T, D]`` (lookup only, never changes the codebooks)."""
        batch, length, dim = x.shape
        residual = x.astype(jnp.float32).reshape(batch * length, dim)
        all_codes = []
        for layer in self.layers:
            codes = nearest_codes(residual, layer.embed.value)
            residual = residual - layer.decode(codes)
            all_codes.append(codes.reshape(batch, length))
        return jnp.stack(all_codes)

    def decode(self, codes: jax.Array) -> jax.Array:
        """Sum of the codebook rows of ``codes [n_q', B, T]`` (``n_q' <= n_q``) -> ``[B, T, D]`` float32."""
        if codes.shape[0] > self.n_q:
            raise ValueError(f"{self.name}: got codes for {codes.shape[0]} codebooks, the quantizer has {self.n_q}")
        return sum((self.layers[i].decode(codes[i]) for i in range(codes.shape[0])), jnp.zeros((*codes.shape[1:], self.dim), jnp.float32))
