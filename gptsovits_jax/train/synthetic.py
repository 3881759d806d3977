"""Deterministic synthetic batches: harmonic tones with their real spectrograms, random tokens.

For tests, benchmarks and smoke runs that must not depend on a preprocessed
corpus. The SoVITS batch is learnable (its audio is a sum of harmonics whose
spectrogram the model sees), so losses fall on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gptsovits_jax.audio import linear_spectrogram_np
from gptsovits_jax.config import Config


def synthetic_sovits_batch(
    config: Config, batch_size: int, frames: int, text_len: int, seed: int = 0, ragged: bool = True
) -> dict[str, np.ndarray]:
    """A SoVITS batch of harmonic tones (``frames`` 50 Hz frames, even), plus ``keys``.

    With ``ragged``, lengths vary in ``[segment_frames + 2, frames]`` and the rest is padding.
    """
    if frames % 2 or frames < config.sovits.segment_frames:
        raise ValueError(f"frames must be even and >= segment_frames ({config.sovits.segment_frames}), got {frames}")
    a = config.audio
    rng = np.random.default_rng(seed)
    n = frames * a.hop_length
    t = np.arange(n) / a.sample_rate
    low = min(frames, config.sovits.segment_frames + 2)
    lens = rng.integers(low, frames + 1, batch_size) if ragged else np.full(batch_size, frames)
    lens = (lens // 2) * 2
    wav = np.zeros((batch_size, n), np.float32)
    spec = np.zeros((batch_size, frames, a.spec_channels), np.float32)
    for b in range(batch_size):
        f0 = rng.uniform(110.0, 260.0)
        vibrato = 1.0 + 0.02 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
        phase = 2 * np.pi * np.cumsum(f0 * vibrato) / a.sample_rate
        tone = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.3
        valid = lens[b] * a.hop_length
        wav[b, :valid] = tone[:valid]
        spec[b, : lens[b]] = linear_spectrogram_np(wav[b, :valid], a)[: lens[b]]
    ssl = rng.standard_normal((batch_size, frames, config.ssl.dim)).astype(np.float32)
    ssl *= (np.arange(frames)[None, :, None] < lens[:, None, None]).astype(np.float32)
    text_lens = rng.integers(max(1, text_len // 2), text_len + 1, batch_size) if ragged else np.full(batch_size, text_len)
    text = rng.integers(1, config.text.phoneme_vocab_size, (batch_size, text_len))
    text *= np.arange(text_len)[None, :] < text_lens[:, None]
    return {
        "ssl": ssl,
        "spec": spec,
        "spec_lens": lens.astype(np.int32),
        "wav": wav,
        "text": text.astype(np.int32),
        "text_lens": text_lens.astype(np.int32),
        "keys": np.asarray([f"synthetic-{seed}-{b}" for b in range(batch_size)]),
    }


def synthetic_gpt_batch(config: Config, batch_size: int, text_len: int, semantic_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A GPT batch whose semantic tokens are a deterministic function of the phonemes (so it is learnable)."""
    rng = np.random.default_rng(seed)
    codes = config.gpt.vocab_size - 1
    phoneme_lens = rng.integers(max(1, text_len // 2), text_len + 1, batch_size)
    semantic_lens = rng.integers(max(1, semantic_len // 2), semantic_len + 1, batch_size)
    phonemes = rng.integers(1, config.gpt.phoneme_vocab_size, (batch_size, text_len))
    phonemes *= np.arange(text_len)[None, :] < phoneme_lens[:, None]
    semantic = np.zeros((batch_size, semantic_len), np.int64)
    for b in range(batch_size):
        ph = phonemes[b, : phoneme_lens[b]]
        per = np.repeat(ph, int(np.ceil(semantic_lens[b] / len(ph))))[: semantic_lens[b]]
        semantic[b, : semantic_lens[b]] = (per * 7 + np.arange(semantic_lens[b]) // 3) % codes
    return {
        "phoneme_ids": phonemes.astype(np.int32),
        "phoneme_lens": phoneme_lens.astype(np.int32),
        "semantic_ids": semantic.astype(np.int32),
        "semantic_lens": semantic_lens.astype(np.int32),
        "keys": np.asarray([f"synthetic-{seed}-{b}" for b in range(batch_size)]),
    }


class RepeatingBatches:
    """Cycles through a fixed list of batches; its state is the position, for exact resume."""

    def __init__(self, batches: Sequence[dict[str, Any]], rows: slice | None = None):
        if not batches:
            raise ValueError("RepeatingBatches needs at least one batch")
        self.batches = list(batches)
        self.rows = rows
        self.position = 0

    def __iter__(self) -> RepeatingBatches:
        return self

    def __next__(self) -> dict[str, Any]:
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        if self.rows is None:
            return batch
        return {k: v[self.rows] for k, v in batch.items()}

    def get_state(self) -> dict[str, int]:
        return {"position": self.position}

    def set_state(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])
