"""Shared building blocks of the SoVITS synthesizer and the HiFi-GAN discriminators.

Layouts are channels-last: frame sequences ``[B, T, C]`` (T frames at 50 Hz unless
stated), 2-D maps ``[B, H, W, C]``. Masks are ``[B, T]`` with 1 on valid frames.

Parameter names mirror the upstream PyTorch modules (``GPT_SoVITS/module``) so a
weight importer and regex-based optimizer groups can address them:

* a PyTorch ``ModuleList`` entry ``name.{i}`` becomes the submodule ``name_{i}``
  (``in_layers.3`` -> ``in_layers_3``, ``norm_layers_1.0`` -> ``norm_layers_1_0``);
* plain convolutions and linear layers hold ``kernel`` and ``bias``; a PyTorch
  ``weight`` of shape ``[out, in/groups, k]`` is stored as ``kernel[k, in/groups, out]``
  (``[kh, kw, in, out]`` for 2-D convolutions, ``[in, out]`` for linear layers);
* weight-normed convolutions hold ``weight_v`` (same layout as ``kernel``),
  ``weight_g`` (1-D, the size of PyTorch's dim 0: out channels for convolutions,
  **in** channels for ``ConvTranspose1d`` whose PyTorch weight is ``[in, out, k]``) and
  ``bias``; the effective kernel is ``weight_g * weight_v / ||weight_v||`` with the norm
  over every other axis (``torch.nn.utils.weight_norm`` with ``dim=0``);
* spectral-normed convolutions hold ``weight_orig`` and ``bias`` as parameters and the
  power-iteration vector ``weight_u`` in the :data:`SPECTRAL_COLLECTION` collection;
* ``LayerNorm`` holds ``gamma``/``beta``, embeddings hold ``embedding``.

Initialisation follows PyTorch defaults unless a module says otherwise: convolution
and linear weights and biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any
Initializer = Callable[..., jax.Array]

LRELU_SLOPE = 0.1
SPECTRAL_COLLECTION = "spectral_stats"
NORMS = (None, "weight", "spectral")


# --------------------------------------------------------------------------- functions


def torch_uniform(fan_in: int) -> Initializer:
    """PyTorch's default weight/bias initialiser for conv and linear layers: ``U(-b, b)``, ``b = 1/sqrt(fan_in)``."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def sequence_mask(lengths: jax.Array, max_len: int, dtype: Dtype = jnp.float32) -> jax.Array:
    """``[B]`` lengths -> ``[B, max_len]`` mask, 1 where the position index is below the length."""
    return (jnp.arange(max_len)[None, :] < lengths[:, None]).astype(dtype)


def norm_except(v: jax.Array, axis: int) -> jax.Array:
    """L2 norm of ``v`` over every axis but ``axis``: a 1-D array of length ``v.shape[axis]``."""
    axes = tuple(a for a in range(v.ndim) if a != axis % v.ndim)
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=axes))


def weight_norm(v: jax.Array, g: jax.Array, axis: int) -> jax.Array:
    """Effective weight-normed kernel ``g * v / ||v||`` (norm over all axes but ``axis``; ``g`` is 1-D)."""
    shape = [1] * v.ndim
    shape[axis] = v.shape[axis]
    return v * (g / norm_except(v, axis)).reshape(shape)


def matmul_convolutions() -> bool:
    """Whether strided or grouped :func:`conv1d`, :func:`conv_transpose1d` and ``(kh, 1)`` :func:`conv2d` lower to slices and matmuls.

    True on CPU, where the gradients of XLA's strided, grouped and input-dilated (transposed)
    convolutions run one to two orders of magnitude below its matmul speed (the v2
    discriminator's parameter gradient took 12.3 s instead of 3.9 s). Dense stride-1
    :func:`conv1d` stays native everywhere: on CPU it beats the matmul form forward and
    backward (in scanned layer stacks its gradients are written in XLA:CPU's fast layout,
    :func:`_canonical_grad_conv1d`). Other backends keep every convolution native, which also avoids the
    ``kernel_size``-times larger activations the matmul form stores for the backward pass.
    """
    return jax.default_backend() == "cpu"


def _xla_conv1d(
    x: jax.Array, kernel: jax.Array, padding: tuple[int, int], stride: int = 1, dilation: int = 1, groups: int = 1
) -> jax.Array:
    """XLA's 1-D correlation, channels last: ``x [B, T, C_in]``, ``kernel [K, C_in / groups, C_out]``."""
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride,),
        padding=(padding,),
        rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=groups,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _canonical_grad_conv1d(x: jax.Array, kernel: jax.Array, padding: tuple[int, int]) -> jax.Array:
    """:func:`_xla_conv1d` (stride 1, dilation 1) whose gradients are convolutions in the same ``NWC``/``WIO`` layout.

    The gradients JAX derives for a convolution swap its dimension labels (``b0f_0oi`` for the
    input, ``f0b_i0o`` for the kernel). XLA:CPU rewrites such convolutions into its fast
    (Eigen) form only in the program's top-level computation; inside a ``lax.scan`` body (the
    scanned SoVITS stacks) it runs them through a generic loop nest, more than an order of
    magnitude slower. Here both gradients are written in the fast form, transposes explicit:

    - ``dx = conv(g, flip(kernel)^T)`` with padding ``(K - 1 - pl, K - 1 - pr)``;
    - ``dkernel[k, i, o] = sum_{b, t} x_pad[b, t + k, i] g[b, t, o]``: a convolution of
      ``x`` transposed to ``[C_in, T, B]`` (``C_in`` as the batch) with ``g`` as the window
      ``[T', B, C_out]``, giving ``[C_in, K, C_out]``.

    Needs ``0 <= pl, pr <= K - 1`` (the 'same' and 'valid' paddings of the models).
    """
    return _xla_conv1d(x, kernel, padding)


