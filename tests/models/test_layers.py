"""Convolutions with weight/spectral norm, LayerNorm, WaveNet stack and relative-position attention against references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptsovits_jax.models.layers import (
    SPECTRAL_COLLECTION,
    WN,
    Conv1d,
    Conv2d,
    ConvTranspose1d,
    Encoder,
    LayerNorm,
    MultiHeadAttention,
    sequence_mask,
)

RNG = np.random.default_rng(0)


def _np_conv1d(x, w, stride=1, padding=(0, 0), dilation=1, groups=1):
    """PyTorch Conv1d on channels-last ``x [B, T, Cin]`` with ``w [K, Cin/groups, Cout]``, by explicit loops."""
    _, length, _ = x.shape
    k, cin_g, cout = w.shape
    xp = np.pad(x, ((0, 0), padding, (0, 0)))
    t_out = (length + sum(padding) - dilation * (k - 1) - 1) // stride + 1
    cout_g = cout // groups
    y = np.zeros((x.shape[0], t_out, cout))
    for t in range(t_out):
        for tap in range(k):
            frame = xp[:, t * stride + tap * dilation]
            for g in range(groups):
                y[:, t, g * cout_g : (g + 1) * cout_g] += frame[:, g * cin_g : (g + 1) * cin_g] @ w[tap, :, g * cout_g : (g + 1) * cout_g]
    return y


def _np_conv_transpose1d(x, w_torch, stride, padding):
    """PyTorch ConvTranspose1d with its own weight layout ``[Cin, Cout, K]``: scatter every input frame, then crop."""
    batch, length, _ = x.shape
    _, cout, k = w_torch.shape
    full = np.zeros((batch, (length - 1) * stride + k, cout))
    for j in range(length):
        for tap in range(k):
            full[:, j * stride + tap] += x[:, j] @ w_torch[:, :, tap]
    return full[:, padding : full.shape[1] - padding]


def _init(module, *args, **kwargs):
    return jax.jit(lambda key: module.init(key, *args, **kwargs))(jax.random.key(1))


def test_weight_norm_conv1d_equals_conv_with_normalised_kernel():
    conv = Conv1d(6, 3, stride=2, padding=(3, 1), dilation=2, groups=2, norm="weight")
    x = RNG.normal(size=(2, 11, 4)).astype(np.float32)
    params = _init(conv, x)["params"]
    v = np.asarray(params["weight_v"])
    assert v.shape == (3, 2, 6) and params["weight_g"].shape == (6,) and params["bias"].shape == (6,)
    # PyTorch's weight_norm starts from g = ||v|| (the effective kernel equals v).
    np.testing.assert_allclose(params["weight_g"], np.sqrt((v**2).sum(axis=(0, 1))), rtol=1e-6)
    g = RNG.uniform(0.5, 2.0, size=6).astype(np.float32)
    bias = RNG.normal(size=6).astype(np.float32)
    y = conv.apply({"params": {"weight_v": v, "weight_g": g, "bias": bias}}, x)
    kernel = g * v / np.sqrt((v**2).sum(axis=(0, 1)))
    np.testing.assert_allclose(y, _np_conv1d(x, kernel, 2, (3, 1), 2, 2) + bias, rtol=1e-5, atol=1e-5)


def test_plain_conv1d_kernel_one_matches_reference():
    conv = Conv1d(5, 1)
    x = RNG.normal(size=(2, 7, 3)).astype(np.float32)
    params = _init(conv, x)["params"]
    assert set(params) == {"kernel", "bias"}
    # PyTorch default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = 3.
    assert np.abs(params["kernel"]).max() <= 1 / np.sqrt(3)
    y = conv.apply({"params": params}, x)
    np.testing.assert_allclose(y, _np_conv1d(x, np.asarray(params["kernel"])) + params["bias"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("kernel", "stride"), [(16, 10), (8, 2), (2, 2)])
def test_conv_transpose1d_matches_pytorch_semantics(kernel, stride):
    padding = (kernel - stride) // 2
    conv = ConvTranspose1d(3, kernel, stride, padding=padding, norm="weight")
    x = RNG.normal(size=(2, 5, 4)).astype(np.float32)
    params = _init(conv, x)["params"]
    v = np.asarray(params["weight_v"])
    # weight_g follows PyTorch's dim 0 of the [in, out, k] weight: one entry per input channel.
    assert v.shape == (kernel, 4, 3) and params["weight_g"].shape == (4,)
    g = RNG.uniform(0.5, 2.0, size=4).astype(np.float32)
    bias = RNG.normal(size=3).astype(np.float32)
    y = conv.apply({"params": {"weight_v": v, "weight_g": g, "bias": bias}}, x)
    w_torch = np.transpose(v, (1, 2, 0))  # [in, out, k]
    w_torch = g[:, None, None] * w_torch / np.sqrt((w_torch**2).sum(axis=(1, 2), keepdims=True))
    expected = _np_conv_transpose1d(x, w_torch, stride, padding) + bias
    assert y.shape == (2, (5 - 1) * stride - 2 * padding + kernel, 3)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_weight_norm_conv2d_period_kernel_matches_columnwise_conv1d():
    conv = Conv2d(4, (5, 1), (3, 1), (2, 0), norm="weight")
    x = RNG.normal(size=(2, 10, 3, 2)).astype(np.float32)
    params = _init(conv, x)["params"]
    v = np.asarray(params["weight_v"])
    assert v.shape == (5, 1, 2, 4) and params["weight_g"].shape == (4,)
    g = RNG.uniform(0.5, 2.0, size=4).astype(np.float32)
    y = conv.apply({"params": {**params, "weight_g": g}}, x)
    kernel = (g * v / np.sqrt((v**2).sum(axis=(0, 1, 2))))[:, 0]
    # A (k, 1) kernel convolves each column (period phase) independently along H.
    for col in range(3):
        np.testing.assert_allclose(y[:, :, col], _np_conv1d(x[:, :, col], kernel, 3, (2, 2)) + params["bias"], rtol=1e-5, atol=1e-5)


def test_spectral_norm_divides_by_largest_singular_value():
    conv = Conv1d(4, 3, padding=1, norm="spectral")
    x = RNG.normal(size=(1, 6, 5)).astype(np.float32)
    variables = _init(conv, x)
    assert set(variables["params"]) == {"weight_orig", "bias"}
    assert variables[SPECTRAL_COLLECTION]["weight_u"].shape == (4,)

    @jax.jit
    def power_step(variables):
        _, updates = conv.apply(variables, x, mutable=[SPECTRAL_COLLECTION])
        return {**variables, **updates}

    for _ in range(30):
        variables = power_step(variables)
    w = np.asarray(variables["params"]["weight_orig"])
    sigma = np.linalg.svd(np.moveaxis(w, 2, 0).reshape(4, -1), compute_uv=False)[0]
    y = conv.apply(variables, x)
    np.testing.assert_allclose(y, _np_conv1d(x, w / sigma, 1, (1, 1)) + variables["params"]["bias"], rtol=1e-4, atol=1e-5)


def test_layer_norm_normalises_channels():
    norm = LayerNorm()
    x = RNG.normal(size=(2, 3, 6)).astype(np.float32) * 3 + 1
    gamma, beta = RNG.normal(size=6).astype(np.float32), RNG.normal(size=6).astype(np.float32)
    y = norm.apply({"params": {"gamma": gamma, "beta": beta}}, x)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-5, atol=1e-5)


def test_sequence_mask():
    np.testing.assert_array_equal(sequence_mask(jnp.array([0, 2, 4]), 4), [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])


def test_wn_receptive_field_and_padding():
    # kernel 3, dilation rate 2, 2 layers: dilations 1 and 2, so frame t sees t-3 .. t+3.
    wn = WN(4, 3, 2, 2, gin_channels=3)
    x = RNG.normal(size=(1, 12, 4)).astype(np.float32)
    g = RNG.normal(size=(1, 3)).astype(np.float32)
    mask = np.ones((1, 12), np.float32)
    params = _init(wn, x, mask, g)["params"]
    assert params["cond_layer"]["weight_v"].shape == (1, 3, 2 * 4 * 2)
    assert params["res_skip_layers_0"]["weight_v"].shape[-1] == 8 and params["res_skip_layers_1"]["weight_v"].shape[-1] == 4
    jac = jax.jacfwd(lambda x: wn.apply({"params": params}, x, mask, g)[0, 6])(x)  # [4, 1, 12, 4]
    touched = np.abs(np.asarray(jac)).sum(axis=(0, 1, 3)) > 0
    np.testing.assert_array_equal(np.nonzero(touched)[0], np.arange(3, 10))

    # A masked (zero) tail behaves like the end of the sequence in every layer: the valid frames equal
    # those of the truncated input, and the padding stays zero.
    short = np.asarray(sequence_mask(jnp.array([8]), 12))
    y = np.asarray(wn.apply({"params": params}, x * short[..., None], short, g))
    truncated = wn.apply({"params": params}, x[:, :8], np.ones((1, 8), np.float32), g)
    assert np.all(y[:, 8:] == 0)
    np.testing.assert_allclose(y[:, :8], truncated, rtol=1e-5, atol=1e-6)


def _np_attention(x, c, mask, p, n_heads, window):
    """Straightforward VITS attention: explicit offsets ``j - i`` clipped to the window, -1e4 masking."""

    def conv(h, name):
        return h @ np.asarray(p[name]["kernel"])[0] + np.asarray(p[name]["bias"])

    q, k, v = conv(x, "conv_q"), conv(c, "conv_k"), conv(c, "conv_v")
    batch, t_q, channels = q.shape
    t_k = k.shape[1]
    d_k = channels // n_heads
    out = np.zeros_like(q)
    for b in range(batch):
        for h in range(n_heads):
            sl = slice(h * d_k, (h + 1) * d_k)
            for i in range(t_q):
                scores = np.empty(t_k)
                for j in range(t_k):
                    scores[j] = q[b, i, sl] @ k[b, j, sl] / np.sqrt(d_k)
                    if window is not None and abs(j - i) <= window:
                        scores[j] += q[b, i, sl] @ np.asarray(p["emb_rel_k"])[0, j - i + window] / np.sqrt(d_k)
                    if mask[b, i, j] == 0:
                        scores[j] = -1e4
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                out[b, i, sl] = weights @ v[b, :, sl]
                if window is not None:
                    for j in range(t_k):
                        if abs(j - i) <= window:
                            out[b, i, sl] += weights[j] * np.asarray(p["emb_rel_v"])[0, j - i + window]
    return conv(out, "conv_o")


@pytest.mark.parametrize("length", [3, 9])
def test_relative_attention_matches_reference(length):
    window, heads = 4, 2
    attn = MultiHeadAttention(8, 6, heads, window_size=window)
    x = RNG.normal(size=(2, length, 8)).astype(np.float32)
    lengths = jnp.array([length, length - 1])
    m = np.asarray(sequence_mask(lengths, length))
    mask = m[:, :, None] * m[:, None, :]
    params = _init(attn, x, x, mask)["params"]
    assert params["emb_rel_k"].shape == (1, 2 * window + 1, 4) and params["emb_rel_v"].shape == (1, 2 * window + 1, 4)
    y = attn.apply({"params": params}, x, x, mask)
    np.testing.assert_allclose(y, _np_attention(x, x, mask, params, heads, window), rtol=1e-4, atol=1e-5)


def test_relative_positions_only_inside_window():
    # Content logits are zero (constant queries, zero keys) and every relative key embedding gives the
    # bonus 10/sqrt(d_k): each query spreads its weight over keys with |j - i| <= w only, and every
    # relative value embedding adds [0, 1] weighted by the attention mass inside the window.
    window, length = 2, 9
    attn = MultiHeadAttention(2, 2, 1, window_size=window)
    x = RNG.normal(size=(1, length, 2)).astype(np.float32)
    params = {
        name: {k: np.array(a) for k, a in sub.items()} if isinstance(sub, dict) else np.array(sub)
        for name, sub in _init(attn, x, x)["params"].items()
    }
    params["conv_q"]["kernel"][:] = 0
    params["conv_q"]["bias"][:] = [10.0, 0.0]
    params["conv_k"]["kernel"][:] = 0
    params["conv_k"]["bias"][:] = 0
    params["emb_rel_k"][:] = [1.0, 0.0]
    params["emb_rel_v"][:] = [0.0, 1.0]
    y = np.asarray(attn.apply({"params": params}, x, x))

    values = x[0] @ params["conv_v"]["kernel"][0] + params["conv_v"]["bias"]
    offsets = np.arange(length)[None, :] - np.arange(length)[:, None]
    inside = np.abs(offsets) <= window
    logits = np.where(inside, 10.0 / np.sqrt(2), 0.0)
    weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    mixed = weights @ values + (weights * inside).sum(axis=1, keepdims=True) * np.array([0.0, 1.0])
    expected = mixed @ params["conv_o"]["kernel"][0] + params["conv_o"]["bias"]
    np.testing.assert_allclose(y[0], expected, rtol=1e-5, atol=1e-5)
    # Edge queries have 3 keys in the window, central ones 5.
    assert inside[0].sum() == 3 and inside[4].sum() == 5


def test_encoder_valid_frames_ignore_padding():
    enc = Encoder(8, 16, 2, 2, kernel_size=3, dropout=0.1, window_size=2)
    x = RNG.normal(size=(2, 9, 8)).astype(np.float32)
    mask = sequence_mask(jnp.array([9, 6]), 9)
    params = _init(enc, x, mask)["params"]
    apply = jax.jit(lambda x, mask: enc.apply({"params": params}, x, mask))
    y = np.asarray(apply(x, mask))
    x_changed = x.copy()
    x_changed[1, 6:] = 50.0
    assert np.all(y[1, 6:] == 0)
    np.testing.assert_allclose(apply(x_changed, mask), y, atol=1e-5)
    # The padded item's valid frames are those of the same item without padding.
    truncated = enc.apply({"params": params}, x[1:, :6], jnp.ones((1, 6)))
    np.testing.assert_allclose(y[1:, :6], truncated, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("kernel", "stride", "dilation", "groups", "padding"),
    [
        (41, 4, 1, 4, (20, 20)),
        (41, 4, 1, 1, (20, 20)),
        (2, 2, 1, 1, (0, 0)),
        (5, 3, 1, 1, (2, 2)),
        (3, 1, 3, 1, (3, 3)),
        (5, 2, 2, 2, (4, 4)),
    ],
)
def test_matmul_and_native_conv1d_agree(monkeypatch, kernel, stride, dilation, groups, padding):
    """CPU lowers strided and grouped convolutions to slices + matmuls; accelerators keep XLA's. Both must agree."""
    from gptsovits_jax.models import layers

    rng = np.random.default_rng(kernel * 7 + stride)
    x = jnp.asarray(rng.standard_normal((2, 50, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, 8 // groups, 12)), jnp.float32)

    def run(matmul: bool):
        monkeypatch.setattr(layers, "matmul_convolutions", lambda: matmul)
        fn = lambda x, w: layers.conv1d(x, w, stride=stride, dilation=dilation, groups=groups, padding=padding)  # noqa: E731
        return fn(x, w), jax.grad(lambda x, w: jnp.sum(jnp.sin(fn(x, w))), argnums=(0, 1))(x, w)

    (y_mm, g_mm), (y_nat, g_nat) = run(True), run(False)
    np.testing.assert_allclose(y_mm, y_nat, rtol=1e-5, atol=5e-4)  # float32 sums of ~500 products in different orders
    for a, b in zip(g_mm, g_nat):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-4)  # float32 sums of ~500 products in different orders


@pytest.mark.parametrize(("kernel", "padding"), [(5, (2, 2)), (3, (1, 1)), (4, (1, 2)), (5, (0, 0)), (5, (4, 0)), (3, (0, 2))])
def test_conv1d_gradients_match_xla_autodiff(kernel, padding):
    """With ``canonical_grads`` the dense stride-1 conv1d writes its own gradients (the fast layout on CPU): JAX's gradients of XLA's convolution."""
    from gptsovits_jax.models import layers

    rng = np.random.default_rng(kernel * 10 + sum(padding))
    x = jnp.asarray(rng.standard_normal((3, 37, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, 8, 12)), jnp.float32)
    xla = lambda x, w: jax.lax.conv_general_dilated(x, w, (1,), (padding,), dimension_numbers=("NWC", "WIO", "NWC"))  # noqa: E731
    ours = lambda x, w: layers.conv1d(x, w, padding=padding, canonical_grads=True)  # noqa: E731
    np.testing.assert_allclose(ours(x, w), _np_conv1d(np.asarray(x), np.asarray(w), padding=padding), rtol=1e-5, atol=1e-4)
    loss = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w)))  # noqa: E731
    for a, b in zip(jax.grad(loss(ours), argnums=(0, 1))(x, w), jax.grad(loss(xla), argnums=(0, 1))(x, w)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)  # float32 sums of up to ~300 products in different orders


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's convolution layouts")
def test_conv1d_gradients_inside_a_scan_keep_the_fast_layout():
    """Inside a scan body XLA:CPU leaves a gradient convolution in the layout JAX emits, which runs through a slow loop nest.

    The compiled gradient of a scanned conv1d stack must hold only convolutions in the
    ``NWC``/``WIO`` layout (``dim_labels=b0f_0io->b0f``) that XLA:CPU runs fast.
    """
    import re

    from gptsovits_jax.models import layers

    def stack(ws, x):
        body = lambda h, w: (jnp.tanh(layers.conv1d(h, w, padding=(2, 2), canonical_grads=True)), None)  # noqa: E731
        return jnp.sum(jax.lax.scan(body, x, ws)[0] ** 2)

    ws, x = jnp.zeros((3, 5, 8, 8)), jnp.zeros((2, 20, 8))
    hlo = jax.jit(jax.grad(stack, argnums=(0, 1))).lower(ws, x).compile().as_text()
    labels = re.findall(r"convolution\(.*?dim_labels=([^,\s]+)", hlo)
    assert len(labels) >= 3  # forward, input gradient, kernel gradient
    assert set(labels) == {"b0f_0io->b0f"}, labels


