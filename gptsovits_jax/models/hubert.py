"""HuBERT (chinese-hubert-base) in Flax linen, read from a local Hugging Face directory; eval mode only.

Upstream GPT-SoVITS feeds ``HubertModel.last_hidden_state`` of TencentGameMate/chinese-hubert-base
to SoVITS. This module rebuilds the architecture a HuBERT ``config.json`` describes, for the
variant that model uses (``feat_extract_norm: "group"``, ``do_stable_layer_norm: false``, GELU),
and loads its weights from ``model.safetensors`` or ``pytorch_model.bin`` without torch:

* feature encoder: ``len(conv_dim)`` convolutions (``conv_kernel``, ``conv_stride``, no padding,
  bias if ``conv_bias``), each followed by GELU; the first also by a group norm with one group per
  channel (per-channel normalisation over time, eps 1e-5);
* feature projection: layer norm (if ``feat_proj_layer_norm``) and a dense layer to ``hidden_size``;
* positional embedding: a grouped convolution (``num_conv_pos_embeddings`` taps,
  ``num_conv_pos_embedding_groups`` groups, zero padding ``K // 2`` on both sides, the last frame
  dropped when ``K`` is even) with weight norm over the kernel-tap axis, then GELU, added to the input;
* encoder: layer norm, then ``num_hidden_layers`` post-norm transformer layers (self-attention +
  residual, layer norm, GELU feed-forward + residual, layer norm).

Dropout, layer drop and SpecAugment masking are training-time only and absent here.

Layouts are channels-last: audio ``[B, N]`` samples at 16 kHz, frames ``[B, T, C]`` at 50 Hz
(one per ``prod(conv_stride)`` = 320 samples). ``T = (N - R) // S + 1`` for ``N >= R``, with ``R``
the receptive field (400 samples for chinese-hubert-base) and ``S`` the total stride (320), and 0
otherwise: one frame fewer than ``N // 320`` when ``N mod 320 < 80``.

Batches of different lengths are exact: with ``lengths`` given, group-norm statistics run over each
item's valid frames, frames past an item's length are zeroed before the positional convolution and
masked out of attention, so every item's valid frames equal those of that item run alone (the
convolutions only look forward, so valid frames never read padding).

Parameters mirror the Hugging Face names: ``conv_layers.0`` becomes the submodule ``conv_layers_0``;
dense and convolution weights are ``kernel`` (``[in, out]``; ``[K, in / groups, out]`` for
convolutions, the transpose of PyTorch's ``[out, in / groups, K]``), norms hold ``scale`` and ``bias``,
the positional convolution holds ``weight_g [K]`` and ``weight_v [K, in / groups, out]``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gptsovits_jax.models import hf_weights
from gptsovits_jax.models.hf_weights import CONFIG_NAME
from gptsovits_jax.models.layers import conv1d, weight_norm

GROUP_NORM_EPS = 1e-5
"""``torch.nn.GroupNorm``'s default eps, which transformers' HuBERT uses for the first conv layer."""
UNUSED_KEYS = ("masked_spec_embed",)
"""Checkpoint entries of ``HubertModel`` that eval mode never reads (SpecAugment's mask vector)."""
BASE_PREFIX = "hubert."
"""Prefix of the base model's keys in task checkpoints (``HubertForCTC``...); stripped like ``from_pretrained`` does."""


class HubertConfigError(ValueError):
    """A HuBERT ``config.json`` this port cannot honour; the message names the file and the field."""


class HubertWeightsError(ValueError):
    """Weights that do not fit the model; the message lists every problem at once."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class HubertConfig:
    """The architecture fields of a Hugging Face HuBERT ``config.json`` that this port reads."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    feat_proj_layer_norm: bool = True
    layer_norm_eps: float = 1e-5

    @property
    def total_stride(self) -> int:
        """Input samples per output frame: the product of ``conv_stride`` (320)."""
        return math.prod(self.conv_stride)

    @property
    def receptive_field(self) -> int:
        """Input samples that one output frame reads (400 for chinese-hubert-base)."""
        field = 1
        for kernel, stride in zip(reversed(self.conv_kernel), reversed(self.conv_stride)):
            field = (field - 1) * stride + kernel
        return field

    def num_frames(self, n_samples: int) -> int:
        """Output frames for ``n_samples`` input samples: ``(N - R) // S + 1``, or 0 when ``N < R``."""
        if n_samples < self.receptive_field:
            return 0
        return (n_samples - self.receptive_field) // self.total_stride + 1


# Fields that must be present (sizes) and fields with transformers' HubertConfig defaults.
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim", "conv_kernel", "conv_stride")
_DEFAULTS = {
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "feat_proj_layer_norm": True,
    "layer_norm_eps": 1e-5,
}
# Fields that select code paths this port does not have: (field, value this port needs, default when absent).
_REQUIRED_CHOICES = (
    ("model_type", "hubert", None),
    ("feat_extract_norm", "group", "group"),
    ("do_stable_layer_norm", False, False),
    ("hidden_act", "gelu", "gelu"),
    ("feat_extract_activation", "gelu", "gelu"),
    ("conv_pos_batch_norm", False, False),
)


def config_from_dict(raw: Mapping[str, Any], source: str = CONFIG_NAME) -> HubertConfig:
    """Validate a parsed HuBERT ``config.json`` and keep its architecture fields.

    Raises :class:`HubertConfigError` naming ``source`` and the field for a missing size, another
    model type, a layer-norm feature encoder, the stable-layer-norm (pre-norm) encoder, an
    activation other than exact GELU, a batch-normed positional convolution, or inconsistent sizes.
    """
    values = hf_weights.config_values(
        raw, required=_REQUIRED, defaults=_DEFAULTS, choices=_REQUIRED_CHOICES, source=source, model="HuBERT", error=HubertConfigError
    )
    for field in ("conv_dim", "conv_kernel", "conv_stride"):
        values[field] = tuple(values[field])
    cfg = HubertConfig(**values)
    layers = raw.get("num_feat_extract_layers", len(cfg.conv_dim))
    if not len(cfg.conv_dim) == len(cfg.conv_kernel) == len(cfg.conv_stride) == layers:
        raise HubertConfigError(
            f"{source}: conv_dim, conv_kernel and conv_stride must each have num_feat_extract_layers ({layers}) entries, "
            f"got {len(cfg.conv_dim)}, {len(cfg.conv_kernel)}, {len(cfg.conv_stride)}"
        )
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_conv_pos_embeddings"):
        if not isinstance(getattr(cfg, field), int) or getattr(cfg, field) <= 0:
            raise HubertConfigError(f"{source}: {field} must be a positive integer, got {getattr(cfg, field)!r}")
    if cfg.hidden_size % cfg.num_attention_heads:
        raise HubertConfigError(f"{source}: num_attention_heads {cfg.num_attention_heads} does not divide hidden_size {cfg.hidden_size}")
    if cfg.hidden_size % cfg.num_conv_pos_embedding_groups:
        raise HubertConfigError(
            f"{source}: num_conv_pos_embedding_groups {cfg.num_conv_pos_embedding_groups} does not divide hidden_size {cfg.hidden_size}"
        )
    return cfg


def read_config_file(path: str | os.PathLike) -> HubertConfig:
    """The validated :class:`HubertConfig` of a ``config.json`` file; errors name the path."""
    raw = hf_weights.read_config_object(path, "HuBERT", "config.json and its weights", HubertConfigError)
    return config_from_dict(raw, str(path))


def read_config(directory: str | os.PathLike) -> HubertConfig:
    """The validated :class:`HubertConfig` of ``directory/config.json``; errors name the path."""
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"{directory}: HuBERT directory does not exist (ssl.hubert_path)")
    return read_config_file(Path(directory) / CONFIG_NAME)


