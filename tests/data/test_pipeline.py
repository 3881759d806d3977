"""Input pipelines: bucket shapes, exact resume from a saved state, determinism, epochs, sharding, eval."""

import dataclasses
import json
import logging
import math
from collections import Counter
from itertools import islice

import grain
import numpy as np
import pytest

from gptsovits_jax.data import pipeline, preprocess, semantic
from tests.data.test_preprocess import demo_subset, with_data
from tests.data.test_semantic import FakeEncoder

# 20 English lines (56 to 343 frames, five tiny buckets) and two Mandarin ones.
LINES = (*range(20), 90, 91)
N_EVAL = 3


@pytest.fixture(scope="module")
def config(tiny_config):
    return with_data(tiny_config, eval_utterances=N_EVAL)


@pytest.fixture(scope="module")
def cache(config, tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    out = tmp_path_factory.mktemp("cache")
    preprocess.preprocess(config, list_path=demo_subset(root, LINES), cache_dir=out, num_workers=1, progress=False)
    semantic.extract_semantic(out, FakeEncoder(), batch_size=4, progress=False)
    return out


@pytest.fixture(scope="module", params=["sovits", "gpt"])
def stage(request, config, cache):
    """(name, train data, batch size, seed) of each stage."""
    if request.param == "sovits":
        return "sovits", pipeline.sovits_data(config, "train", cache), config.sovits_train.batch_size, config.sovits_train.seed
    return "gpt", pipeline.gpt_data(config, "train", cache), config.gpt_train.batch_size, config.gpt_train.seed


def take(iterator, n):
    return list(islice(iterator, n))


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for name in x:
            np.testing.assert_array_equal(x[name], y[name], err_msg=name)


def length_key(stage_name):
    return "spec_lens" if stage_name == "sovits" else "semantic_lens"


def test_buckets_assign_half_open_ranges_and_drop_outside():
    buckets = pipeline.Buckets(lower=32, uppers=(100, 150))
    np.testing.assert_array_equal(buckets.assign([10, 32, 33, 100, 101, 150, 151]), [-1, -1, 0, 0, 1, 1, -1])


def test_bucket_shapes_follow_the_config(config, v2_config):
    config = with_data(config, bucket_boundaries=(32, 100, 150, 200, 300, 400, 600))
    assert pipeline.sovits_buckets(config).uppers == (100, 150, 200, 300, 400, 600)
    assert pipeline.gpt_buckets(config) == pipeline.Buckets(0, (50, 75, 100, 150, 200, 300))
    # v2: five SoVITS step shapes and six GPT ones (the last for utterances of 38 to 54 s).
    assert len(pipeline.sovits_buckets(v2_config).uppers) == 5
    assert pipeline.gpt_buckets(v2_config).uppers == (150, 250, 400, 600, 950, 1350)
    odd = with_data(config, bucket_boundaries=(31, 99, 151))
    assert pipeline.sovits_buckets(odd) == pipeline.Buckets(31, (100, 152))


def test_sampler_fills_each_bucket_by_repetition_and_covers_every_item():
    bucket_of = np.array([0] * 5 + [1] * 2 + [2] * 8)
    sampler = pipeline.BucketSampler(bucket_of, batch_size=4, seed=3)
    assert sampler.batches_per_epoch == 2 + 1 + 2
    for epoch in range(3):
        items, buckets = sampler.epoch(epoch)
        assert items.shape == (5, 4)
        for row, bucket in zip(items, buckets):
            assert set(bucket_of[row]) == {bucket}
        counts = Counter(items.ravel().tolist())
        assert set(counts) == set(range(15))
        # Bucket 0: 5 items + 3 repeats; bucket 1: 2 items, each twice; bucket 2: 8 items once.
        assert sorted(counts[i] for i in range(5)) == [1, 1, 2, 2, 2]
        assert [counts[5], counts[6]] == [2, 2]
        assert all(counts[i] == 1 for i in range(7, 15))
    assert not np.array_equal(sampler.epoch(0)[0], sampler.epoch(1)[0])


def test_resume_from_saved_state_yields_exactly_the_next_batches(stage):
    _, data, batch_size, seed = stage
    with pipeline.train_iterator(data, batch_size, seed) as first:
        take(first, 7)
        state = first.get_state()
        expected = take(first, 5)
    assert state == {"next_batch": 7, "data": data.identity(), "seed": seed, "batch_size": batch_size}
    state = json.loads(json.dumps(state))
    with pipeline.train_iterator(data, batch_size, seed, read_options=grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)) as restored:
        restored.set_state(state)
        assert_batches_equal(take(restored, 5), expected)
        assert restored.get_state()["next_batch"] == 12


def test_same_seed_gives_the_same_stream_and_another_seed_differs(stage):
    _, data, batch_size, seed = stage
    n = 2 * math.ceil(len(data) / batch_size)
    with pipeline.train_iterator(data, batch_size, seed) as a, pipeline.train_iterator(data, batch_size, seed) as b:
        first = take(a, n)
        assert_batches_equal(first, take(b, n))
    with pipeline.train_iterator(data, batch_size, seed + 1) as c:
        other = take(c, n)
    assert [list(x["keys"]) for x in first] != [list(x["keys"]) for x in other]