@pytest.mark.parametrize(("kernel", "stride"), [(16, 10), (16, 8), (8, 2), (2, 2), (20, 16)])
def test_matmul_and_native_conv_transpose1d_agree(monkeypatch, kernel, stride):
    from gptsovits_jax.models import layers

    rng = np.random.default_rng(kernel + stride)
    x = jnp.asarray(rng.standard_normal((2, 9, 6)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kernel, 6, 5)), jnp.float32)
    padding = (kernel - stride) // 2

    def run(matmul: bool):
        monkeypatch.setattr(layers, "matmul_convolutions", lambda: matmul)
        fn = lambda x, w: layers.conv_transpose1d(x, w, stride=stride, padding=padding)  # noqa: E731
        return fn(x, w), jax.grad(lambda x, w: jnp.sum(jnp.sin(fn(x, w))), argnums=(0, 1))(x, w)

    (y_mm, g_mm), (y_nat, g_nat) = run(True), run(False)
    assert y_mm.shape == y_nat.shape == (2, 8 * stride - 2 * padding + kernel, 5)
    np.testing.assert_allclose(y_mm, y_nat, rtol=1e-5, atol=5e-4)  # float32 sums of ~500 products in different orders
    for a, b in zip(g_mm, g_nat):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-4)  # float32 sums of ~500 products in different orders


