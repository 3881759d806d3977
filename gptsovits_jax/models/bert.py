"""BERT (chinese-roberta-wwm-ext-large) in Flax linen, read from a local Hugging Face directory; eval mode only.

Upstream GPT-SoVITS feeds the GPT ``hidden_states[-3]`` of hfl/chinese-roberta-wwm-ext-large, a
``BertForMaskedLM`` (``model_type: "bert"``: absolute positions, post-norm layers). This module
rebuilds the encoder a BERT ``config.json`` describes and loads its weights from
``model.safetensors`` or ``pytorch_model.bin`` without torch:

* embeddings: word + absolute position (``0 .. T - 1``) + token type (all type 0, as upstream's
  single-sentence input), then layer norm (``layer_norm_eps``);
* ``num_hidden_layers`` post-norm layers: self-attention (biased query/key/value, scores scaled by
  ``1 / sqrt(head_dim)``, padded keys masked) + dense, residual, layer norm; GELU (erf) feed-forward,
  residual, layer norm.

``hidden_states`` are the embeddings' output and each layer's output (``num_hidden_layers + 1``
entries, transformers' ``output_hidden_states``). :class:`Bert` computes only the layers the
requested entry needs: ``hidden_states[-3]`` skips the last two layers.

The masked-language-model head (``cls.*``), the pooler (``bert.pooler.*``, absent from
``BertForMaskedLM``) and the position/token-type index buffers that older transformers saved are
checkpoint entries feature extraction never reads; they are skipped by name (:data:`IGNORED_PREFIXES`).
Every other entry must fill exactly one parameter of matching shape.

Layouts: token ids ``[B, T]`` int, mask ``[B, T]`` (1 on tokens, 0 on right padding), hidden states
``[B, T, hidden_size]``. Parameters mirror the Hugging Face names: ``encoder.layer.0`` becomes the
submodule ``layer_0``; dense weights are ``kernel [in, out]`` (the transpose of PyTorch's),
embeddings ``embedding [n, hidden]``, layer norms ``scale`` and ``bias``.
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

BASE_PREFIX = "bert."
"""Prefix of the encoder's keys in ``BertForMaskedLM`` / ``BertForPreTraining`` checkpoints; stripped like ``from_pretrained`` does."""
IGNORED_PREFIXES = ("cls.", "pooler.", "embeddings.position_ids", "embeddings.token_type_ids")
"""Checkpoint entries (after the ``bert.`` prefix is stripped) that feature extraction never reads:
the MLM/NSP heads, the pooler, and index buffers (``arange`` and zeros) that older transformers saved."""
FEATURE_LAYER = -3
"""Upstream's choice of hidden state: ``hidden_states[-3]``, the output of the third layer from the top."""


class BertConfigError(ValueError):
    """A BERT ``config.json`` this port cannot honour; the message names the file and the field."""


