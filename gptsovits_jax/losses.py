"""Losses of both stages, as upstream GPT-SoVITS v2 defines them.

Everything here is computed in float32 whatever the compute dtype of the model.
Shapes are channels-last: ``[B, T, C]`` for frames, ``[B, N]`` for waveforms.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _f32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.float32)


def mel_l1_loss(mel_real: jax.Array, mel_fake: jax.Array) -> jax.Array:
    """Mean absolute error of two log-mel spectrograms ``[B, T, n_mels]`` (upstream multiplies by ``c_mel`` = 45)."""
    return jnp.mean(jnp.abs(_f32(mel_real) - _f32(mel_fake)))


def kl_loss(z_p: jax.Array, logs_q: jax.Array, m_p: jax.Array, logs_p: jax.Array, mask: jax.Array) -> jax.Array:
    """VITS KL term between the flowed posterior sample and the prior.

    Args:
      z_p: flow output of the posterior sample, ``[B, T, C]``.
      logs_q: posterior log-std, ``[B, T, C]``.
      m_p, logs_p: prior mean and log-std from the text encoder, ``[B, T, C]``.
      mask: valid frames, ``[B, T]`` (1 valid, 0 padding).

    Returns:
      Scalar: the per-element KL summed over channels and valid frames, divided by
      the number of valid frames (not frames x channels, as upstream).
    """
    z_p, logs_q, m_p, logs_p, mask = map(_f32, (z_p, logs_q, m_p, logs_p, mask))
    kl = logs_p - logs_q - 0.5 + 0.5 * jnp.square(z_p - m_p) * jnp.exp(-2.0 * logs_p)
    return jnp.sum(kl * mask[..., None]) / jnp.maximum(jnp.sum(mask), 1.0)


def feature_matching_loss(fmaps_real: Sequence[Sequence[jax.Array]], fmaps_fake: Sequence[Sequence[jax.Array]]) -> jax.Array:
    """Sum over discriminators and layers of ``mean |f_real - f_fake|`` (upstream weights it by ``c_fm`` = 2).

    Real features are treated as constants (``stop_gradient``).
    """
    total = jnp.zeros((), jnp.float32)
    for layers_r, layers_g in zip(fmaps_real, fmaps_fake, strict=True):
        for fr, fg in zip(layers_r, layers_g, strict=True):
            total = total + jnp.mean(jnp.abs(jax.lax.stop_gradient(_f32(fr)) - _f32(fg)))
    return total


def discriminator_loss(
    logits_real: Sequence[jax.Array], logits_fake: Sequence[jax.Array]
) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
    """LSGAN discriminator loss: ``sum_d mean((1 - D(y))^2) + mean(D(y_hat)^2)``.

    Returns the total and the per-discriminator real and fake terms.
    """
    real_terms = [jnp.mean(jnp.square(1.0 - _f32(r))) for r in logits_real]
    fake_terms = [jnp.mean(jnp.square(_f32(g))) for g in logits_fake]
    total = sum(real_terms, jnp.zeros((), jnp.float32)) + sum(fake_terms, jnp.zeros((), jnp.float32))
    return total, real_terms, fake_terms


def generator_adversarial_loss(logits_fake: Sequence[jax.Array]) -> jax.Array:
    """LSGAN generator loss: ``sum_d mean((1 - D(y_hat))^2)``."""
    return sum((jnp.mean(jnp.square(1.0 - _f32(g))) for g in logits_fake), jnp.zeros((), jnp.float32))


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array, reduction: str = "sum") -> jax.Array:
    """Cross-entropy over valid positions.

    Args:
      logits: ``[B, T, V]`` unnormalised scores.
      targets: ``[B, T]`` integer ids in ``[0, V)``.
      mask: ``[B, T]``, 1 where the position counts.
      reduction: ``"sum"`` (upstream stage 1: summed over tokens) or ``"mean"`` (per valid token).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    logp = jax.nn.log_softmax(_f32(logits), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    mask = _f32(mask)
    total = jnp.sum(nll * mask)
    if reduction == "mean":
        return total / jnp.maximum(jnp.sum(mask), 1.0)
    return total


def top_k_accuracy(logits: jax.Array, targets: jax.Array, mask: jax.Array, k: int = 3, ignore_id: int | None = None) -> jax.Array:
    """Fraction of valid positions whose target is among the ``k`` highest logits.

    Positions where ``mask`` is 0 or the target equals ``ignore_id`` (EOS for stage 1)
    are not counted. Ties are broken by ``lax.top_k``'s order.
    """
    _, top = jax.lax.top_k(_f32(logits), k)
    hit = jnp.any(top == targets[..., None], axis=-1)
    valid = mask.astype(bool)
    if ignore_id is not None:
        valid = valid & (targets != ignore_id)
    valid = _f32(valid)
    return jnp.sum(_f32(hit) * valid) / jnp.maximum(jnp.sum(valid), 1.0)
