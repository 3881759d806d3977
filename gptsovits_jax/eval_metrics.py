"""Evaluation metrics of synthesized audio: mel-cepstral distortion (MCD) with DTW alignment; the energy envelope.

Definitions (numpy only, float64 inside):

* **Mel cepstrum** of a waveform ``[N]`` at ``sample_rate``: STFT with a Hann window of
  ``win_ms`` (25 ms) and hop ``hop_ms`` (5 ms, i.e. 200 frames per second), ``n_fft`` the next
  power of two of the window, centred frames (librosa's reflect padding); power spectrum
  through librosa's Slaney mel filterbank (``n_mels`` = 80 bands, 0 Hz to Nyquist);
  log *amplitude* ``0.5 * ln(max(mel_power, floor))`` with the floor ``top_db`` = 80 dB below
  the waveform's largest mel power (as librosa's ``power_to_db``); DCT-II with orthonormal scaling over
  the bands. ``c_0`` (overall log energy) is dropped and ``c_1 .. c_13`` are kept: MCD then
  ignores loudness (a gain only moves ``c_0``), as is usual for MCD.
* **DTW** (:func:`dtw_path`): the cost of pairing reference frame ``i`` with synthesized frame
  ``j`` is the Euclidean distance of their cepstra; the path starts at ``(0, 0)``, ends at
  ``(N - 1, M - 1)`` and moves by ``(1, 0)``, ``(0, 1)`` or ``(1, 1)``, each step adding the
  cost of the cell it enters with weight 1 (the "symmetric1" step pattern).
* **MCD** in dB, averaged over the ``K`` pairs of the path::

      MCD = 1/K * sum_(i, j) on path  (10 / ln 10) * sqrt(2 * sum_{d=1..13} (c_d[i] - c'_d[j])^2)

Absolute values depend on these conventions: the orthonormal DCT over 80 bands gives
coefficients ``sqrt(2 * 80)`` ~= 12.6 times those of the cepstrum defined by
``ln|X(w)| = c_0 + 2 sum_n c_n cos(n w)`` (and SPTK's all-pass warped ``mcep`` differs again),
so compare MCDs computed by this module with each other, not with figures from other
toolkits. Ratios between MCDs do not depend on that scale: scaling all cepstra by ``s``
leaves the DTW path unchanged and multiplies MCD by ``s``.
"""

from __future__ import annotations

import math

import librosa
import numpy as np

MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)
"""dB per unit of Euclidean cepstral distance: ``(10 / ln 10) * sqrt(2)`` ~= 6.1418."""
N_COEFFS = 13
"""Cepstral coefficients compared, ``c_1 .. c_13`` (``c_0`` excluded)."""
TOP_DB = 80.0
"""Dynamic range kept below the waveform's largest mel power; quieter bands are clamped to it."""
_ABSOLUTE_FLOOR = 1e-20
"""Keeps the log finite for an all-zero waveform (whose every band is then equal)."""


