"""Content features at 50 Hz from 16 kHz audio: the interface, its weight-free default and HuBERT.

Upstream feeds chinese-hubert-base (768-d, one frame per 320 samples at 16 kHz) and quantises
its output into the semantic tokens. Here an :class:`SSLExtractor` maps a 16 kHz waveform
``[N]`` to features ``[T, dim]`` with ``T`` = ``floor(N / 320)`` (spectral) or
``(N - 400) // 320 + 1`` (HuBERT: ``floor(N / 320)`` or one fewer).

Frame alignment: 320 samples at 16 kHz span the same 20 ms as one 640-sample hop at 32 kHz, so
an utterance of ``N32`` samples has ``floor(N32 / 640)`` spectrogram frames and, after
resampling to ``N16 = ceil(N32 / 2)`` samples, ``floor(N16 / 320)`` feature frames: the same
count, or one more when ``N32 mod 640 = 639``. HuBERT gives that count or one fewer, so always
the spectrogram's count or one fewer. :func:`align_frames` trims or replicates the last frame
(upstream's stage-2 dataset pads HuBERT's one-frame shortfall the same way). The spectral
extractor centres frame ``t`` on 16 kHz sample ``320 t + 160``, i.e. 20 t + 10 ms, exactly where
spectrogram frame ``t`` is centred; HuBERT frame ``t`` reads samples ``[320 t, 320 t + 400)``,
centred 2.5 ms later, as in upstream.

Extractors:

* ``"spectral"`` (:class:`SpectralExtractor`, the default): weight-free numpy features. Not a
  learned SSL model: it is a spectral envelope representation carrying both content and speaker
  (pitch harmonics, timbre), so semantic tokens quantised from it carry less linguistic
  abstraction and more speaker detail than HuBERT's.
* ``"hubert"`` (:class:`HubertExtractor`): chinese-hubert-base, upstream's SSL model, run in JAX
  (:mod:`gptsovits_jax.models.hubert`) from a local Hugging Face directory (``ssl.hubert_path``,
  holding ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``; never downloaded).
  It gives upstream's frame count, ``(N - 400) // 320 + 1``: ``floor(N / 320)`` or one fewer.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import librosa
import numpy as np

from gptsovits_jax.config import SSLConfig

SAMPLE_RATE = 16000
"""Input sample rate of every extractor (Hz)."""
HOP = 320
"""Input samples per feature frame (20 ms, 50 Hz)."""
HUBERT_DIM = 768

# Spectral extractor definition. Changing any of these changes every cached feature and token.
N_FFT = 512
WIN_LENGTH = 400  # 25 ms
N_MELS = 80
FMIN = 20.0
FMAX = 8000.0
DELTA_WIDTH = 2  # regression over +-2 frames
POWER_FLOOR_DB = -80.0  # relative to the utterance's loudest mel bin
PROJECTION_SEED = 20240801
SPECTRAL_FEATURES = 3 * N_MELS  # log-mel, delta, delta-delta


@runtime_checkable
class SSLExtractor(Protocol):
    """Maps a 16 kHz waveform ``[N]`` to 50 Hz content features float32 ``[T, dim]``, ``T`` within one of ``floor(N / 320)``.

    ``identity`` is a JSON-able record of what makes the features (extractor name, weights
    fingerprint...): caches store it and recompute when it changes.
    """

    dim: int
    identity: dict

    def extract(self, wave_16k: np.ndarray) -> np.ndarray:
        """Features ``[T, dim]`` of ``wave_16k [N]`` (samples at 16 kHz)."""
        ...


def num_ssl_frames(n_samples_16k: int) -> int:
    """Feature frames for ``n_samples_16k`` samples at 16 kHz: ``floor(N / 320)``."""
    return n_samples_16k // HOP


def align_frames(features: np.ndarray, n_frames: int, max_mismatch: int = 1) -> np.ndarray:
    """Trim ``features [T, D]`` or repeat its last frame to get ``[n_frames, D]``.

    Raises ``ValueError`` if ``|T - n_frames| > max_mismatch`` (more than resampling round-off
    can explain), or if there is no frame to repeat.
    """
    n_have = features.shape[0]
    if abs(n_have - n_frames) > max_mismatch:
        raise ValueError(f"align_frames: {n_have} SSL frames cannot match {n_frames} spectrogram frames (allowed mismatch {max_mismatch})")
    if n_have >= n_frames:
        return features[:n_frames]
    if n_have == 0:
        raise ValueError(f"align_frames: no SSL frame to repeat to reach {n_frames} frames")
    return np.concatenate([features, np.repeat(features[-1:], n_frames - n_have, axis=0)], axis=0)


def _checked_wave(wave_16k: np.ndarray, what: str, dtype: type = np.float32) -> np.ndarray:
    """``wave_16k`` as ``dtype`` ``[N]``; ``ValueError`` for another rank or non-finite samples."""
    wave = np.asarray(wave_16k, dtype=dtype)
    if wave.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D 16 kHz waveform [N], got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise ValueError(f"{what}: the waveform holds non-finite samples")
    return wave


# --------------------------------------------------------------------------- spectral extractor


@functools.lru_cache(maxsize=1)
def _spectral_constants() -> tuple[np.ndarray, np.ndarray]:
    """Analysis window float64 ``[N_FFT]`` and Slaney mel filterbank float64 ``[N_FFT // 2 + 1, N_MELS]``."""
    n = np.arange(WIN_LENGTH)
    window = np.zeros(N_FFT)
    left = (N_FFT - WIN_LENGTH) // 2
    window[left : left + WIN_LENGTH] = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / WIN_LENGTH)
    bank = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX, norm="slaney", dtype=np.float64).T
    for array in (window, bank):
        array.flags.writeable = False
    return window, bank


