"""HiFi-GAN generator and the multi-period + scale discriminator of SoVITS v2 (upstream ``models.py``).

Waveforms are ``[B, N]`` samples at 32 kHz; latent frames ``[B, T, C]`` at 50 Hz.
Initialisation is what upstream's modules hold after construction, PyTorch's default
everywhere. Upstream applies ``commons.init_weights`` (``N(0, 0.01)``) to the upsampling and
residual convolutions *after* ``weight_norm``, where it overwrites only the derived ``weight``
tensor that the next forward recomputes from ``weight_g``/``weight_v``; so ``weight_v`` keeps
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` and ``weight_g = ||weight_v||``. (``N(0, 0.01)`` kernels,
smaller than that wherever ``fan_in < 3333``, made the posterior collapse in training: the
decoder learnt only the average spectrum.)

Parameter names follow upstream (see :mod:`gptsovits_jax.models.layers` for the rules):
``conv_pre``, ``cond``, ``ups_{i}``, ``resblocks_{i * n_kernels + j}`` (each with
``convs1_{k}``/``convs2_{k}``), ``conv_post``; the discriminator holds
``discriminators_0`` (scale) and ``discriminators_{1..}`` (one per period), each with
``convs_{i}`` and ``conv_post``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptsovits_jax.config import DiscriminatorConfig
from gptsovits_jax.models.layers import LRELU_SLOPE, Conv1d, Conv2d, ConvTranspose1d, Dtype


def _leaky(x: jax.Array, slope: float = LRELU_SLOPE) -> jax.Array:
    return jax.nn.leaky_relu(x, slope)


class ResBlock1(nn.Module):
    """HiFi-GAN residual block type 1: for each dilation d, ``x += c2(lrelu(c1_d(lrelu(x))))`` ('same' padding).

    ``[B, T, C]`` -> ``[B, T, C]``; ``convs1_{k}`` has dilation ``dilations[k]``, ``convs2_{k}`` dilation 1.
    """

    channels: int
    kernel_size: int
    dilations: Sequence[int]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        for i, d in enumerate(self.dilations):
            xt = Conv1d(
                self.channels,
                k,
                padding=(k * d - d) // 2,
                dilation=d,
                norm="weight",
                dtype=self.dtype,
                name=f"convs1_{i}",
            )(_leaky(x))
            xt = Conv1d(self.channels, k, padding=(k - 1) // 2, norm="weight", dtype=self.dtype, name=f"convs2_{i}")(_leaky(xt))
            x = x + xt
        return x


class Generator(nn.Module):
    """HiFi-GAN generator: latent frames ``[B, T, C]`` (+ speaker ``g [B, gin]``) -> waveform ``[B, T * prod(upsample_rates)]``.

    ``conv_pre`` (k7, plain) + ``cond(g)``; per stage: leaky ReLU 0.1, weight-normed
    transposed convolution (padding ``(k - u) / 2``), mean of the ResBlock1 outputs;
    then leaky ReLU with slope 0.01 (upstream's default ``F.leaky_relu``), ``conv_post``
    (k7, plain, no bias) and tanh.
    """

    resblock_kernel_sizes: Sequence[int]
    resblock_dilation_sizes: Sequence[Sequence[int]]
    upsample_rates: Sequence[int]
    upsample_initial_channel: int
    upsample_kernel_sizes: Sequence[int]
    gin_channels: int = 0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, g: jax.Array | None = None) -> jax.Array:
        x = Conv1d(self.upsample_initial_channel, 7, padding=3, dtype=self.dtype, name="conv_pre")(x)
        if self.gin_channels:
            if g is None:
                raise ValueError(f"{self.name}: built with gin_channels={self.gin_channels} but called without g")
            x = x + Conv1d(self.upsample_initial_channel, 1, dtype=self.dtype, name="cond")(g[:, None, :])
        n_kernels = len(self.resblock_kernel_sizes)
        for i, (u, k) in enumerate(zip(self.upsample_rates, self.upsample_kernel_sizes, strict=True)):
            ch = self.upsample_initial_channel // 2 ** (i + 1)
            x = ConvTranspose1d(ch, k, u, padding=(k - u) // 2, norm="weight", dtype=self.dtype, name=f"ups_{i}")(_leaky(x))
            xs = [
                ResBlock1(ch, rk, tuple(rd), dtype=self.dtype, name=f"resblocks_{i * n_kernels + j}")(x)
                for j, (rk, rd) in enumerate(zip(self.resblock_kernel_sizes, self.resblock_dilation_sizes, strict=True))
            ]
            x = sum(xs[1:], xs[0]) / n_kernels
        x = Conv1d(1, 7, padding=3, use_bias=False, dtype=self.dtype, name="conv_post")(_leaky(x, 0.01))
        return jnp.tanh(x[..., 0])


class DiscriminatorS(nn.Module):
    """Scale discriminator on the raw waveform ``[B, N]`` -> ``(logits [B, L], feature maps [B, T_l, C_l])``.

    Layer 0: k15 s1; middle layers: k41 s4 grouped; last: k5 s1; ``conv_post`` k3 -> 1 channel.
    For N = 20480 and the v2 channels, L = 80.
    """

    channels: Sequence[int]
    groups: Sequence[int]
    norm: str = "weight"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        x = audio[..., None].astype(self.dtype)
        fmaps = []
        last = len(self.channels) - 1
        for i, (ch, grp) in enumerate(zip(self.channels, self.groups, strict=True)):
            kernel, stride = (15, 1) if i == 0 else (5, 1) if i == last else (41, 4)
            x = Conv1d(
                ch, kernel, stride=stride, padding=(kernel - 1) // 2, groups=grp, norm=self.norm, dtype=self.dtype, name=f"convs_{i}"
            )(x)
            x = _leaky(x)
            fmaps.append(x)
        x = Conv1d(1, 3, padding=1, norm=self.norm, dtype=self.dtype, name="conv_post")(x)
        fmaps.append(x)
        return x.reshape(x.shape[0], -1), fmaps


class DiscriminatorP(nn.Module):
    """Period discriminator: the waveform ``[B, N]`` is reflect-padded to a multiple of ``period`` and folded to
    ``[B, N / period, period, 1]``; Conv2d (5, 1) stride (3, 1) layers (the last with stride 1) and ``conv_post`` (3, 1).

    Returns ``(logits [B, L], feature maps [B, H_l, period, C_l])``; for N = 20480 L is 254, 255, 255, 259, 253
    for periods 2, 3, 5, 7, 11.
    """

    period: int
    channels: Sequence[int]
    kernel_size: int = 5
    stride: int = 3
    norm: str = "weight"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        batch, n = audio.shape
        if n % self.period:
            audio = jnp.pad(audio, ((0, 0), (0, self.period - n % self.period)), mode="reflect")
        x = audio.reshape(batch, -1, self.period, 1).astype(self.dtype)
        fmaps = []
        pad = (self.kernel_size - 1) // 2
        last = len(self.channels) - 1
        for i, ch in enumerate(self.channels):
            stride = 1 if i == last else self.stride
            x = Conv2d(ch, (self.kernel_size, 1), (stride, 1), (pad, 0), norm=self.norm, dtype=self.dtype, name=f"convs_{i}")(x)
            x = _leaky(x)
            fmaps.append(x)
        x = Conv2d(1, (3, 1), (1, 1), (1, 0), norm=self.norm, dtype=self.dtype, name="conv_post")(x)
        fmaps.append(x)
        return x.reshape(batch, -1), fmaps


class MultiPeriodDiscriminator(nn.Module):
    """Scale discriminator plus one period discriminator per ``config.periods`` (upstream v2 ``MultiPeriodDiscriminator``).

    Convolutions are weight-normed, or spectral-normed with ``config.use_spectral_norm``
    (the power-iteration vectors then live in the ``spectral_stats`` collection and are
    updated when it is mutable).
    """

    config: DiscriminatorConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> tuple[list[jax.Array], list[list[jax.Array]]]:
        """``audio [B, N]`` -> ``(logits: one [B, L_d] per discriminator, fmaps: per discriminator, per layer)``."""
        cfg = self.config
        norm = "spectral" if cfg.use_spectral_norm else "weight"
        discs = [DiscriminatorS(cfg.scale_channels, cfg.scale_groups, norm=norm, dtype=self.dtype, name="discriminators_0")]
        discs += [
            DiscriminatorP(p, cfg.period_channels, norm=norm, dtype=self.dtype, name=f"discriminators_{i + 1}")
            for i, p in enumerate(cfg.periods)
        ]
        logits, fmaps = [], []
        for disc in discs:
            logit, fmap = disc(audio)
            logits.append(logit)
            fmaps.append(fmap)
        return logits, fmaps
