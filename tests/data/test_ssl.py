"""50 Hz content features: frame counts, determinism, dimensions, alignment with the 32 kHz spectrogram."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptsovits_jax import audio
from gptsovits_jax.config import AudioConfig, SSLConfig
from gptsovits_jax.data import ssl

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
AUDIO = AudioConfig()


@pytest.fixture(scope="module")
def speech_16k():
    """SSL inputs (upstream's 1145.14 mix at 16 kHz) and the 32 kHz waves they come from."""
    out = {}
    for name in ("speech_en_us", "speech_cmn"):
        wave_32k = audio.load_audio(FIXTURES / f"{name}.wav", AUDIO.sample_rate)
        out[name] = (wave_32k, audio.ssl_input_waveform(wave_32k, AUDIO))
    return out


def noise(n_samples: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, n_samples).astype(np.float32)


@pytest.mark.parametrize("n_samples", [320, 639, 640, 959, 16000, 48123])
def test_frame_count_is_floor_n_over_320(n_samples):
    features = ssl.SpectralExtractor(64).extract(noise(n_samples))
    assert features.shape == (n_samples // 320, 64) == (ssl.num_ssl_frames(n_samples), 64)
    assert features.dtype == np.float32
    assert np.all(np.isfinite(features))


def test_input_shorter_than_one_hop_gives_no_frames():
    assert ssl.SpectralExtractor(64).extract(noise(319)).shape == (0, 64)
    assert ssl.SpectralExtractor(768).extract(np.zeros(0, np.float32)).shape == (0, 768)


@pytest.mark.parametrize("dim", [64, 768])
def test_config_dim_is_respected(dim, speech_16k):
    extractor = ssl.make_ssl_extractor(SSLConfig(extractor="spectral", dim=dim))
    assert isinstance(extractor, ssl.SSLExtractor)
    assert extractor.dim == dim
    _, wave_16k = speech_16k["speech_en_us"]
    features = extractor.extract(wave_16k)
    assert features.shape == (len(wave_16k) // 320, dim)
    assert np.mean(features**2) == pytest.approx(1.0, abs=0.1)


def test_projection_is_semi_orthogonal():
    narrow = ssl.projection_matrix(64)
    assert narrow.shape == (240, 64)
    np.testing.assert_allclose(narrow.T @ narrow, np.eye(64), atol=1e-12)
    wide = ssl.projection_matrix(768)
    assert wide.shape == (240, 768)
    np.testing.assert_allclose(wide @ wide.T, np.eye(240) * 768 / 240, atol=1e-12)


def test_projection_is_pinned_by_its_seed():
    # Recorded values: a change here changes every cached feature and semantic token.
    np.testing.assert_allclose(ssl.projection_matrix(64)[0, :3], [0.14054307, 0.0652695, -0.12130435], atol=1e-7)
    np.testing.assert_allclose(ssl.projection_matrix(768)[0, :3], [0.12576283, 0.01513966, 0.02990448], atol=1e-7)


def test_features_are_bit_identical_across_calls_and_processes(speech_16k):
    _, wave_16k = speech_16k["speech_cmn"]
    first = ssl.SpectralExtractor(768).extract(wave_16k)
    ssl.projection_matrix.cache_clear()
    second = ssl.SpectralExtractor(768).extract(wave_16k.copy())
    np.testing.assert_array_equal(first, second)
    script = (
        "import sys, hashlib, numpy as np\n"
        "from gptsovits_jax import audio\n"
        "from gptsovits_jax.config import AudioConfig\n"
        "from gptsovits_jax.data.ssl import SpectralExtractor\n"
        "w = audio.ssl_input_waveform(audio.load_audio(sys.argv[1], 32000), AudioConfig())\n"
        "print(hashlib.sha256(SpectralExtractor(768).extract(w).tobytes()).hexdigest())\n"
    )
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script, str(FIXTURES / "speech_cmn.wav")],
        capture_output=True,
        text=True,
        check=True,
        cwd=repo,
        env={"PYTHONPATH": str(repo)},
    )
    assert result.stdout.strip() == hashlib.sha256(first.tobytes()).hexdigest()


def test_different_utterances_give_different_features(speech_16k):
    extractor = ssl.SpectralExtractor(768)
    english = extractor.extract(speech_16k["speech_en_us"][1])
    chinese = extractor.extract(speech_16k["speech_cmn"][1])
    n = min(len(english), len(chinese))
    assert np.mean(np.abs(english[:n] - chinese[:n])) > 0.5 * np.mean(np.abs(english))
    shifted = extractor.extract(np.roll(speech_16k["speech_en_us"][1], 3200))
    assert np.mean(np.abs(shifted - english)) > 0.3 * np.mean(np.abs(english))


def test_features_do_not_depend_on_input_gain(speech_16k):
    wave_32k, wave_16k = speech_16k["speech_en_us"]
    extractor = ssl.SpectralExtractor(64)
    reference = extractor.extract(wave_16k)
    np.testing.assert_allclose(extractor.extract(1e-3 * wave_16k), reference, atol=1e-4)
    # Upstream's loudness mix is a per-utterance gain, so the unmixed wave gives the same features.
    np.testing.assert_allclose(extractor.extract(audio.resample(wave_32k, 32000, 16000)), reference, atol=1e-4)


def test_spectral_features_are_normalised_log_mel_and_deltas(speech_16k):
    features = ssl.spectral_features(speech_16k["speech_en_us"][1])
    assert features.shape[1] == 240
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(features.std(axis=0), 1.0, atol=1e-3)
    delta = features[:, 80:160]
    assert np.corrcoef(delta[1:].ravel(), np.diff(features[:, :80], axis=0).ravel())[0, 1] > 0.5


def test_feature_frames_align_with_32k_spectrogram_frames(speech_16k):
    for wave_32k, _ in speech_16k.values():
        for n_32k in (len(wave_32k), 640 * 50 + 639, 640 * 50):
            cut_16k = audio.ssl_input_waveform(wave_32k[:n_32k], AUDIO)
            n_spec = len(wave_32k[:n_32k]) // AUDIO.hop_length
            n_ssl = ssl.num_ssl_frames(len(cut_16k))
            assert n_ssl - n_spec in (0, 1)
            assert n_ssl - n_spec == int(n_32k % 640 == 639)
            features = ssl.SpectralExtractor(64).extract(cut_16k)
            assert ssl.align_frames(features, n_spec).shape == (n_spec, 64)


def test_align_frames_trims_or_repeats_the_last_frame():
    features = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(ssl.align_frames(features, 3), features[:3])
    padded = ssl.align_frames(features, 5)
    np.testing.assert_array_equal(padded, np.concatenate([features, features[-1:]]))
    with pytest.raises(ValueError, match="4 SSL frames cannot match 6"):
        ssl.align_frames(features, 6)
    with pytest.raises(ValueError, match="no SSL frame to repeat"):
        ssl.align_frames(features[:0], 1)


def test_extractor_rejects_bad_waveforms():
    extractor = ssl.SpectralExtractor(64)
    with pytest.raises(ValueError, match=r"1-D 16 kHz waveform"):
        extractor.extract(np.zeros((2, 16000), np.float32))
    wave = noise(16000)
    wave[5] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        extractor.extract(wave)


def test_hubert_extractor_names_a_missing_or_unset_path(tmp_path):
    where = tmp_path / "chinese-hubert-base"
    with pytest.raises(FileNotFoundError, match=r"HuBERT directory does not exist \(ssl\.hubert_path\)") as info:
        ssl.make_ssl_extractor(SSLConfig(extractor="hubert", dim=768, hubert_path=str(where)))
    assert str(where) in str(info.value)
    where.mkdir()
    with pytest.raises(FileNotFoundError, match=r"config\.json: missing"):
        ssl.HubertExtractor(where)
    with pytest.raises(ValueError, match=r"ssl\.hubert_path is not set"):
        ssl.make_ssl_extractor(SSLConfig(extractor="hubert"))


def test_unknown_extractor_is_named():
    with pytest.raises(ValueError, match=r"ssl\.extractor: unknown extractor 'wavlm'"):
        ssl.make_ssl_extractor(SSLConfig(extractor="wavlm"))