class BertWeightsError(ValueError):
    """Weights that do not fit the model; the message lists every problem at once."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class BertConfig:
    """The architecture fields of a Hugging Face BERT ``config.json`` that this port reads (defaults: chinese-roberta-wwm-ext-large)."""

    vocab_size: int = 21128
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def hidden_state_index(self, layer: int) -> int:
        """``hidden_states[layer]`` as a non-negative index into the ``num_hidden_layers + 1`` entries."""
        count = self.num_hidden_layers + 1
        if not -count <= layer < count:
            raise IndexError(f"hidden_states[{layer}] does not exist: the model has {count} hidden states")
        return layer % count


_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings")
_DEFAULTS = {"type_vocab_size": 2, "layer_norm_eps": 1e-12}
# Fields that select code paths this port does not have: (field, value this port needs, default when absent).
_REQUIRED_CHOICES = (
    ("model_type", "bert", None),
    ("hidden_act", "gelu", "gelu"),
    ("position_embedding_type", "absolute", "absolute"),
    ("is_decoder", False, False),
    ("add_cross_attention", False, False),
)


def config_from_dict(raw: Mapping[str, Any], source: str = CONFIG_NAME) -> BertConfig:
    """Validate a parsed BERT ``config.json`` and keep its architecture fields.

    Raises :class:`BertConfigError` naming ``source`` and the field for another model type (e.g.
    ``roberta``, whose positions start after the padding index), an activation other than exact GELU,
    relative position embeddings, a decoder, a missing size, fewer than two layers (no
    ``hidden_states[-3]``) or inconsistent sizes.
    """
    values = hf_weights.config_values(
        raw, required=_REQUIRED, defaults=_DEFAULTS, choices=_REQUIRED_CHOICES, source=source, model="BERT", error=BertConfigError
    )
    cfg = BertConfig(**values)
    for field in (*_REQUIRED, "type_vocab_size"):
        value = getattr(cfg, field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise BertConfigError(f"{source}: {field} must be a positive integer, got {value!r}")
    if cfg.num_hidden_layers < 2:
        raise BertConfigError(f"{source}: num_hidden_layers {cfg.num_hidden_layers}: upstream's hidden_states[-3] needs at least 2 layers")
    if cfg.hidden_size % cfg.num_attention_heads:
        raise BertConfigError(f"{source}: num_attention_heads {cfg.num_attention_heads} does not divide hidden_size {cfg.hidden_size}")
    return cfg


def read_config_file(path: str | os.PathLike) -> BertConfig:
    """The validated :class:`BertConfig` of a ``config.json`` file; errors name the path."""
    raw = hf_weights.read_config_object(path, "BERT", "config.json, its weights and its vocabulary", BertConfigError)
    return config_from_dict(raw, str(path))


def read_config(directory: str | os.PathLike) -> BertConfig:
    """The validated :class:`BertConfig` of ``directory/config.json``; errors name the path."""
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"{directory}: BERT directory does not exist (text.bert_path)")
    return read_config_file(Path(directory) / CONFIG_NAME)


# --------------------------------------------------------------------------- modules


def _layer_norm(eps: float) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name="LayerNorm")


class Embeddings(nn.Module):
    """Word + position + token-type (0) embeddings, then layer norm: ids ``[B, T]`` -> ``[B, T, hidden_size]``."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        cfg = self.config
        length = input_ids.shape[1]
        words = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(input_ids)
        positions = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, name="position_embeddings")(jnp.arange(length)[None])
        types = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings")(jnp.zeros((1, length), jnp.int32))
        return _layer_norm(cfg.layer_norm_eps)(words + positions + types)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention: ``[B, T, C] -> [B, T, C]``; ``mask [B, T]`` removes padded keys."""

    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        batch, length, channels = x.shape
        head_dim = channels // self.num_heads

        def heads(name: str) -> jax.Array:
            return nn.Dense(channels, name=name)(x).reshape(batch, length, self.num_heads, head_dim)

        scores = jnp.einsum("bqhd,bkhd->bhqk", heads("query"), heads("key")) / math.sqrt(head_dim)
        scores = jnp.where(mask[:, None, None, :] > 0, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        return jnp.einsum("bhqk,bkhd->bqhd", weights, heads("value")).reshape(batch, length, channels)


class DenseResidualNorm(nn.Module):
    """``LayerNorm(residual + dense(x))``: the ``*.output`` block of a BERT layer; ``[B, T, *] -> [B, T, features]``."""

    features: int
    eps: float

    @nn.compact
    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        return _layer_norm(self.eps)(residual + nn.Dense(self.features, name="dense")(x))


class Attention(nn.Module):
    """Self-attention with its output block: ``x -> LayerNorm(x + dense(attn(x)))``, ``[B, T, C] -> [B, T, C]``."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        cfg = self.config
        context = SelfAttention(cfg.num_attention_heads, name="self")(x, mask)
        return DenseResidualNorm(cfg.hidden_size, cfg.layer_norm_eps, name="output")(context, x)


