"""SoVITS v2 synthesizer (upstream ``module/models.py`` ``SynthesizerTrn``, ``modules.py``, ``mrte_model.py``).

Units: SSL features and spectrogram frames at 50 Hz (``[B, T, C]``, T even), semantic
codes at 25 Hz (``[n_q, B, T/2]``), phoneme tokens ``[B, L]``, waveforms ``[B, N]`` at
32 kHz (``N = frames * hop_length``).

Parameter tree (names mirror upstream; rules in :mod:`gptsovits_jax.models.layers`):

* ``ssl_proj`` (Conv1d k2 s2, 50 Hz -> 25 Hz); ``quantizer`` has no parameters, its
  codebooks live in the ``quantizer`` collection (:mod:`gptsovits_jax.models.quantizer`);
* ``enc_p``: ``ssl_proj``, ``encoder_ssl``, ``text_embedding``, ``encoder_text``,
  ``mrte`` (``c_pre``, ``text_pre``, ``cross_attention``, ``c_post``), ``encoder2``, ``proj``;
* ``ref_enc``: upstream ``nn.Sequential`` indices are kept (``spectral_0``, ``spectral_3``,
  ``temporal_0``, ``temporal_1``), wrappers whose only child is ``fc``/``conv``
  (``LinearNorm``, ``ConvNorm``) are flattened: ``ref_enc.spectral.0.fc.weight`` ->
  ``ref_enc/spectral_0/kernel``, ``ref_enc.temporal.0.conv1.conv.weight`` ->
  ``ref_enc/temporal_0/conv1/kernel``, ``ref_enc.slf_attn.w_qs`` -> ``ref_enc/slf_attn/w_qs``,
  ``ref_enc.fc.fc`` -> ``ref_enc/fc``;
* ``enc_q``: ``pre``, ``enc`` (WN), ``proj``;
* ``flow``: couplings keep their index in upstream's ``flows`` list, where a parameter-free
  ``Flip`` follows every coupling: ``flows_0``, ``flows_2``, ``flows_4``, ... (each ``pre``,
  ``enc``, ``post``);
* ``dec``: :class:`gptsovits_jax.models.hifigan.Generator`.

Random streams: ``dropout`` (train only) and ``sample`` (posterior noise, segment
slice, prior noise at inference, quantizer k-means and dead-code draws).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from gptsovits_jax.config import Config, SoVITSConfig
from gptsovits_jax.models.hifigan import Generator
from gptsovits_jax.models.layers import WN, Conv1d, Dropout, Dtype, Encoder, Linear, MultiHeadAttention, mish, sequence_mask
from gptsovits_jax.models.quantizer import ResidualVectorQuantizer

SAMPLE_RNG = "sample"


# --------------------------------------------------------------------------- slicing


def slice_segments(x: jax.Array, starts: jax.Array, size: int) -> jax.Array:
    """Per-example windows ``x[b, starts[b] : starts[b] + size]`` of ``x [B, T, ...]`` -> ``[B, size, ...]``.

    Works for frames (``starts`` in frames) and waveforms ``[B, N]`` (``starts * hop``).
    """
    return jax.vmap(lambda row, start: lax.dynamic_slice_in_dim(row, start, size, axis=0))(x, starts)


def rand_slice_segments(key: jax.Array, x: jax.Array, lengths: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Random ``size``-frame windows of ``x [B, T, C]`` inside each valid length (upstream ``rand_slice_segments``).

    Start frame ``ids = floor(u * (length - size + 1))``, ``u ~ U[0, 1)``, kept within ``[0, T - size]``.

    Returns:
      ``(slices [B, size, C], ids [B] int32)``.
    """
    if x.shape[1] < size:
        raise ValueError(f"rand_slice_segments: {x.shape[1]} frames are fewer than the {size}-frame segment")
    u = jax.random.uniform(key, lengths.shape)
    ids = jnp.floor(u * (lengths - size + 1)).astype(jnp.int32)
    ids = jnp.clip(ids, 0, x.shape[1] - size)
    return slice_segments(x, ids, size), ids


