"""Mel-cepstral distortion: the formula, the DTW alignment and the properties MCD must have."""

import math

import librosa
import numpy as np
import pytest
import scipy.fft

from gptsovits_jax import eval_metrics as em
from gptsovits_jax.audio import load_audio

SR = 32000


@pytest.fixture(scope="module")
def speech(repo_root):
    """Two different utterances of one demo voice, 32 kHz."""
    demo = repo_root / "data" / "demo" / "ava"
    return load_audio(demo / "001.flac", SR), load_audio(demo / "002.flac", SR)


def test_mcd_scale_is_ten_over_ln10_times_sqrt2():
    assert em.MCD_SCALE == pytest.approx(6.141851, abs=1e-6)


def test_formula_on_a_single_hand_computed_frame():
    ref = np.array([[3.0, 4.0, 0.0]])
    syn = np.zeros((1, 3))
    # (10 / ln 10) * sqrt(2 * (3^2 + 4^2)) = 4.342945 * sqrt(50)
    assert em.mcd_from_cepstra(ref, syn) == pytest.approx(30.70925, abs=1e-4)


def test_formula_averages_over_the_aligned_path():
    ref = np.array([[1.0, 0.0], [0.0, 0.0]])
    syn = np.array([[1.0, 0.0], [0.0, 2.0]])
    # Costs [[0, sqrt5], [1, 2]]: the path is (0, 0), (1, 1) with distances 0 and 2, mean 1.
    assert em.mcd_from_cepstra(ref, syn) == pytest.approx(em.MCD_SCALE * 1.0, rel=1e-12)


def test_dtw_path_on_a_hand_solved_cost_matrix():
    cost = np.array([[1.0, 3.0, 4.0, 9.0], [2.0, 1.0, 3.0, 5.0], [6.0, 2.0, 1.0, 1.0]])
    # Accumulated: [[1, 4, 8, 17], [3, 2, 5, 10], [9, 4, 3, 4]]; traced back from (2, 3).
    path, total = em.dtw_path(cost)
    assert path.tolist() == [[0, 0], [1, 1], [2, 2], [2, 3]]
    assert total == 4.0


def test_dtw_ties_prefer_the_diagonal():
    path, total = em.dtw_path(np.ones((2, 3)))
    assert path.tolist() == [[0, 0], [0, 1], [1, 2]]
    assert total == 3.0


def test_dtw_of_a_single_row_visits_every_column():
    path, total = em.dtw_path(np.array([[2.0, 1.0, 0.5]]))
    assert path.tolist() == [[0, 0], [0, 1], [0, 2]]
    assert total == 3.5


def test_dtw_matches_brute_force_accumulation_on_random_costs():
    cost = np.random.default_rng(3).uniform(0.0, 1.0, (7, 5))
    acc = np.full((8, 6), np.inf)
    acc[0, 0] = 0.0
    for i in range(7):
        for j in range(5):
            acc[i + 1, j + 1] = cost[i, j] + min(acc[i, j], acc[i, j + 1], acc[i + 1, j])
    path, total = em.dtw_path(cost)
    assert total == pytest.approx(acc[7, 5], rel=1e-12)
    assert total == pytest.approx(cost[path[:, 0], path[:, 1]].sum(), rel=1e-12)
    steps = np.diff(path, axis=0)
    assert path[0].tolist() == [0, 0] and path[-1].tolist() == [6, 4]
    assert {tuple(s) for s in steps} <= {(0, 1), (1, 0), (1, 1)}


