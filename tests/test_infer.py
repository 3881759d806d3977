"""End-to-end synthesis from freshly initialised (untrained) GPT and SoVITS checkpoints.

The models are untrained, so the audio is noise; the tests check lengths, formats,
determinism, the padding to buckets, the reference features and the error messages.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

from gptsovits_jax import infer
from gptsovits_jax.audio import AudioError
from gptsovits_jax.config import apply_overrides, config_from_dict, load_config, to_dict
from gptsovits_jax.data import preprocess
from gptsovits_jax.models.gpt import generate
from gptsovits_jax.models.sovits import SynthesizerTrn
from gptsovits_jax.text.frontend import TextError
from gptsovits_jax.text.symbols import SYMBOL_TO_ID
from gptsovits_jax.train.checkpoint import Checkpointer, CheckpointMismatchError
from gptsovits_jax.train.gpt_step import create_gpt_state
from gptsovits_jax.train.restore import restore_train_state
from gptsovits_jax.train.sovits_step import create_sovits_state
from tests.conftest import SMALL_SOVITS

# The training tests' small SoVITS, with a smaller GPT, SSL width and discriminator on top.
SMALL = [
    *SMALL_SOVITS,
    "gpt.hidden_dim=32",
    "gpt.num_layers=1",
    "gpt.ffn_dim=64",
    "ssl.dim=32",
    "discriminator.periods=[2]",
    "discriminator.period_channels=[4, 8]",
    "discriminator.scale_channels=[4, 8]",
    "discriminator.scale_groups=[1, 2]",
]
HOP = 640
REF_TEXT = "Good morning, everyone."
TEXT = "The kettle has boiled."


@pytest.fixture(scope="module")
def small_config(repo_root):
    return load_config(repo_root / "configs/tiny.yaml", SMALL)


@pytest.fixture(scope="module")
def ref_wav(repo_root):
    path = repo_root / "data/demo/ava/001.flac"
    # The transcript the tests use is the manifest's.
    assert f"ava/001.flac|ava|en|{REF_TEXT}" in (repo_root / "data/demo/demo.list").read_text().splitlines()
    return path


@pytest.fixture(scope="module")
def checkpoints(small_config, tmp_path_factory):
    """Run directories ``gpt``, ``sovits`` and ``gpt_other_ssl`` (the GPT saved with another ``ssl.dim``)."""
    root = tmp_path_factory.mktemp("runs")
    gpt_state, _ = create_gpt_state(small_config)
    sovits_state, _ = create_sovits_state(small_config)
    other = load_config_with(small_config, "ssl.dim=48")
    for name, config, stage, state in (
        ("gpt", small_config, "gpt", gpt_state),
        ("sovits", small_config, "sovits", sovits_state),
        ("gpt_other_ssl", other, "gpt", gpt_state),
    ):
        checkpointer = Checkpointer(root / name, config, stage)
        checkpointer.save(7, state, {})
        checkpointer.close()
    return {name: root / name for name in ("gpt", "sovits", "gpt_other_ssl")}


def load_config_with(config, *overrides):
    """``config`` with ``"section.key=value"`` overrides applied and validated."""
    return config_from_dict(apply_overrides(to_dict(config), overrides))


@pytest.fixture(scope="module")
def synthesizer(checkpoints):
    return infer.Synthesizer.from_checkpoints(checkpoints["gpt"], checkpoints["sovits"])


@pytest.fixture(scope="module")
def reference(synthesizer, ref_wav):
    return synthesizer.reference(ref_wav, REF_TEXT, "en")


@pytest.fixture(scope="module")
def written(checkpoints, ref_wav, tmp_path_factory):
    """``synthesize`` results for seeds 0, 0 and 1 (1 s cap)."""
    out = tmp_path_factory.mktemp("out")
    return [
        infer.synthesize(
            checkpoints["gpt"], checkpoints["sovits"], ref_wav, REF_TEXT, TEXT, out / f"{i}.wav", language="en", max_seconds=1.0, seed=seed
        )
        for i, seed in enumerate((0, 0, 1))
    ]


# --------------------------------------------------------------------------- output


def test_writes_32khz_mono_int16_wav_of_the_generated_length(written):
    result = written[0]
    info = soundfile.info(result.path)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (32000, 1, "PCM_16", "WAV")
    pcm, rate = soundfile.read(result.path, dtype="int16")
    assert rate == result.sample_rate == 32000
    assert 1 <= result.num_tokens <= 25  # 1 s at 25 tokens/s
    assert result.stopped or result.num_tokens == 25  # without EOS the cap cuts
    assert pcm.shape == (result.num_tokens * 2 * HOP,) == (result.num_samples,)
    assert result.seconds == pytest.approx(pcm.size / 32000) and result.seconds <= 1.0
    assert result.peak == pytest.approx(np.abs(pcm).max() / 32767, abs=1e-4)
    assert result.rms == pytest.approx(np.sqrt(np.mean((pcm / 32767.0) ** 2)), abs=1e-4)


def test_same_seed_gives_identical_audio_and_another_seed_differs(written):
    first, again, other = (soundfile.read(r.path, dtype="int16")[0] for r in written)
    np.testing.assert_array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_generation_stops_at_max_seconds(synthesizer, reference):
    # 0.4 s is 10 tokens, and EOS is excluded for the first 10: the cap must cut.
    out = synthesizer.synthesize(reference, TEXT, "en", max_seconds=0.4, seed=3)
    assert out.tokens.shape == (10,)
    assert out.audio.shape == (10 * 2 * HOP,) and out.audio.dtype == np.float32
    assert np.all(np.abs(out.audio) <= 1.0) and np.isfinite(out.audio).all()
    assert np.all((out.tokens >= 0) & (out.tokens < 16))


# --------------------------------------------------------------------------- padding and compilation


def test_bucket_padding_changes_neither_tokens_nor_compiled_shapes(synthesizer, reference):
    short = synthesizer.synthesize(reference, TEXT, "en", max_seconds=2.0, seed=5)
    target = infer._phoneme_ids(TEXT, "en", "text")
    ids = np.concatenate([reference.phoneme_ids, target])
    gpt_key, _ = jax.random.split(jax.random.PRNGKey(5))
    tokens, counts = generate(
        synthesizer.gpt_params,
        synthesizer.gpt_config.gpt,
        jnp.asarray(ids[None]),
        None,
        jnp.asarray(reference.prompt[None]),
        gpt_key,
        64,
    )
    np.testing.assert_array_equal(short.tokens, np.asarray(tokens[0, : int(counts[0])]))

    sizes = (generate._cache_size(), infer._decode._cache_size())
    longer = synthesizer.synthesize(reference, "The kettle has boiled, grab two mugs.", "en", max_seconds=1.9, seed=6)
    assert infer._phoneme_ids("The kettle has boiled, grab two mugs.", "en", "text").size > target.size
    assert longer.tokens.size >= 1
    assert (generate._cache_size(), infer._decode._cache_size()) == sizes


# --------------------------------------------------------------------------- reference features


def test_reference_features_are_the_training_features(synthesizer, reference, ref_wav):
    features = preprocess.compute_features(ref_wav, synthesizer.config.audio, synthesizer.config.ssl)
    spec = features["spec"].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(reference.spec, spec)
    frames = spec.shape[0] - spec.shape[0] % 2
    ssl = features["ssl"].astype(np.float16).astype(np.float32)[None, :frames]
    codes = synthesizer.synth.apply(synthesizer.sovits_variables, jnp.asarray(ssl), method=SynthesizerTrn.extract_latent)
    assert reference.prompt.shape == (frames // 2,)
    np.testing.assert_array_equal(reference.prompt, np.asarray(codes[0, 0]))


def test_semantic_extraction_encodes_like_the_reference_prompt(checkpoints, synthesizer, reference, ref_wav):
    encode, encoder_id, config = infer.semantic_encoder(checkpoints["sovits"])
    assert encoder_id == f"{checkpoints['sovits'].absolute()}@7" and config == synthesizer.config
    features = preprocess.compute_features(ref_wav, config.audio, config.ssl)
    frames = features["ssl"].shape[0] - features["ssl"].shape[0] % 2
    ssl = features["ssl"].astype(np.float16).astype(np.float32)[:frames]
    codes = np.asarray(encode(np.stack([ssl, np.zeros_like(ssl)])))
    assert codes.shape == (2, frames // 2)
    np.testing.assert_array_equal(codes[0], reference.prompt)


def test_synthesizer_holds_what_the_whole_train_states_hold(checkpoints, synthesizer):
    """Loading reads only parameters and codebook; they are the saved states' own."""
    gpt_state, gpt_setup, _ = restore_train_state(checkpoints["gpt"], "gpt")
    sovits_state, sovits_setup, _ = restore_train_state(checkpoints["sovits"], "sovits")
    expected = ((gpt_state.params,), {"params": sovits_state.params_g, "quantizer": sovits_state.quantizer})
    actual = ((synthesizer.gpt_params,), synthesizer.sovits_variables)
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert synthesizer.synth == sovits_setup.synth and synthesizer.gpt_dtype == gpt_setup.model.dtype