def test_matmul_and_native_period_conv2d_agree(monkeypatch):
    from gptsovits_jax.models import layers

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 40, 3, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((5, 1, 4, 6)), jnp.float32)

    def run(matmul: bool):
        monkeypatch.setattr(layers, "matmul_convolutions", lambda: matmul)
        fn = lambda x, w: layers.conv2d(x, w, stride=(3, 1), padding=((2, 2), (0, 0)))  # noqa: E731
        return fn(x, w), jax.grad(lambda x, w: jnp.sum(jnp.sin(fn(x, w))), argnums=(0, 1))(x, w)

    (y_mm, g_mm), (y_nat, g_nat) = run(True), run(False)
    np.testing.assert_allclose(y_mm, y_nat, rtol=1e-5, atol=5e-4)  # float32 sums of ~500 products in different orders
    for a, b in zip(g_mm, g_nat):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-4)  # float32 sums of ~500 products in different orders


def _assert_trees_close(a, b):
    """``a`` within 1e-5 of ``b`` in norm, every leaf within 1e-4 (the scan sums in another order; some gradients are zero up to rounding)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    diff = jax.tree.map(lambda x, y: x - y, a, b)
    assert float(optax.tree.norm(diff)) <= 1e-5 * float(optax.tree.norm(b))
    for (path, d), y in zip(jax.tree_util.tree_leaves_with_path(diff), jax.tree.leaves(b)):
        assert float(jnp.linalg.norm(d)) <= 1e-4 * float(jnp.linalg.norm(y)) + 1e-6, jax.tree_util.keystr(path)


def _loss_and_grads(module, params, x, *args, rngs=None, **kwargs):
    """A scalar of ``module``'s output and its gradients with respect to the parameters and the input ``x``."""

    def loss(p, x):
        y = module.apply({"params": p}, x, *args, rngs=rngs, **kwargs)
        return jnp.sum(jnp.sin(y) * x)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)