def test_dtw_rejects_empty_and_non_finite_costs():
    with pytest.raises(ValueError, match="non-empty"):
        em.dtw_path(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        em.dtw_path(np.array([[0.0, np.nan]]))


def test_dct_is_scipys_orthonormal_dct_ii():
    x = np.random.default_rng(0).standard_normal((4, 80))
    np.testing.assert_allclose(em.dct_ii_orthonormal(x), scipy.fft.dct(x, type=2, norm="ortho", axis=-1), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(em.dct_ii_orthonormal(x), axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)


def test_mel_cepstrum_has_13_coefficients_at_200_frames_per_second(speech):
    wave = speech[0]
    cepstra = em.mel_cepstrum(wave, SR)
    assert cepstra.shape == (1 + len(wave) // 160, 13)
    assert np.all(np.isfinite(cepstra))


def test_mel_cepstrum_is_c1_to_c13_of_the_orthonormal_dct_of_log_amplitude_mel():
    noise = np.random.default_rng(1).standard_normal(SR)  # no band is 80 dB below the peak: no floor
    power = np.abs(librosa.stft(noise, n_fft=1024, hop_length=160, win_length=800, window="hann", center=True, pad_mode="reflect")) ** 2
    log_amplitude = 0.5 * np.log(librosa.filters.mel(sr=SR, n_fft=1024, n_mels=80, norm="slaney") @ power)
    expected = scipy.fft.dct(log_amplitude.T, type=2, norm="ortho", axis=-1)[:, 1:14]
    np.testing.assert_allclose(em.mel_cepstrum(noise, SR), expected, atol=1e-9)


def test_mel_cepstrum_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        em.mel_cepstrum(np.zeros((2, 4000)), SR)
    with pytest.raises(ValueError, match="too few"):
        em.mel_cepstrum(np.zeros(100), SR)
    with pytest.raises(ValueError, match="n_coeffs"):
        em.mel_cepstrum(np.zeros(4000), SR, n_coeffs=80)


def test_identical_signals_give_zero(speech):
    assert em.mel_cepstral_distortion(speech[0], speech[0].copy(), SR) == 0.0


def test_gain_changes_only_c0_so_mcd_ignores_it(speech):
    assert em.mel_cepstral_distortion(speech[0], 0.25 * speech[0], SR) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_time_stretched_copy_is_much_closer_than_another_utterance(speech):
    ref, other = speech
    stretched = librosa.effects.time_stretch(ref, rate=0.8)
    assert len(stretched) > 1.2 * len(ref)
    mcd_stretched = em.mel_cepstral_distortion(ref, stretched, SR)
    mcd_other = em.mel_cepstral_distortion(ref, other, SR)
    a, b = em.mel_cepstrum(ref, SR), em.mel_cepstrum(stretched, SR)
    frames = min(len(a), len(b))
    frame_by_frame = em.MCD_SCALE * np.mean(np.linalg.norm(a[:frames] - b[:frames], axis=1))
    assert mcd_stretched < 0.5 * mcd_other
    assert mcd_stretched < 0.5 * frame_by_frame  # without alignment the stretched copy looks like another utterance


def test_mcd_is_symmetric(speech):
    assert em.mel_cepstral_distortion(*speech, SR) == pytest.approx(em.mel_cepstral_distortion(*speech[::-1], SR), rel=1e-12)
    a, b = np.random.default_rng(2).standard_normal((2, 30, 13))
    assert em.mcd_from_cepstra(a, b[:20]) == pytest.approx(em.mcd_from_cepstra(b[:20], a), rel=1e-12)


def test_scaling_cepstra_scales_mcd():
    a, b = np.random.default_rng(4).standard_normal((2, 25, 13))
    base = em.mcd_from_cepstra(a, b)
    assert base > 0
    for s in (0.1, 3.0):
        assert em.mcd_from_cepstra(s * a, s * b) == pytest.approx(s * base, rel=1e-12)


def test_mcd_grows_with_the_cepstral_offset():
    a = np.random.default_rng(5).standard_normal((20, 13))
    offset = np.zeros(13)
    offset[0] = 1.0
    # A constant offset of length r at every frame: the aligned path is the diagonal, MCD = scale * r.
    for r in (0.5, 2.0):
        assert em.mcd_from_cepstra(a, a + r * offset) == pytest.approx(em.MCD_SCALE * r, rel=1e-9)
    assert math.isclose(em.mcd_from_cepstra(a, a), 0.0)


def test_frame_log_energy_is_the_log_of_the_summed_mel_energy():
    log_mel = np.log(np.array([[1.0, 2.0, 3.0], [1e-5, 1e-5, 4.0]]))
    np.testing.assert_allclose(em.frame_log_energy(log_mel), np.log([6.0, 4.00002]), rtol=1e-12)
    # No overflow where exp(log_mel) would: 1000 + log(2).
    np.testing.assert_allclose(em.frame_log_energy(np.full((1, 2), 1000.0)), [1000.0 + np.log(2.0)])


def test_log_energy_correlation_ignores_gain_and_sees_time_structure():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 8)) + np.linspace(-3, 3, 50)[:, None]
    assert em.log_energy_correlation(ref, ref + 2.0) == pytest.approx(1.0)  # a gain only shifts log energy
    assert em.log_energy_correlation(ref, ref[::-1]) < -0.5  # the envelope reversed in time
    # Against numpy's Pearson correlation of the per-frame energies, over the common frames only.
    syn = rng.normal(size=(60, 8))
    expected = np.corrcoef(em.frame_log_energy(ref), em.frame_log_energy(syn[:50]))[0, 1]
    assert em.log_energy_correlation(ref, syn) == pytest.approx(expected)
    # The same frame everywhere (a decoder that ignores its input) has no correlation at all.
    assert np.isnan(em.log_energy_correlation(ref, np.zeros((50, 8))))
    with pytest.raises(ValueError, match="at least 2"):
        em.log_energy_correlation(ref[:1], ref)


def test_constant_mel_l1_is_the_error_of_the_per_bin_median():
    log_mel = np.array([[0.0, 10.0], [1.0, 10.0], [5.0, 13.0]])
    # Medians 1 and 10: errors |0-1|,|1-1|,|5-1| and 0,0,3 -> (1 + 0 + 4 + 0 + 0 + 3) / 6.
    assert em.constant_mel_l1(log_mel) == pytest.approx(8 / 6)
    mean_error = np.mean(np.abs(log_mel - log_mel.mean(axis=0)))
    assert em.constant_mel_l1(log_mel) <= mean_error
