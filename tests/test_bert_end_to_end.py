"""Chinese BERT features end to end: preprocess a zh/en/auto list with the tiny fixture BERT (and HuBERT), train GPT steps on the cache, synthesize.

The expected features are transformers' own ``hidden_states[-3]`` (``tests/fixtures/hf/tiny_bert.npz``),
repeated per phoneme, not values this code computed.
"""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptsovits_jax import infer
from gptsovits_jax.config import load_config
from gptsovits_jax.data import pipeline, preprocess, semantic
from gptsovits_jax.models import bert as bert_model
from gptsovits_jax.text.frontend import clean_text, text_to_phonemes
from gptsovits_jax.train.checkpoint import Checkpointer
from gptsovits_jax.train.gpt_step import create_gpt_state, jit_gpt_train_step
from gptsovits_jax.train.loop import split_keys
from gptsovits_jax.train.sovits_step import create_sovits_state
from tests.conftest import SMALL_GPT, SMALL_SOVITS

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HF = FIXTURES / "hf"
BERT_DIR = HF / "tiny-bert-safetensors"
DIM = 16
# (file, source recording, language, text): two Chinese lines, two English lines and one mixed line.
LINES = (
    ("zh_a.wav", "speech_cmn.wav", "zh", "你好，天气很好。"),
    ("zh_b.wav", "speech_cmn.wav", "zh", "我们今天去公园散步吧！"),
    ("en_a.wav", "speech_en_us.wav", "en", "The quick brown fox jumps over a lazy dog."),
    ("en_b.wav", "speech_en_gb_f3.wav", "en", "She sells sea shells by the shore."),
    ("mix.wav", "speech_cmn.wav", "auto", "你好 world, 天气很好"),
)
OVERRIDES = [
    *SMALL_SOVITS,
    *SMALL_GPT,
    f"text.bert_path={BERT_DIR}",
    f"gpt.bert_dim={DIM}",
    "ssl.extractor=hubert",
    "ssl.dim=32",
    f"ssl.hubert_path={HF / 'tiny-hubert-safetensors'}",
    "discriminator.periods=[2]",
    "discriminator.period_channels=[4, 8]",
    "discriminator.scale_channels=[4, 8]",
    "discriminator.scale_groups=[1, 2]",
    "data.eval_utterances=1",
    "data.bucket_boundaries=[32, 200]",
    "gpt_train.batch_size=4",
    "gpt_train.steps=100",
]


def codes_of(ssl: np.ndarray) -> np.ndarray:
    """A frame-local stand-in for the SoVITS quantizer: code ``t`` from frames ``2t`` and ``2t + 1``."""
    pairs = ssl.reshape(ssl.shape[0], -1, 2, ssl.shape[2]).sum(axis=(2, 3))
    return (np.floor(np.abs(pairs) * 7.0).astype(np.int64)) % 16


@pytest.fixture(scope="module")
def config(repo_root):
    return load_config(repo_root / "configs/tiny.yaml", OVERRIDES)


