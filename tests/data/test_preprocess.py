"""Preprocessing: rejections with reasons, aligned cached features, resume, fingerprints, split."""

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from gptsovits_jax import audio
from gptsovits_jax.config import SSLConfig
from gptsovits_jax.data import preprocess
from gptsovits_jax.data.manifest import ManifestError
from gptsovits_jax.models import hubert
from gptsovits_jax.text.frontend import text_to_ids

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
TINY_HUBERT = Path(__file__).resolve().parents[1] / "fixtures" / "hf" / "tiny-hubert-safetensors"
TINY_HUBERT_BIN = TINY_HUBERT.with_name("tiny-hubert-bin")
# The first nine English lines (three speakers) and two Mandarin ones.
SUBSET = (*range(9), 90, 91)


def demo_lines() -> list[str]:
    return (DEMO / "demo.list").read_text(encoding="utf-8").splitlines()


def demo_subset(dest: Path, line_indices=SUBSET, extra_lines=(), name="subset.list") -> Path:
    """Copy the chosen demo utterances under ``dest`` (same ``speaker/NNN.flac`` layout) and write a list."""
    lines = [demo_lines()[i] for i in line_indices]
    for line in lines:
        relative = line.split("|")[0]
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        if not (dest / relative).exists():
            shutil.copy(DEMO / relative, dest / relative)
    path = dest / name
    path.write_text("\n".join([*lines, *extra_lines]) + "\n", encoding="utf-8")
    return path


def with_data(config, **changes):
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **changes))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The subset plus a corrupt file and a line in an unsupported language."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "bad").mkdir()
    (root / "bad" / "corrupt.flac").write_bytes(b"fLaC this is not audio" * 100)
    shutil.copy(DEMO / "ava" / "001.flac", root / "bad" / "french.flac")
    extra = ["bad/corrupt.flac|ava|en|This file is broken.", "bad/french.flac|ava|fr|Bonjour tout le monde."]
    return demo_subset(root, extra_lines=extra)


@pytest.fixture(scope="module")
def built(corpus, tiny_config, tmp_path_factory):
    """The corpus preprocessed by two worker processes."""
    cache = tmp_path_factory.mktemp("cache")
    config = with_data(tiny_config, eval_utterances=3)
    summary = preprocess.preprocess(config, list_path=corpus, cache_dir=cache, num_workers=2, progress=False)
    return config, cache, summary


