"""Input pipelines of both stages over a preprocessed cache: bucketed, deterministic, resumable, sharded.

Batches are dicts of numpy arrays, channels-last, right-padded with zeros unless stated:

* SoVITS (stage 2), ``T`` = the bucket's padded frame count (50 Hz, even), ``L`` its phoneme slots:
  ``ssl [B, T, ssl_dim]`` f32, ``spec [B, T, F]`` f32, ``spec_lens [B]`` i32 (valid frames),
  ``wav [B, T * hop]`` f32 (32 kHz samples, zero beyond ``spec_lens * hop``),
  ``text [B, L]`` i32 (phoneme ids, padded with id 0 as upstream), ``text_lens [B]`` i32.
* GPT (stage 1), ``Ty`` = the bucket's padded token count (25 Hz), ``Tx`` its phoneme slots:
  ``phoneme_ids [B, Tx]`` i32 (padded with 0), ``phoneme_lens [B]`` i32, ``semantic_ids [B, Ty]`` i32
  (padded with EOS = ``gpt.vocab_size - 1`` as upstream; the model masks by length anyway),
  ``semantic_lens [B]`` i32. With ``text.bert_path`` set, also ``bert [B, Tx, bert_dim]`` f32: the
  cached BERT features (zero rows for utterances without Chinese and for padding, as upstream);
  without it no ``bert`` entry, and the model uses zeros.

Both carry ``keys [B]`` (numpy unicode array of utterance keys), which the trainer drops before
the device. Eval batches also carry ``valid [B]`` bool (see :func:`eval_batches`).

Bucketing (upstream's ``DistributedBucketSampler``): SoVITS buckets are the frame ranges
``(b_0, b_1], (b_1, b_2], ...`` of ``data.bucket_boundaries``; utterances of at most ``b_0`` or
more than the last boundary frames are dropped with a warning. A bucket's batches are padded to
its upper boundary (rounded up to even), so every batch has one of ``len(boundaries) - 1``
shapes, i.e. that many compilations of the step. GPT buckets are token ranges ``(0, c_1],
(c_1, c_2], ...`` with ``c_i = ceil(b_i / 2)`` (the first boundary, a lower bound, gives no bucket)
plus ``gpt_train.max_semantic_tokens`` as the last upper bound (longer utterances dropped). Phoneme slots are a function of the bucket:
``L = min(T / 2, max_phonemes)`` and ``Tx = min(Ty, max_phonemes)``, which hold every kept
utterance because preprocessing caps the phoneme rate at 25 per second (``phonemes <= T / 2``).

Order: epoch ``e`` shuffles each bucket with ``default_rng([seed, e])``, fills its last batch by
repeating the bucket's first shuffled items (upstream), cuts the buckets into global batches
and shuffles the batch order. The stream is infinite over epochs and a pure function of
(seed, global batch number); process ``p`` of ``P`` gets rows ``[p B / P, (p + 1) B / P)`` of each
global batch. A :class:`BatchIterator`'s state is the number of global batches consumed, so a
restored iterator continues with the exact next batch (even with another process count).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grain
import numpy as np

from gptsovits_jax.config import Config
from gptsovits_jax.data import preprocess, semantic

log = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]
SPLITS = ("train", "eval")


# --------------------------------------------------------------------------- buckets


@dataclass(frozen=True)
class Buckets:
    """Length buckets ``(lower, uppers[0]], (uppers[0], uppers[1]], ...``; lengths in frames or tokens."""

    lower: int
    uppers: tuple[int, ...]

    def assign(self, lengths: Sequence[int] | np.ndarray) -> np.ndarray:
        """Bucket index ``[N]`` int of each length, -1 for lengths outside ``(lower, uppers[-1]]``."""
        lengths = np.asarray(lengths, dtype=np.int64)
        index = np.searchsorted(np.asarray(self.uppers), lengths, side="left")
        return np.where((lengths > self.lower) & (lengths <= self.uppers[-1]), index, -1)


def sovits_buckets(config: Config) -> Buckets:
    """Frame buckets from ``data.bucket_boundaries``: uppers rounded up to even (the ``ssl_proj`` stride)."""
    bounds = config.data.bucket_boundaries
    return Buckets(lower=bounds[0], uppers=tuple(b + b % 2 for b in bounds[1:]))


def gpt_buckets(config: Config) -> Buckets:
    """Token buckets: ``ceil(b / 2)`` of every frame boundary but the first, up to and ending at ``max_semantic_tokens``."""
    cap = config.gpt_train.max_semantic_tokens
    uppers = sorted({min(math.ceil(b / 2), cap) for b in config.data.bucket_boundaries[1:]} | {cap})
    return Buckets(lower=0, uppers=tuple(uppers))


# --------------------------------------------------------------------------- data sets


def _load_split(cache_dir: Path, split: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    index = preprocess.load_index(cache_dir)
    return index, [u for u in index["utterances"] if u["split"] == split]


def _keep_bucketed(stage: str, keys: list[str], lengths: np.ndarray, buckets: Buckets, unit: str) -> np.ndarray:
    """Bucket of each item; warns about (and marks -1) the ones outside every bucket."""
    bucket_of = buckets.assign(lengths)
    dropped = [f"{k} ({n} {unit})" for k, n, b in zip(keys, lengths, bucket_of) if b < 0]
    if dropped:
        log.warning(
            "%s: dropping %d of %d utterances outside the buckets (%d, %d] %s: %s%s",
            stage,
            len(dropped),
            len(keys),
            buckets.lower,
            buckets.uppers[-1],
            unit,
            ", ".join(dropped[:5]),
            ", ..." if len(dropped) > 5 else "",
        )
    return bucket_of


@dataclass(frozen=True, eq=False)
class BucketedData:
    """Items of one split with their bucket and how to turn a list of them into a batch.

    ``lengths [N]`` are frames (SoVITS) or tokens (GPT); ``bucket_of [N]`` their bucket;
    ``shapes[b]`` = ``(padded length, phoneme slots)`` of bucket ``b``; ``collate(items, b)``
    builds the batch of the item indices ``items`` (all in bucket ``b``).
    """

    stage: str
    keys: tuple[str, ...]
    lengths: np.ndarray
    text_lengths: np.ndarray
    bucket_of: np.ndarray
    buckets: Buckets
    shapes: tuple[tuple[int, int], ...]
    collate: Callable[[np.ndarray, int], Batch]

    def __len__(self) -> int:
        return len(self.keys)

    def identity(self) -> str:
        """A digest of the items, their buckets and shapes: a saved iterator state only fits the same identity."""
        payload = [self.stage, list(self.keys), self.bucket_of.tolist(), [list(s) for s in self.shapes]]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def _phoneme_slots(padded: int, max_phonemes: int) -> int:
    return min(padded, max_phonemes)


def _checked_text(stage: str, keys: Sequence[str], text_lengths: np.ndarray, bucket_of: np.ndarray, shapes) -> np.ndarray:
    """Drops (bucket -1, with a warning) items with more phonemes than their bucket's slots."""
    slots = np.array([shapes[b][1] if b >= 0 else 0 for b in bucket_of])
    over = (bucket_of >= 0) & (text_lengths > slots)
    if over.any():
        names = [f"{k} ({n} > {s})" for k, n, s, o in zip(keys, text_lengths, slots, over) if o]
        log.warning("%s: dropping %d utterances with more phonemes than their bucket holds: %s", stage, len(names), ", ".join(names[:5]))
    return np.where(over, -1, bucket_of)