class Intermediate(nn.Module):
    """``GELU(dense(x))``: ``[B, T, C] -> [B, T, intermediate_size]``."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(nn.Dense(self.features, name="dense")(x), approximate=False)


class Layer(nn.Module):
    """One post-norm transformer layer: ``[B, T, C] -> [B, T, C]``."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        cfg = self.config
        x = Attention(cfg, name="attention")(x, mask)
        hidden = Intermediate(cfg.intermediate_size, name="intermediate")(x)
        return DenseResidualNorm(cfg.hidden_size, cfg.layer_norm_eps, name="output")(hidden, x)


class Encoder(nn.Module):
    """The first ``num_layers`` layers of the stack; returns every input and output, ``num_layers + 1`` x ``[B, T, C]``."""

    config: BertConfig
    num_layers: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> list[jax.Array]:
        states = [x]
        for i in range(self.num_layers):
            x = Layer(self.config, name=f"layer_{i}")(x, mask)
            states.append(x)
        return states


class Bert(nn.Module):
    """The BERT encoder's hidden states, eval mode.

    ``__call__(input_ids [B, T], mask [B, T] | None) -> [B, T, hidden_size]``: ``hidden_states[layer]``
    of transformers' ``output_hidden_states`` (``layer`` may be negative; ``-3`` is upstream's feature).
    With ``layer=None`` all ``num_hidden_layers + 1`` states, stacked ``[L + 1, B, T, hidden_size]``.
    Only the layers the requested state depends on are built and run, so ``layer=-3`` needs no
    parameters for the last two layers. ``mask`` (1 on tokens) removes right padding from attention;
    each item's valid rows equal that item run alone.
    """

    config: BertConfig
    layer: int | None = FEATURE_LAYER

    @nn.compact
    def __call__(self, input_ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        if input_ids.shape[1] > cfg.max_position_embeddings:
            raise ValueError(f"{input_ids.shape[1]} tokens exceed max_position_embeddings {cfg.max_position_embeddings}")
        if mask is None:
            mask = jnp.ones(input_ids.shape, jnp.float32)
        x = Embeddings(cfg, name="embeddings")(input_ids)
        needed = cfg.num_hidden_layers if self.layer is None else cfg.hidden_state_index(self.layer)
        states = Encoder(cfg, needed, name="encoder")(x, mask.astype(x.dtype))
        return jnp.stack(states) if self.layer is None else states[-1]


# --------------------------------------------------------------------------- weights


_LAYER_ENTRY = re.compile(r"^layer_(\d+)$")
_LEAF_NAMES = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}


def checkpoint_key(path: tuple[str, ...]) -> str:
    """The Hugging Face name (without ``bert.``) of a Flax parameter path: ``encoder/layer_0/.../kernel`` -> ``encoder.layer.0....weight``."""
    modules = [_LAYER_ENTRY.sub(r"layer.\1", part) for part in path[:-1]]
    return ".".join([*modules, _LEAF_NAMES[path[-1]]])


def _slots(abstract: Mapping[str, Any]) -> dict[str, hf_weights.Slot]:
    """Every checkpoint key the model needs, with its PyTorch shape and how it becomes the Flax leaf."""
    slots = {}
    for path, leaf in hf_weights.flatten(abstract).items():
        if path[-1] == "kernel":
            slots[checkpoint_key(path)] = hf_weights.Slot(path, tuple(reversed(leaf.shape)), hf_weights.transpose)
        else:
            slots[checkpoint_key(path)] = hf_weights.Slot(path, tuple(leaf.shape), hf_weights.unchanged)
    return slots