# --------------------------------------------------------------------------- text encoder


class MRTE(nn.Module):
    """Multi-reference timbre encoder: content frames attend to text, plus the speaker embedding (upstream ``MRTE``).

    ``x = c_post(cross_attention(c_pre(y), text_pre(text)) + c_pre(y) + ge)`` with
    content as queries and text as keys/values (``n_heads`` heads, no dropout).
    """

    hidden_size: int
    out_channels: int
    n_heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, y: jax.Array, y_mask: jax.Array, text: jax.Array, text_mask: jax.Array, ge: jax.Array) -> jax.Array:
        """``y [B, T, C]``, ``y_mask [B, T]``, ``text [B, L, C]``, ``text_mask [B, L]``, ``ge [B, hidden_size]`` -> ``[B, T, out]``."""
        m = y_mask[..., None].astype(self.dtype)
        tm = text_mask[..., None].astype(self.dtype)
        attn_mask = y_mask[:, :, None] * text_mask[:, None, :]
        ssl_enc = Conv1d(self.hidden_size, 1, dtype=self.dtype, name="c_pre")(y * m)
        text_enc = Conv1d(self.hidden_size, 1, dtype=self.dtype, name="text_pre")(text * tm)
        attn = MultiHeadAttention(self.hidden_size, self.hidden_size, self.n_heads, dtype=self.dtype, name="cross_attention")(
            ssl_enc * m, text_enc * tm, attn_mask
        )
        x = attn + ssl_enc + ge[:, None, :].astype(self.dtype)
        return Conv1d(self.out_channels, 1, dtype=self.dtype, name="c_post")(x * m)


