"""Stage 1: the text-to-semantic decoder (upstream ``AR/models/t2s_model.py``, ``s1longer-v2.yaml``).

A decoder-only transformer over one sequence: the phonemes of the text (with
projected BERT features added), then the semantic tokens (25 Hz). Text positions
see all valid text (bidirectional) and never audio; audio positions see all valid
text and the audio up to themselves. Both streams carry their own sinusoidal
positions, each starting at 0, scaled by a learnable ``alpha``.

Parameter names follow upstream's module tree (``bert_proj``, ``ar_text_embedding``,
``h/layers_i/self_attn/in_proj`` ...), so that optimizer groups can select them by
path and upstream checkpoints map one-to-one.

Training runs teacher-forced through :meth:`Text2SemanticDecoder.__call__` and
:func:`gpt_loss`; inference uses a fixed-size KV cache (:meth:`~Text2SemanticDecoder.prefill`,
:meth:`~Text2SemanticDecoder.decode_step`) and :func:`generate`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from gptsovits_jax.config import GPTConfig
from gptsovits_jax.losses import masked_cross_entropy, top_k_accuracy
from gptsovits_jax.models.layers import Dropout, rematerialised

Dtype = Any

LAYER_NORM_EPS = 1e-5
_NEG_INF = -jnp.inf


# --------------------------------------------------------------------------- initializers


def _torch_kernel_init() -> nn.initializers.Initializer:
    """PyTorch's default ``nn.Linear`` weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default ``nn.Linear`` bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _torch_dense(features: int, fan_in: int, dtype: Dtype, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=_torch_kernel_init(),
        bias_init=_torch_bias_init(fan_in),
        name=name,
    )


# --------------------------------------------------------------------------- positions and masks


def sinusoidal_positions(positions: jax.Array, dim: int) -> jax.Array:
    """Upstream's sine table at arbitrary integer positions.

    Args:
      positions: integer positions, any shape ``[...]`` (tokens from the start of a stream).
      dim: channels (even).

    Returns:
      ``[..., dim]`` float32: ``sin(p * w_i)`` on even channels ``2i``, ``cos(p * w_i)`` on odd
      channels ``2i + 1``, with ``w_i = 10000^(-2i / dim)``.
    """
    freqs = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * (-math.log(10000.0) / dim))
    angles = positions.astype(jnp.float32)[..., None] * freqs
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*positions.shape, dim)


def attention_mask(
    query_slots: jax.Array, num_keys: int, text_slots: jax.Array | int, text_lens: jax.Array, audio_lens: jax.Array
) -> jax.Array:
    """Which keys each query may attend to, for the layout ``[text slots | audio slots]``.

    Slots ``[0, text_slots)`` hold phonemes (right-padded, ``text_lens`` valid), slots
    ``text_slots + j`` hold audio token ``j`` (``audio_lens`` valid). A text query sees
    every valid text key; an audio query sees every valid text key and the valid audio
    keys up to its own slot. As long as ``text_lens >= 1`` no row is empty, padded
    query rows included.

    Args:
      query_slots: ``[B, Lq]`` int slot of each query.
      num_keys: number of key slots ``Sk``.
      text_slots: number of text slots (``Tx``), int or int scalar.
      text_lens: ``[B]`` valid phonemes.
      audio_lens: ``[B]`` valid audio tokens.

    Returns:
      ``[B, 1, Lq, Sk]`` bool, True where attention is allowed (broadcast over heads).
    """
    keys = jnp.arange(num_keys)
    key_is_text = keys < text_slots
    key_valid = jnp.where(key_is_text[None, :], keys[None, :] < text_lens[:, None], (keys[None, :] - text_slots) < audio_lens[:, None])
    query_is_audio = query_slots >= text_slots
    causal = keys[None, None, :] <= query_slots[..., None]
    allowed = key_is_text[None, None, :] | (query_is_audio[..., None] & causal)
    return (allowed & key_valid[:, None, :])[:, None]


