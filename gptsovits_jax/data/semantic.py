"""Semantic tokens (25 Hz) of every cached utterance, the GPT stage's targets.

``extract_semantic(cache_dir, encode_fn, batch_size)`` runs ``encode_fn`` (the quantizer of a
SoVITS model: ``ssl_proj`` then the codebook lookup, upstream ``extract_latent``) over the
cached 50 Hz SSL features and writes ``cache_dir/semantic.tsv`` in upstream's
``6-name2semantic.tsv`` format: a header ``item_name\\tsemantic_audio``, then one line per
utterance, ``key\\t<space-separated codes>``.

An utterance of ``T`` frames gets ``floor(T / 2)`` codes: an odd last frame is dropped, as
upstream's stride-2 ``ssl_proj`` convolution does. Utterances are batched by length: features
are zero-padded to ``[batch_size, T_pad, D]`` with ``T_pad`` a multiple of ``frames_multiple``
(so a jitted ``encode_fn`` compiles once per ``T_pad``), and each utterance keeps the first
``floor(T / 2)`` codes. That is exact for a frame-local ``encode_fn`` (each code depends only on
its own two frames), which the stride-2 convolution followed by a nearest-code lookup is.

Per-utterance codes are stored as ``cache_dir/semantic/<signature>/<key>.npy`` (int32 ``[T/2]``),
so an interrupted run resumes where it stopped. The signature hashes the features fingerprint
of the cache, ``encoder_id`` and ``encode_fn``'s codes for a fixed random probe input, so new
model weights give a new signature and a fresh extraction even with the same ``encoder_id``.
``semantic.json`` records the signature and the features fingerprint the tokens belong to.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gptsovits_jax.data import preprocess

SEMANTIC_NAME = "semantic.tsv"
SEMANTIC_META_NAME = "semantic.json"
SEMANTIC_DIR = "semantic"
COLUMN = "semantic_audio"
_PROBE_SEED = 20240917

EncodeFn = Callable[[np.ndarray], np.ndarray]
"""``ssl [B, T, D]`` float32 (50 Hz, T even) -> codes ``[B, T / 2]`` (or ``[1, B, T / 2]``, upstream's ``n_q`` axis)."""


def _codes(encode_fn: EncodeFn, ssl: np.ndarray) -> np.ndarray:
    """Run ``encode_fn`` and check its output: int64 ``[B, T / 2]``."""
    codes = np.asarray(encode_fn(ssl))
    if codes.ndim == 3 and codes.shape[0] == 1:
        codes = codes[0]
    expected = (ssl.shape[0], ssl.shape[1] // 2)
    if codes.shape != expected:
        raise ValueError(f"encode_fn returned codes of shape {codes.shape} for ssl {ssl.shape}; expected {expected} (or (1, *{expected}))")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"encode_fn returned {codes.dtype} codes; expected integers")
    return codes.astype(np.int64)


def encoder_signature(encode_fn: EncodeFn, ssl_dim: int, batch_size: int, frames: int, features_fingerprint: str, encoder_id: str) -> str:
    """A 16-hex-digit id of (features, encoder): hashes the fingerprint, ``encoder_id`` and codes of a seeded probe ``[B, frames, D]``."""
    probe = np.random.default_rng(_PROBE_SEED).standard_normal((batch_size, frames, ssl_dim)).astype(np.float32)
    digest = hashlib.sha256(f"{features_fingerprint}\0{encoder_id}\0".encode())
    digest.update(np.ascontiguousarray(_codes(encode_fn, probe)).tobytes())
    return digest.hexdigest()[:16]


def load_semantic(cache_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """``semantic.tsv`` as ``{key: int32 [Ty] codes}`` (25 Hz); ``path`` defaults to ``cache_dir/semantic.tsv``."""
    path = Path(path) if path is not None else Path(cache_dir) / SEMANTIC_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no semantic tokens; extract them with a trained SoVITS model first")
    return preprocess.read_id_table(path, COLUMN)


def _padded_frames(frames: int, multiple: int) -> int:
    even = frames - frames % 2
    return max(multiple, math.ceil(even / multiple) * multiple)


def extract_semantic(
    cache_dir: str | os.PathLike,
    encode_fn: EncodeFn,
    batch_size: int,
    *,
    encoder_id: str = "",
    frames_multiple: int = 64,
    progress: bool = True,
) -> Path:
    """Semantic tokens of every utterance in the cache; returns the path of ``semantic.tsv``.

    Args:
      cache_dir: a preprocessed cache (``index.json``, ``utterances/*.npz``).
      encode_fn: ``ssl [batch_size, T_pad, D]`` float32 -> codes ``[batch_size, T_pad / 2]``;
        must be frame-local (see the module docstring). Called with zero rows to fill the last batch.
      batch_size: rows per ``encode_fn`` call.
      encoder_id: names the model (e.g. its checkpoint path and step); part of the signature.
      frames_multiple: ``T_pad`` is a multiple of this (even) frame count.
      progress: show a progress bar on stderr.
    """
    if batch_size < 1:
        raise ValueError(f"extract_semantic: batch_size must be >= 1, got {batch_size}")
    if frames_multiple < 2 or frames_multiple % 2:
        raise ValueError(f"extract_semantic: frames_multiple must be even and >= 2, got {frames_multiple}")
    cache_dir = Path(cache_dir)
    index = preprocess.load_index(cache_dir)
    ssl_dim = int(index["ssl_dim"])
    features_fp = index["features_fingerprint"]
    signature = encoder_signature(encode_fn, ssl_dim, batch_size, frames_multiple, features_fp, encoder_id)
    out_dir = cache_dir / SEMANTIC_DIR / signature
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)

    utterances = index["utterances"]
    for utt in utterances:
        if utt["frames"] < 2:
            raise ValueError(f"{utt['key']}: {utt['frames']} frame(s) give no semantic token")
    pending = sorted((u for u in utterances if not (out_dir / f"{u['key']}.npy").is_file()), key=lambda u: (u["frames"], u["key"]))
    with tqdm(total=len(pending), desc="semantic", unit="utt", disable=not progress, file=sys.stderr) as bar:
        start = 0
        while start < len(pending):
            t_pad = _padded_frames(pending[start]["frames"], frames_multiple)
            group = [pending[start]]
            while len(group) < batch_size and start + len(group) < len(pending):
                candidate = pending[start + len(group)]
                if _padded_frames(candidate["frames"], frames_multiple) != t_pad:
                    break
                group.append(candidate)
            batch = np.zeros((batch_size, t_pad, ssl_dim), np.float32)
            for row, utt in enumerate(group):
                ssl = preprocess.load_utterance(cache_dir, utt["key"])["ssl"]
                even = utt["frames"] - utt["frames"] % 2
                batch[row, :even] = ssl[:even]
            codes = _codes(encode_fn, batch)
            for row, utt in enumerate(group):
                tokens = codes[row, : utt["frames"] // 2].astype(np.int32)
                path = out_dir / f"{utt['key']}.npy"
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                with open(tmp, "wb") as f:
                    np.save(f, tokens)
                os.replace(tmp, path)
            start += len(group)
            bar.update(len(group))

    rows = [(u["key"], np.load(out_dir / f"{u['key']}.npy")) for u in utterances]
    tsv = cache_dir / SEMANTIC_NAME
    preprocess.write_id_table(tsv, COLUMN, rows)
    meta = {"signature": signature, "features_fingerprint": features_fp, "encoder_id": encoder_id, "utterances": len(rows)}
    preprocess.atomic_write_bytes(cache_dir / SEMANTIC_META_NAME, json.dumps(meta, indent=1).encode())
    for stale in (cache_dir / SEMANTIC_DIR).iterdir():
        if stale.is_dir() and stale.name != signature:
            shutil.rmtree(stale)
    return tsv