def _shapes(tree):
    return jax.tree.map(jnp.shape, tree)


def test_scanned_wn_matches_the_layer_loop():
    """Same parameter tree, output and gradients (to 1e-5) whether the layers run as a loop or under lax.scan, with any remat."""
    x = RNG.normal(size=(2, 10, 8)).astype(np.float32)
    mask = sequence_mask(jnp.array([10, 7]), 10)
    g = RNG.normal(size=(2, 6)).astype(np.float32)
    params = _init(WN(8, 5, 1, 4, gin_channels=6), x, mask, g)["params"]
    assert _shapes(_init(WN(8, 5, 1, 4, gin_channels=6, scan=True), x, mask, g)["params"]) == _shapes(params)
    expected = _loss_and_grads(WN(8, 5, 1, 4, gin_channels=6), params, x, mask, g)
    for remat in ("none", "dots", "full"):
        _assert_trees_close(_loss_and_grads(WN(8, 5, 1, 4, gin_channels=6, scan=True, remat=remat), params, x, mask, g), expected)


def test_scanned_encoder_matches_the_layer_loop():
    """Loop and scan agree to 1e-5 without dropout; with dropout each scanned layer has its own masks, which remat recomputes."""
    x = RNG.normal(size=(2, 9, 8)).astype(np.float32)
    mask = sequence_mask(jnp.array([9, 6]), 9)

    def encoder(**kwargs):
        return Encoder(8, 16, 2, 3, kernel_size=3, dropout=0.1, window_size=2, **kwargs)

    params = _init(encoder(), x, mask)["params"]
    assert _shapes(_init(encoder(scan=True), x, mask)["params"]) == _shapes(params)
    expected = _loss_and_grads(encoder(), params, x, mask)
    _assert_trees_close(_loss_and_grads(encoder(scan=True, remat="dots"), params, x, mask), expected)
    rngs = {"dropout": jax.random.key(3)}
    scanned = _loss_and_grads(encoder(scan=True), params, x, mask, rngs=rngs, deterministic=False)
    assert float(scanned[0]) != pytest.approx(float(expected[0]), rel=1e-3)  # dropout is on
    _assert_trees_close(_loss_and_grads(encoder(scan=True, remat="full"), params, x, mask, rngs=rngs, deterministic=False), scanned)