def _write_slots(cache: jax.Array, new: jax.Array, slots: jax.Array) -> jax.Array:
    """Write ``new`` ``[B, L, H, D]`` into ``cache`` ``[B, S, H, D]`` at per-sample start slots ``[B]``."""
    update = jax.vmap(lambda c, n, s: lax.dynamic_update_slice(c, n, (s, 0, 0)))
    return update(cache, new.astype(cache.dtype), slots)


# --------------------------------------------------------------------------- layers


class SinePositionalEmbedding(nn.Module):
    """``x + alpha * pe[positions]`` then dropout (upstream ``scale=False, alpha=True``).

    ``alpha`` is one learnable scalar, init 1.0. Upstream hard-codes this dropout to 0.1;
    here it is ``gpt.dropout`` (0.1 in v2).
    """

    dim: int
    dropout: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, *, deterministic: bool) -> jax.Array:
        """``x``: ``[B, L, dim]``; ``positions``: ``[B, L]`` or ``[L]`` ints. Returns ``[B, L, dim]``."""
        alpha = self.param("alpha", nn.initializers.ones, (1,), jnp.float32)
        pe = alpha * sinusoidal_positions(positions, self.dim)
        x = (x.astype(jnp.float32) + pe).astype(self.dtype)
        return Dropout(self.dropout)(x, deterministic=deterministic)