# --------------------------------------------------------------------------- modules


def _gelu(x: jax.Array) -> jax.Array:
    """transformers' ``"gelu"``: the exact (erf) form."""
    return jax.nn.gelu(x, approximate=False)


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class GroupNorm(nn.Module):
    """One group per channel: each channel normalised over time, ``[B, T, C] -> [B, T, C]``, eps 1e-5.

    ``lengths [B]`` (valid frames) restrict the statistics to each item's valid frames.
    """

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        if lengths is None:
            mean = jnp.mean(x, axis=1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=1, keepdims=True)
        else:
            mask = (jnp.arange(x.shape[1])[None, :] < lengths[:, None])[..., None].astype(x.dtype)
            count = jnp.maximum(lengths, 1)[:, None, None].astype(x.dtype)
            mean = jnp.sum(x * mask, axis=1, keepdims=True) / count
            var = jnp.sum(jnp.square(x - mean) * mask, axis=1, keepdims=True) / count
        return (x - mean) * jax.lax.rsqrt(var + GROUP_NORM_EPS) * scale + bias


class ConvLayer(nn.Module):
    """One feature-encoder layer: convolution (no padding), group norm if ``group_norm``, GELU.

    ``x [B, T_in, C_in] -> [B, (T_in - kernel) // stride + 1, features]``; ``lengths [B]`` are the
    valid output frames per item (for the group-norm statistics).
    """

    features: int
    kernel: int
    stride: int
    use_bias: bool
    group_norm: bool

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None) -> jax.Array:
        conv = nn.Conv(self.features, (self.kernel,), strides=(self.stride,), padding="VALID", use_bias=self.use_bias, name="conv")
        x = conv(x)
        if self.group_norm:
            x = GroupNorm(name="layer_norm")(x, lengths)
        return _gelu(x)