def test_text_without_final_punctuation_gets_a_period(synthesizer, ref_wav):
    with_period = synthesizer.reference(ref_wav, "Good morning, everyone.", "en").phoneme_ids
    without = synthesizer.reference(ref_wav, "Good morning, everyone", "en").phoneme_ids
    np.testing.assert_array_equal(with_period, without)
    assert without[-1] == SYMBOL_TO_ID["."]


# --------------------------------------------------------------------------- errors


def test_missing_checkpoint_names_the_argument_and_path(checkpoints, ref_wav, tmp_path):
    missing = tmp_path / "no_such_run"
    with pytest.raises(FileNotFoundError, match=f"gpt_ckpt: checkpoint not found: {missing}"):
        infer.synthesize(missing, checkpoints["sovits"], ref_wav, REF_TEXT, TEXT, tmp_path / "x.wav")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"sovits_ckpt: {empty}"):
        infer.Synthesizer.from_checkpoints(checkpoints["gpt"], empty)


def test_checkpoint_of_the_wrong_stage_is_refused(checkpoints):
    with pytest.raises(CheckpointMismatchError, match=r"gpt_ckpt: .* holds a 'sovits' checkpoint, expected 'gpt'"):
        infer.Synthesizer.from_checkpoints(checkpoints["sovits"], checkpoints["gpt"])