def mel_cepstrum(
    wave: np.ndarray,
    sample_rate: int,
    *,
    n_coeffs: int = N_COEFFS,
    n_mels: int = 80,
    win_ms: float = 25.0,
    hop_ms: float = 5.0,
    top_db: float = TOP_DB,
) -> np.ndarray:
    """Mel cepstra ``c_1 .. c_n_coeffs`` of ``wave [N]`` (samples at ``sample_rate``): float64 ``[T, n_coeffs]``.

    ``T = 1 + N // hop`` frames of ``hop_ms`` (centred STFT); see the module docstring for the analysis.
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"mel_cepstrum: expected a 1-D waveform [N], got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise ValueError("mel_cepstrum: the waveform has non-finite samples")
    if not 1 <= n_coeffs < n_mels:
        raise ValueError(f"mel_cepstrum: n_coeffs must be in [1, n_mels={n_mels}), got {n_coeffs}")
    win = round(sample_rate * win_ms / 1000.0)
    hop = round(sample_rate * hop_ms / 1000.0)
    if win < 2 or hop < 1:
        raise ValueError(f"mel_cepstrum: window {win_ms} ms / hop {hop_ms} ms are too short at {sample_rate} Hz")
    n_fft = 1 << (win - 1).bit_length()
    if wave.shape[0] < n_fft // 2 + 1:
        raise ValueError(f"mel_cepstrum: {wave.shape[0]} samples are too few for a {n_fft}-point frame (need > {n_fft // 2})")
    spectrum = librosa.stft(wave, n_fft=n_fft, hop_length=hop, win_length=win, window="hann", center=True, pad_mode="reflect")
    power = np.abs(spectrum) ** 2
    bank = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2, htk=False, norm="slaney")
    mel_power = bank.astype(np.float64) @ power
    floor = max(float(mel_power.max()) * 10.0 ** (-top_db / 10.0), _ABSOLUTE_FLOOR)
    log_amplitude = 0.5 * np.log(np.maximum(mel_power, floor))
    cepstra = dct_ii_orthonormal(log_amplitude.T)
    return cepstra[:, 1 : n_coeffs + 1]


def dct_ii_orthonormal(x: np.ndarray) -> np.ndarray:
    """Orthonormal DCT-II over the last axis of ``x [..., K]``: ``X_n = s_n sum_k x_k cos(pi n (2k + 1) / 2K)``.

    ``s_0 = sqrt(1 / K)``, ``s_n = sqrt(2 / K)`` otherwise (the transform is an orthogonal matrix).
    """
    k = x.shape[-1]
    n = np.arange(k)
    basis = np.cos(np.pi * n[:, None] * (2 * n[None, :] + 1) / (2 * k)) * np.sqrt(2.0 / k)
    basis[0] /= np.sqrt(2.0)
    return np.asarray(x, dtype=np.float64) @ basis.T


def frame_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[N, M]`` between the frames of ``a [N, D]`` and ``b [M, D]``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frame_distances: expected [N, D] and [M, D] with the same D, got {a.shape} and {b.shape}")
    squared = np.sum(a**2, axis=1)[:, None] + np.sum(b**2, axis=1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimum-cost monotone alignment of a cost matrix ``[N, M]``: ``(path [K, 2] int, total cost)``.

    Accumulated cost ``D[i, j] = cost[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])`` with
    ``D[0, 0] = cost[0, 0]``; the path is traced back from ``(N - 1, M - 1)`` to ``(0, 0)`` and
    returned in increasing order. Ties prefer the diagonal, then ``(i - 1, j)``, then ``(i, j - 1)``.
    ``max(N, M) <= K <= N + M - 1``. Cells are filled one anti-diagonal at a time (each
    depends only on the two before it), so the Python loop runs ``N + M - 1`` times.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise ValueError(f"dtw_path: expected a non-empty [N, M] cost matrix, got shape {cost.shape}")
    if not np.all(np.isfinite(cost)):
        raise ValueError("dtw_path: the cost matrix has non-finite entries")
    n, m = cost.shape
    # acc[i + 1, j + 1] = D[i, j]; the extra first row and column are +inf borders.
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for diag in range(n + m - 1):
        i = np.arange(max(0, diag - m + 1), min(n, diag + 1))
        j = diag - i
        best = np.minimum(np.minimum(acc[i, j], acc[i, j + 1]), acc[i + 1, j])
        acc[i + 1, j + 1] = cost[i, j] + best
    path = [(n - 1, m - 1)]
    i, j = n - 1, m - 1
    while (i, j) != (0, 0):
        moves = ((i - 1, j - 1), (i - 1, j), (i, j - 1))
        i, j = min(moves, key=lambda p: acc[p[0] + 1, p[1] + 1])
        path.append((i, j))
    return np.asarray(path[::-1], dtype=np.int64), float(acc[n, m])


def mcd_from_cepstra(ref: np.ndarray, syn: np.ndarray) -> float:
    """MCD in dB of cepstra ``ref [N, D]`` and ``syn [M, D]`` (``c_1 .. c_D``), DTW-aligned; see the module docstring."""
    ref = np.asarray(ref, dtype=np.float64)
    syn = np.asarray(syn, dtype=np.float64)
    path, _ = dtw_path(frame_distances(ref, syn))
    # Distances on the path again from the differences themselves: frame_distances' expanded
    # square leaves ~1e-8 of rounding where frames are equal, this gives exactly 0.
    on_path = np.linalg.norm(ref[path[:, 0]] - syn[path[:, 1]], axis=1)
    return MCD_SCALE * float(np.mean(on_path))


def mel_cepstral_distortion(ref: np.ndarray, syn: np.ndarray, sample_rate: int, **cepstrum_kwargs) -> float:
    """MCD in dB between waveforms ``ref [N]`` and ``syn [M]``, both at ``sample_rate``.

    ``cepstrum_kwargs`` go to :func:`mel_cepstrum` (``n_coeffs``, ``n_mels``, ``win_ms``, ``hop_ms``, ``top_db``).
    0 for identical signals; symmetric in its arguments up to DTW ties.
    """
    return mcd_from_cepstra(mel_cepstrum(ref, sample_rate, **cepstrum_kwargs), mel_cepstrum(syn, sample_rate, **cepstrum_kwargs))


# --------------------------------------------------------------------------- energy envelope


def frame_log_energy(log_mel: np.ndarray) -> np.ndarray:
    """Per-frame log energy of a natural-log mel spectrogram ``[T, n_mels]``: ``log(sum_m exp(log_mel[t, m]))``, ``[T]``."""
    log_mel = np.asarray(log_mel, dtype=np.float64)
    top = log_mel.max(axis=-1)
    return top + np.log(np.exp(log_mel - top[:, None]).sum(axis=-1))


def log_energy_correlation(log_mel_ref: np.ndarray, log_mel_syn: np.ndarray) -> float:
    """Pearson correlation of the per-frame log energies of two time-aligned log-mel spectrograms ``[T, n_mels]``.

    Frames are paired by index over the shorter length (no DTW: the two are expected to be
    aligned, as a resynthesis from the same latent or content is). A synthesis whose energy
    does not follow the reference's over time scores near 0; a constant one is ``nan``.
    """
    frames = min(len(log_mel_ref), len(log_mel_syn))
    if frames < 2:
        raise ValueError(f"log_energy_correlation: need at least 2 common frames, got {frames}")
    ref, syn = frame_log_energy(log_mel_ref[:frames]), frame_log_energy(log_mel_syn[:frames])
    if np.ptp(ref) == 0 or np.ptp(syn) == 0:
        return float("nan")
    ref, syn = ref - ref.mean(), syn - syn.mean()
    return float(np.sum(ref * syn) / math.sqrt(float(np.sum(ref**2) * np.sum(syn**2))))


def constant_mel_l1(log_mel: np.ndarray) -> float:
    """Mean absolute error of the best time-constant prediction of ``log_mel [T, n_mels]``: each bin's median in every frame.

    The floor that a synthesis ignoring time (the average spectrum, repeated) cannot beat
    in mel L1; the per-bin median minimises it.
    """
    log_mel = np.asarray(log_mel, dtype=np.float64)
    return float(np.mean(np.abs(log_mel - np.median(log_mel, axis=0))))