def test_every_item_appears_each_epoch_apart_from_the_repetition_fill(stage):
    _, data, batch_size, seed = stage
    sizes = np.bincount(data.bucket_of)
    per_epoch = int(sum(math.ceil(n / batch_size) for n in sizes))
    with pipeline.train_iterator(data, batch_size, seed) as it:
        assert it.batches_per_epoch == per_epoch
        for _ in range(2):
            keys = Counter(k for batch in take(it, per_epoch) for k in batch["keys"])
            assert set(keys) == set(data.keys)
            assert sum(keys.values()) == per_epoch * batch_size
            assert sum(keys.values()) - len(data) == sum((-n) % batch_size for n in sizes)


def test_batches_have_only_bucket_shapes_and_zero_padding(stage, config):
    name, data, batch_size, seed = stage
    buckets = data.buckets
    with pipeline.train_iterator(data, batch_size, seed) as it:
        batches = take(it, 3 * it.batches_per_epoch)
    shapes = set()
    for batch in batches:
        lengths = batch[length_key(name)]
        bucket = int(np.searchsorted(buckets.uppers, lengths.max()))
        padded, slots = data.shapes[bucket]
        lower = buckets.lower if bucket == 0 else buckets.uppers[bucket - 1]
        assert np.all((lengths > lower) & (lengths <= padded))
        if name == "sovits":
            shape = (batch["spec"].shape[1], batch["text"].shape[1])
            assert batch["ssl"].shape == (batch_size, padded, config.ssl.dim) and batch["ssl"].dtype == np.float32
            assert batch["spec"].shape == (batch_size, padded, 1025) and batch["spec"].dtype == np.float32
            assert batch["wav"].shape == (batch_size, padded * 640)
            assert padded % 2 == 0 and slots == min(padded // 2, config.data.max_phonemes)
            for row, n in enumerate(lengths):
                assert not batch["spec"][row, n:].any() and not batch["ssl"][row, n:].any() and not batch["wav"][row, n * 640 :].any()
                assert batch["spec"][row, :n].min() > 0
            text, text_lens = batch["text"], batch["text_lens"]
        else:
            shape = (batch["semantic_ids"].shape[1], batch["phoneme_ids"].shape[1])
            assert slots == min(padded, config.data.max_phonemes)
            for row, n in enumerate(lengths):
                assert np.all(batch["semantic_ids"][row, n:] == config.gpt.eos)
            text, text_lens = batch["phoneme_ids"], batch["phoneme_lens"]
        assert shape == (padded, slots)
        assert text.dtype == np.int32 and np.all((text_lens >= 1) & (text_lens <= slots))
        for row, n in enumerate(text_lens):
            assert not text[row, n:].any()
        shapes.add(shape)
    assert shapes == {data.shapes[b] for b in set(data.bucket_of.tolist())}
    print(f"{name}: {len(shapes)} batch shapes {sorted(shapes)}")


def test_rows_hold_the_cached_utterances(config, cache):
    data = pipeline.sovits_data(config, "train", cache)
    phonemes = preprocess.load_phonemes(cache)
    with pipeline.train_iterator(data, 4, 0) as it:
        batch = next(it)
    for row, key in enumerate(batch["keys"]):
        stored = preprocess.load_utterance(cache, key)
        n = len(stored["spec"])
        assert batch["spec_lens"][row] == n
        np.testing.assert_array_equal(batch["spec"][row, :n], stored["spec"].astype(np.float32))
        np.testing.assert_array_equal(batch["ssl"][row, :n], stored["ssl"].astype(np.float32))
        np.testing.assert_array_equal(batch["wav"][row, : n * 640], stored["wav"])
        np.testing.assert_array_equal(batch["text"][row, : batch["text_lens"][row]], phonemes[key])
    gpt = pipeline.gpt_data(config, "train", cache)
    tokens = semantic.load_semantic(cache)
    with pipeline.train_iterator(gpt, 8, 0) as it:
        batch = next(it)
    for row, key in enumerate(batch["keys"]):
        np.testing.assert_array_equal(batch["semantic_ids"][row, : batch["semantic_lens"][row]], tokens[key])
        np.testing.assert_array_equal(batch["phoneme_ids"][row, : batch["phoneme_lens"][row]], phonemes[key])


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_rows_together_make_the_global_batch(config, cache, process_count):
    data = pipeline.sovits_data(config, "train", cache)
    with pipeline.train_iterator(data, 4, 7) as it:
        global_batches = take(it, 6)
    parts = []
    for p in range(process_count):
        with pipeline.train_iterator(data, 4, 7, process_index=p, process_count=process_count) as it:
            parts.append(take(it, 6))
    for step, expected in enumerate(global_batches):
        for name in expected:
            np.testing.assert_array_equal(np.concatenate([part[step][name] for part in parts]), expected[name])
        assert parts[0][step]["spec"].shape[0] == 4 // process_count


def test_resume_may_change_the_process_count(config, cache):
    data = pipeline.sovits_data(config, "train", cache)
    with pipeline.train_iterator(data, 4, 7) as it:
        take(it, 3)
        state = it.get_state()
        expected = next(it)
    with pipeline.train_iterator(data, 4, 7, process_index=1, process_count=2) as it:
        it.set_state(state)
        np.testing.assert_array_equal(next(it)["keys"], expected["keys"][2:])


def test_indivisible_batch_and_foreign_state_are_clear_errors(config, cache):
    data = pipeline.sovits_data(config, "train", cache)
    with pytest.raises(ValueError, match="global batch size 4 is not divisible by the process count 3"):
        pipeline.train_iterator(data, 4, 0, process_index=0, process_count=3)
    with pipeline.train_iterator(data, 4, 0) as a, pipeline.train_iterator(data, 4, 1) as b:
        with pytest.raises(ValueError, match="iterator state is for seed 0, this iterator has 1"):
            b.set_state(a.get_state())


@pytest.mark.parametrize("batch_size", [2, 4])
def test_eval_batches_hold_each_eval_item_once_in_valid_rows(config, cache, batch_size):
    for data in (pipeline.sovits_data(config, "eval", cache), pipeline.gpt_data(config, "eval", cache)):
        batches = pipeline.eval_batches(data, batch_size)
        assert len(data) == N_EVAL
        valid_keys = [k for batch in batches for k, v in zip(batch["keys"], batch["valid"]) if v]
        assert sorted(valid_keys) == sorted(data.keys) == sorted(preprocess.load_index(cache)["split"]["eval"])
        assert sum(int(b["valid"].sum()) for b in batches) == N_EVAL
        for batch in batches:
            assert batch["valid"].shape == (batch_size,) and batch["valid"][0]
            assert all(batch["keys"][i] == batch["keys"][int(batch["valid"].sum()) - 1] for i in np.flatnonzero(~batch["valid"]))
        assert_batches_equal(batches, pipeline.eval_batches(data, batch_size))
        halves = [pipeline.eval_batches(data, batch_size, process_index=p, process_count=2) for p in range(2)]
        for whole, a, b in zip(batches, *halves):
            np.testing.assert_array_equal(np.concatenate([a["keys"], b["keys"]]), whole["keys"])


def test_train_and_eval_splits_are_disjoint(config, cache):
    train, evaluation = pipeline.sovits_data(config, "train", cache), pipeline.sovits_data(config, "eval", cache)
    assert not set(train.keys) & set(evaluation.keys)
    assert len(train) + len(evaluation) == len(LINES)


def test_padding_report_bounds_every_utterance(stage):
    _, data, _, _ = stage
    report = pipeline.padding_report(data)
    assert sum(b.items for b in report.buckets) == len(data)
    for row in report.buckets:
        lengths = data.lengths[data.bucket_of == row.bucket]
        assert np.all((lengths > row.lower) & (lengths <= row.padded_length))
        assert row.padded_fraction == pytest.approx(1 - lengths.mean() / row.padded_length)
        assert 0 <= row.padded_fraction < 1 and 0 <= row.text_padded_fraction < 1
    padded_slots = sum(b.items * b.padded_length for b in report.buckets)
    assert report.padded_fraction == pytest.approx(1 - data.lengths.sum() / padded_slots)
    print(report)


def test_utterances_outside_the_buckets_are_dropped_with_a_warning(config, cache, caplog):
    narrow = with_data(config, bucket_boundaries=(60, 100, 150))
    full = pipeline.sovits_data(config, "train", cache)
    with caplog.at_level(logging.WARNING, logger="gptsovits_jax.data.pipeline"):
        data = pipeline.sovits_data(narrow, "train", cache)
    outside = [k for k, n in zip(full.keys, full.lengths) if not 60 < n <= 150]
    assert outside and sorted(set(full.keys) - set(data.keys)) == sorted(outside)
    assert f"dropping {len(outside)} of {len(full)} utterances outside the buckets (60, 150] frames" in caplog.text
    capped = dataclasses.replace(config, gpt_train=dataclasses.replace(config.gpt_train, max_semantic_tokens=80))
    gpt = pipeline.gpt_data(capped, "train", cache)
    assert gpt.lengths.max() <= 80 and pipeline.gpt_buckets(capped).uppers[-1] == 80
    assert len(gpt) == int(np.sum(pipeline.gpt_data(config, "train", cache).lengths <= 80))


def test_gpt_data_refuses_tokens_of_other_features(config, cache, tmp_path):
    stale = tmp_path / "semantic.tsv"
    lines = (cache / "semantic.tsv").read_text().splitlines()
    stale.write_text("\n".join([lines[0], *(line + " 1" for line in lines[1:])]) + "\n")
    with pytest.raises(ValueError, match="do not have frames / 2 entries"):
        pipeline.gpt_data(config, "train", cache, semantic_path=stale)