def checkpoint_shapes(abstract: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """``{Hugging Face key: PyTorch shape}`` of every parameter in a (possibly abstract) parameter tree."""
    return {key: slot.shape for key, slot in _slots(abstract).items()}


_OLD_NORM_NAMES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def canonical_keys(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip the ``bert.`` prefix and spell TF-era ``LayerNorm.gamma/beta`` as ``weight/bias`` (as ``from_pretrained`` does)."""
    out = {}
    for key, value in state_dict.items():
        name = key[len(BASE_PREFIX) :] if key.startswith(BASE_PREFIX) else key
        for old, new in _OLD_NORM_NAMES.items():
            if name.endswith(old):
                name = name[: -len(old)] + new
        out[name] = value
    return out


def params_from_state_dict(state_dict: Mapping[str, np.ndarray], config: BertConfig, source: str = "state dict") -> dict[str, Any]:
    """Flax parameters (float32) of the full :class:`Bert` (every layer) from a transformers BERT state dict.

    Strict: keys the model does not use (other than :data:`IGNORED_PREFIXES`), parameters the state
    dict does not fill and shape mismatches are all listed in one :class:`BertWeightsError`.
    """
    return hf_weights.params_from_slots(
        canonical_keys(state_dict),
        _slots(abstract_params(config)),
        ignore=lambda key: key.startswith(IGNORED_PREFIXES),
        error=BertWeightsError,
        source=source,
        model="BERT",
    )


def abstract_params(config: BertConfig, layer: int | None = None) -> dict[str, Any]:
    """The parameter tree of :class:`Bert` (all layers by default) as ``jax.ShapeDtypeStruct`` leaves (nothing allocated)."""
    ids = jax.ShapeDtypeStruct((1, 2), jnp.int32)
    return jax.eval_shape(lambda i: Bert(config, layer).init(jax.random.key(0), i), ids)["params"]


def params_for_layer(params: Mapping[str, Any], config: BertConfig, layer: int = FEATURE_LAYER) -> dict[str, Any]:
    """``params`` without the layers that ``hidden_states[layer]`` does not need (they are never run)."""
    needed = config.hidden_state_index(layer)
    encoder = {name: value for name, value in params["encoder"].items() if int(name.removeprefix("layer_")) < needed}
    return {**params, "encoder": encoder}


def find_weights(directory: str | os.PathLike) -> Path:
    """The weight file of a Hugging Face directory: ``model.safetensors``, else ``pytorch_model.bin``."""
    return hf_weights.find_weights(directory, "BERT", " (text.bert_path)")


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{key: array}`` of a ``.safetensors`` file (safetensors' numpy API) or a ``.bin`` torch pickle (torch-free reader)."""
    return hf_weights.read_state_dict(path, BertWeightsError)


def weights_fingerprint(directory: str | os.PathLike) -> str:
    """sha256 (16 hex digits) of ``config.json`` and the weight file's bytes: which weights made a feature."""
    return hf_weights.fingerprint(Path(directory) / CONFIG_NAME, find_weights(directory))


def check_directory(directory: str | os.PathLike, expected_dim: int | None = None) -> tuple[BertConfig, Path]:
    """Validate a BERT directory without reading its weights: the config and the weight file's path.

    Raises ``FileNotFoundError`` for a missing directory, ``config.json`` or weight file, and
    :class:`BertConfigError` for a config this port cannot honour or a ``hidden_size`` other than
    ``expected_dim`` (``gpt.bert_dim``); every message names the path and the field.
    """
    config = read_config(directory)
    if expected_dim is not None and config.hidden_size != expected_dim:
        raise BertConfigError(
            f"{Path(directory) / CONFIG_NAME}: hidden_size {config.hidden_size} does not match gpt.bert_dim {expected_dim}"
        )
    return config, find_weights(directory)


def load_bert(directory: str | os.PathLike, expected_dim: int | None = None) -> tuple[BertConfig, dict[str, Any]]:
    """The :class:`BertConfig` and float32 parameters of every layer from a Hugging Face directory.

    Reads ``config.json`` and ``model.safetensors`` (preferred) or ``pytorch_model.bin``. Raises as
    :func:`check_directory`, and :class:`BertWeightsError` for weights that do not fit.
    """
    config, weights = check_directory(directory, expected_dim)
    return config, params_from_state_dict(read_state_dict(weights), config, str(weights))


def count_params(params: Mapping[str, Any]) -> int:
    """Number of scalars in a parameter tree (arrays or ``ShapeDtypeStruct`` leaves)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def config_to_dict(config: BertConfig) -> dict[str, Any]:
    """The config as plain JSON values."""
    return dataclasses.asdict(config)