def _canonical_grad_conv1d_fwd(x, kernel, padding):
    return _xla_conv1d(x, kernel, padding), (x, kernel)


def _canonical_grad_conv1d_bwd(padding, residuals, g):
    x, kernel = residuals
    span = kernel.shape[0] - 1
    dx = _xla_conv1d(g, jnp.flip(kernel, 0).transpose(0, 2, 1), (span - padding[0], span - padding[1]))
    dkernel = _xla_conv1d(x.transpose(2, 1, 0), g.transpose(1, 0, 2), padding)
    return dx, dkernel.transpose(1, 0, 2)


_canonical_grad_conv1d.defvjp(_canonical_grad_conv1d_fwd, _canonical_grad_conv1d_bwd)


def _taps(x: jax.Array, kernel_size: int, stride: int, dilation: int, padding: tuple[int, int]) -> list[jax.Array]:
    """The ``kernel_size`` strided windows of ``x [B, T, ...]``, zero-padded along axis 1, that meet each output position.

    With ``xp`` the padded input, window ``k`` holds ``xp[:, k * dilation + stride * t]`` for
    ``t < (T + pl + pr - dilation * (kernel_size - 1) - 1) // stride + 1`` (the output length).
    """
    x = jnp.pad(x, ((0, 0), tuple(padding)) + ((0, 0),) * (x.ndim - 2))
    length = (x.shape[1] - dilation * (kernel_size - 1) - 1) // stride + 1
    return [lax.slice_in_dim(x, k * dilation, k * dilation + stride * (length - 1) + 1, stride=stride, axis=1) for k in range(kernel_size)]


def _im2col_matmul(x: jax.Array, kernel: jax.Array, stride: int, dilation: int, padding: tuple[int, int]) -> jax.Array:
    """Dense correlation along axis 1 as one matmul: ``x [B, T, ..., C_in]``, ``kernel [K, C_in, C_out]`` -> ``[B, T_out, ..., C_out]``.

    The ``K`` taps go side by side in channels and meet ``kernel`` reshaped to ``[K * C_in, C_out]``.
    """
    k, in_ch, out_ch = kernel.shape
    taps = _taps(x, k, stride, dilation, padding)
    cols = jnp.concatenate(taps, axis=-1) if k > 1 else taps[0]
    return jnp.dot(cols, kernel.reshape(k * in_ch, out_ch))