@functools.lru_cache(maxsize=8)
def projection_matrix(dim: int) -> np.ndarray:
    """The fixed map from the 240 spectral features to ``dim``: float64 ``[240, dim]``.

    A seeded Gaussian matrix orthonormalised by QR (signs fixed by ``diag(R) > 0``): orthonormal
    columns when ``dim <= 240``; orthonormal rows scaled by ``sqrt(dim / 240)`` when ``dim > 240``,
    so the outputs of unit-variance inputs keep a mean square of about 1 per dimension.
    """
    if dim <= 0:
        raise ValueError(f"projection_matrix: dim must be positive, got {dim}")
    rng = np.random.default_rng(PROJECTION_SEED)
    gaussian = rng.standard_normal((max(SPECTRAL_FEATURES, dim), min(SPECTRAL_FEATURES, dim)))
    q, r = np.linalg.qr(gaussian)
    q = q * np.sign(np.diag(r))
    matrix = q if dim <= SPECTRAL_FEATURES else q.T * np.sqrt(dim / SPECTRAL_FEATURES)
    matrix = np.ascontiguousarray(matrix)
    matrix.flags.writeable = False
    return matrix


def _deltas(features: np.ndarray) -> np.ndarray:
    """Regression deltas over +-DELTA_WIDTH frames with edge replication: ``[T, C] -> [T, C]``."""
    n_frames = features.shape[0]
    padded = np.pad(features, ((DELTA_WIDTH, DELTA_WIDTH), (0, 0)), mode="edge")
    weights = np.arange(1, DELTA_WIDTH + 1)
    total = sum(
        k * (padded[DELTA_WIDTH + k : DELTA_WIDTH + k + n_frames] - padded[DELTA_WIDTH - k : DELTA_WIDTH - k + n_frames]) for k in weights
    )
    return total / (2.0 * float(np.sum(weights**2)))


def _normalise(features: np.ndarray) -> np.ndarray:
    """Per-utterance mean and variance normalisation of each column of ``[T, C]``."""
    return (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-5)