def test_bad_lines_are_rejected_with_reasons_and_the_rest_processed(built, corpus):
    _, cache, summary = built
    assert (summary.kept, summary.rejected, summary.computed, summary.reused) == (len(SUBSET), 2, len(SUBSET), 0)
    rows = (cache / "rejected.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "line\tpath\treason"
    by_line = {int(r.split("\t")[0]): r.split("\t")[2] for r in rows[1:]}
    assert set(by_line) == {len(SUBSET) + 1, len(SUBSET) + 2}
    assert "audio" in by_line[len(SUBSET) + 1] and "unreadable" in by_line[len(SUBSET) + 1]
    assert "unsupported language 'fr'" in by_line[len(SUBSET) + 2]
    assert sum(summary.reasons.values()) >= 2 and summary.reasons["unsupported language"] == 1


def test_index_lists_every_kept_utterance_with_its_metadata(built):
    _, cache, summary = built
    index = preprocess.load_index(cache)
    utterances = index["utterances"]
    expected_keys = [demo_lines()[i].split("|")[0].removesuffix(".flac").replace("/", "__") for i in SUBSET]
    assert [u["key"] for u in utterances] == expected_keys
    assert {u["speaker"] for u in utterances} == {"ava", "ben", "mei"}
    assert {u["language"] for u in utterances} == {"en", "zh"}
    assert sum(u["duration"] for u in utterances) == pytest.approx(summary.seconds)
    for u in utterances:
        assert u["duration"] == pytest.approx(u["frames"] * 640 / 32000)
    assert index["features_fingerprint"] == preprocess._digest(preprocess.features_fingerprint_inputs(built[0].audio, built[0].ssl))


def test_cached_arrays_are_frame_aligned_and_match_the_features(built):
    config, cache, _ = built
    index = preprocess.load_index(cache)
    for u in index["utterances"][:4]:
        arrays = preprocess.load_utterance(cache, u["key"])
        wave = audio.load_audio(u["wav_path"], 32000)
        frames = len(wave) // 640
        assert u["frames"] == frames
        assert arrays["wav"].shape == (frames * 640,) and arrays["wav"].dtype == np.float32
        assert arrays["spec"].shape == (frames, 1025) and arrays["spec"].dtype == np.float16
        assert arrays["ssl"].shape == (frames, config.ssl.dim) and arrays["ssl"].dtype == np.float16
        expected = preprocess.compute_features(Path(u["wav_path"]), config.audio, config.ssl)
        np.testing.assert_array_equal(arrays["wav"], expected["wav"])
        np.testing.assert_array_equal(arrays["spec"], expected["spec"].astype(np.float16))
        np.testing.assert_array_equal(arrays["ssl"], expected["ssl"].astype(np.float16))
        np.testing.assert_array_equal(arrays["wav"], audio.training_waveform(wave)[: frames * 640])


def test_float16_spectrogram_error_stays_within_half_an_ulp(built):
    """Relative rounding <= 2^-11; in log-mel (what the loss sees) the absolute error is below that too."""
    config, cache, _ = built
    worst_rel = worst_mel = 0.0
    for u in preprocess.load_index(cache)["utterances"]:
        exact = preprocess.compute_features(Path(u["wav_path"]), config.audio, config.ssl)["spec"]
        stored = preprocess.load_utterance(cache, u["key"])["spec"].astype(np.float32)
        worst_rel = max(worst_rel, float(np.max(np.abs(stored - exact) / exact)))
        mel_error = np.abs(audio.spec_to_mel_np(stored, config.audio) - audio.spec_to_mel_np(exact, config.audio))
        worst_mel = max(worst_mel, float(mel_error.max()))
    assert 0 < worst_rel <= 2.0**-11
    assert worst_mel <= 2.0**-11
    print(f"float16 spec: max relative error {worst_rel:.2e}, max log-mel error {worst_mel:.2e}")


def test_phonemes_are_the_frontend_ids(built):
    _, cache, _ = built
    table = preprocess.load_phonemes(cache)
    index = preprocess.load_index(cache)
    assert list(table) == [u["key"] for u in index["utterances"]]
    for u in index["utterances"]:
        np.testing.assert_array_equal(table[u["key"]], text_to_ids(u["text"], u["language"]))
        assert u["phonemes"] == len(table[u["key"]])


def test_split_holds_out_the_last_keys_of_the_seeded_order(built):
    config, cache, summary = built
    index = preprocess.load_index(cache)
    keys = [u["key"] for u in index["utterances"]]
    order = preprocess.split_order(keys, config.data.split_seed)
    assert index["split"]["eval"] == order[-3:]
    assert index["split"]["train"] == order[:-3]
    assert {u["key"] for u in index["utterances"] if u["split"] == "eval"} == set(order[-3:])
    assert (summary.train, summary.eval) == (len(keys) - 3, 3)
    assert preprocess.split_order(list(reversed(keys)), config.data.split_seed) == order
    assert preprocess.split_order(keys, config.data.split_seed + 1) != order


def test_second_run_reuses_every_cached_utterance(built, corpus):
    config, cache, _ = built
    mtimes = {p.name: p.stat().st_mtime_ns for p in (cache / "utterances").iterdir()}
    summary = preprocess.preprocess(config, list_path=corpus, cache_dir=cache, num_workers=1, progress=False)
    assert (summary.computed, summary.reused, summary.kept) == (0, len(SUBSET), len(SUBSET))
    assert {p.name: p.stat().st_mtime_ns for p in (cache / "utterances").iterdir()} == mtimes


def test_interrupted_run_resumes_with_only_the_missing_utterances(corpus, tiny_config, tmp_path):
    config = with_data(tiny_config, eval_utterances=1)
    partial = demo_subset(corpus.parent, SUBSET[:4], name="first_four.list")
    first = preprocess.preprocess(config, list_path=partial, cache_dir=tmp_path, num_workers=1, progress=False)
    assert (first.computed, first.kept) == (4, 4)
    full = preprocess.preprocess(config, list_path=corpus, cache_dir=tmp_path, num_workers=1, progress=False)
    assert (full.computed, full.reused, full.kept) == (len(SUBSET) - 4, 4, len(SUBSET))
    for key in ("ava__001", "mei__024"):
        preprocess.utterance_path(tmp_path, key).unlink()
    again = preprocess.preprocess(config, list_path=corpus, cache_dir=tmp_path, num_workers=1, progress=False)
    assert (again.computed, again.reused) == (2, len(SUBSET) - 2)


def test_changed_features_fingerprint_recomputes_everything_identically(built, corpus, tmp_path, caplog):
    """A different SSL width recomputes all; the in-process run stores the same bytes as the worker processes."""
    config, cache, _ = built
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    wider = dataclasses.replace(config, ssl=dataclasses.replace(config.ssl, dim=32))
    with caplog.at_level(logging.WARNING, logger="gptsovits_jax.data.preprocess"):
        summary = preprocess.preprocess(wider, list_path=corpus, cache_dir=copy, num_workers=1, progress=False)
    assert "features fingerprint changed (ssl); recomputing every utterance" in caplog.text
    assert (summary.computed, summary.reused) == (len(SUBSET), 0)
    assert preprocess.load_utterance(copy, "ava__001")["ssl"].shape[1] == 32
    back = preprocess.preprocess(config, list_path=corpus, cache_dir=copy, num_workers=1, progress=False)
    assert back.computed == len(SUBSET)
    for key in ("ava__001", "mei__023"):
        for name, array in preprocess.load_utterance(copy, key).items():
            np.testing.assert_array_equal(array, preprocess.load_utterance(cache, key)[name])
    assert preprocess.load_index(copy)["fingerprint"] == preprocess.load_index(cache)["fingerprint"]


def test_hubert_features_are_cached_with_the_weights_that_made_them(tiny_config, tmp_path, caplog):
    """ssl.extractor: hubert stores aligned HuBERT features; other weights or another extractor recompute every utterance."""
    path = demo_subset(tmp_path / "corpus", SUBSET[:3])
    base = with_data(tiny_config, eval_utterances=1)
    config = dataclasses.replace(base, ssl=SSLConfig(extractor="hubert", dim=32, hubert_path=str(TINY_HUBERT)))
    cache = tmp_path / "cache"
    first = preprocess.preprocess(config, list_path=path, cache_dir=cache, num_workers=2, progress=False)
    assert (first.computed, first.kept) == (3, 3)
    index = preprocess.load_index(cache)
    identity = index["fingerprint_inputs"]["features"]["extractor"]
    assert identity["extractor"] == "hubert" and identity["weights"] == hubert.weights_fingerprint(TINY_HUBERT)
    for u in index["utterances"]:
        stored = preprocess.load_utterance(cache, u["key"])
        alone = preprocess.compute_features(Path(u["wav_path"]), config.audio, config.ssl)["ssl"]
        assert stored["ssl"].shape == alone.shape == (u["frames"], 32) == (stored["spec"].shape[0], 32)
        np.testing.assert_allclose(stored["ssl"].astype(np.float32), alone, rtol=1e-3, atol=1e-3 * np.abs(alone).max())

    other_weights = dataclasses.replace(config, ssl=dataclasses.replace(config.ssl, hubert_path=str(TINY_HUBERT_BIN)))
    with caplog.at_level(logging.WARNING, logger="gptsovits_jax.data.preprocess"):
        again = preprocess.preprocess(other_weights, list_path=path, cache_dir=cache, num_workers=1, progress=False)
    assert "features fingerprint changed (extractor, ssl)" in caplog.text
    assert (again.computed, again.reused) == (3, 0)
    spectral = dataclasses.replace(config, ssl=SSLConfig(extractor="spectral", dim=32))
    assert preprocess.preprocess(spectral, list_path=path, cache_dir=cache, num_workers=1, progress=False).computed == 3
    assert preprocess.load_index(cache)["fingerprint_inputs"]["features"]["extractor"] == {"extractor": "spectral"}


def test_a_replaced_audio_file_is_recomputed(corpus, tiny_config, tmp_path):
    root = tmp_path / "corpus"
    path = demo_subset(root, SUBSET[:3])
    config = with_data(tiny_config, eval_utterances=1)
    preprocess.preprocess(config, list_path=path, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    shutil.copy(DEMO / "ben" / "001.flac", root / "ava" / "001.flac")
    summary = preprocess.preprocess(config, list_path=path, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    assert (summary.computed, summary.reused) == (1, 2)


def test_phoneme_count_and_rate_filters_reject_with_reasons(tiny_config, tmp_path):
    """Lines 4-6: 1.56 s with ~70 phonemes (too fast), 3.2 s with 4 (too slow), more than max_phonemes."""
    root = tmp_path / "corpus"
    demo_subset(root, SUBSET[:3])
    for source, name in (("ava/001.flac", "fast"), ("ava/003.flac", "slow"), ("ava/007.flac", "long")):
        shutil.copy(DEMO / source, root / "ava" / f"{name}.flac")
    tongue_twister = "Peter Piper picked a peck of pickled peppers."
    lines = [f"ava/fast.flac|ava|en|{tongue_twister * 2}", "ava/slow.flac|ava|en|Hi.", f"ava/long.flac|ava|en|{tongue_twister * 4}"]
    path = demo_subset(root, SUBSET[:3], extra_lines=lines, name="filters.list")
    config = with_data(tiny_config, eval_utterances=1, max_phonemes=100)
    summary = preprocess.preprocess(config, list_path=path, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    rows = [r.split("\t") for r in (tmp_path / "cache" / "rejected.tsv").read_text().splitlines()[1:]]
    reasons = {int(line): reason for line, _, reason in rows}
    assert set(reasons) == {4, 5, 6}
    assert reasons[4].startswith("phoneme rate") and reasons[4].endswith("per second outside [3, 25]")
    assert reasons[5].startswith("phoneme rate") and float(reasons[5].split()[2]) < 3
    assert reasons[6].startswith("too many phonemes:") and reasons[6].endswith("> data.max_phonemes 100")
    assert summary.kept == 3 and summary.reasons == {"phoneme rate # per second outside": 2, "too many phonemes": 1}
    for u in preprocess.load_index(tmp_path / "cache")["utterances"]:
        assert 3 <= u["phonemes"] / (u["frames"] / 50) <= 25


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x.npz"

    def broken_savez(f, **arrays):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        preprocess._atomic_savez(target, {"a": np.zeros(3)})
    assert list(tmp_path.iterdir()) == []


def test_no_usable_line_raises_and_still_writes_rejections(tiny_config, tmp_path):
    listing = tmp_path / "bad.list"
    listing.write_text("missing.flac|ava|en|Nothing here.\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="not found"):
        preprocess.preprocess(tiny_config, list_path=listing, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    assert "audio file not found" in (tmp_path / "cache" / "rejected.tsv").read_text()


def test_summary_is_printed_with_counts(built, corpus, capsys):
    config, cache, _ = built
    summary = preprocess.preprocess(config, list_path=corpus, cache_dir=cache, num_workers=1, progress=False)
    out = capsys.readouterr().out
    assert f"{summary.kept} utterances kept" in out and "2 rejected" in out and "rejected 1 x unsupported language" in out
    assert json.loads((cache / "index.json").read_text())["summary"]["kept"] == summary.kept


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("duration 0.31 s outside [0.6, 12.0] s", "duration # s outside"),
        ("unsupported language 'fr' (supported: en, zh)", "unsupported language"),
        ("unreadable audio: Error opening '/x/y.flac': File contains data in an unknown format.", "unreadable audio"),
        ("too many phonemes: 600 > data.max_phonemes 540", "too many phonemes"),
        ("phoneme rate 31.2 per second outside [3, 25]", "phoneme rate # per second outside"),
    ],
)
def test_reason_category_drops_particulars(reason, category):
    assert preprocess.reason_category(reason) == category


def test_japanese_korean_and_cantonese_lines_are_preprocessed_with_their_frontends(tiny_config, tmp_path):
    new_languages = [i for i, line in enumerate(demo_lines()) if line.split("|")[2] in ("ja", "ko", "yue")]
    (tmp_path / "extra").mkdir()
    shutil.copy(DEMO / "mei" / "035.flac", tmp_path / "extra" / "mixed.flac")
    shutil.copy(DEMO / "mei" / "036.flac", tmp_path / "extra" / "wrong.flac")
    mixed = ["extra/mixed.flac|mei|auto|おはよう、Good morning。"]
    wrong = ["extra/wrong.flac|mei|zh|ありがとうございます！"]
    list_path = demo_subset(tmp_path, line_indices=new_languages, extra_lines=[*mixed, *wrong])
    config = with_data(tiny_config, eval_utterances=0)

    summary = preprocess.preprocess(config, list_path=list_path, cache_dir=tmp_path / "cache", num_workers=1, progress=False)

    assert (summary.kept, summary.rejected) == (len(new_languages) + 1, 1)
    index = preprocess.load_index(tmp_path / "cache")
    table = preprocess.load_phonemes(tmp_path / "cache")
    assert [u["language"] for u in index["utterances"]] == ["ja"] * 3 + ["ko"] * 3 + ["yue"] * 3 + ["auto"]
    for u in index["utterances"]:
        np.testing.assert_array_equal(table[u["key"]], text_to_ids(u["text"], u["language"]))
    rows = (tmp_path / "cache" / "rejected.tsv").read_text(encoding="utf-8").splitlines()
    assert "text frontend (zh): text in a language other than 'zh': 'ありがとうございます' (kana)" in rows[1]