def conv1d(
    x: jax.Array,
    kernel: jax.Array,
    *,
    stride: int = 1,
    padding: tuple[int, int] = (0, 0),
    dilation: int = 1,
    groups: int = 1,
    canonical_grads: bool = False,
) -> jax.Array:
    """PyTorch ``Conv1d`` semantics in channels-last layout.

    Args:
      x: ``[B, T, C_in]``.
      kernel: ``[K, C_in / groups, C_out]``.
      padding: zeros added (left, right) along time.
      canonical_grads: on CPU, a dense stride-1 convolution writes its gradients in XLA:CPU's
        fast layout (:func:`_canonical_grad_conv1d`; for ``lax.scan`` bodies). Reverse mode
        only: ``jax.jvp`` through it raises.

    Returns:
      ``[B, (T + pl + pr - dilation * (K - 1) - 1) // stride + 1, C_out]``.
    """
    k, in_per_group, out_ch = kernel.shape
    if k == 1 and stride == 1 and groups == 1 and padding == (0, 0):
        return jnp.einsum("btc,co->bto", x, kernel[0])
    if (
        canonical_grads
        and stride == 1
        and groups == 1
        and dilation == 1
        and 0 <= min(padding) <= max(padding) < k
        and jax.default_backend() == "cpu"
    ):
        return _canonical_grad_conv1d(x, kernel, tuple(padding))
    if (stride == 1 and groups == 1) or not matmul_convolutions():
        return _xla_conv1d(x, kernel, padding, stride, dilation, groups)
    # im2col: the K taps side by side in channels, then one matmul (per group) over K * C_in / groups.
    if groups == 1:
        return _im2col_matmul(x, kernel, stride, dilation, padding)
    taps = _taps(x, k, stride, dilation, padding)
    length = taps[0].shape[1]
    cols = jnp.stack(taps, axis=2).reshape(x.shape[0], length, k, groups, in_per_group)
    y = jnp.einsum("btkgc,kcgo->btgo", cols, kernel.reshape(k, in_per_group, groups, out_ch // groups))
    return y.reshape(x.shape[0], length, out_ch)


def conv_transpose1d(x: jax.Array, kernel: jax.Array, *, stride: int, padding: int) -> jax.Array:
    """PyTorch ``ConvTranspose1d`` semantics in channels-last layout.

    Args:
      x: ``[B, T, C_in]``.
      kernel: ``[K, C_in, C_out]`` (PyTorch's ``[C_in, C_out, K]`` with the tap axis first).
      stride: upsampling factor; ``padding`` trims that many samples at both ends.

    Returns:
      ``[B, (T - 1) * stride - 2 * padding + K, C_out]``.
    """
    k, in_ch, out_ch = kernel.shape
    if not matmul_convolutions():
        # A transposed convolution is the correlation of the stride-dilated input with the flipped kernel.
        return lax.conv_general_dilated(
            x,
            jnp.flip(kernel, axis=0),
            window_strides=(1,),
            padding=((k - 1 - padding, k - 1 - padding),),
            lhs_dilation=(stride,),
            dimension_numbers=("NWC", "WIO", "NWC"),
        )
    # Overlap-add: input frame t writes tap j * stride + r to output sample (t + j) * stride + r. One matmul
    # computes every tap of every frame; the ceil(K / stride) blocks of `stride` taps are added at frame shifts j.
    batch, frames, _ = x.shape
    blocks = -(-k // stride)
    kernel = jnp.pad(kernel, ((0, blocks * stride - k), (0, 0), (0, 0)))
    taps = jnp.dot(x, kernel.transpose(1, 0, 2).reshape(in_ch, blocks * stride * out_ch))
    taps = taps.reshape(batch, frames, blocks, stride, out_ch)
    out = sum(jnp.pad(taps[:, :, j], ((0, 0), (j, blocks - 1 - j), (0, 0), (0, 0))) for j in range(blocks))
    out = out.reshape(batch, (frames + blocks - 1) * stride, out_ch)
    return out[:, padding : padding + (frames - 1) * stride - 2 * padding + k]


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    *,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)),
) -> jax.Array:
    """PyTorch ``Conv2d`` semantics in channels-last layout: ``x [B, H, W, C_in]``, ``kernel [kh, kw, C_in, C_out]``.

    Returns ``[B, (H + ph_top + ph_bottom - kh) // sh + 1, (W + pw_left + pw_right - kw) // sw + 1, C_out]``.
    """
    if not matmul_convolutions() or kernel.shape[1] != 1 or stride[1] != 1 or tuple(padding[1]) != (0, 0):
        return lax.conv_general_dilated(x, kernel, window_strides=stride, padding=padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # A (kh, 1) kernel (the period discriminator's) convolves every column alone: im2col along H, one matmul.
    return _im2col_matmul(x, kernel[:, 0], stride[0], 1, padding[0])


def mish(x: jax.Array) -> jax.Array:
    """``x * tanh(softplus(x))``."""
    return x * jnp.tanh(jax.nn.softplus(x))


# --------------------------------------------------------------------------- dropout


def _mix32(x: jax.Array) -> jax.Array:
    """A bijective uint32 mixer (Wellons' ``lowbias32``): each input bit flips about half of the output bits."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


class Dropout(nn.Module):
    """Inverted dropout (``flax.linen.Dropout`` semantics) with a hashed mask: ``[...] -> [...]``.

    Each element is dropped independently with probability ``rate`` and survivors are
    scaled by ``1 / (1 - rate)``, as with ``flax.linen.Dropout``; only the random bits are
    drawn differently. One threefry call on the ``dropout`` rng gives two 32-bit seeds
    ``s0, s1``, and element ``i`` (flat index) gets ``mix(mix(i ^ s0) + s1)``. jax's
    partitionable threefry costs about 15 ns per element on CPU, which made dropout close
    to half of the v2 GPT train step there (the attention weights alone take 107M draws per
    step); the hash fuses into the multiply and costs well under 1 ns. Masks depend only on
    the key and the element index, so they do not change with sharding.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        if x.size >= 2**32:
            raise ValueError(f"{self.name}: {x.size} elements exceed the 2^32 flat indices the dropout hash distinguishes")
        seed = jax.random.bits(self.make_rng("dropout"), (2,), jnp.uint32)
        index = lax.iota(jnp.uint32, x.size).reshape(x.shape)
        bits = _mix32(_mix32(index ^ seed[0]) + seed[1])
        keep = bits >= jnp.uint32(min(round(self.rate * 2**32), 2**32 - 1))
        return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros((), x.dtype))


# --------------------------------------------------------------------------- scanned layer stacks

REMAT_POLICIES = ("none", "dots", "full")