def test_checkpoints_trained_apart_are_refused_naming_both(checkpoints):
    with pytest.raises(infer.CompatibilityError) as err:
        infer.Synthesizer.from_checkpoints(checkpoints["gpt_other_ssl"], checkpoints["sovits"])
    message = str(err.value)
    assert str(checkpoints["gpt_other_ssl"]) in message and str(checkpoints["sovits"]) in message
    assert "ssl.dim: GPT 48 vs SoVITS 32" in message


def test_vocabulary_must_be_codebook_plus_eos(small_config):
    other = load_config_with(small_config, "gpt.vocab_size=33", "sovits.codebook_size=32")
    infer.check_compatible(small_config, small_config, "a", "b")
    with pytest.raises(infer.CompatibilityError, match=r"gpt.vocab_size 33 != SoVITS sovits.codebook_size 16 \+ 1"):
        infer.check_compatible(other, small_config, "runs/gpt", "runs/sovits")


def test_unreadable_reference_audio_names_the_file(synthesizer, tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match=f"ref_wav: {missing}: file not found"):
        synthesizer.reference(missing, REF_TEXT, "en")
    garbage = tmp_path / "garbage.wav"
    garbage.write_text("not audio")
    with pytest.raises(AudioError, match=f"ref_wav: {garbage}: cannot decode audio"):
        synthesizer.reference(garbage, REF_TEXT, "en")


@pytest.mark.parametrize(
    ("ref_text", "text", "language", "match"),
    [
        (REF_TEXT, "   ", "en", "text: empty text"),
        (REF_TEXT, "?!", "en", "text: text '\\?!' yields no phonemes"),
        ("", TEXT, "en", "ref_text: empty text"),
        (REF_TEXT, TEXT, "fr", "text: unsupported language 'fr'"),
    ],
)
def test_unusable_text_names_the_argument(checkpoints, ref_wav, tmp_path, ref_text, text, language, match):
    with pytest.raises(TextError, match=match):
        infer.synthesize(checkpoints["gpt"], checkpoints["sovits"], ref_wav, ref_text, text, tmp_path / "x.wav", language=language)
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize(
    ("setting", "value"),
    [("top_k", -1), ("top_p", 0.0), ("temperature", 0.0), ("repetition_penalty", -1.0), ("noise_scale", -0.1), ("max_seconds", 0.0)],
)
def test_out_of_range_setting_names_it(synthesizer, reference, setting, value):
    with pytest.raises(ValueError, match=f"^{setting}: "):
        synthesizer.synthesize(reference, TEXT, "en", **{setting: value})


@pytest.mark.parametrize(
    ("text", "spelling", "language"),
    [("こんにちは", "JP", "ja"), ("안녕하세요", "KO", "ko"), ("你好", "YUE", "yue"), ("今日はNice", "auto", "auto")],
)
def test_phoneme_ids_accept_upstream_spellings_and_end_in_punctuation(text, spelling, language):
    from gptsovits_jax.text.frontend import text_to_phonemes

    ids = infer._phoneme_ids(text, spelling, "text")
    phonemes = text_to_phonemes(text, language)
    assert ids.tolist()[: len(phonemes)] == [SYMBOL_TO_ID[p] for p in phonemes]
    assert ids[-1] == SYMBOL_TO_ID["."]