def _filtered(
    stage: str, keys: list[str], lengths: np.ndarray, text_lengths: np.ndarray, buckets: Buckets, shapes, unit: str
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    bucket_of = _keep_bucketed(stage, keys, lengths, buckets, unit)
    bucket_of = _checked_text(stage, keys, text_lengths, bucket_of, shapes)
    keep = bucket_of >= 0
    return tuple(k for k, m in zip(keys, keep) if m), lengths[keep], text_lengths[keep], bucket_of[keep]


def sovits_data(config: Config, split: str = "train", cache_dir: str | Path | None = None) -> BucketedData:
    """The SoVITS items of ``split`` in the cache, bucketed by frames; see the module docstring for batches."""
    cache_dir = Path(cache_dir if cache_dir is not None else config.data.cache_dir)
    index, utterances = _load_split(cache_dir, split)
    if index["ssl_dim"] != config.ssl.dim or index["audio"]["hop_length"] != config.audio.hop_length:
        raise ValueError(
            f"{cache_dir}: cache has ssl_dim {index['ssl_dim']} and hop {index['audio']['hop_length']}, "
            f"config has {config.ssl.dim} and {config.audio.hop_length}; preprocess again with this config"
        )
    phonemes = preprocess.load_phonemes(cache_dir)
    buckets = sovits_buckets(config)
    shapes = tuple((t, _phoneme_slots(t // 2, config.data.max_phonemes)) for t in buckets.uppers)
    keys = [u["key"] for u in utterances]
    frames = np.array([u["frames"] for u in utterances], dtype=np.int64)
    n_text = np.array([len(phonemes[k]) for k in keys], dtype=np.int64)
    keys, frames, n_text, bucket_of = _filtered("sovits", keys, frames, n_text, buckets, shapes, "frames")
    collate = _SoVITSCollate(cache_dir, keys, frames, {k: phonemes[k] for k in keys}, shapes, config)
    return BucketedData("sovits", keys, frames, n_text, bucket_of, buckets, shapes, collate)


def gpt_data(
    config: Config, split: str = "train", cache_dir: str | Path | None = None, semantic_path: str | Path | None = None
) -> BucketedData:
    """The GPT items of ``split``: phonemes and semantic tokens (``semantic.tsv``), bucketed by tokens."""
    cache_dir = Path(cache_dir if cache_dir is not None else config.data.cache_dir)
    index, utterances = _load_split(cache_dir, split)
    meta_path = cache_dir / semantic.SEMANTIC_META_NAME
    if semantic_path is None and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta["features_fingerprint"] != index["features_fingerprint"]:
            raise ValueError(
                f"{cache_dir}: semantic tokens were extracted from other features than the cache holds now; extract them again"
            )
    tokens = semantic.load_semantic(cache_dir, semantic_path)
    missing = [u["key"] for u in utterances if u["key"] not in tokens]
    if missing:
        raise ValueError(f"{cache_dir}: {len(missing)} {split} utterances have no semantic tokens (e.g. {missing[:3]}); extract them again")
    stale = [u["key"] for u in utterances if len(tokens[u["key"]]) != u["frames"] // 2]
    if stale:
        raise ValueError(f"{cache_dir}: semantic tokens of {stale[:3]} do not have frames / 2 entries; extract them again")
    bert_keys = None
    if config.text.bert_path is not None:
        record = index.get("bert")
        if record is None:
            raise ValueError(f"{cache_dir}: text.bert_path is set but the cache holds no BERT features; preprocess again with this config")
        if record["dim"] != config.gpt.bert_dim:
            raise ValueError(f"{cache_dir}: cached BERT features are {record['dim']}-wide, gpt.bert_dim is {config.gpt.bert_dim}")
        bert_keys = {u["key"] for u in utterances if u.get("bert")}
    phonemes = preprocess.load_phonemes(cache_dir)
    buckets = gpt_buckets(config)
    shapes = tuple((t, _phoneme_slots(t, config.data.max_phonemes)) for t in buckets.uppers)
    keys = [u["key"] for u in utterances]
    n_tokens = np.array([len(tokens[k]) for k in keys], dtype=np.int64)
    n_text = np.array([len(phonemes[k]) for k in keys], dtype=np.int64)
    keys, n_tokens, n_text, bucket_of = _filtered("gpt", keys, n_tokens, n_text, buckets, shapes, "tokens")
    bert = None if bert_keys is None else _BertRows(cache_dir, bert_keys, config.gpt.bert_dim)
    collate = _GPTCollate(keys, {k: phonemes[k] for k in keys}, {k: tokens[k] for k in keys}, shapes, config.gpt.eos, bert)
    return BucketedData("gpt", keys, n_tokens, n_text, bucket_of, buckets, shapes, collate)


class _SoVITSCollate:
    """Loads cached utterances and pads them to their bucket's shape (float16 widened to float32)."""

    def __init__(self, cache_dir: Path, keys, frames, phonemes, shapes, config: Config):
        self.cache_dir, self.keys, self.frames, self.phonemes, self.shapes = cache_dir, keys, frames, phonemes, shapes
        self.ssl_dim, self.spec_channels, self.hop = config.ssl.dim, config.audio.spec_channels, config.audio.hop_length

    def __call__(self, items: np.ndarray, bucket: int) -> Batch:
        t_pad, l_pad = self.shapes[bucket]
        n = len(items)
        batch = {
            "ssl": np.zeros((n, t_pad, self.ssl_dim), np.float32),
            "spec": np.zeros((n, t_pad, self.spec_channels), np.float32),
            "spec_lens": np.zeros((n,), np.int32),
            "wav": np.zeros((n, t_pad * self.hop), np.float32),
            "text": np.zeros((n, l_pad), np.int32),
            "text_lens": np.zeros((n,), np.int32),
            "keys": np.array([self.keys[i] for i in items]),
        }
        for row, item in enumerate(items):
            key = self.keys[item]
            arrays = preprocess.load_utterance(self.cache_dir, key)
            frames = arrays["spec"].shape[0]
            if frames != self.frames[item]:
                raise ValueError(f"{key}: cached file has {frames} frames, index.json says {self.frames[item]}; preprocess again")
            batch["spec"][row, :frames] = arrays["spec"]
            batch["ssl"][row, :frames] = arrays["ssl"]
            batch["wav"][row, : frames * self.hop] = arrays["wav"]
            batch["spec_lens"][row] = frames
            ids = self.phonemes[key]
            batch["text"][row, : len(ids)] = ids
            batch["text_lens"][row] = len(ids)
        return batch


@dataclass(frozen=True)
class _BertRows:
    """Where the cached BERT features are: ``keys`` have a file, the others are zeros."""

    cache_dir: Path
    keys: set[str]
    dim: int


class _GPTCollate:
    """Pads in-memory phoneme ids (with 0) and semantic tokens (with EOS) to their bucket's shape, and cached BERT features (with 0)."""

    def __init__(self, keys, phonemes, tokens, shapes, eos: int, bert: _BertRows | None = None):
        self.keys, self.phonemes, self.tokens, self.shapes, self.eos, self.bert = keys, phonemes, tokens, shapes, eos, bert

    def __call__(self, items: np.ndarray, bucket: int) -> Batch:
        ty_pad, tx_pad = self.shapes[bucket]
        n = len(items)
        batch = {
            "phoneme_ids": np.zeros((n, tx_pad), np.int32),
            "phoneme_lens": np.zeros((n,), np.int32),
            "semantic_ids": np.full((n, ty_pad), self.eos, np.int32),
            "semantic_lens": np.zeros((n,), np.int32),
            "keys": np.array([self.keys[i] for i in items]),
        }
        if self.bert is not None:
            batch["bert"] = np.zeros((n, tx_pad, self.bert.dim), np.float32)
        for row, item in enumerate(items):
            key = self.keys[item]
            ids, tokens = self.phonemes[key], self.tokens[key]
            batch["phoneme_ids"][row, : len(ids)] = ids
            batch["phoneme_lens"][row] = len(ids)
            batch["semantic_ids"][row, : len(tokens)] = tokens
            batch["semantic_lens"][row] = len(tokens)
            if self.bert is not None and key in self.bert.keys:
                features = preprocess.load_bert_features(self.bert.cache_dir, key)
                if features.shape != (len(ids), self.bert.dim):
                    raise ValueError(f"{key}: cached BERT features {features.shape} do not fit {len(ids)} phonemes; preprocess again")
                batch["bert"][row, : len(ids)] = features
        return batch


# --------------------------------------------------------------------------- sampling


class BucketSampler:
    """Global batches of item indices, a pure function of (seed, global batch number).

    Every epoch has ``batches_per_epoch = sum_b ceil(n_b / B)`` batches; see the module
    docstring for the order. Thread-safe (grain calls it from its reader threads).
    """

    def __init__(self, bucket_of: np.ndarray, batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.batch_size, self.seed = batch_size, seed
        n_buckets = int(bucket_of.max(initial=-1)) + 1
        self.members = [np.flatnonzero(bucket_of == b) for b in range(n_buckets)]
        self.batches_per_epoch = sum(math.ceil(len(m) / batch_size) for m in self.members)
        if self.batches_per_epoch == 0:
            raise ValueError("no items to sample from: every bucket is empty")
        self._lock = threading.Lock()
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(items [batches_per_epoch, B], bucket [batches_per_epoch])`` of epoch ``epoch``, in order."""
        with self._lock:
            if epoch not in self._epochs:
                if len(self._epochs) >= 2:
                    self._epochs.pop(min(self._epochs))
                self._epochs[epoch] = self._plan(epoch)
            return self._epochs[epoch]

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        batches, buckets = [], []
        for bucket, members in enumerate(self.members):
            if len(members) == 0:
                continue
            shuffled = rng.permutation(members)
            filled = np.resize(shuffled, math.ceil(len(members) / self.batch_size) * self.batch_size)
            rows = filled.reshape(-1, self.batch_size)
            batches.append(rows)
            buckets.append(np.full(len(rows), bucket))
        items, bucket_ids = np.concatenate(batches), np.concatenate(buckets)
        order = rng.permutation(len(items))
        return items[order], bucket_ids[order]

    def batch(self, index: int) -> tuple[np.ndarray, int]:
        """``(items [B], bucket)`` of global batch ``index`` (counted from 0 over all epochs)."""
        epoch, position = divmod(index, self.batches_per_epoch)
        items, buckets = self.epoch(epoch)
        return items[position], int(buckets[position])


def process_rows(batch_size: int, process_index: int, process_count: int) -> slice:
    """Rows ``[p B / P, (p + 1) B / P)`` of a global batch of ``B`` that process ``p`` of ``P`` loads."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must lie in [0, process_count = {process_count})")
    if batch_size % process_count:
        raise ValueError(f"global batch size {batch_size} is not divisible by the process count {process_count}")
    per_process = batch_size // process_count
    return slice(process_index * per_process, (process_index + 1) * per_process)


class _LoadBatch:
    """grain map: global batch number -> this process's rows of that batch, collated."""

    def __init__(self, data: BucketedData, sampler: BucketSampler, rows: slice):
        self.data, self.sampler, self.rows = data, sampler, rows

    def __call__(self, index: int) -> Batch:
        items, bucket = self.sampler.batch(int(index))
        return self.data.collate(items[self.rows], bucket)


# --------------------------------------------------------------------------- iterators


class BatchIterator:
    """An infinite iterator of local batches with a resumable state.

    ``get_state()`` returns ``{"next_batch": n, "data": identity, "seed": s, "batch_size": B}``
    (JSON-able); ``set_state`` on an iterator over the same data, seed and global batch size
    makes the next batch global batch ``n``. The process count may differ.
    """

    def __init__(
        self, data: BucketedData, batch_size: int, seed: int, process_index: int, process_count: int, read_options: grain.ReadOptions
    ):
        rows = process_rows(batch_size, process_index, process_count)
        self.data = data
        self.sampler = BucketSampler(data.bucket_of, batch_size, seed)
        self._identity = {"data": data.identity(), "seed": seed, "batch_size": batch_size}
        dataset = grain.MapDataset.range(sys.maxsize).map(_LoadBatch(data, self.sampler, rows))
        self._iterator = dataset.to_iter_dataset(read_options).__iter__()

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        return next(self._iterator)

    def get_state(self) -> dict[str, Any]:
        """The position (global batches consumed) and what it is a position in."""
        return {"next_batch": int(self._iterator.get_state()["next_index"]), **self._identity}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`get_state`); raises ``ValueError`` if it belongs to other data."""
        for name, value in self._identity.items():
            if state.get(name) != value:
                raise ValueError(f"iterator state is for {name} {state.get(name)!r}, this iterator has {value!r}; cannot resume")
        next_batch = int(state["next_batch"])
        if next_batch < 0:
            raise ValueError(f"iterator state: next_batch must be >= 0, got {next_batch}")
        self._iterator.set_state({"next_index": next_batch})

    def close(self) -> None:
        self._iterator.close()

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_read_options() -> grain.ReadOptions:
    """2 reader threads, 4 batches ahead: enough to keep one device busy on the demo (see benchmarks/data_throughput.py)."""
    return grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def train_iterator(
    data: BucketedData,
    batch_size: int,
    seed: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
    read_options: grain.ReadOptions | None = None,
) -> BatchIterator:
    """Infinite shuffled batches of ``data``: ``batch_size`` is the global batch, this process gets ``B / P`` rows."""
    return BatchIterator(data, batch_size, seed, process_index, process_count, read_options or default_read_options())


def sovits_train_iterator(config: Config, *, cache_dir: str | Path | None = None, **kwargs: Any) -> BatchIterator:
    """Stage-2 training batches (``sovits_train.batch_size``, ``sovits_train.seed`` unless given)."""
    kwargs.setdefault("batch_size", config.sovits_train.batch_size)
    kwargs.setdefault("seed", config.sovits_train.seed)
    return train_iterator(sovits_data(config, "train", cache_dir), **kwargs)


def gpt_train_iterator(
    config: Config, *, cache_dir: str | Path | None = None, semantic_path: str | Path | None = None, **kwargs: Any
) -> BatchIterator:
    """Stage-1 training batches (``gpt_train.batch_size``, ``gpt_train.seed`` unless given)."""
    kwargs.setdefault("batch_size", config.gpt_train.batch_size)
    kwargs.setdefault("seed", config.gpt_train.seed)
    return train_iterator(gpt_data(config, "train", cache_dir, semantic_path), **kwargs)


def eval_batches(data: BucketedData, batch_size: int, *, process_index: int = 0, process_count: int = 1) -> list[Batch]:
    """Every item once, in a fixed order: bucket by bucket, items in key order, ``batch_size`` rows per global batch.

    The last batch of a bucket is filled by repeating the bucket's last item, so every row is a
    well-formed input, and ``valid [B]`` bool marks real rows: weight per-row results by it (or
    average metrics over batches weighted by ``valid.sum()``) to count each item exactly once.
    Processes get their rows of each global batch, as in training.
    """
    rows = process_rows(batch_size, process_index, process_count)
    batches = []
    for bucket in range(len(data.shapes)):
        members = sorted(np.flatnonzero(data.bucket_of == bucket), key=lambda i: data.keys[i])
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            valid = np.arange(batch_size) < len(chunk)
            items = np.array(chunk + [chunk[-1]] * (batch_size - len(chunk)))
            batch = data.collate(items[rows], bucket)
            batch["valid"] = valid[rows]
            batches.append(batch)
    return batches


def sovits_eval_batches(
    config: Config, *, cache_dir: str | Path | None = None, batch_size: int | None = None, **kwargs: Any
) -> list[Batch]:
    """Stage-2 eval batches over the eval split (``sovits_train.batch_size`` rows unless given)."""
    size = batch_size or config.sovits_train.batch_size
    return eval_batches(sovits_data(config, "eval", cache_dir), size, **kwargs)


def gpt_eval_batches(
    config: Config,
    *,
    cache_dir: str | Path | None = None,
    semantic_path: str | Path | None = None,
    batch_size: int | None = None,
    **kwargs: Any,
) -> list[Batch]:
    """Stage-1 eval batches over the eval split (``gpt_train.batch_size`` rows unless given)."""
    size = batch_size or config.gpt_train.batch_size
    return eval_batches(gpt_data(config, "eval", cache_dir, semantic_path), size, **kwargs)


# --------------------------------------------------------------------------- padding


@dataclass(frozen=True)
class BucketPadding:
    """Padding of one bucket: lengths in frames (SoVITS) or tokens (GPT), fractions of padded slots."""

    bucket: int
    lower: int
    padded_length: int
    text_slots: int
    items: int
    mean_length: float
    padded_fraction: float
    text_padded_fraction: float


@dataclass(frozen=True)
class PaddingReport:
    """Per-bucket padding of a data set and the overall fraction of padded length slots (each item once)."""

    stage: str
    buckets: tuple[BucketPadding, ...]
    padded_fraction: float
    text_padded_fraction: float

    def __str__(self) -> str:
        lines = [f"{self.stage}: {100 * self.padded_fraction:.1f}% padded length, {100 * self.text_padded_fraction:.1f}% padded text"]
        lines += [
            f"  ({b.lower}, {b.padded_length}] x{b.items}: mean {b.mean_length:.0f}, {100 * b.padded_fraction:.1f}% padded; "
            f"text slots {b.text_slots}, {100 * b.text_padded_fraction:.1f}% padded"
            for b in self.buckets
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def padding_report(data: BucketedData) -> PaddingReport:
    """How much of each bucket's padded shape is padding, counting every item of ``data`` once (no repetition fill)."""
    rows = []
    total = text_total = used = text_used = 0
    for bucket, (padded, slots) in enumerate(data.shapes):
        mask = data.bucket_of == bucket
        n = int(mask.sum())
        if n == 0:
            continue
        lengths, text = data.lengths[mask], data.text_lengths[mask]
        lower = data.buckets.lower if bucket == 0 else data.buckets.uppers[bucket - 1]
        rows.append(
            BucketPadding(
                bucket=bucket,
                lower=lower,
                padded_length=padded,
                text_slots=slots,
                items=n,
                mean_length=float(lengths.mean()),
                padded_fraction=float(1 - lengths.sum() / (n * padded)),
                text_padded_fraction=float(1 - text.sum() / (n * slots)),
            )
        )
        total, used = total + n * padded, used + int(lengths.sum())
        text_total, text_used = text_total + n * slots, text_used + int(text.sum())
    return PaddingReport(data.stage, tuple(rows), 1 - used / max(total, 1), 1 - text_used / max(text_total, 1))