def rematerialised(fn: Callable, remat: str) -> Callable:
    """``fn`` under ``jax.checkpoint`` as ``remat`` says.

    ``"none"``: ``fn`` itself; ``"dots"``: keep the outputs of matmuls without batch
    dimensions (dense layers, 1x1 convolutions) and recompute the rest in the backward pass;
    ``"full"``: keep only ``fn``'s inputs.
    """
    if remat == "none":
        return fn
    if remat == "dots":
        return jax.checkpoint(fn, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable, prevent_cse=False)
    if remat == "full":
        return jax.checkpoint(fn, policy=jax.checkpoint_policies.nothing_saveable, prevent_cse=False)
    raise ValueError(f"unknown remat {remat!r}; choose one of {', '.join(REMAT_POLICIES)}")


def scan_layers(
    layer: nn.Module,
    per_layer_params: Sequence[Any],
    carry: Any,
    xs: Any = None,
    *,
    dropout_rng: jax.Array | None = None,
    remat: str = "none",
    **kwargs: Any,
) -> Any:
    """Run the unbound ``layer`` once per entry of ``per_layer_params`` under ``lax.scan``: one compiled body.

    The parameter trees (one per layer, identical structure and shapes) are stacked into
    ``[num_layers, ...]`` arrays for the scan only, so the model keeps its per-layer names and
    the gradient flows back through the stacking to each layer's leaves. Layer ``i`` computes
    ``carry = layer.apply({"params": per_layer_params[i]}, carry, xs[i], **kwargs)`` (``xs``:
    a pytree with a leading ``num_layers`` axis, or None for no per-layer input). With
    ``dropout_rng``, layer ``i`` gets ``split(dropout_rng, num_layers)[i]`` as its ``dropout``
    stream (the masks differ from the layer loop's, which draws from the module path).
    ``remat`` wraps the body (:func:`rematerialised`); recomputation redraws the same masks.

    Returns the final carry.
    """
    num_layers = len(per_layer_params)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_layer_params)
    keys = jnp.zeros((num_layers,), jnp.uint32) if dropout_rng is None else jax.random.split(dropout_rng, num_layers)

    def body(c, per_layer):
        params, key, x = per_layer
        rngs = None if dropout_rng is None else {"dropout": key}
        args = () if xs is None else (x,)
        return layer.apply({"params": params}, c, *args, rngs=rngs, **kwargs), None

    carry, _ = lax.scan(rematerialised(body, remat), carry, (stacked, keys, xs))
    return carry


# --------------------------------------------------------------------------- normalised kernels


def _normalised_kernel(
    module: nn.Module,
    shape: tuple[int, ...],
    norm_axis: int,
    norm: str | None,
    kernel_init: Initializer,
) -> jax.Array:
    """Create the kernel parameters of ``module`` for ``norm`` and return the effective kernel.

    ``norm_axis`` is the kernel axis that PyTorch's dim 0 maps to (the axis of ``weight_g``
    and of the spectral-norm rows).
    """
    if norm not in NORMS:
        raise ValueError(f"{module.name}: unknown norm {norm!r}; choose one of {NORMS}")
    if norm is None:
        return module.param("kernel", kernel_init, shape)
    if norm == "weight":
        v = module.param("weight_v", kernel_init, shape)
        g = module.param("weight_g", lambda _key: norm_except(v, norm_axis))
        return weight_norm(v, g, norm_axis)
    w = module.param("weight_orig", kernel_init, shape)
    matrix = jnp.moveaxis(w, norm_axis, 0).reshape(shape[norm_axis], -1)
    u_var = module.variable(
        SPECTRAL_COLLECTION,
        "weight_u",
        lambda: _l2_normalise(jax.random.normal(module.make_rng("params"), (shape[norm_axis],))),
    )
    u = u_var.value
    # One power iteration per call (PyTorch does one per training forward); u and v are constants for autodiff.
    v = lax.stop_gradient(_l2_normalise(matrix.T @ u))
    u = lax.stop_gradient(_l2_normalise(matrix @ v))
    if module.is_mutable_collection(SPECTRAL_COLLECTION) and not module.is_initializing():
        u_var.value = u
    sigma = jnp.dot(u, matrix @ v)
    return w / sigma


def _l2_normalise(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x), 1e-12)


def _pair(padding: int | tuple[int, int]) -> tuple[int, int]:
    return (padding, padding) if isinstance(padding, int) else (int(padding[0]), int(padding[1]))


# --------------------------------------------------------------------------- convolutions