class TextEncoder(nn.Module):
    """Prior encoder ``enc_p``: quantized content + phonemes + speaker -> prior mean and log-std (upstream ``TextEncoder``).

    SSL branch ``ssl_proj`` (1x1) -> ``encoder_ssl`` (n_layers // 2); text branch
    ``text_embedding`` -> ``encoder_text`` (n_layers); ``mrte``; ``encoder2`` (n_layers // 2);
    ``proj`` (1x1) -> ``(m_p, logs_p)``. ``scan_layers``/``remat``: how each encoder runs its
    layers (:class:`~gptsovits_jax.models.layers.Encoder`).
    """

    config: SoVITSConfig
    vocab_size: int
    dtype: Dtype = jnp.float32
    scan_layers: bool = False
    remat: str = "none"

    @nn.compact
    def __call__(
        self, y: jax.Array, y_mask: jax.Array, text: jax.Array, text_mask: jax.Array, ge: jax.Array, *, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``y [B, T, ssl_dim]`` (50 Hz), ``y_mask [B, T]``, ``text [B, L]`` int, ``text_mask [B, L]``, ``ge [B, gin]``.

        Returns:
          ``(hidden [B, T, hidden], m_p [B, T, inter], logs_p [B, T, inter])``, zero at padding.
        """
        c = self.config
        m = y_mask[..., None].astype(self.dtype)
        tm = text_mask[..., None].astype(self.dtype)

        def encoder(n_layers: int, name: str) -> Encoder:
            return Encoder(
                c.hidden_channels,
                c.filter_channels,
                c.n_heads,
                n_layers,
                c.kernel_size,
                c.dropout,
                c.window_size,
                dtype=self.dtype,
                scan=self.scan_layers,
                remat=self.remat,
                name=name,
            )

        y = Conv1d(c.hidden_channels, 1, dtype=self.dtype, name="ssl_proj")(y.astype(self.dtype) * m) * m
        y = encoder(c.n_layers // 2, "encoder_ssl")(y, y_mask, deterministic=deterministic)
        embed = nn.Embed(self.vocab_size, c.hidden_channels, embedding_init=nn.initializers.normal(1.0), name="text_embedding")
        t = embed(text).astype(self.dtype)
        t = encoder(c.n_layers, "encoder_text")(t * tm, text_mask, deterministic=deterministic)
        y = MRTE(c.mrte_hidden, c.hidden_channels, c.mrte_heads, dtype=self.dtype, name="mrte")(y, y_mask, t, text_mask, ge)
        y = encoder(c.n_layers // 2, "encoder2")(y * m, y_mask, deterministic=deterministic)
        stats = Conv1d(2 * c.inter_channels, 1, dtype=self.dtype, name="proj")(y) * m
        return y, stats[..., : c.inter_channels], stats[..., c.inter_channels :]


# --------------------------------------------------------------------------- reference encoder


class Conv1dGLU(nn.Module):
    """Residual gated convolution: ``x + dropout(a * sigmoid(b))`` with ``(a, b) = conv1(x)`` ('same' padding)."""

    channels: int
    kernel_size: int
    dropout: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """``[B, T, C]`` -> ``[B, T, C]``."""
        h = Conv1d(2 * self.channels, self.kernel_size, padding=(self.kernel_size - 1) // 2, dtype=self.dtype, name="conv1")(x)
        h = h[..., : self.channels] * jax.nn.sigmoid(h[..., self.channels :])
        return x + Dropout(self.dropout)(h, deterministic=deterministic)


class StyleAttention(nn.Module):
    """Masked multi-head self-attention of the reference encoder (upstream ``modules.MultiHeadAttention``).

    Linear ``w_qs``/``w_ks``/``w_vs``/``fc``; logits divided by ``sqrt(d_model)`` (not
    ``sqrt(d_k)``, as upstream); padded keys excluded; dropout on weights and output; residual.
    """

    n_heads: int
    dropout: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """``x [B, T, d_model]``, ``mask [B, T]`` -> ``[B, T, d_model]``."""
        batch, length, d_model = x.shape
        d_k = d_model // self.n_heads

        def heads(h: jax.Array) -> jax.Array:
            return h.reshape(batch, length, self.n_heads, d_k)

        q = heads(Linear(d_model, dtype=self.dtype, name="w_qs")(x))
        k = heads(Linear(d_model, dtype=self.dtype, name="w_ks")(x))
        v = heads(Linear(d_model, dtype=self.dtype, name="w_vs")(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d_model)
        scores = jnp.where(mask[:, None, None, :] > 0, scores, -1e9)
        p_attn = Dropout(self.dropout)(jax.nn.softmax(scores, axis=-1).astype(self.dtype), deterministic=deterministic)
        out = jnp.einsum("bhqk,bkhd->bqhd", p_attn, v).reshape(batch, length, d_model)
        out = Linear(d_model, dtype=self.dtype, name="fc")(out)
        return Dropout(self.dropout)(out, deterministic=deterministic) + x


class MelStyleEncoder(nn.Module):
    """Reference (speaker/style) encoder ``ref_enc`` on linear-spectrogram bins (upstream ``MelStyleEncoder``).

    Linear + Mish (x2) -> two Conv1dGLU (kernel 5) -> masked self-attention -> Linear to
    ``out_dim`` -> mean over valid frames.
    """

    hidden: int
    out_dim: int
    kernel_size: int = 5
    n_heads: int = 2
    dropout: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """``x [B, T, bins]`` (zero at padding), ``mask [B, T]`` -> style vector ``ge [B, out_dim]``."""
        drop = Dropout(self.dropout)
        m = mask[..., None].astype(self.dtype)
        h = drop(mish(Linear(self.hidden, dtype=self.dtype, name="spectral_0")(x)), deterministic=deterministic)
        h = drop(mish(Linear(self.hidden, dtype=self.dtype, name="spectral_3")(h)), deterministic=deterministic)
        for i in range(2):
            h = Conv1dGLU(self.hidden, self.kernel_size, self.dropout, dtype=self.dtype, name=f"temporal_{i}")(
                h, deterministic=deterministic
            )
        h = StyleAttention(self.n_heads, self.dropout, dtype=self.dtype, name="slf_attn")(h * m, mask, deterministic=deterministic)
        h = Linear(self.out_dim, dtype=self.dtype, name="fc")(h)
        length = jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1.0)
        return (jnp.sum(h.astype(jnp.float32) * m, axis=1) / length).astype(self.dtype)


# --------------------------------------------------------------------------- posterior and flow


class PosteriorEncoder(nn.Module):
    """Posterior encoder ``enc_q``: linear spectrogram -> ``z = m + eps * exp(logs)`` (upstream ``PosteriorEncoder``).

    The speaker condition is detached (``stop_gradient``) as upstream, so ``ref_enc``
    learns only through the prior, flow and decoder.
    """

    out_channels: int
    hidden_channels: int
    kernel_size: int
    dilation_rate: int
    n_layers: int
    gin_channels: int = 0
    dtype: Dtype = jnp.float32
    scan_layers: bool = False
    remat: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, g: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``x [B, T, spec_channels]``, ``mask [B, T]``, ``g [B, gin]`` -> ``(z, m_q, logs_q)``, each ``[B, T, out]``.

        Draws the noise from the ``sample`` rng stream.
        """
        m = mask[..., None].astype(self.dtype)
        if g is not None:
            g = lax.stop_gradient(g)
        h = Conv1d(self.hidden_channels, 1, dtype=self.dtype, name="pre")(x) * m
        h = WN(
            self.hidden_channels,
            self.kernel_size,
            self.dilation_rate,
            self.n_layers,
            self.gin_channels,
            dtype=self.dtype,
            scan=self.scan_layers,
            remat=self.remat,
            name="enc",
        )(h, mask, g)
        stats = Conv1d(2 * self.out_channels, 1, dtype=self.dtype, name="proj")(h) * m
        mean, logs = stats[..., : self.out_channels], stats[..., self.out_channels :]
        noise = jax.random.normal(self.make_rng(SAMPLE_RNG), mean.shape, self.dtype)
        z = (mean + noise * jnp.exp(logs)) * m
        return z, mean, logs


class ResidualCouplingLayer(nn.Module):
    """Mean-only affine coupling: ``x1 <- x1 + post(WN(pre(x0)))`` (reverse subtracts); ``post`` is zero-initialised."""

    channels: int
    hidden_channels: int
    kernel_size: int
    dilation_rate: int
    n_layers: int
    gin_channels: int = 0
    dtype: Dtype = jnp.float32
    scan_layers: bool = False
    remat: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, g: jax.Array | None = None, *, reverse: bool = False) -> jax.Array:
        """``x [B, T, channels]``, ``mask [B, T]``, ``g [B, gin]`` -> ``[B, T, channels]``."""
        half = self.channels // 2
        m = mask[..., None].astype(self.dtype)
        x0, x1 = x[..., :half], x[..., half:]
        h = Conv1d(self.hidden_channels, 1, dtype=self.dtype, name="pre")(x0) * m
        h = WN(
            self.hidden_channels,
            self.kernel_size,
            self.dilation_rate,
            self.n_layers,
            self.gin_channels,
            dtype=self.dtype,
            scan=self.scan_layers,
            remat=self.remat,
            name="enc",
        )(h, mask, g)
        zeros = nn.initializers.zeros
        mean = Conv1d(half, 1, kernel_init=zeros, bias_init=zeros, dtype=self.dtype, name="post")(h) * m
        x1 = (x1 - mean) * m if reverse else mean + x1 * m
        return jnp.concatenate([x0, x1], axis=-1)