class FeatureEncoder(nn.Module):
    """The convolutional feature encoder: ``wave [B, N] -> [B, T, conv_dim[-1]]``; ``lengths [B]`` in samples."""

    config: HubertConfig

    @nn.compact
    def __call__(self, wave: jax.Array, lengths: jax.Array | None) -> jax.Array:
        cfg = self.config
        x = wave[..., None]
        for i, (features, kernel, stride) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            if lengths is not None:
                lengths = (lengths - kernel) // stride + 1
            x = ConvLayer(features, kernel, stride, cfg.conv_bias, group_norm=i == 0, name=f"conv_layers_{i}")(x, lengths)
        return x


class FeatureProjection(nn.Module):
    """Layer norm (if ``feat_proj_layer_norm``) and dense: ``[B, T, conv_dim[-1]] -> [B, T, hidden_size]``."""

    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.config.feat_proj_layer_norm:
            x = _layer_norm(self.config.layer_norm_eps, "layer_norm")(x)
        return nn.Dense(self.config.hidden_size, name="projection")(x)


class WeightNormConv(nn.Module):
    """Grouped convolution with weight norm over the kernel-tap axis, ``[B, T, C] -> [B, T + 2 (K // 2) - K + 1, C]``.

    Zero padding ``K // 2`` on both sides. The effective kernel is ``weight_g * weight_v / ||weight_v||``
    with the norm taken per tap (PyTorch ``weight_norm(dim=2)`` on ``[out, in / groups, K]``).
    """

    kernel_size: int
    groups: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        weight_v = self.param("weight_v", nn.initializers.normal(0.02), (self.kernel_size, channels // self.groups, channels))
        weight_g = self.param("weight_g", nn.initializers.ones, (self.kernel_size,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        pad = self.kernel_size // 2
        return conv1d(x, weight_norm(weight_v, weight_g, axis=0), padding=(pad, pad), groups=self.groups) + bias


class Attention(nn.Module):
    """Multi-head self-attention with biased q/k/v/out projections: ``[B, T, C] -> [B, T, C]``.

    ``mask [B, T]`` (1 on valid frames) removes padded frames as keys.
    """

    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        batch, length, channels = x.shape
        head_dim = channels // self.num_heads

        def heads(name: str) -> jax.Array:
            return nn.Dense(channels, name=name)(x).reshape(batch, length, self.num_heads, head_dim)

        q = heads("q_proj") * head_dim**-0.5
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, heads("k_proj"))
        if mask is not None:
            scores = jnp.where(mask[:, None, None, :] > 0, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, heads("v_proj")).reshape(batch, length, channels)
        return nn.Dense(channels, name="out_proj")(out)


class PositionalConvEmbedding(nn.Module):
    """Relative position information: ``GELU(conv(x))`` with the trailing frame dropped for even ``K``; ``[B, T, C] -> [B, T, C]``."""

    kernel_size: int
    groups: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = WeightNormConv(self.kernel_size, self.groups, name="conv")(x)
        if self.kernel_size % 2 == 0:
            y = y[:, :-1]
        return _gelu(y)


class FeedForward(nn.Module):
    """``dense(GELU(dense(x)))``: ``[B, T, C] -> [B, T, intermediate_size] -> [B, T, C]``."""

    intermediate_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = _gelu(nn.Dense(self.intermediate_size, name="intermediate_dense")(x))
        return nn.Dense(x.shape[-1], name="output_dense")(hidden)


class EncoderLayer(nn.Module):
    """Post-norm transformer layer: ``x = LN(x + Attn(x)); x = LN(x + FFN(x))``, ``[B, T, C] -> [B, T, C]``."""

    num_heads: int
    intermediate_size: int
    eps: float

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        x = _layer_norm(self.eps, "layer_norm")(x + Attention(self.num_heads, name="attention")(x, mask))
        return _layer_norm(self.eps, "final_layer_norm")(x + FeedForward(self.intermediate_size, name="feed_forward")(x))


class Encoder(nn.Module):
    """Positional convolution, layer norm, post-norm transformer layers: ``[B, T, C] -> [B, T, C]``.

    ``mask [B, T]`` (1 on valid frames): padded frames are zeroed first, so they act as the
    positional convolution's zero padding, and are never attended to.
    """

    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        cfg = self.config
        if mask is not None:
            x = x * mask[..., None]
        x = x + PositionalConvEmbedding(cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, name="pos_conv_embed")(x)
        x = _layer_norm(cfg.layer_norm_eps, "layer_norm")(x)
        for i in range(cfg.num_hidden_layers):
            x = EncoderLayer(cfg.num_attention_heads, cfg.intermediate_size, cfg.layer_norm_eps, name=f"layers_{i}")(x, mask)
        return x


class Hubert(nn.Module):
    """``HubertModel.last_hidden_state`` of raw 16 kHz audio, eval mode.

    ``__call__(wave [B, N], lengths [B] | None) -> [B, T, hidden_size]`` with
    ``T = config.num_frames(N)``. With ``lengths`` (valid samples per item, at least
    ``config.receptive_field``) item ``b``'s first ``config.num_frames(lengths[b])`` frames are exactly
    what that item alone gives; later frames are padding. Upstream passes the waveform as is (no
    ``Wav2Vec2FeatureExtractor`` normalisation); so does this module.
    """

    config: HubertConfig

    @nn.compact
    def __call__(self, wave: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        x = FeatureEncoder(cfg, name="feature_extractor")(wave.astype(jnp.float32), lengths)
        x = FeatureProjection(cfg, name="feature_projection")(x)
        mask = None
        if lengths is not None:
            for kernel, stride in zip(cfg.conv_kernel, cfg.conv_stride):
                lengths = (lengths - kernel) // stride + 1
            mask = (jnp.arange(x.shape[1])[None, :] < lengths[:, None]).astype(x.dtype)
        return Encoder(cfg, name="encoder")(x, mask)


# --------------------------------------------------------------------------- weights


_LIST_ENTRY = re.compile(r"^(conv_layers|layers)_(\d+)$")
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "weight_g": "weight_g", "weight_v": "weight_v"}


def _checkpoint_key(path: tuple[str, ...]) -> str:
    """The Hugging Face name of a Flax parameter path (``weight_g``/``weight_v`` in their classic spelling)."""
    modules = [_LIST_ENTRY.sub(r"\1.\2", part) for part in path[:-1]]
    return ".".join([*modules, _LEAF_NAMES[path[-1]]])


def _slots(abstract_params: Mapping[str, Any]) -> dict[str, hf_weights.Slot]:
    """Every checkpoint key the model needs, with its shape and how it becomes the Flax leaf."""
    slots = {}
    for path, leaf in hf_weights.flatten(abstract_params).items():
        shape = tuple(leaf.shape)
        name = path[-1]
        if name in ("kernel", "weight_v"):
            slots[_checkpoint_key(path)] = hf_weights.Slot(path, tuple(reversed(shape)), hf_weights.transpose)
        elif name == "weight_g":
            slots[_checkpoint_key(path)] = hf_weights.Slot(path, (1, 1, shape[0]), lambda x: x.reshape(-1))
        else:
            slots[_checkpoint_key(path)] = hf_weights.Slot(path, shape, hf_weights.unchanged)
    return slots


_PARAMETRIZED = {
    ".parametrizations.weight.original0": ".weight_g",
    ".parametrizations.weight.original1": ".weight_v",
}


def _canonical_keys(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip a ``hubert.`` base-model prefix and spell weight-norm tensors ``weight_g``/``weight_v``."""
    keys = list(state_dict)
    strip = bool(keys) and all(key.startswith(BASE_PREFIX) for key in keys)
    out = {}
    for key, value in state_dict.items():
        name = key[len(BASE_PREFIX) :] if strip else key
        for new, old in _PARAMETRIZED.items():
            if name.endswith(new):
                name = name[: -len(new)] + old
        out[name] = value
    return out


def params_from_state_dict(state_dict: Mapping[str, np.ndarray], config: HubertConfig, source: str = "state dict") -> dict[str, Any]:
    """Flax parameters (float32) of :class:`Hubert` from a transformers ``HubertModel`` state dict.

    Strict: keys the model does not use (other than :data:`UNUSED_KEYS`), parameters the state dict
    does not fill and shape mismatches are all listed in one :class:`HubertWeightsError`.
    """
    return hf_weights.params_from_slots(
        _canonical_keys(state_dict),
        _slots(abstract_params(config)),
        ignore=UNUSED_KEYS.__contains__,
        error=HubertWeightsError,
        source=source,
        model="HuBERT",
    )


def abstract_params(config: HubertConfig) -> dict[str, Any]:
    """The parameter tree of :class:`Hubert` as ``jax.ShapeDtypeStruct`` leaves (nothing allocated)."""
    wave = jax.ShapeDtypeStruct((1, max(config.receptive_field, 16000)), jnp.float32)
    return jax.eval_shape(lambda w: Hubert(config).init(jax.random.key(0), w), wave)["params"]


def find_weights(directory: str | os.PathLike) -> Path:
    """The weight file of a Hugging Face directory: ``model.safetensors``, else ``pytorch_model.bin``."""
    return hf_weights.find_weights(directory, "HuBERT")


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{key: array}`` of a ``.safetensors`` file (safetensors' numpy API) or a ``.bin`` torch pickle (torch-free reader)."""
    return hf_weights.read_state_dict(path, HubertWeightsError)


def weights_fingerprint(directory: str | os.PathLike) -> str:
    """sha256 (16 hex digits) of ``config.json`` and the weight file's bytes: which weights made a feature."""
    return hf_weights.fingerprint(Path(directory) / CONFIG_NAME, find_weights(directory))


def load_hubert(directory: str | os.PathLike, expected_dim: int | None = None) -> tuple[Hubert, dict[str, Any]]:
    """The :class:`Hubert` module and its float32 parameters from a Hugging Face directory.

    Reads ``config.json`` and ``model.safetensors`` (preferred) or ``pytorch_model.bin``. Raises
    ``FileNotFoundError`` naming the missing path, :class:`HubertConfigError` for a config this
    port cannot honour (also when ``hidden_size`` differs from ``expected_dim``, i.e. ``ssl.dim``),
    and :class:`HubertWeightsError` for weights that do not fit.
    """
    config = read_config(directory)
    if expected_dim is not None and config.hidden_size != expected_dim:
        raise HubertConfigError(f"{Path(directory) / CONFIG_NAME}: hidden_size {config.hidden_size} does not match ssl.dim {expected_dim}")
    weights = find_weights(directory)
    params = params_from_state_dict(read_state_dict(weights), config, str(weights))
    return Hubert(config), params


def count_params(params: Mapping[str, Any]) -> int:
    """Number of scalars in a parameter tree (arrays or ``ShapeDtypeStruct`` leaves)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def config_to_dict(config: HubertConfig) -> dict[str, Any]:
    """The config as plain JSON values."""
    return {name: list(value) if isinstance(value, tuple) else value for name, value in dataclasses.asdict(config).items()}