class Conv1d(nn.Module):
    """PyTorch-style ``Conv1d`` on ``[B, T, C_in]`` -> ``[B, T', features]``, optionally weight- or spectral-normed.

    Attributes:
      padding: zeros added at both ends (int) or (left, right).
      norm: ``None``, ``"weight"`` (``weight_v``/``weight_g``) or ``"spectral"``.
      kernel_init, bias_init: initialisers of the (unnormalised) kernel and the bias; ``None`` = PyTorch default.
      canonical_grads: see :func:`conv1d` (set by the bodies of scanned layer stacks).
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int | tuple[int, int] = 0
    dilation: int = 1
    groups: int = 1
    use_bias: bool = True
    norm: str | None = None
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: Dtype = jnp.float32
    canonical_grads: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_ch = x.shape[-1]
        if in_ch % self.groups or self.features % self.groups:
            raise ValueError(f"{self.name}: {self.groups} groups must divide channels {in_ch} -> {self.features}")
        fan_in = in_ch // self.groups * self.kernel_size
        shape = (self.kernel_size, in_ch // self.groups, self.features)
        kernel = _normalised_kernel(self, shape, 2, self.norm, self.kernel_init or torch_uniform(fan_in))
        y = conv1d(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            stride=self.stride,
            padding=_pair(self.padding),
            dilation=self.dilation,
            groups=self.groups,
            canonical_grads=self.canonical_grads,
        )
        if self.use_bias:
            y = y + self.param("bias", self.bias_init or torch_uniform(fan_in), (self.features,)).astype(self.dtype)
        return y


class ConvTranspose1d(nn.Module):
    """PyTorch-style ``ConvTranspose1d`` on ``[B, T, C_in]`` -> ``[B, (T-1)*stride - 2*padding + K, features]``.

    With ``norm="weight"``, ``weight_g`` has ``C_in`` entries (PyTorch normalises its
    ``[in, out, k]`` weight per input channel).
    """

    features: int
    kernel_size: int
    stride: int
    padding: int = 0
    norm: str | None = None
    kernel_init: Initializer | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_ch = x.shape[-1]
        # PyTorch computes fan_in of the [in, out, k] weight from its dim 1: out * k.
        fan_in = self.features * self.kernel_size
        shape = (self.kernel_size, in_ch, self.features)
        kernel = _normalised_kernel(self, shape, 1, self.norm, self.kernel_init or torch_uniform(fan_in))
        y = conv_transpose1d(x.astype(self.dtype), kernel.astype(self.dtype), stride=self.stride, padding=self.padding)
        return y + self.param("bias", torch_uniform(fan_in), (self.features,)).astype(self.dtype)


class Conv2d(nn.Module):
    """PyTorch-style ``Conv2d`` on ``[B, H, W, C_in]`` -> ``[B, H', W', features]``, optionally weight- or spectral-normed."""

    features: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    norm: str | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_ch = x.shape[-1]
        kh, kw = self.kernel_size
        fan_in = in_ch * kh * kw
        kernel = _normalised_kernel(self, (kh, kw, in_ch, self.features), 3, self.norm, torch_uniform(fan_in))
        ph, pw = self.padding
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), stride=tuple(self.stride), padding=((ph, ph), (pw, pw)))
        return y + self.param("bias", torch_uniform(fan_in), (self.features,)).astype(self.dtype)


class Linear(nn.Module):
    """PyTorch-style ``nn.Linear`` on ``[..., C_in]`` -> ``[..., features]`` (``kernel [C_in, features]``, ``bias``)."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = torch_uniform(x.shape[-1])
        kernel = self.param("kernel", init, (x.shape[-1], self.features))
        bias = self.param("bias", init, (self.features,))
        return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)


class LayerNorm(nn.Module):
    """Layer norm over the channel (last) axis with ``gamma``/``beta``, eps 1e-5 (upstream ``modules.LayerNorm``)."""

    eps: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        gamma = self.param("gamma", nn.initializers.ones, (channels,))
        beta = self.param("beta", nn.initializers.zeros, (channels,))
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * lax.rsqrt(var + self.eps) * gamma + beta
        return y.astype(self.dtype)


# --------------------------------------------------------------------------- WaveNet


def _wn_layer(
    x: jax.Array, output: jax.Array, cond: jax.Array | None, m: jax.Array, in_layer: nn.Module, res_skip: nn.Module, last: bool
) -> tuple[jax.Array, jax.Array]:
    """One :class:`WN` layer on ``(x, skip sum)`` given its condition slice ``cond [B, 1, 2H]`` (or None)."""
    h_ch = output.shape[-1]
    x_in = in_layer(x)
    if cond is not None:
        x_in = x_in + cond
    acts = jnp.tanh(x_in[..., :h_ch]) * jax.nn.sigmoid(x_in[..., h_ch:])
    y = res_skip(acts)
    if last:
        return x, output + y
    return (x + y[..., :h_ch]) * m, output + y[..., h_ch:]


class WNLayer(nn.Module):
    """The scanned body of :class:`WN`: one gated layer before the last (``in_layer``, ``res_skip``), dilation 1.

    ``((x, skip) [B, T, H] each, cond [B, 1, 2H] or None, m [B, T, 1] mask) -> (x, skip)``.
    """

    hidden_channels: int
    kernel_size: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, carry: tuple[jax.Array, jax.Array], cond: jax.Array | None = None, *, m: jax.Array) -> tuple[jax.Array, jax.Array]:
        h_ch, pad = self.hidden_channels, (self.kernel_size - 1) // 2
        in_layer = Conv1d(2 * h_ch, self.kernel_size, padding=pad, norm="weight", dtype=self.dtype, canonical_grads=True, name="in_layer")
        res_skip = Conv1d(2 * h_ch, 1, norm="weight", dtype=self.dtype, name="res_skip")
        return _wn_layer(*carry, cond, m, in_layer, res_skip, last=False)