@pytest.fixture(scope="module")
def cache(config, tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for name, source, _, _ in LINES:
        shutil.copy(FIXTURES / source, root / name)
    list_path = root / "mixed.list"
    list_path.write_text("".join(f"{name}|spk|{language}|{text}\n" for name, _, language, text in LINES), encoding="utf-8")
    out = tmp_path_factory.mktemp("cache")
    summary = preprocess.preprocess(config, list_path=list_path, cache_dir=out, progress=False)
    assert summary.kept == len(LINES) and summary.rejected == 0
    semantic.extract_semantic(out, codes_of, batch_size=2, progress=False)
    return out


@pytest.fixture(scope="module")
def reference():
    with np.load(HF / "tiny_bert.npz") as npz:
        return {name: npz[name] for name in npz.files}


def keys_by_file(cache):
    return {Path(u["wav_path"]).name: u["key"] for u in preprocess.load_index(cache)["utterances"]}


def test_cache_holds_transformers_features_for_chinese_and_nothing_for_english(cache, reference):
    index = preprocess.load_index(cache)
    assert index["bert"]["dim"] == DIM and index["bert"]["identity"]["extractor"] == "bert"
    keys = keys_by_file(cache)
    has = {Path(u["wav_path"]).name: u["bert"] for u in index["utterances"]}
    assert has == {"zh_a.wav": True, "zh_b.wav": True, "en_a.wav": False, "en_b.wav": False, "mix.wav": True}
    assert not preprocess.bert_feature_path(cache, keys["en_a.wav"]).exists()
    # transformers' hidden_states[-3] of the fixture texts 0 and 1 ("你好,天气很好." and "我们今天去公园散步吧!").
    for name, text, i in (("zh_a.wav", "你好，天气很好。", 0), ("zh_b.wav", "我们今天去公园散步吧！", 1)):
        cleaned = clean_text(text, "zh")
        expected = np.repeat(reference[f"hidden_{i}"][1:-1], cleaned.word2ph, axis=0)
        stored = preprocess.load_bert_features(cache, keys[name])
        assert stored.dtype == np.float16 and stored.shape == (len(cleaned.phonemes), DIM)
        # float16 storage: relative rounding of at most 2^-11 per value.
        np.testing.assert_allclose(stored.astype(np.float32), expected, rtol=2**-11, atol=1e-6)
    mixed = preprocess.load_bert_features(cache, keys["mix.wav"]).astype(np.float32)
    assert mixed.shape == (len(text_to_phonemes("你好 world, 天气很好", "auto")), DIM)
    assert not mixed[4:9].any() and mixed[:4].any(axis=1).all() and mixed[9:].any(axis=1).all()


def test_a_second_run_reuses_the_features_and_another_model_recomputes_them(config, cache, tmp_path):
    keys = keys_by_file(cache)
    path = preprocess.bert_feature_path(cache, keys["zh_a.wav"])
    before = path.stat().st_mtime_ns
    list_path = Path(preprocess.load_index(cache)["list_path"])
    preprocess.preprocess(config, list_path=list_path, cache_dir=cache, progress=False)
    assert path.stat().st_mtime_ns == before
    other = tmp_path / "other-bert"
    shutil.copytree(HF / "tiny-bert-bin", other)
    changed = load_config(Path(__file__).resolve().parents[1] / "configs/tiny.yaml", [*OVERRIDES, f"text.bert_path={other}"])
    preprocess.preprocess(changed, list_path=list_path, cache_dir=cache, progress=False)
    assert path.stat().st_mtime_ns != before
    assert preprocess.load_index(cache)["bert"]["identity"]["weights"] == bert_model.weights_fingerprint(other)
    preprocess.preprocess(config, list_path=list_path, cache_dir=cache, progress=False)  # back to the module's model


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ("text.bert_path={missing}", FileNotFoundError, r"BERT directory does not exist \(text.bert_path\)"),
        ("gpt.bert_dim=1024", bert_model.BertConfigError, r"hidden_size 16 does not match gpt.bert_dim 1024"),
    ],
)
def test_preprocessing_refuses_an_unusable_bert_directory_before_any_work(repo_root, tmp_path, override, error, match):
    bad = load_config(repo_root / "configs/tiny.yaml", [*OVERRIDES, override.format(missing=tmp_path / "missing")])
    list_path = tmp_path / "one.list"
    shutil.copy(FIXTURES / "speech_cmn.wav", tmp_path / "a.wav")
    list_path.write_text("a.wav|spk|zh|你好，天气很好。\n", encoding="utf-8")
    with pytest.raises(error, match=match):
        preprocess.preprocess(bad, list_path=list_path, cache_dir=tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache" / "utterances").iterdir())


def test_texts_the_vocabulary_cannot_read_per_character_are_rejected_with_the_reason(repo_root, cache, tmp_path):
    # tokenizer_config.json's tokenize_chinese_chars: false makes a run of characters one word, which
    # WordPiece reads as one [UNK]: the Chinese lines cannot be aligned with their characters.
    words = tmp_path / "bert-words"
    shutil.copytree(HF / "tiny-bert-bin", words)
    (words / "tokenizer_config.json").write_text('{"tokenize_chinese_chars": false}')
    changed = load_config(repo_root / "configs/tiny.yaml", [*OVERRIDES, f"text.bert_path={words}", "data.eval_utterances=0"])
    list_path = Path(preprocess.load_index(cache)["list_path"])
    summary = preprocess.preprocess(changed, list_path=list_path, cache_dir=tmp_path / "cache", progress=False)
    assert summary.kept == 2 and summary.rejected == 3
    reasons = (tmp_path / "cache" / preprocess.REJECTED_NAME).read_text(encoding="utf-8")
    assert "BERT features failed: '你好,天气很好.': the vocabulary of" in reasons and "one token per character" in reasons


def test_gpt_trains_on_the_cached_features(config, cache):
    data = pipeline.gpt_data(config, "train", cache)
    items = np.arange(len(data))[data.bucket_of == data.bucket_of[0]][: config.gpt_train.batch_size]
    batch = data.collate(items, int(data.bucket_of[0]))
    assert batch["bert"].shape == (*batch["phoneme_ids"].shape, DIM) and batch["bert"].dtype == np.float32
    for row, key in enumerate(batch["keys"]):
        n = batch["phoneme_lens"][row]
        if (preprocess.bert_feature_path(cache, str(key))).exists():
            np.testing.assert_array_equal(batch["bert"][row, :n], preprocess.load_bert_features(cache, str(key)).astype(np.float32))
        else:
            assert not batch["bert"][row].any()
        assert not batch["bert"][row, n:].any()
    assert any(preprocess.bert_feature_path(cache, str(k)).exists() for k in batch["keys"])
    state, setup = create_gpt_state(config)
    before = np.asarray(state.params["bert_proj"]["kernel"]).copy()
    step = jit_gpt_train_step(setup)
    arrays, _ = split_keys(batch)
    for i in range(2):
        state, metrics = step(state, arrays, jax.random.PRNGKey(i))
    assert np.isfinite(float(metrics["loss/ce"]))
    # bert_proj only receives gradients through non-zero BERT inputs.
    assert not np.allclose(np.asarray(state.params["bert_proj"]["kernel"]), before)


def test_gpt_data_refuses_a_cache_without_bert_features_when_the_config_names_a_model(config, cache, tmp_path):
    plain = load_config(
        Path(__file__).resolve().parents[1] / "configs/tiny.yaml", [o for o in OVERRIDES if not o.startswith("text.bert_path")]
    )
    list_path = Path(preprocess.load_index(cache)["list_path"])
    other_cache = tmp_path / "plain"
    preprocess.preprocess(plain, list_path=list_path, cache_dir=other_cache, progress=False)
    assert preprocess.load_index(other_cache)["bert"] is None and not (other_cache / "bert").exists()
    semantic.extract_semantic(other_cache, codes_of, batch_size=2, progress=False)
    plain_data = pipeline.gpt_data(plain, "train", other_cache)
    assert "bert" not in plain_data.collate(np.array([0]), int(plain_data.bucket_of[0]))
    with pytest.raises(ValueError, match=r"text.bert_path is set but the cache holds no BERT features"):
        pipeline.gpt_data(config, "train", other_cache)


def random_state(create, config):
    """A train state of ``create(config)``'s structure filled with seeded small random values: no initialisation is compiled."""
    abstract = jax.eval_shape(lambda: create(config)[0])
    rng = np.random.default_rng(0)

    def fill(leaf):
        if np.issubdtype(leaf.dtype, np.floating):
            return jnp.asarray((0.05 * rng.standard_normal(leaf.shape)).astype(leaf.dtype))
        return jnp.zeros(leaf.shape, leaf.dtype)

    return jax.tree.map(fill, abstract)


def test_synthesis_computes_features_for_the_prompt_and_the_target(config, tmp_path):
    for name, stage, state in (
        ("gpt", "gpt", random_state(create_gpt_state, config)),
        ("sovits", "sovits", random_state(create_sovits_state, config)),
    ):
        checkpointer = Checkpointer(tmp_path / name, config, stage)
        checkpointer.save(1, state, {})
        checkpointer.close()
    synthesizer = infer.Synthesizer.from_checkpoints(tmp_path / "gpt", tmp_path / "sovits")
    assert synthesizer.bert is not None and synthesizer.bert.path == BERT_DIR
    ref = synthesizer.reference(FIXTURES / "speech_cmn.wav", "你好，天气很好。", "zh")
    expected = synthesizer.bert.phoneme_features("你好,天气很好.", [2, 2, 1, 2, 2, 2, 2, 1])
    assert ref.bert.shape == (ref.phoneme_ids.size, DIM) and ref.bert.dtype == np.float32
    # Rounded through float16 as the training cache stores them.
    np.testing.assert_array_equal(ref.bert, expected.astype(np.float16).astype(np.float32))
    result = synthesizer.synthesize(ref, "天气很好", "zh", max_seconds=0.4, seed=0)
    assert result.audio.ndim == 1 and result.audio.size == 2 * result.tokens.size * config.audio.hop_length
    with pytest.raises(FileNotFoundError, match=r"BERT directory does not exist \(text.bert_path\)"):
        infer.Synthesizer.from_checkpoints(tmp_path / "gpt", tmp_path / "sovits", bert_path=tmp_path / "missing")