class ResidualCouplingBlock(nn.Module):
    """Normalising flow ``flow``: ``n_flows`` couplings, each followed by a channel flip; ``reverse=True`` inverts it."""

    channels: int
    hidden_channels: int
    kernel_size: int
    dilation_rate: int
    n_layers: int
    n_flows: int
    gin_channels: int = 0
    dtype: Dtype = jnp.float32
    scan_layers: bool = False
    remat: str = "none"

    def setup(self):
        self.couplings = [
            ResidualCouplingLayer(
                self.channels,
                self.hidden_channels,
                self.kernel_size,
                self.dilation_rate,
                self.n_layers,
                self.gin_channels,
                dtype=self.dtype,
                scan_layers=self.scan_layers,
                remat=self.remat,
                name=f"flows_{2 * i}",
            )
            for i in range(self.n_flows)
        ]

    def __call__(self, x: jax.Array, mask: jax.Array, g: jax.Array | None = None, *, reverse: bool = False) -> jax.Array:
        """``x [B, T, channels]``, ``mask [B, T]``, ``g [B, gin]`` -> ``[B, T, channels]``."""
        if not reverse:
            for coupling in self.couplings:
                x = coupling(x, mask, g)[..., ::-1]
        else:
            for coupling in reversed(self.couplings):
                x = coupling(x[..., ::-1], mask, g, reverse=True)
        return x