class WN(nn.Module):
    """WaveNet-style stack of gated dilated convolutions with residual and skip outputs (upstream ``modules.WN``).

    Layer i: ``a = tanh(h[:H] + g_i[:H]) * sigmoid(h[H:] + g_i[H:])`` with
    ``h = in_layers_i(x)`` (kernel ``kernel_size``, dilation ``dilation_rate**i``) and
    ``g_i`` the i-th slice of ``cond_layer(g)`` (computed once); ``res_skip_layers_i(a)``
    adds its first half to ``x`` (masked) and its second half to the skip sum (the last
    layer is all skip). Every convolution is weight-normed. Upstream's dropout inside
    WN is 0 in every use, so there is none here.

    With ``scan`` (and ``dilation_rate`` 1, where every layer but the last has the same
    shapes), the layers before the last run as one :class:`WNLayer` body under ``lax.scan``
    (:func:`scan_layers`) and the last one after it; the parameters keep their per-layer
    names either way, and ``remat`` (scan only) rematerialises the body. Initialisation
    always runs the loop.

    Returns the masked skip sum ``[B, T, hidden_channels]``.
    """

    hidden_channels: int
    kernel_size: int
    dilation_rate: int
    n_layers: int
    gin_channels: int = 0
    dtype: Dtype = jnp.float32
    scan: bool = False
    remat: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, g: jax.Array | None = None) -> jax.Array:
        """``x [B, T, H]``, ``mask [B, T]``, ``g [B, gin_channels]`` (a global condition) -> ``[B, T, H]``."""
        if self.kernel_size % 2 != 1:
            raise ValueError(f"{self.name}: kernel_size must be odd, got {self.kernel_size}")
        h_ch = self.hidden_channels
        m = mask[..., None].astype(self.dtype)
        conds = [None] * self.n_layers
        if self.gin_channels:
            if g is None:
                raise ValueError(f"{self.name}: built with gin_channels={self.gin_channels} but called without g")
            cond = Conv1d(2 * h_ch * self.n_layers, 1, norm="weight", dtype=self.dtype, name="cond_layer")(g[:, None, :])
            conds = [cond[..., i * 2 * h_ch : (i + 1) * 2 * h_ch] for i in range(self.n_layers)]
        output = jnp.zeros((*x.shape[:-1], h_ch), self.dtype)
        first = 0
        if self.scan and self.dilation_rate == 1 and self.n_layers > 1 and not self.is_initializing():
            first = self.n_layers - 1
            params = self.variables["params"]
            per_layer = [{"in_layer": params[f"in_layers_{i}"], "res_skip": params[f"res_skip_layers_{i}"]} for i in range(first)]
            xs = None if conds[0] is None else jnp.stack(conds[:first])
            layer = WNLayer(h_ch, self.kernel_size, dtype=self.dtype, parent=None)
            x, output = scan_layers(layer, per_layer, (x, output), xs, remat=self.remat, m=m)
        for i in range(first, self.n_layers):
            dilation = self.dilation_rate**i
            pad = (self.kernel_size * dilation - dilation) // 2
            last = i == self.n_layers - 1
            in_layer = Conv1d(
                2 * h_ch, self.kernel_size, padding=pad, dilation=dilation, norm="weight", dtype=self.dtype, name=f"in_layers_{i}"
            )
            res_skip = Conv1d(h_ch if last else 2 * h_ch, 1, norm="weight", dtype=self.dtype, name=f"res_skip_layers_{i}")
            x, output = _wn_layer(x, output, conds[i], m, in_layer, res_skip, last)
        return output * m


# --------------------------------------------------------------------------- attention


def _relative_to_absolute(rel: jax.Array) -> jax.Array:
    """``[..., L, 2L-1]`` logits indexed by offset ``j - i + L - 1`` -> ``[..., L, L]`` indexed by key ``j``."""
    *lead, length, _ = rel.shape
    x = jnp.pad(rel, [(0, 0)] * len(lead) + [(0, 0), (0, 1)])
    x = x.reshape(*lead, 2 * length * length)
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, length - 1)])
    return x.reshape(*lead, length + 1, 2 * length - 1)[..., :length, length - 1 :]


def _absolute_to_relative(x: jax.Array) -> jax.Array:
    """``[..., L, L]`` weights indexed by key ``j`` -> ``[..., L, 2L-1]`` indexed by offset ``j - i + L - 1``."""
    *lead, length, _ = x.shape
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (0, length - 1)])
    x = x.reshape(*lead, length * (2 * length - 1))
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(length, 0)])
    return x.reshape(*lead, length, 2 * length)[..., 1:]