class SelfAttention(nn.Module):
    """Multi-head self-attention with upstream's packed ``in_proj`` (q, k, v) and ``out_proj``.

    ``in_proj`` is xavier-uniform with a zero bias, ``out_proj`` has PyTorch's default
    kernel and a zero bias (as ``torch.nn.MultiheadAttention``). Scores are scaled by
    ``1/sqrt(head_dim)``, softmaxed in float32, and dropout acts on the weights.
    """

    hidden_dim: int
    num_heads: int
    dropout: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        *,
        deterministic: bool,
        cache: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Attend from ``x`` to itself, or to a KV cache.

        Args:
          x: ``[B, L, hidden_dim]`` queries (and the keys/values they add).
          mask: ``[B, 1, L, S]`` bool, True where allowed; ``S = L`` without a cache,
            the cache length with one.
          deterministic: disables dropout.
          cache: ``(keys, values, slots)``: ``[B, S, heads, head_dim]`` twice and ``[B]`` int
            start slots where this call's keys and values are written before attending.

        Returns:
          ``([B, L, hidden_dim], (keys, values))``: the output and the keys/values
          attended to (``[B, L, ...]`` without a cache, the updated cache with one).
        """
        batch, length, _ = x.shape
        head_dim = self.hidden_dim // self.num_heads
        qkv = nn.Dense(
            3 * self.hidden_dim,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.zeros,
            name="in_proj",
        )(x)
        # Packed like torch's in_proj_weight: [q | k | v] channels, heads contiguous within each.
        q, k, v = jnp.unstack(qkv.reshape(batch, length, 3, self.num_heads, head_dim), axis=2)
        if cache is not None:
            k_cache, v_cache, slots = cache
            k, v = _write_slots(k_cache, k, slots), _write_slots(v_cache, v, slots)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) / math.sqrt(head_dim)
        # A finite fill keeps the softmax NaN-free even for a row with nothing allowed.
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        weights = Dropout(self.dropout)(weights, deterministic=deterministic)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(self.dtype)).reshape(batch, length, self.hidden_dim)
        out = nn.Dense(
            self.hidden_dim,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=_torch_kernel_init(),
            bias_init=nn.initializers.zeros,
            name="out_proj",
        )(out)
        return out, (k, v)


class DecoderLayer(nn.Module):
    """Post-norm transformer layer (upstream ``TransformerEncoderLayer``, ``norm_first=False``).

    ``x = LN1(x + drop(SelfAttn(x)))``, ``x = LN2(x + drop(W2(drop(relu(W1 x)))))``.
    """

    config: GPTConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        *,
        deterministic: bool,
        cache: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """``x``: ``[B, L, hidden_dim]``; ``mask`` and ``cache`` as in :class:`SelfAttention`."""
        cfg = self.config
        drop = Dropout(cfg.dropout)
        attn, kv = SelfAttention(cfg.hidden_dim, cfg.num_heads, cfg.dropout, self.dtype, name="self_attn")(
            x, mask, deterministic=deterministic, cache=cache
        )
        norm = functools.partial(nn.LayerNorm, epsilon=LAYER_NORM_EPS, dtype=self.dtype, param_dtype=jnp.float32, use_fast_variance=False)
        x = norm(name="norm1")(x + drop(attn, deterministic=deterministic))
        ff = _torch_dense(cfg.ffn_dim, cfg.hidden_dim, self.dtype, "linear1")(x)
        ff = drop(nn.relu(ff), deterministic=deterministic)
        ff = _torch_dense(cfg.hidden_dim, cfg.ffn_dim, self.dtype, "linear2")(ff)
        x = norm(name="norm2")(x + drop(ff, deterministic=deterministic))
        return x, kv


class DecoderStack(nn.Module):
    """``num_layers`` :class:`DecoderLayer` s named ``layers_0`` ... (upstream ``h``).

    The parameters always keep this per-layer layout (``h/layers_i/...``: names, counts,
    optimizer groups, checkpoints and the upstream key mapping address each layer). With
    ``scan`` the training forward stacks them into ``[num_layers, ...]`` arrays and runs one
    layer body under ``lax.scan``: XLA compiles the layer once instead of ``num_layers``
    times, and the gradient flows back through the stacking to every layer's leaves.
    ``remat`` (scan only) trades compute for activation memory per layer: ``"dots"`` keeps
    the outputs of the dense matmuls and recomputes the rest (attention probabilities,
    dropout, norms) in the backward pass; ``"full"`` keeps only each layer's input.
    Initialisation and cached decoding always run the plain loop.
    """

    config: GPTConfig
    dtype: Dtype = jnp.float32
    scan: bool = False
    remat: str = "none"

    def setup(self) -> None:
        self.layers = [DecoderLayer(self.config, self.dtype) for _ in range(self.config.num_layers)]

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        *,
        deterministic: bool,
        cache: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Run every layer.

        Args:
          x: ``[B, L, hidden_dim]``.
          mask: ``[B, 1, L, S]`` bool.
          deterministic: disables dropout.
          cache: ``(keys, values, slots)`` with ``[layers, B, S, heads, head_dim]`` keys and
            values and ``[B]`` write slots, or None.

        Returns:
          ``([B, L, hidden_dim], (keys, values))`` with keys/values stacked over layers.
        """
        if self.scan and cache is None and not self.is_initializing():
            return self._scanned(x, mask, deterministic)
        if self.remat != "none" and not self.is_initializing():
            raise ValueError("gpt remat needs the scanned layer stack (gpt_train.scan_layers: true)")
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache[0][i], cache[1][i], cache[2])
            x, (k, v) = layer(x, mask, deterministic=deterministic, cache=layer_cache)
            keys.append(k)
            values.append(v)
        return x, (jnp.stack(keys), jnp.stack(values))

    def _scanned(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        num_layers = self.config.num_layers
        params = self.variables["params"]
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(params[f"layers_{i}"] for i in range(num_layers)))
        layer = DecoderLayer(self.config, self.dtype, parent=None)
        use_dropout = not deterministic and self.config.dropout > 0
        layer_keys = jax.random.split(self.make_rng("dropout"), num_layers) if use_dropout else jnp.zeros((num_layers,), jnp.uint32)

        def body(h, per_layer):
            layer_params, key = per_layer
            rngs = {"dropout": key} if use_dropout else None
            return layer.apply({"params": layer_params}, h, mask, deterministic=deterministic, rngs=rngs)

        return jax.lax.scan(rematerialised(body, self.remat), x, (stacked, layer_keys))