# --------------------------------------------------------------------------- synthesizer


class SynthesizerOutput(NamedTuple):
    """Training forward of :class:`SynthesizerTrn` (frames at 50 Hz, ``inter`` latent channels)."""

    audio: jax.Array  # [B, segment_frames * hop] generated waveform slice
    ids_slice: jax.Array  # [B] int32 start frame of each slice
    mask: jax.Array  # [B, T] valid frames
    z: jax.Array  # [B, T, inter] posterior sample
    z_p: jax.Array  # [B, T, inter] flow(z)
    m_p: jax.Array  # [B, T, inter] prior mean
    logs_p: jax.Array  # [B, T, inter] prior log-std
    m_q: jax.Array  # [B, T, inter] posterior mean
    logs_q: jax.Array  # [B, T, inter] posterior log-std
    commit_loss: jax.Array  # scalar, 0 when the quantizer is frozen or not training
    codes: jax.Array  # [n_q, B, T/2] int32 semantic codes


class SynthesizerTrn(nn.Module):
    """SoVITS v2 generator: reference encoder, SSL projection + RVQ, prior (text) encoder, posterior encoder, flow, HiFi-GAN.

    Attributes:
      config: model hyperparameters.
      spec_channels: linear-spectrogram bins (``n_fft // 2 + 1``, 1025 in v2).
      ssl_dim: SSL feature channels (768 for HuBERT base).
      hop_length: samples per frame (640); must equal ``prod(config.upsample_rates)``.
      phoneme_vocab_size: phoneme table size (732 in v2).
      dtype: compute dtype; the SSL projection and quantizer always run in float32 (as upstream).
      scan_layers, remat: whether the text encoder's transformer stacks and the WaveNet stacks of
        the posterior encoder and the flow run their layers under ``lax.scan`` (one compiled layer
        body per stack; same parameters and results as the loop), and how the scanned bodies are
        rematerialised (:func:`~gptsovits_jax.models.layers.rematerialised`).
    """

    config: SoVITSConfig
    spec_channels: int
    ssl_dim: int
    hop_length: int
    phoneme_vocab_size: int = 732
    dtype: Dtype = jnp.float32
    scan_layers: bool = False
    remat: str = "none"

    def setup(self):
        c = self.config
        if math.prod(c.upsample_rates) != self.hop_length:
            raise ValueError(
                f"SynthesizerTrn: prod(upsample_rates) = {math.prod(c.upsample_rates)} must equal hop_length {self.hop_length}"
            )
        if c.gin_channels != c.mrte_hidden:
            raise ValueError(
                f"SynthesizerTrn: gin_channels ({c.gin_channels}) must equal mrte_hidden ({c.mrte_hidden}); MRTE adds the speaker vector"
            )
        if c.ref_spec_bins > self.spec_channels:
            raise ValueError(f"SynthesizerTrn: ref_spec_bins {c.ref_spec_bins} exceeds spec_channels {self.spec_channels}")
        self.ssl_proj = Conv1d(self.ssl_dim, 2, stride=2, dtype=jnp.float32)
        self.quantizer = ResidualVectorQuantizer(
            self.ssl_dim,
            c.codebook_size,
            n_q=c.n_q,
            decay=c.codebook_decay,
            kmeans_iters=c.kmeans_iters,
            dead_code_threshold=c.dead_code_threshold,
            frozen=c.freeze_quantizer,
        )
        stacks = {"scan_layers": self.scan_layers, "remat": self.remat}
        self.enc_p = TextEncoder(c, self.phoneme_vocab_size, dtype=self.dtype, **stacks)
        self.ref_enc = MelStyleEncoder(c.ref_hidden, c.gin_channels, dtype=self.dtype)
        self.enc_q = PosteriorEncoder(
            c.inter_channels, c.hidden_channels, c.posterior_kernel, 1, c.posterior_layers, c.gin_channels, dtype=self.dtype, **stacks
        )
        self.flow = ResidualCouplingBlock(
            c.inter_channels, c.hidden_channels, c.flow_kernel, 1, c.flow_layers, c.n_flows, c.gin_channels, dtype=self.dtype, **stacks
        )
        self.dec = Generator(
            c.resblock_kernel_sizes,
            c.resblock_dilation_sizes,
            c.upsample_rates,
            c.upsample_initial_channel,
            c.upsample_kernel_sizes,
            c.gin_channels,
            dtype=self.dtype,
        )

    # ---- pieces

    def _check_frames(self, ssl: jax.Array, spec: jax.Array) -> None:
        if spec.shape[-1] != self.spec_channels:
            raise ValueError(f"SynthesizerTrn: spec has {spec.shape[-1]} bins, expected spec_channels={self.spec_channels}")
        if ssl.shape[-1] != self.ssl_dim:
            raise ValueError(f"SynthesizerTrn: ssl has {ssl.shape[-1]} channels, expected ssl_dim={self.ssl_dim}")
        if ssl.shape[1] != spec.shape[1] or spec.shape[1] % 2:
            raise ValueError(f"SynthesizerTrn: ssl ({ssl.shape[1]}) and spec ({spec.shape[1]}) frames must be equal and even")

    def _reference(self, spec: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        bins = spec[..., : self.config.ref_spec_bins] * mask[..., None].astype(spec.dtype)
        return self.ref_enc(bins.astype(self.dtype), mask, deterministic=deterministic)

    def _quantize(self, ssl: jax.Array, lengths: jax.Array, train: bool, update_codebook: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
        """50 Hz ``ssl`` -> (quantized at 50 Hz ``[B, T, ssl_dim]``, codes ``[n_q, B, T/2]``, commit loss)."""
        ssl25 = self.ssl_proj(ssl.astype(jnp.float32))
        # A 25 Hz frame is valid when its first 50 Hz frame is; padded frames stay out of the codebook statistics.
        mask25 = sequence_mask((lengths + 1) // 2, ssl25.shape[1])
        quantized, codes, commit = self.quantizer(ssl25, mask25, train=train, update_codebook=update_codebook)
        return jnp.repeat(quantized, 2, axis=1), codes, commit

    def _prior_to_audio(
        self, m_p: jax.Array, logs_p: jax.Array, mask: jax.Array, ge: jax.Array, noise_scale: float, rng: jax.Array | None
    ) -> jax.Array:
        key = self.make_rng(SAMPLE_RNG) if rng is None else rng
        z_p = m_p + jax.random.normal(key, m_p.shape, m_p.dtype) * jnp.exp(logs_p) * noise_scale
        z = self.flow(z_p, mask, ge, reverse=True)
        return self.dec(z * mask[..., None].astype(z.dtype), ge)

    # ---- entry points

    def __call__(
        self,
        ssl: jax.Array,
        spec: jax.Array,
        spec_lens: jax.Array,
        text: jax.Array,
        text_lens: jax.Array,
        *,
        train: bool,
        update_codebook: bool = False,
    ) -> SynthesizerOutput:
        """Training forward (upstream ``SynthesizerTrn.forward``).

        Args:
          ssl: ``[B, T, ssl_dim]`` SSL features at 50 Hz (T even).
          spec: ``[B, T, spec_channels]`` linear magnitude spectrogram.
          spec_lens: ``[B]`` valid frames.
          text: ``[B, L]`` int32 phoneme ids; text_lens ``[B]``.
          train: dropout on, straight-through quantizer and commitment loss (unless frozen).
          update_codebook: EMA codebook update (needs the ``quantizer`` collection mutable).

        Returns:
          :class:`SynthesizerOutput`; ``audio`` is the decoded random ``segment_frames`` slice of ``z``.
        """
        self._check_frames(ssl, spec)
        det = not train
        mask = sequence_mask(spec_lens, spec.shape[1])
        ge = self._reference(spec, mask, det)
        quantized, codes, commit_loss = self._quantize(ssl, spec_lens, train, update_codebook)
        text_mask = sequence_mask(text_lens, text.shape[1])
        _, m_p, logs_p = self.enc_p(quantized, mask, text, text_mask, ge, deterministic=det)
        z, m_q, logs_q = self.enc_q(spec.astype(self.dtype), mask, ge)
        z_p = self.flow(z, mask, ge)
        z_slice, ids_slice = rand_slice_segments(self.make_rng(SAMPLE_RNG), z, spec_lens, self.config.segment_frames)
        audio = self.dec(z_slice, ge)
        return SynthesizerOutput(audio, ids_slice, mask, z, z_p, m_p, logs_p, m_q, logs_q, commit_loss, codes)

    def create_variables(self) -> None:
        """Create every parameter and codebook variable, running each submodule once on the shortest input it accepts.

        ``module.init(rngs, method=SynthesizerTrn.create_variables)`` gives the same variables
        (names, shapes and, for the same rngs, values) as initialising through the training
        forward, without compiling a full-length forward pass: the decoder sees one frame
        instead of a ``segment_frames`` slice.
        """
        frames, text_len = 2, 1
        ssl = jnp.zeros((1, frames, self.ssl_dim), jnp.float32)
        spec = jnp.zeros((1, frames, self.spec_channels), jnp.float32)
        lengths = jnp.full((1,), frames, jnp.int32)
        mask = sequence_mask(lengths, frames)
        ge = self._reference(spec, mask, True)
        quantized, _, _ = self._quantize(ssl, lengths, False, False)
        text = jnp.zeros((1, text_len), jnp.int32)
        self.enc_p(quantized, mask, text, jnp.ones((1, text_len), jnp.float32), ge)
        z, _, _ = self.enc_q(spec.astype(self.dtype), mask, ge)
        self.flow(z, mask, ge)
        self.dec(z[:, :1], ge)

    def reconstruct(self, spec: jax.Array, spec_lens: jax.Array) -> jax.Array:
        """Whole utterances decoded from their posterior mean: what the decoder makes of the latent alone.

        ``spec [B, T, spec_channels]``, ``spec_lens [B]`` -> ``[B, T * hop_length]`` samples; the
        speaker vector comes from the same spectrogram, ``z = m_q`` (no posterior noise, no prior,
        no flow, no dropout; the posterior encoder still draws its unused noise from the ``sample``
        stream). A model whose decoder ignores its latent gives the same frame everywhere.
        """
        mask = sequence_mask(spec_lens, spec.shape[1])
        ge = self._reference(spec, mask, True)
        _, m_q, _ = self.enc_q(spec.astype(self.dtype), mask, ge)
        return self.dec(m_q, ge)

    def extract_latent(self, ssl: jax.Array) -> jax.Array:
        """Semantic tokens for the GPT stage: ``ssl [B, T, ssl_dim]`` (50 Hz, T even) -> codes ``[n_q, B, T/2]`` int32."""
        return self.quantizer.encode(self.ssl_proj(ssl.astype(jnp.float32)))

    def decode(
        self,
        codes: jax.Array,
        text: jax.Array,
        text_lens: jax.Array,
        refer_spec: jax.Array,
        refer_lens: jax.Array,
        noise_scale: float = 0.5,
        rng: jax.Array | None = None,
        code_lens: jax.Array | None = None,
    ) -> jax.Array:
        """Inference (upstream ``decode``): codes + phonemes + reference spectrogram -> waveform.

        Args:
          codes: ``[n_q, B, T25]`` semantic codes at 25 Hz; ``code_lens [B]`` valid codes (default all).
          text: ``[B, L]`` phoneme ids; text_lens ``[B]``.
          refer_spec: ``[B, Tr, spec_channels]`` reference spectrogram; refer_lens ``[B]``.
          noise_scale: prior temperature.
          rng: prior noise key (default: the ``sample`` stream).

        Returns:
          ``[B, 2 * T25 * hop_length]`` samples (frames beyond ``2 * code_lens`` decode zeros).
        """
        refer_mask = sequence_mask(refer_lens, refer_spec.shape[1])
        ge = self._reference(refer_spec, refer_mask, True)
        quantized = jnp.repeat(self.quantizer.decode(codes), 2, axis=1)
        lengths = jnp.full((codes.shape[1],), quantized.shape[1]) if code_lens is None else 2 * code_lens
        mask = sequence_mask(lengths, quantized.shape[1])
        _, m_p, logs_p = self.enc_p(quantized, mask, text, sequence_mask(text_lens, text.shape[1]), ge)
        return self._prior_to_audio(m_p, logs_p, mask, ge, noise_scale, rng)

    def infer_full(
        self,
        ssl: jax.Array,
        spec: jax.Array,
        spec_lens: jax.Array,
        text: jax.Array,
        text_lens: jax.Array,
        noise_scale: float = 0.5,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Whole-utterance synthesis from the utterance's own quantized content and spectrogram (upstream ``infer``).

        Inputs as :meth:`__call__`; no dropout, no codebook update. Returns ``[B, T * hop_length]``
        samples (zero latent beyond each ``spec_lens``).
        """
        self._check_frames(ssl, spec)
        mask = sequence_mask(spec_lens, spec.shape[1])
        ge = self._reference(spec, mask, True)
        quantized, _, _ = self._quantize(ssl, spec_lens, False, False)
        _, m_p, logs_p = self.enc_p(quantized, mask, text, sequence_mask(text_lens, text.shape[1]), ge)
        return self._prior_to_audio(m_p, logs_p, mask, ge, noise_scale, rng)


def build_synthesizer(cfg: Config, dtype: Dtype = jnp.float32, scan_layers: bool = False, remat: str = "none") -> SynthesizerTrn:
    """The synthesizer described by ``cfg`` (model section, spectrogram bins, SSL width, hop, phoneme table).

    ``dtype``, ``scan_layers`` and ``remat``: how it computes (:class:`SynthesizerTrn`); the parameters are the same.
    """
    return SynthesizerTrn(
        cfg.sovits,
        spec_channels=cfg.audio.spec_channels,
        ssl_dim=cfg.ssl.dim,
        hop_length=cfg.audio.hop_length,
        phoneme_vocab_size=cfg.text.phoneme_vocab_size,
        dtype=dtype,
        scan_layers=scan_layers,
        remat=remat,
    )