def _window_to_full(rel: jax.Array, window: int, length: int) -> jax.Array:
    """``[..., 2w+1]`` offsets ``-w..w`` -> ``[..., 2L-1]`` offsets ``-(L-1)..L-1`` (zeros outside the window)."""
    if length - 1 >= window:
        extra = length - 1 - window
        return jnp.pad(rel, [(0, 0)] * (rel.ndim - 1) + [(extra, extra)])
    cut = window - (length - 1)
    return rel[..., cut : rel.shape[-1] - cut]


def _full_to_window(rel: jax.Array, window: int, length: int) -> jax.Array:
    """Inverse of :func:`_window_to_full`: keep offsets ``-w..w`` of ``[..., 2L-1]`` (zero-filled beyond ``L-1``)."""
    if length - 1 >= window:
        start = length - 1 - window
        return rel[..., start : start + 2 * window + 1]
    cut = window - (length - 1)
    return jnp.pad(rel, [(0, 0)] * (rel.ndim - 1) + [(cut, cut)])


class MultiHeadAttention(nn.Module):
    """VITS multi-head attention with optional relative positions (upstream ``attentions.MultiHeadAttention``).

    ``conv_q``/``conv_k``/``conv_v``/``conv_o`` are 1x1 convolutions (q/k/v xavier-uniform).
    With ``window_size`` w, learned relative key and value embeddings ``emb_rel_k`` and
    ``emb_rel_v`` ``[1, 2w+1, d_k]`` (shared across heads, ``N(0, d_k^-1)``) add
    ``(q/sqrt(d_k)) . emb_rel_k[j - i + w]`` to the logit of query i and key j and
    ``sum_j p_ij emb_rel_v[j - i + w]`` to the output, for ``|j - i| <= w`` only.
    Masked logits are set to -1e4; dropout applies to the attention weights.
    """

    channels: int
    out_channels: int
    n_heads: int
    dropout: float = 0.0
    window_size: int | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array, mask: jax.Array | None = None, *, deterministic: bool = True) -> jax.Array:
        """Queries from ``x [B, Tq, C]``, keys/values from ``c [B, Tk, C]``; ``mask [B, Tq, Tk]`` (1 = attend) -> ``[B, Tq, out]``."""
        if self.channels % self.n_heads:
            raise ValueError(f"{self.name}: channels {self.channels} not divisible by {self.n_heads} heads")
        d_k = self.channels // self.n_heads
        xavier = nn.initializers.xavier_uniform()
        q = Conv1d(self.channels, 1, kernel_init=xavier, dtype=self.dtype, name="conv_q")(x)
        k = Conv1d(self.channels, 1, kernel_init=xavier, dtype=self.dtype, name="conv_k")(c)
        v = Conv1d(self.channels, 1, kernel_init=xavier, dtype=self.dtype, name="conv_v")(c)
        batch, t_q, t_k = x.shape[0], x.shape[1], c.shape[1]
        q = q.reshape(batch, t_q, self.n_heads, d_k).transpose(0, 2, 1, 3) / math.sqrt(d_k)
        k = k.reshape(batch, t_k, self.n_heads, d_k).transpose(0, 2, 1, 3)
        v = v.reshape(batch, t_k, self.n_heads, d_k).transpose(0, 2, 1, 3)
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k)
        if self.window_size is not None:
            if t_q != t_k:
                raise ValueError(f"{self.name}: relative attention needs self-attention, got {t_q} queries and {t_k} keys")
            w = self.window_size
            init = nn.initializers.normal(d_k**-0.5)
            emb_k = self.param("emb_rel_k", init, (1, 2 * w + 1, d_k)).astype(self.dtype)
            emb_v = self.param("emb_rel_v", init, (1, 2 * w + 1, d_k)).astype(self.dtype)
            rel = jnp.einsum("bhqd,rd->bhqr", q, emb_k[0])
            scores = scores + _relative_to_absolute(_window_to_full(rel, w, t_q))
        if mask is not None:
            scores = jnp.where(mask[:, None, :, :] > 0, scores, jnp.asarray(-1e4, scores.dtype))
        p_attn = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
        p_attn = Dropout(self.dropout)(p_attn, deterministic=deterministic)
        out = jnp.einsum("bhqk,bhkd->bhqd", p_attn, v)
        if self.window_size is not None:
            rel_weights = _full_to_window(_absolute_to_relative(p_attn), self.window_size, t_q)
            out = out + jnp.einsum("bhqr,rd->bhqd", rel_weights, emb_v[0])
        out = out.transpose(0, 2, 1, 3).reshape(batch, t_q, self.channels)
        return Conv1d(self.out_channels, 1, dtype=self.dtype, name="conv_o")(out)


