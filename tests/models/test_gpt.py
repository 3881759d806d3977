"""Stage-1 decoder: parameter tree, alignment, masks, cached decoding, sampling, training."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptsovits_jax.models.gpt import (
    GPTOutputs,
    Text2SemanticDecoder,
    attention_mask,
    generate,
    gpt_loss,
    process_logits,
    sample_next_token,
    sinusoidal_positions,
)

TEXT_LENS = np.array([7, 4], np.int32)
AUDIO_LENS = np.array([8, 5], np.int32)
MAX_NEW = 8

# Eager dispatch is slow on CPU; each shape compiles once.
process = jax.jit(process_logits)
sample = jax.jit(sample_next_token)


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def cfg(tiny_config):
    return dataclasses.replace(
        tiny_config.gpt, vocab_size=33, phoneme_vocab_size=40, hidden_dim=32, num_heads=4, num_layers=2, ffn_dim=64, bert_dim=16
    )


@pytest.fixture(scope="module")
def batch(cfg):
    """Two right-padded samples: text 7 and 4 phonemes of 7 slots, audio 8 and 5 tokens of 8."""
    rng = np.random.default_rng(0)
    b, tx, ty = 2, 7, 8
    text_valid = np.arange(tx)[None] < TEXT_LENS[:, None]
    audio_valid = np.arange(ty)[None] < AUDIO_LENS[:, None]
    phonemes = np.where(text_valid, rng.integers(1, cfg.phoneme_vocab_size, (b, tx)), 0).astype(np.int32)
    bert = (rng.standard_normal((b, tx, cfg.bert_dim)) * text_valid[..., None]).astype(np.float32)
    semantic = np.where(audio_valid, rng.integers(0, cfg.eos, (b, ty)), cfg.eos).astype(np.int32)
    return dict(phoneme_ids=phonemes, phoneme_lens=TEXT_LENS, bert=bert, semantic_ids=semantic, semantic_lens=AUDIO_LENS)


@pytest.fixture(scope="module")
def model(cfg):
    return Text2SemanticDecoder(cfg)


@pytest.fixture(scope="module")
def params(model, batch):
    return jax.jit(lambda key: model.init(key, **batch, deterministic=True))(jax.random.key(0))["params"]


@pytest.fixture(scope="module")
def forward(model):
    """Jitted teacher-forced forward ``(params, batch, rng | None) -> GPTOutputs``; dropout iff rng is given."""

    @jax.jit
    def run(params, batch, rng=None):
        if rng is None:
            return model.apply({"params": params}, **batch, deterministic=True)
        return model.apply({"params": params}, **batch, deterministic=False, rngs={"dropout": rng})

    return run


@pytest.fixture(scope="module")
def prefill(model):
    return jax.jit(lambda params, *args: model.apply({"params": params}, *args, method="prefill"), static_argnums=6)


@pytest.fixture(scope="module")
def decode_step(model):
    return jax.jit(lambda params, tokens, cache: model.apply({"params": params}, tokens, cache, method="decode_step"))


# --------------------------------------------------------------------------- parameters


def test_v2_parameter_count_matches_upstream(v2_config):
    model = Text2SemanticDecoder(v2_config.gpt)
    ids = jnp.zeros((1, 4), jnp.int32)
    lens = jnp.array([4])
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, lens, None, ids, lens, deterministic=True))["params"]
    assert count(shapes) == 77_606_402 == 24 * 3_152_384 + 1_949_186
    per_module = {name: count(tree) for name, tree in shapes.items()}
    assert per_module == {
        "bert_proj": 1024 * 512 + 512,
        "ar_text_embedding": 732 * 512,
        "ar_text_position": 1,
        "ar_audio_embedding": 1025 * 512,
        "ar_audio_position": 1,
        "h": 24 * 3_152_384,
        "ar_predict_layer": 512 * 1025,
    }
    assert per_module["bert_proj"] == 524_800 and per_module["ar_text_embedding"] == 374_784 and per_module["ar_predict_layer"] == 524_800
    assert sorted(shapes["h"]) == sorted(f"layers_{i}" for i in range(24))
    assert all(count(shapes["h"][f"layers_{i}"]) == 3_152_384 for i in range(24))


def test_v2_parameter_names_shapes_and_dtypes_under_bf16(v2_config):
    model = Text2SemanticDecoder(v2_config.gpt, dtype=jnp.bfloat16)
    ids = jnp.zeros((1, 4), jnp.int32)
    lens = jnp.array([4])
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, lens, None, ids, lens, deterministic=True))["params"]
    layer = jax.tree.map(lambda x: x.shape, shapes["h"]["layers_23"])
    assert layer == {
        "self_attn": {"in_proj": {"kernel": (512, 1536), "bias": (1536,)}, "out_proj": {"kernel": (512, 512), "bias": (512,)}},
        "linear1": {"kernel": (512, 2048), "bias": (2048,)},
        "linear2": {"kernel": (2048, 512), "bias": (512,)},
        "norm1": {"scale": (512,), "bias": (512,)},
        "norm2": {"scale": (512,), "bias": (512,)},
    }
    assert shapes["ar_text_embedding"]["embedding"].shape == (732, 512)
    assert shapes["ar_audio_embedding"]["embedding"].shape == (1025, 512)
    assert shapes["ar_text_position"]["alpha"].shape == (1,)
    assert set(shapes["ar_predict_layer"]) == {"kernel"}
    assert {x.dtype for x in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}


def test_initialization_follows_upstream(cfg, params):
    layer = params["h"]["layers_0"]
    d = cfg.hidden_dim
    xavier = math.sqrt(6.0 / (d + 3 * d))
    in_proj = np.asarray(layer["self_attn"]["in_proj"]["kernel"])
    assert 0.9 * xavier < np.abs(in_proj).max() <= xavier
    assert not np.any(layer["self_attn"]["in_proj"]["bias"]) and not np.any(layer["self_attn"]["out_proj"]["bias"])
    # torch.nn.Linear default: U(+-1/sqrt(fan_in)) for weight and bias.
    w2 = np.asarray(layer["linear2"]["kernel"])
    assert 0.9 / math.sqrt(cfg.ffn_dim) < np.abs(w2).max() <= 1 / math.sqrt(cfg.ffn_dim)
    assert 0.5 / math.sqrt(cfg.ffn_dim) < np.abs(layer["linear2"]["bias"]).max() <= 1 / math.sqrt(cfg.ffn_dim)
    np.testing.assert_array_equal(layer["norm1"]["scale"], 1.0)
    np.testing.assert_array_equal(params["ar_audio_position"]["alpha"], [1.0])
    assert np.std(params["ar_audio_embedding"]["embedding"]) == pytest.approx(1.0, abs=0.1)


def test_sinusoidal_positions_match_upstream_table():
    dim, positions = 8, np.array([0, 1, 5, 4001])
    pe = np.asarray(sinusoidal_positions(jnp.asarray(positions), dim))
    for i in range(dim // 2):
        freq = 10000.0 ** (-2 * i / dim)
        np.testing.assert_allclose(pe[:, 2 * i], np.sin(positions * freq), atol=2e-4)
        np.testing.assert_allclose(pe[:, 2 * i + 1], np.cos(positions * freq), atol=2e-4)


# --------------------------------------------------------------------------- alignment and masks


def test_output_shapes_and_dtypes(cfg, params, batch, forward):
    out = forward(params, batch)
    assert isinstance(out, GPTOutputs)
    assert out.logits.shape == (2, 9, cfg.vocab_size) and out.logits.dtype == jnp.float32
    assert out.targets.shape == (2, 9) and out.targets.dtype == jnp.int32
    assert out.target_mask.shape == (2, 9)
    assert np.all(np.isfinite(out.logits))


def test_targets_and_mask_for_ragged_batch(cfg, params, forward):
    e = cfg.eos
    ragged = dict(
        phoneme_ids=np.array([[3, 4, 5], [6, 7, 0]], np.int32),
        phoneme_lens=np.array([3, 2], np.int32),
        bert=None,
        semantic_ids=np.array([[10, 11, 12, 13], [20, 21, 9, 9]], np.int32),  # 9s are padding of sample 1
        semantic_lens=np.array([4, 2], np.int32),
    )
    out = forward(params, ragged)
    np.testing.assert_array_equal(out.targets, [[10, 11, 12, 13, e], [20, 21, e, e, e]])
    np.testing.assert_array_equal(out.target_mask, [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def test_attention_mask_layout():
    # Text slots 0-2 (2 valid), audio slots 3-5 (2 valid).
    mask = attention_mask(jnp.arange(6)[None], 6, 3, jnp.array([2]), jnp.array([2]))
    expected = np.array(
        [
            [1, 1, 0, 0, 0, 0],  # text queries: valid text, no audio
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],  # padded text query: harmless, not empty
            [1, 1, 0, 1, 0, 0],  # audio queries: valid text + causal valid audio
            [1, 1, 0, 1, 1, 0],
            [1, 1, 0, 1, 1, 0],  # padded audio query
        ],
        bool,
    )
    np.testing.assert_array_equal(mask[0, 0], expected)


def _changed(batch, **arrays):
    new = dict(batch)
    new.update(arrays)
    return new


def test_future_audio_token_does_not_change_earlier_logits(cfg, params, batch, forward):
    base = forward(params, batch).logits
    semantic = batch["semantic_ids"].copy()
    semantic[:, 3] = (semantic[:, 3] + 1) % cfg.eos
    out = forward(params, _changed(batch, semantic_ids=semantic)).logits
    # logits[:, j] sees audio tokens < j: positions 0..3 are unaffected by token 3, position 4 is not.
    np.testing.assert_allclose(out[:, :4], base[:, :4], atol=1e-6)
    assert np.abs(out[:, 4] - base[:, 4]).max() > 1e-3


def test_audio_does_not_change_first_prediction(cfg, params, batch, forward):
    base = forward(params, batch).logits
    semantic = np.where(batch["semantic_ids"] == cfg.eos, cfg.eos, (batch["semantic_ids"] + 5) % cfg.eos).astype(np.int32)
    out = forward(params, _changed(batch, semantic_ids=semantic)).logits
    np.testing.assert_allclose(out[:, 0], base[:, 0], atol=1e-6)
    assert np.abs(out[:, 1:] - base[:, 1:]).max() > 1e-3


def test_padding_does_not_change_valid_logits(cfg, params, batch, forward):
    base = forward(params, batch)
    text_pad = np.arange(7)[None] >= TEXT_LENS[:, None]
    audio_pad = np.arange(8)[None] >= AUDIO_LENS[:, None]
    noisy = _changed(
        batch,
        phoneme_ids=np.where(text_pad, 17, batch["phoneme_ids"]).astype(np.int32),
        bert=np.where(text_pad[..., None], 3.0, batch["bert"]).astype(np.float32),
        semantic_ids=np.where(audio_pad, 2, batch["semantic_ids"]).astype(np.int32),
    )
    out = forward(params, noisy)
    valid = np.asarray(base.target_mask, bool)
    np.testing.assert_allclose(np.asarray(out.logits)[valid], np.asarray(base.logits)[valid], atol=1e-5)
    # The text padding is seen by nothing: changing it alters no logit at all, while a
    # change of a real phoneme alters every logit of its sample.
    phonemes = batch["phoneme_ids"].copy()
    phonemes[1, 0] += 1
    moved = forward(params, _changed(batch, phoneme_ids=phonemes)).logits
    assert np.abs(moved[1] - base.logits[1]).min() > 0 and np.array_equal(moved[0], base.logits[0])


def test_bert_none_equals_zero_features(params, batch, forward):
    zeros = forward(params, _changed(batch, bert=np.zeros_like(batch["bert"]))).logits
    none = forward(params, _changed(batch, bert=None)).logits
    np.testing.assert_allclose(none, zeros, atol=1e-6)
    assert np.abs(forward(params, batch).logits - zeros).max() > 1e-3


def test_deterministic_forward_is_repeatable_and_dropout_is_not(params, batch, forward):
    a, b = forward(params, batch).logits, forward(params, batch).logits
    np.testing.assert_array_equal(a, b)
    d1, d2 = forward(params, batch, jax.random.key(1)).logits, forward(params, batch, jax.random.key(2)).logits
    assert np.abs(d1 - d2).max() > 1e-3 and np.abs(d1 - a).max() > 1e-3


def test_bfloat16_compute_keeps_float32_logits(cfg, params, batch, forward):
    out = jax.jit(lambda p: Text2SemanticDecoder(cfg, dtype=jnp.bfloat16).apply({"params": p}, **batch, deterministic=True))(params)
    ref = forward(params, batch)
    assert out.logits.dtype == jnp.float32
    valid = np.asarray(ref.target_mask, bool)
    err = np.abs(np.asarray(out.logits) - np.asarray(ref.logits))[valid].max()
    assert 0 < err < 0.1 * np.abs(np.asarray(ref.logits)[valid]).max()


# --------------------------------------------------------------------------- loss and training


def test_loss_counts_real_targets_only(cfg, params, batch, forward):
    out = forward(params, batch)
    total, metrics = gpt_loss(out, "sum")
    mean, _ = gpt_loss(out, "mean")
    assert set(metrics) == {"loss/ce", "acc/top3"}
    n_targets = int(np.sum(AUDIO_LENS + 1))
    assert float(total) == pytest.approx(float(mean) * n_targets, rel=1e-5)
    logits, targets = np.asarray(out.logits, np.float64), np.asarray(out.targets)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    by_hand = -sum(logp[b, j, targets[b, j]] for b in range(2) for j in range(AUDIO_LENS[b] + 1))
    assert float(total) == pytest.approx(by_hand, rel=1e-5)
    assert 0.0 <= float(metrics["acc/top3"]) <= 1.0


def test_adam_steps_lower_the_loss(cfg, model, params, batch, forward):
    tx = optax.adam(3e-3)

    @jax.jit
    def step(params, opt_state, rng):
        def loss_fn(p):
            out = model.apply({"params": p}, **batch, deterministic=False, rngs={"dropout": rng})
            return gpt_loss(out, cfg.loss_reduction)[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    before, _ = gpt_loss(forward(params, batch), "sum")
    trained, opt_state = params, tx.init(params)
    for i in range(30):
        trained, opt_state, _ = step(trained, opt_state, jax.random.key(i))
    after, metrics = gpt_loss(forward(trained, batch), "sum")
    print(
        f"CE (sum over 15 targets) before {float(before):.2f}, after 30 Adam steps {float(after):.2f}, top-3 acc {float(metrics['acc/top3']):.2f}"
    )
    assert float(after) < 0.5 * float(before)


# --------------------------------------------------------------------------- cached decoding


def test_cached_decoding_matches_teacher_forcing(cfg, params, batch, forward, prefill, decode_step):
    full = np.asarray(forward(params, batch).logits)
    prompt_lens = np.array([3, 2], np.int32)
    prompt = np.where(np.arange(3)[None] < prompt_lens[:, None], batch["semantic_ids"][:, :3], 0).astype(np.int32)
    max_len = 7 + 3 + MAX_NEW
    logits, cache = prefill(params, batch["phoneme_ids"], TEXT_LENS, batch["bert"], prompt, prompt_lens, max_len)
    rows = np.arange(2)
    np.testing.assert_allclose(logits, full[rows, prompt_lens], atol=1e-5)
    assert cache.keys.shape == (cfg.num_layers, 2, max_len, cfg.num_heads, cfg.hidden_dim // cfg.num_heads)
    # Sample 1 (5 tokens) decodes its real tokens 2..4 and then EOS; sample 0 decodes tokens 3..7.
    for i in range(5):
        position = prompt_lens + i
        tokens = batch["semantic_ids"][rows, np.minimum(position, 7)]
        logits, cache = decode_step(params, tokens, cache)
        compare = position + 1 <= AUDIO_LENS
        np.testing.assert_allclose(np.asarray(logits)[compare], full[rows, position + 1][compare], atol=1e-5)
    np.testing.assert_array_equal(cache.audio_lens, prompt_lens + 5)


def test_prefill_without_prompt_predicts_from_last_phoneme(params, batch, forward, prefill):
    full = np.asarray(forward(params, batch).logits)
    empty = np.zeros((2, 0), np.int32)
    logits, cache = prefill(params, batch["phoneme_ids"], TEXT_LENS, batch["bert"], empty, np.zeros(2, np.int32), 7 + MAX_NEW)
    np.testing.assert_allclose(logits, full[:, 0], atol=1e-5)
    np.testing.assert_array_equal(cache.audio_lens, [0, 0])


# --------------------------------------------------------------------------- sampling


def test_top_k_one_is_argmax():
    logits = jax.random.normal(jax.random.key(0), (16, 50)) * 3
    seen = jnp.zeros((16, 50), bool)
    for i in range(5):
        tokens = sample(logits, jax.random.key(i), seen, top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.0)
        np.testing.assert_array_equal(tokens, np.argmax(logits, axis=-1))


def test_repetition_penalty_temperature_and_top_k_math():
    logits = jnp.array([[2.0, -1.0, 0.5, 3.0, -2.0]])
    seen = jnp.array([[True, True, False, False, False]])
    np.testing.assert_allclose(process(logits, seen, 0, 1.0, 1.0, 2.0), [[1.0, -2.0, 0.5, 3.0, -2.0]])
    np.testing.assert_allclose(process(logits, seen, 0, 1.0, 0.5, 2.0), [[2.0, -4.0, 1.0, 6.0, -4.0]])
    np.testing.assert_allclose(process(logits, seen, 2, 1.0, 1.0, 2.0), [[1.0, -np.inf, -np.inf, 3.0, -np.inf]])
    # The penalty can flip the choice: 3.0 seen -> 1.5 < 2.0.
    flip = sample(jnp.array([[3.0, 2.0]]), jax.random.key(0), jnp.array([[True, False]]), 1, 1.0, 1.0, 2.0)
    np.testing.assert_array_equal(flip, [1])
    # Temperature 0 is floored at 1e-5, not a division by zero.
    cold = process(logits, jnp.zeros_like(seen), 0, 1.0, 0.0, 1.0)
    np.testing.assert_allclose(cold, logits / 1e-5)


def test_top_p_keeps_at_least_the_top_token():
    logits = jnp.log(jnp.array([[0.2, 0.5, 0.3]]))
    seen = jnp.zeros((1, 3), bool)

    def kept(top_p):
        return np.isfinite(np.asarray(process(logits, seen, 0, top_p, 1.0, 1.0)))[0].tolist()

    assert kept(0.0) == [False, True, False]
    assert kept(0.7) == [False, True, False]  # cumulative 0.5, 0.8, 1.0: the crossing token goes too
    assert kept(0.85) == [False, True, True]
    assert kept(1.0) == [True, True, True]
    draws = jax.vmap(lambda k: sample(logits, k, seen, 0, 0.0, 1.0, 1.0))(jax.random.split(jax.random.key(0), 64))
    assert np.all(np.asarray(draws) == 1)


# --------------------------------------------------------------------------- generation


def _forced_head(params, cfg, eos_logit_sign):
    """Params whose last layer outputs all-ones, so the head scores EOS at ``sign * hidden_dim`` and the rest at 0."""
    last = f"layers_{cfg.num_layers - 1}"
    norm2 = {"scale": jnp.zeros((cfg.hidden_dim,)), "bias": jnp.ones((cfg.hidden_dim,))}
    head = jnp.zeros((cfg.hidden_dim, cfg.vocab_size)).at[:, cfg.eos].set(eos_logit_sign)
    layers = dict(params["h"])
    layers[last] = {**layers[last], "norm2": norm2}
    return {**params, "h": layers, "ar_predict_layer": {"kernel": head}}


def _generate(params, cfg, batch, **kwargs):
    prompt = batch["semantic_ids"][:, :3]
    return generate(params, cfg, batch["phoneme_ids"], batch["bert"], prompt, jax.random.key(3), MAX_NEW, phoneme_lens=TEXT_LENS, **kwargs)


def test_eos_is_suppressed_before_min_new_tokens(cfg, params, batch):
    always_eos = _forced_head(params, cfg, 1.0)
    tokens, counts = _generate(always_eos, cfg, batch, min_new_tokens=4)
    np.testing.assert_array_equal(counts, [4, 4])
    assert np.all(np.asarray(tokens)[:, :4] < cfg.eos) and np.all(np.asarray(tokens)[:, 4:] == cfg.eos)
    _, counts = _generate(always_eos, cfg, batch, min_new_tokens=0)
    np.testing.assert_array_equal(counts, [0, 0])


def test_generation_stops_at_max_new_tokens_without_eos(cfg, params, batch):
    never_eos = _forced_head(params, cfg, -1.0)
    tokens, counts = _generate(never_eos, cfg, batch, min_new_tokens=0)
    np.testing.assert_array_equal(counts, [MAX_NEW, MAX_NEW])
    assert np.all(np.asarray(tokens) < cfg.eos)


def test_greedy_generation_follows_teacher_forced_argmax(cfg, params, batch, forward):
    tokens, counts = _generate(params, cfg, batch, top_k=1, repetition_penalty=1.0, min_new_tokens=MAX_NEW)
    np.testing.assert_array_equal(counts, [MAX_NEW, MAX_NEW])
    tokens = np.asarray(tokens)
    semantic = np.concatenate([batch["semantic_ids"][:, :3], tokens], axis=1)
    full = dict(batch, semantic_ids=semantic, semantic_lens=np.full(2, 3 + MAX_NEW, np.int32))
    logits = np.asarray(forward(params, full).logits)
    np.testing.assert_array_equal(np.argmax(logits[:, 3 : 3 + MAX_NEW, : cfg.eos], axis=-1), tokens)


def test_generation_is_reproducible_and_varies_with_the_key(cfg, params, batch):
    a, _ = _generate(params, cfg, batch, min_new_tokens=MAX_NEW)
    b, _ = _generate(params, cfg, batch, min_new_tokens=MAX_NEW)
    np.testing.assert_array_equal(a, b)
    prompt = batch["semantic_ids"][:, :3]
    c, _ = generate(
        params, cfg, batch["phoneme_ids"], batch["bert"], prompt, jax.random.key(4), MAX_NEW, phoneme_lens=TEXT_LENS, min_new_tokens=MAX_NEW
    )
    assert not np.array_equal(a, c)


def test_hashed_dropout_keeps_the_rate_scales_survivors_and_varies_with_the_key():
    from gptsovits_jax.models.layers import Dropout

    layer = Dropout(0.1)
    x = jnp.ones((64, 128, 32))
    out = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    kept = np.asarray(out) != 0
    assert abs(kept.mean() - 0.9) < 0.005  # 262,144 draws: 5 sigma is 0.003
    np.testing.assert_allclose(np.asarray(out)[kept], 1 / 0.9, rtol=1e-6)
    other = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    agreement = (kept == (np.asarray(other) != 0)).mean()
    assert abs(agreement - (0.9**2 + 0.1**2)) < 0.005  # independent masks agree with probability p^2 + q^2
    np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)
    # Neighbouring elements are not correlated (the hash mixes the flat index).
    flat = kept.reshape(-1).astype(np.float64)
    assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.01