# --------------------------------------------------------------------------- model


class GPTOutputs(NamedTuple):
    """Teacher-forced outputs, aligned position by position.

    ``logits[:, j]`` predicts ``targets[:, j]``; ``target_mask`` is 1 on the
    ``semantic_lens + 1`` real targets (the tokens and the EOS), 0 on padding.
    """

    logits: jax.Array  # [B, Ty + 1, vocab] float32
    targets: jax.Array  # [B, Ty + 1] int32
    target_mask: jax.Array  # [B, Ty + 1] float32


class KVCache(NamedTuple):
    """Fixed-size decoding state: slots ``[0, text_slots)`` text, ``text_slots + j`` audio token ``j``."""

    keys: jax.Array  # [layers, B, max_len, heads, head_dim], compute dtype
    values: jax.Array  # [layers, B, max_len, heads, head_dim]
    text_lens: jax.Array  # [B] int32 valid phonemes
    text_slots: jax.Array  # [] int32 (Tx)
    audio_lens: jax.Array  # [B] int32 audio tokens written (prompt + generated)


class Text2SemanticDecoder(nn.Module):
    """Upstream's ``Text2SemanticDecoder`` as a linen module.

    Attributes:
      config: model sizes (:class:`~gptsovits_jax.config.GPTConfig`).
      dtype: compute dtype; parameters are always float32 (``jnp.bfloat16`` gives mixed
        precision). Logits are returned in float32.
      scan_layers, remat: how the training forward runs the layer stack (:class:`DecoderStack`);
        the parameters are the same either way.
    """

    config: GPTConfig
    dtype: Dtype = jnp.float32
    scan_layers: bool = False
    remat: str = "none"

    def setup(self) -> None:
        cfg = self.config
        if cfg.hidden_dim % cfg.num_heads or cfg.hidden_dim % 2:
            raise ValueError(f"gpt.hidden_dim {cfg.hidden_dim} must be even and divisible by gpt.num_heads {cfg.num_heads}")
        self.bert_proj = _torch_dense(cfg.hidden_dim, cfg.bert_dim, self.dtype, "bert_proj")
        embed = functools.partial(
            nn.Embed, features=cfg.hidden_dim, dtype=self.dtype, param_dtype=jnp.float32, embedding_init=nn.initializers.normal(1.0)
        )
        self.ar_text_embedding = embed(cfg.phoneme_vocab_size)
        self.ar_audio_embedding = embed(cfg.vocab_size)
        self.ar_text_position = SinePositionalEmbedding(cfg.hidden_dim, cfg.dropout, self.dtype)
        self.ar_audio_position = SinePositionalEmbedding(cfg.hidden_dim, cfg.dropout, self.dtype)
        self.embedding_dropout = Dropout(cfg.embedding_dropout)
        self.h = DecoderStack(cfg, self.dtype, scan=self.scan_layers, remat=self.remat)
        self.ar_predict_layer = _torch_dense(cfg.vocab_size, cfg.hidden_dim, self.dtype, "ar_predict_layer", use_bias=False)

    # ---- pieces shared by training and decoding

    def _embed_text(self, phoneme_ids: jax.Array, bert: jax.Array | None, deterministic: bool) -> jax.Array:
        """``[B, Tx]`` ids and ``[B, Tx, bert_dim]`` BERT features (None = zeros) -> ``[B, Tx, hidden]``."""
        if bert is None:
            bert = jnp.zeros((*phoneme_ids.shape, self.config.bert_dim), self.dtype)
        if bert.shape[:2] != phoneme_ids.shape or bert.shape[2] != self.config.bert_dim:
            raise ValueError(
                f"bert has shape {bert.shape}; expected {(*phoneme_ids.shape, self.config.bert_dim)} (phoneme_ids {phoneme_ids.shape}, gpt.bert_dim)"
            )
        x = self.embedding_dropout(self.ar_text_embedding(phoneme_ids), deterministic=deterministic)
        x = x + self.bert_proj(bert)
        return self.ar_text_position(x, jnp.arange(phoneme_ids.shape[1]), deterministic=deterministic)

    def _embed_audio(self, semantic_ids: jax.Array, positions: jax.Array, deterministic: bool) -> jax.Array:
        """``[B, L]`` semantic ids at audio positions ``[B, L]`` or ``[L]`` -> ``[B, L, hidden]``."""
        y = self.embedding_dropout(self.ar_audio_embedding(semantic_ids), deterministic=deterministic)
        return self.ar_audio_position(y, positions, deterministic=deterministic)

    def _logits(self, hidden: jax.Array) -> jax.Array:
        return self.ar_predict_layer(hidden).astype(jnp.float32)

    # ---- training

    def __call__(
        self,
        phoneme_ids: jax.Array,
        phoneme_lens: jax.Array,
        bert: jax.Array | None,
        semantic_ids: jax.Array,
        semantic_lens: jax.Array,
        *,
        deterministic: bool,
    ) -> GPTOutputs:
        """Teacher-forced forward on a right-padded batch.

        The decoder input is ``[y_0 .. y_{Ty-1}]`` with padding replaced by EOS; the
        targets are ``[y_0 .. y_{len-1}, EOS, pad]``. ``y_0`` is predicted from the
        last real text position (``phoneme_lens - 1``, gathered per sample), ``y_1`` ..
        EOS from the audio positions. This is the alignment upstream PR #2537 intended
        (the last text position predicts the first token) made consistent with the
        right padding of upstream's collate: upstream HEAD combines a left-padding text
        mask and ``logits[:, Tx_max - 1:]`` with right-padded batches, which for every
        shorter sample hides real phonemes and reads a padding position.

        Unlike upstream, padding targets (EOS there too) are masked out of the loss
        (``target_mask`` 0): upstream counts an EOS target at every padded position.

        Args:
          phoneme_ids: ``[B, Tx]`` int32 phoneme ids, right-padded.
          phoneme_lens: ``[B]`` valid phonemes (>= 1).
          bert: ``[B, Tx, bert_dim]`` BERT features per phoneme, or None for zeros.
          semantic_ids: ``[B, Ty]`` int32 semantic tokens (25 Hz), right-padded.
          semantic_lens: ``[B]`` valid tokens.
          deterministic: disables dropout (otherwise a ``"dropout"`` rng is required).

        Returns:
          :class:`GPTOutputs` with ``logits [B, Ty+1, vocab]``, ``targets [B, Ty+1]``,
          ``target_mask [B, Ty+1]``.
        """
        text_slots, num_audio = phoneme_ids.shape[1], semantic_ids.shape[1]
        eos = self.config.eos
        audio_valid = jnp.arange(num_audio)[None, :] < semantic_lens[:, None]
        decoder_in = jnp.where(audio_valid, semantic_ids, eos).astype(jnp.int32)
        targets = jnp.concatenate([decoder_in, jnp.full((decoder_in.shape[0], 1), eos, jnp.int32)], axis=1)
        target_mask = (jnp.arange(num_audio + 1)[None, :] <= semantic_lens[:, None]).astype(jnp.float32)

        x = self._embed_text(phoneme_ids, bert, deterministic)
        y = self._embed_audio(decoder_in, jnp.arange(num_audio), deterministic)
        total = text_slots + num_audio
        slots = jnp.broadcast_to(jnp.arange(total), (phoneme_ids.shape[0], total))
        mask = attention_mask(slots, total, text_slots, phoneme_lens, semantic_lens)
        hidden, _ = self.h(jnp.concatenate([x, y], axis=1), mask, deterministic=deterministic)

        last_text = jnp.take_along_axis(hidden, (phoneme_lens - 1)[:, None, None], axis=1)
        logits = self._logits(jnp.concatenate([last_text, hidden[:, text_slots:]], axis=1))
        return GPTOutputs(logits=logits, targets=targets, target_mask=target_mask)

    # ---- cached decoding

    def prefill(
        self,
        phoneme_ids: jax.Array,
        phoneme_lens: jax.Array,
        bert: jax.Array | None,
        prompt_ids: jax.Array,
        prompt_lens: jax.Array,
        max_len: int,
    ) -> tuple[jax.Array, KVCache]:
        """Run the text and the prompt's semantic tokens, filling a fresh cache.

        Args:
          phoneme_ids: ``[B, Tx]`` int32, right-padded.
          phoneme_lens: ``[B]`` valid phonemes (>= 1).
          bert: ``[B, Tx, bert_dim]`` or None (zeros).
          prompt_ids: ``[B, Tp]`` int32 semantic tokens of the reference audio, right-padded
            (``Tp`` may be 0: no prompt).
          prompt_lens: ``[B]`` valid prompt tokens (0 allowed).
          max_len: cache slots (static), at least ``Tx + Tp`` plus the tokens to generate.

        Returns:
          ``(logits [B, vocab] float32, cache)``: the scores of the token after the prompt,
          from the last prompt token, or from the last phoneme when the prompt is empty.
        """
        batch, text_slots = phoneme_ids.shape
        num_prompt = prompt_ids.shape[1]
        total = text_slots + num_prompt
        if max_len < total:
            raise ValueError(f"max_len {max_len} is shorter than text + prompt ({text_slots} + {num_prompt} slots)")
        x = self._embed_text(phoneme_ids, bert, True)
        y = self._embed_audio(prompt_ids.astype(jnp.int32), jnp.arange(num_prompt), True)
        slots = jnp.broadcast_to(jnp.arange(total), (batch, total))
        mask = attention_mask(slots, total, text_slots, phoneme_lens, prompt_lens)
        hidden, (keys, values) = self.h(jnp.concatenate([x, y], axis=1), mask, deterministic=True)

        last = jnp.where(prompt_lens > 0, text_slots + prompt_lens - 1, phoneme_lens - 1)
        logits = self._logits(jnp.take_along_axis(hidden, last[:, None, None], axis=1))[:, 0]
        pad = [(0, 0), (0, 0), (0, max_len - total), (0, 0), (0, 0)]
        cache = KVCache(
            keys=jnp.pad(keys, pad),
            values=jnp.pad(values, pad),
            text_lens=phoneme_lens.astype(jnp.int32),
            text_slots=jnp.asarray(text_slots, jnp.int32),
            audio_lens=prompt_lens.astype(jnp.int32),
        )
        return logits, cache

    def decode_step(self, tokens: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
        """Append one semantic token per sample and score the next one.

        Args:
          tokens: ``[B]`` int32, the token at audio position ``cache.audio_lens`` (per sample).
          cache: from :meth:`prefill` or a previous step; slot ``text_slots + audio_lens``
            must exist.

        Returns:
          ``(logits [B, vocab] float32, cache)`` with ``audio_lens`` advanced by one.
        """
        positions = cache.audio_lens
        slots = cache.text_slots + positions
        y = self._embed_audio(tokens[:, None].astype(jnp.int32), positions[:, None], True)
        mask = attention_mask(slots[:, None], cache.keys.shape[2], cache.text_slots, cache.text_lens, positions + 1)
        hidden, (keys, values) = self.h(y, mask, deterministic=True, cache=(cache.keys, cache.values, slots))
        cache = cache._replace(keys=keys, values=values, audio_lens=positions + 1)
        return self._logits(hidden[:, 0]), cache


# --------------------------------------------------------------------------- loss


def gpt_loss(outputs: GPTOutputs, reduction: str = "sum") -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy over the real targets and top-3 accuracy ignoring EOS.

    Args:
      outputs: from :meth:`Text2SemanticDecoder.__call__`.
      reduction: ``"sum"`` (upstream: summed over tokens) or ``"mean"`` (per real target).

    Returns:
      ``(loss, {"loss/ce": loss, "acc/top3": accuracy})``, scalars.
    """
    eos = outputs.logits.shape[-1] - 1
    loss = masked_cross_entropy(outputs.logits, outputs.targets, outputs.target_mask, reduction)
    accuracy = top_k_accuracy(outputs.logits, outputs.targets, outputs.target_mask, k=3, ignore_id=eos)
    return loss, {"loss/ce": loss, "acc/top3": accuracy}


# --------------------------------------------------------------------------- sampling


def process_logits(
    logits: jax.Array,
    seen: jax.Array,
    top_k: jax.Array | int,
    top_p: jax.Array | float,
    temperature: jax.Array | float,
    repetition_penalty: jax.Array | float,
) -> jax.Array:
    """Upstream's ``logits_to_probs`` filters, in its order, returning filtered logits.

    1. Repetition penalty on every token seen so far: ``l * rp`` if ``l < 0`` else ``l / rp``.
    2. Top-p: in descending order, drop tokens whose cumulative probability (including
       themselves) exceeds ``top_p``, always keeping the first; skipped when ``top_p >= 1``.
    3. Divide by ``max(temperature, 1e-5)``.
    4. Top-k: drop tokens below the ``top_k``-th largest (ties kept); ``top_k <= 0`` keeps all.

    Args:
      logits: ``[B, V]`` scores (``-inf`` entries stay excluded).
      seen: ``[B, V]`` bool, tokens of the prompt and of the generated sequence.
      top_k, top_p, temperature, repetition_penalty: scalars (traced values are fine).

    Returns:
      ``[B, V]`` float32 logits with dropped tokens at ``-inf``.
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    penalized = jnp.where(logits < 0, logits * repetition_penalty, logits / repetition_penalty)
    logits = jnp.where(seen, penalized, logits)

    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    drop_sorted = (cumulative > top_p).at[:, 0].set(False)
    drop = jnp.take_along_axis(drop_sorted, jnp.argsort(order, axis=-1), axis=-1)
    logits = jnp.where(drop & (top_p < 1.0), _NEG_INF, logits)

    logits = logits / jnp.maximum(temperature, 1e-5)

    k = jnp.clip(jnp.where(top_k > 0, top_k, vocab), 1, vocab)
    pivot = jnp.take_along_axis(-jnp.sort(-logits, axis=-1), jnp.full((logits.shape[0], 1), k - 1), axis=-1)
    return jnp.where(logits < pivot, _NEG_INF, logits)


def sample_next_token(
    logits: jax.Array,
    rng: jax.Array,
    seen: jax.Array,
    top_k: jax.Array | int = 15,
    top_p: jax.Array | float = 1.0,
    temperature: jax.Array | float = 1.0,
    repetition_penalty: jax.Array | float = 1.35,
) -> jax.Array:
    """Sample one token per row from ``[B, V]`` logits after :func:`process_logits`.

    Sampling is Gumbel-max (``argmax(log p + Gumbel)``), the same distribution as
    upstream's ``argmax(p / Exp(1))``. Returns ``[B]`` int32.
    """
    filtered = process_logits(logits, seen, top_k, top_p, temperature, repetition_penalty)
    return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


# --------------------------------------------------------------------------- generation


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "dtype"))
def generate(
    params: Any,
    config: GPTConfig,
    phoneme_ids: jax.Array,
    bert: jax.Array | None,
    prompt_semantic: jax.Array,
    rng: jax.Array,
    max_new_tokens: int,
    top_k: jax.Array | int = 15,
    top_p: jax.Array | float = 1.0,
    temperature: jax.Array | float = 1.0,
    repetition_penalty: jax.Array | float = 1.35,
    min_new_tokens: jax.Array | int = 10,
    *,
    phoneme_lens: jax.Array | None = None,
    prompt_lens: jax.Array | None = None,
    dtype: Dtype = jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """Autoregressive semantic-token generation with a fixed-size KV cache (jitted).

    Each step samples with :func:`sample_next_token` (the prompt and the generated tokens
    count as seen for the repetition penalty) and stops a sample when the sampled token
    or the argmax of the raw logits is EOS, as upstream. EOS is excluded while fewer than
    ``min_new_tokens`` tokens have been generated (upstream drops it for its first 11
    steps). The loop ends when every sample has stopped or after ``max_new_tokens``.

    Args:
      params: the decoder's parameters (the ``"params"`` collection).
      config: model sizes (static).
      phoneme_ids: ``[B, Tx]`` int32 phonemes of the prompt text followed by the target text.
      bert: ``[B, Tx, bert_dim]`` or None (zeros).
      prompt_semantic: ``[B, Tp]`` int32 semantic tokens of the reference audio (``Tp`` may be 0).
      rng: PRNG key.
      max_new_tokens: cap on generated tokens (static; sets the cache size).
      top_k, top_p, temperature, repetition_penalty: sampling settings (traced).
      min_new_tokens: tokens generated before EOS is allowed (traced).
      phoneme_lens: ``[B]`` valid phonemes, default all.
      prompt_lens: ``[B]`` valid prompt tokens, default all.
      dtype: compute dtype (static).

    Returns:
      ``(tokens [B, max_new_tokens] int32, counts [B] int32)``: generated tokens at 25 Hz,
      EOS-filled after ``counts`` (EOS itself is not included).
    """
    batch, text_slots = phoneme_ids.shape
    num_prompt = prompt_semantic.shape[1]
    eos = config.eos
    if phoneme_lens is None:
        phoneme_lens = jnp.full((batch,), text_slots, jnp.int32)
    if prompt_lens is None:
        prompt_lens = jnp.full((batch,), num_prompt, jnp.int32)
    model = Text2SemanticDecoder(config, dtype)
    variables = {"params": params}
    max_len = text_slots + num_prompt + max_new_tokens
    logits, cache = model.apply(variables, phoneme_ids, phoneme_lens, bert, prompt_semantic, prompt_lens, max_len, method="prefill")

    prompt_valid = jnp.arange(num_prompt)[None, :] < prompt_lens[:, None]
    seen = jnp.any(jax.nn.one_hot(prompt_semantic, config.vocab_size, dtype=jnp.bool_) & prompt_valid[..., None], axis=1)
    is_eos = jnp.arange(config.vocab_size) == eos

    def cond(state):
        step, *_, done, _ = state
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(state):
        step, logits, cache, seen, tokens, counts, done, rng = state
        rng, key = jax.random.split(rng)
        logits = jnp.where((counts < min_new_tokens)[:, None] & is_eos, _NEG_INF, logits)
        sampled = sample_next_token(logits, key, seen, top_k, top_p, temperature, repetition_penalty)
        stop = (sampled == eos) | (jnp.argmax(logits, axis=-1) == eos)
        active = ~done & ~stop
        token = jnp.where(active, sampled, eos)
        tokens = tokens.at[:, step].set(token)
        counts = counts + active
        seen = seen | (jax.nn.one_hot(token, config.vocab_size, dtype=jnp.bool_) & active[:, None])
        logits, cache = model.apply(variables, token, cache, method="decode_step")
        return step + 1, logits, cache, seen, tokens, counts, done | stop, rng

    tokens = jnp.full((batch, max_new_tokens), eos, jnp.int32)
    zeros = jnp.zeros((batch,), jnp.int32)
    state = (jnp.asarray(0), logits, cache, seen, tokens, zeros, zeros.astype(bool), rng)
    _, _, _, _, tokens, counts, _, _ = lax.while_loop(cond, body, state)
    return tokens, counts