class FFN(nn.Module):
    """Convolutional feed-forward block: ``conv_1`` (k, 'same') -> ReLU -> dropout -> ``conv_2`` (k, 'same'), masked.

    'Same' padding is ``((k - 1) // 2, k // 2)``; inputs are masked before each convolution.
    ``canonical_grads``: see :func:`conv1d` (set in the scanned :class:`EncoderLayer`).
    """

    out_channels: int
    filter_channels: int
    kernel_size: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    canonical_grads: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """``x [B, T, C]``, ``mask [B, T]`` -> ``[B, T, out_channels]`` (zero at padding)."""
        m = mask[..., None].astype(self.dtype)
        pad = ((self.kernel_size - 1) // 2, self.kernel_size // 2)
        conv = functools.partial(Conv1d, kernel_size=self.kernel_size, padding=pad, dtype=self.dtype, canonical_grads=self.canonical_grads)
        y = conv(self.filter_channels, name="conv_1")(x * m)
        y = Dropout(self.dropout)(jax.nn.relu(y), deterministic=deterministic)
        y = conv(self.out_channels, name="conv_2")(y * m)
        return y * m


def _encoder_layer(
    x: jax.Array,
    mask: jax.Array,
    attn: nn.Module,
    norm1: nn.Module,
    ffn: nn.Module,
    norm2: nn.Module,
    drop: nn.Module,
    deterministic: bool,
) -> jax.Array:
    """One post-norm :class:`Encoder` layer: ``x [B, T, C]``, ``mask [B, T]`` -> ``[B, T, C]``."""
    y = attn(x, x, mask[:, :, None] * mask[:, None, :], deterministic=deterministic)
    x = norm1(x + drop(y, deterministic=deterministic))
    y = ffn(x, mask, deterministic=deterministic)
    return norm2(x + drop(y, deterministic=deterministic))


class EncoderLayer(nn.Module):
    """The scanned body of :class:`Encoder`: one layer with submodules ``attn``, ``norm1``, ``ffn``, ``norm2``.

    ``x [B, T, hidden]``, ``mask [B, T]`` -> ``[B, T, hidden]``.
    """

    hidden_channels: int
    filter_channels: int
    n_heads: int
    kernel_size: int = 1
    dropout: float = 0.0
    window_size: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, mask: jax.Array, deterministic: bool) -> jax.Array:
        c, dtype = self.hidden_channels, self.dtype
        attn = MultiHeadAttention(c, c, self.n_heads, self.dropout, self.window_size, dtype, name="attn")
        ffn = FFN(c, self.filter_channels, self.kernel_size, self.dropout, dtype, canonical_grads=True, name="ffn")
        norm1, norm2 = LayerNorm(dtype=dtype, name="norm1"), LayerNorm(dtype=dtype, name="norm2")
        return _encoder_layer(x, mask, attn, norm1, ffn, norm2, Dropout(self.dropout), deterministic)


class Encoder(nn.Module):
    """VITS relative-position transformer encoder, post-norm (upstream ``attentions.Encoder``).

    Per layer: ``x = LN1(x + drop(attn(x)))``, ``x = LN2(x + drop(ffn(x)))``. Submodules
    ``attn_layers_i``, ``norm_layers_1_i``, ``ffn_layers_i``, ``norm_layers_2_i``.

    With ``scan`` the layers run as one :class:`EncoderLayer` body under ``lax.scan``
    (:func:`scan_layers`), each layer with its own ``dropout`` key; the parameters keep their
    per-layer names either way, and ``remat`` (scan only) rematerialises the body.
    Initialisation always runs the loop.
    """

    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int = 1
    dropout: float = 0.0
    window_size: int = 4
    dtype: Dtype = jnp.float32
    scan: bool = False
    remat: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """``x [B, T, hidden]``, ``mask [B, T]`` -> ``[B, T, hidden]`` (zero at padding)."""
        m = mask[..., None].astype(self.dtype)
        x = x.astype(self.dtype) * m
        c, dtype = self.hidden_channels, self.dtype
        if self.scan and self.n_layers > 1 and not self.is_initializing():
            params = self.variables["params"]
            names = {"attn": "attn_layers_{}", "norm1": "norm_layers_1_{}", "ffn": "ffn_layers_{}", "norm2": "norm_layers_2_{}"}
            per_layer = [{key: params[name.format(i)] for key, name in names.items()} for i in range(self.n_layers)]
            layer = EncoderLayer(
                c, self.filter_channels, self.n_heads, self.kernel_size, self.dropout, self.window_size, dtype, parent=None
            )
            use_dropout = not deterministic and self.dropout > 0
            rng = self.make_rng("dropout") if use_dropout else None
            x = scan_layers(layer, per_layer, x, dropout_rng=rng, remat=self.remat, mask=mask, deterministic=deterministic)
            return x * m
        drop = Dropout(self.dropout)
        for i in range(self.n_layers):
            attn = MultiHeadAttention(c, c, self.n_heads, self.dropout, self.window_size, dtype, name=f"attn_layers_{i}")
            ffn = FFN(c, self.filter_channels, self.kernel_size, self.dropout, dtype, name=f"ffn_layers_{i}")
            norm1, norm2 = LayerNorm(dtype=dtype, name=f"norm_layers_1_{i}"), LayerNorm(dtype=dtype, name=f"norm_layers_2_{i}")
            x = _encoder_layer(x, mask, attn, norm1, ffn, norm2, drop, deterministic)
        return x * m