def spectral_features(wave_16k: np.ndarray) -> np.ndarray:
    """The 240 unprojected spectral features of ``wave_16k [N]``: float64 ``[floor(N / 320), 240]``.

    Per frame (512-point FFT of a 25 ms periodic Hann window, reflect padding of 96 samples
    on both sides, no centring, so frame ``t`` is centred on sample ``320 t + 160``): 80-band
    Slaney log-mel power (20 Hz - 8 kHz) floored 80 dB below the utterance's maximum, its
    deltas and delta-deltas (+-2 frames), each column normalised to zero mean and unit variance
    over the utterance. The floor is relative and the normalisation removes the mean, so the
    features do not depend on the input gain.
    """
    wave = _checked_wave(wave_16k, "spectral features", np.float64)
    n_frames = num_ssl_frames(wave.shape[0])
    if n_frames == 0:
        return np.zeros((0, SPECTRAL_FEATURES))
    window, bank = _spectral_constants()
    padded = np.pad(wave, (N_FFT - HOP) // 2, mode="reflect")
    index = np.arange(n_frames)[:, None] * HOP + np.arange(N_FFT)[None, :]
    spectrum = np.fft.rfft(padded[index] * window, axis=-1)
    mel_power = (spectrum.real**2 + spectrum.imag**2) @ bank
    floor = max(float(mel_power.max()) * 10.0 ** (POWER_FLOOR_DB / 10.0), np.finfo(np.float64).tiny)
    log_mel = np.log(np.maximum(mel_power, floor))
    delta = _deltas(log_mel)
    stacked = np.concatenate([log_mel, delta, _deltas(delta)], axis=1)
    return _normalise(stacked)


class SpectralExtractor:
    """Weight-free, deterministic 50 Hz features: :func:`spectral_features` times :func:`projection_matrix`.

    ``extract(wave_16k [N]) -> float32 [floor(N / 320), dim]``. numpy only, float64 inside;
    the same input gives bit-identical output on every run with the same numpy build.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.identity = {"extractor": "spectral"}
        self._projection = projection_matrix(dim)

    def extract(self, wave_16k: np.ndarray) -> np.ndarray:
        """Features ``[floor(N / 320), dim]`` of ``wave_16k [N]`` (samples at 16 kHz)."""
        return (spectral_features(wave_16k) @ self._projection).astype(np.float32)


# --------------------------------------------------------------------------- hubert


def bucket_samples(n_samples: int, minimum: int = SAMPLE_RATE) -> int:
    """The padded input length that ``n_samples`` share a compiled HuBERT with: at least ``minimum``.

    Four lengths per octave (``m * 2^e`` with ``m`` in 4..7), so padding costs under 25 % and
    utterances of 1 to 54 s need at most 24 compilations.
    """
    if n_samples <= minimum:
        return minimum
    step = 1 << max(n_samples.bit_length() - 3, 0)
    return -(-n_samples // step) * step


class HubertExtractor:
    """chinese-hubert-base's ``last_hidden_state`` from a local Hugging Face directory, in JAX.

    ``extract(wave_16k [N]) -> float32 [(N - 400) // 320 + 1, 768]`` (no frame for ``N < 400``) for
    chinese-hubert-base's config: upstream's frame count, one short of ``N // 320`` when
    ``N mod 320 < 80``, which :func:`align_frames` repairs as upstream does. The input is upstream's
    (``audio.ssl_input_waveform``: its 1145.14 loudness mix resampled to 16 kHz), passed to the model
    as is, like upstream's ``2-get-hubert-wav32k.py`` (no ``Wav2Vec2FeatureExtractor`` normalisation).

    Inputs are zero-padded to :func:`bucket_samples` lengths and run with their true length, which
    the model honours exactly (see :mod:`gptsovits_jax.models.hubert`), so each bucket compiles
    once. :meth:`extract_batch` runs several utterances per call.

    ``identity`` names the extractor, a fingerprint of the weights and config, and the model code:
    preprocessing stores it so features of other weights are never mixed in one cache.
    Nothing is ever downloaded.
    """

    def __init__(self, path: str | Path | None, dim: int = HUBERT_DIM, max_batch_samples: int = 16 * SAMPLE_RATE):
        import inspect

        import jax

        from gptsovits_jax.models import hubert

        if path is None:
            raise ValueError("ssl.hubert_path is not set; name a local Hugging Face copy of TencentGameMate/chinese-hubert-base")
        self.path = Path(path)
        self.module, params = hubert.load_hubert(self.path, expected_dim=dim)
        self.config = self.module.config
        self.dim = dim
        self.max_batch_samples = max_batch_samples
        self._params = jax.device_put(params)
        self._apply = jax.jit(lambda params, wave, lengths: self.module.apply({"params": params}, wave, lengths))
        code = hashlib.sha256(inspect.getsource(hubert).encode()).hexdigest()[:16]
        self.identity = {"extractor": "hubert", "weights": hubert.weights_fingerprint(self.path), "code": code}

    def num_frames(self, n_samples: int) -> int:
        """Frames for ``n_samples`` at 16 kHz: ``(N - 400) // 320 + 1``, or 0 below 400 samples."""
        return self.config.num_frames(n_samples)

    def extract(self, wave_16k: np.ndarray) -> np.ndarray:
        """Features ``[num_frames(N), dim]`` of ``wave_16k [N]`` (samples at 16 kHz)."""
        return self.extract_batch([wave_16k])[0]

    def extract_batch(self, waves_16k: list[np.ndarray]) -> list[np.ndarray]:
        """:meth:`extract` of each wave, run in batches of one bucket length (at most ``max_batch_samples`` padded samples each)."""
        waves = [_checked_wave(wave, "HuBERT") for wave in waves_16k]
        out: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(waves)
        by_bucket: dict[int, list[int]] = {}
        for i, wave in enumerate(waves):
            if self.num_frames(wave.shape[0]) > 0:
                by_bucket.setdefault(bucket_samples(wave.shape[0]), []).append(i)
        for length, items in sorted(by_bucket.items()):
            # A power-of-two batch per bucket: one compilation per (length, batch) pair.
            batch = 1 << max((self.max_batch_samples // length).bit_length() - 1, 0)
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                padded = np.zeros((batch, length), np.float32)
                lengths = np.full((batch,), length, np.int32)
                for row, i in enumerate(chunk):
                    padded[row, : waves[i].shape[0]] = waves[i]
                    lengths[row] = waves[i].shape[0]
                hidden = np.asarray(self._apply(self._params, padded, lengths))
                for row, i in enumerate(chunk):
                    out[i] = hidden[row, : self.num_frames(waves[i].shape[0])].astype(np.float32)
        return out


def make_ssl_extractor(cfg: SSLConfig) -> SSLExtractor:
    """The extractor named by ``cfg.extractor`` (``"spectral"`` with ``cfg.dim``, or ``"hubert"``)."""
    if cfg.extractor == "spectral":
        return SpectralExtractor(cfg.dim)
    if cfg.extractor == "hubert":
        return HubertExtractor(cfg.hubert_path, cfg.dim)
    raise ValueError(f"ssl.extractor: unknown extractor {cfg.extractor!r}; choose spectral or hubert")
