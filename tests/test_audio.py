"""Audio loading, loudness mix, and agreement of the jnp / numpy / librosa spectrogram and log-mel.

Agreement metrics on real speech (eSpeak NG fixtures resampled to 32 kHz), all required <= 1e-4:
* linear spectrogram: ``max|a - b| / max|b|``;
* mel: ``max|exp(a) - exp(b)| / max exp(b)`` of the log-mels;
* log-mel absolute error ``max|a - b|`` over the entries whose reference mel is >= 1e-3
  (100x the 1e-5 clamp). Just above the clamp the in-graph float32 FFT's rounding reaches
  ~5e-4 in log-mel (mel values 7 orders of magnitude below the peak), so there the bound is 1e-3.
"""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import soundfile

from gptsovits_jax import audio
from gptsovits_jax.config import AudioConfig

FIXTURES = Path(__file__).parent / "fixtures"
SPEECH = ("speech_en_us.wav", "speech_cmn.wav", "speech_en_gb_f3.wav")
CFG = AudioConfig()


def max_relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def dominant_frequency(wave: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1.0 / sample_rate)[np.argmax(spectrum)])


def sine_amplitude(wave: np.ndarray, sample_rate: int, freq: float) -> float:
    """Amplitude of the ``freq`` component (an exact FFT bin) under a Hann window."""
    window = np.hanning(len(wave))
    spectrum = np.abs(np.fft.rfft(wave * window))
    return float(spectrum[round(freq * len(wave) / sample_rate)] * 2.0 / window.sum())


@pytest.fixture(scope="module")
def jitted():
    return {
        "spec": jax.jit(functools.partial(audio.linear_spectrogram, cfg=CFG)),
        "mel": jax.jit(functools.partial(audio.mel_spectrogram, cfg=CFG)),
    }


@pytest.fixture(scope="module", params=SPEECH)
def speech(request):
    return audio.load_audio(FIXTURES / request.param, CFG.sample_rate)


def librosa_reference(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's recipe spelled out with librosa: (magnitude [T, F], mel [T, n_mels] before the log)."""
    pad = (CFG.n_fft - CFG.hop_length) // 2
    stft = librosa.stft(
        np.pad(wave, pad, mode="reflect"),
        n_fft=CFG.n_fft,
        hop_length=CFG.hop_length,
        win_length=CFG.win_length,
        window="hann",
        center=False,
    )
    magnitude = np.sqrt(np.abs(stft) ** 2 + 1e-8).T
    bank = librosa.filters.mel(sr=CFG.sample_rate, n_fft=CFG.n_fft, n_mels=CFG.n_mels, fmin=CFG.fmin, fmax=CFG.fmax)
    return magnitude, magnitude @ bank.T


# --------------------------------------------------------------------------- features


def test_speech_fixtures_load_as_mono_float32_at_32k():
    for name in SPEECH:
        info = soundfile.info(FIXTURES / name)
        wave = audio.load_audio(FIXTURES / name, CFG.sample_rate)
        assert info.samplerate == 22050 and info.channels == 1
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert len(wave) == (2 * info.frames * CFG.sample_rate + info.samplerate) // (2 * info.samplerate)
        assert (FIXTURES / name).stat().st_size < 150_000


def test_linear_spectrogram_agrees_with_numpy_and_librosa(speech, jitted):
    reference, _ = librosa_reference(speech)
    spec_np = audio.linear_spectrogram_np(speech, CFG)
    spec_jnp = np.asarray(jitted["spec"](speech[None]))[0]
    assert spec_np.shape == spec_jnp.shape == reference.shape == (len(speech) // CFG.hop_length, CFG.spec_channels)
    assert max_relative(spec_np, reference) < 1e-4
    assert max_relative(spec_jnp, reference) < 1e-4
    assert max_relative(spec_jnp, spec_np) < 1e-4


def test_log_mel_agrees_with_numpy_and_librosa(speech, jitted):
    _, reference_mel = librosa_reference(speech)
    reference = np.log(np.maximum(reference_mel, 1e-5))
    mel_np = audio.mel_spectrogram_np(speech, CFG)
    mel_jnp = np.asarray(jitted["mel"](speech[None]))[0]
    assert mel_np.shape == mel_jnp.shape == (len(speech) // CFG.hop_length, CFG.n_mels)
    for ours in (mel_np, mel_jnp):
        assert max_relative(np.exp(ours), np.exp(reference)) < 1e-4
        loud = reference_mel >= 1e-3
        assert loud.mean() > 0.5
        assert np.max(np.abs(ours - reference)[loud]) < 1e-4
        above_clamp = reference_mel > 1e-5
        assert np.max(np.abs(ours - reference)[above_clamp]) < 1e-3
        assert np.all(ours[~above_clamp] == pytest.approx(np.log(1e-5), abs=1e-3))
    assert np.max(np.abs(mel_np - reference)[reference_mel > 1e-5]) < 1e-4


def test_spec_to_mel_of_the_target_spectrogram_equals_mel_of_the_waveform(speech):
    spec = audio.linear_spectrogram(speech[None], CFG)
    np.testing.assert_allclose(
        np.asarray(audio.spec_to_mel(spec, CFG)), np.asarray(audio.mel_spectrogram(speech[None], CFG)), rtol=0, atol=0
    )
    np.testing.assert_allclose(
        audio.spec_to_mel_np(audio.linear_spectrogram_np(speech, CFG), CFG), audio.mel_spectrogram_np(speech, CFG), atol=0
    )


@pytest.mark.parametrize("n_samples", [639, 640, 700, 1279, 1280, 10240, 20479, 32005])
def test_frame_count_is_floor_n_over_hop(n_samples):
    wave = np.random.default_rng(n_samples).uniform(-0.5, 0.5, n_samples).astype(np.float32)
    expected = n_samples // CFG.hop_length
    spec_np = audio.linear_spectrogram_np(wave, CFG)
    spec_jnp = np.asarray(audio.linear_spectrogram(np.stack([wave, -wave]), CFG))
    assert audio.num_frames(n_samples, CFG) == expected
    assert spec_np.shape == (expected, CFG.spec_channels)
    assert spec_jnp.shape == (2, expected, CFG.spec_channels)
    assert audio.mel_spectrogram_np(wave, CFG).shape == (expected, CFG.n_mels)
    if expected:
        np.testing.assert_allclose(spec_jnp[0], spec_np, rtol=0, atol=1e-4 * spec_np.max())
        np.testing.assert_allclose(spec_jnp[1], spec_jnp[0], rtol=1e-6, atol=1e-6)


def test_batch_rows_are_independent(speech, jitted):
    segment = speech[:20480]
    batch = np.stack([segment, 0.5 * segment, np.roll(segment, 999)])
    mels = np.asarray(jitted["mel"](batch))
    np.testing.assert_allclose(mels[0], np.asarray(jitted["mel"](segment[None]))[0], atol=1e-5)
    assert not np.allclose(mels[0], mels[2], atol=1e-2)
    loud = mels[0] > np.log(1e-2)
    np.testing.assert_allclose(mels[1][loud], mels[0][loud] + np.log(0.5), atol=1e-3)


def test_mel_of_waveform_is_differentiable_and_matches_finite_differences(speech):
    # A little white noise keeps every mel bin far above the clamp, where log-mel is smooth.
    noise = 0.01 * np.random.default_rng(1).standard_normal(10240).astype(np.float32)
    wave = jnp.asarray(speech[None, 5000 : 5000 + 10240] + noise)

    def loss(x):
        return jnp.mean(audio.mel_spectrogram(x, CFG))

    value, grad = jax.jit(jax.value_and_grad(loss))(wave)
    grad = np.asarray(grad)
    assert np.isfinite(float(value))
    assert grad.shape == wave.shape and grad.dtype == np.float32
    assert np.all(np.isfinite(grad))
    grad_norm = float(np.linalg.norm(grad))
    assert grad_norm > 0.1
    random = np.random.default_rng(0).standard_normal(wave.shape).astype(np.float32)
    eps = 1e-3
    for direction in (grad / grad_norm, random / np.linalg.norm(random)):
        numeric = (float(loss(wave + eps * direction)) - float(loss(wave - eps * direction))) / (2 * eps)
        assert abs(float(np.sum(grad * direction)) - numeric) < 2e-3 * grad_norm


def test_mel_filterbank_is_librosa_slaney_cached_and_read_only():
    bank = audio.mel_filterbank(CFG)
    assert bank.shape == (CFG.spec_channels, CFG.n_mels) and bank.dtype == np.float32
    np.testing.assert_array_equal(
        bank, librosa.filters.mel(sr=32000, n_fft=2048, n_mels=128, fmin=0.0, fmax=16000.0, htk=False, norm="slaney").T
    )
    assert audio.mel_filterbank(AudioConfig()) is bank
    assert not bank.flags.writeable


def test_linear_spectrogram_rejects_wrong_ranks():
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        audio.linear_spectrogram(np.zeros(2048, np.float32), CFG)
    with pytest.raises(ValueError, match=r"1-D waveform"):
        audio.linear_spectrogram_np(np.zeros((1, 2048), np.float32), CFG)
    with pytest.raises(ValueError, match="1025 frequency bins"):
        audio.spec_to_mel(jnp.zeros((1, 3, 1024)), CFG)


# --------------------------------------------------------------------------- loudness


def test_normalize_loudness_is_upstreams_mix():
    wave = np.array([0.5, -0.25, 0.1], np.float32)
    expected = wave / 0.5 * (0.95 * 0.5 * 32768) + 0.5 * 32768 * wave
    np.testing.assert_allclose(audio.normalize_loudness(wave, 32768.0), expected, rtol=1e-6)
    np.testing.assert_allclose(audio.normalize_loudness(wave, 1145.14), expected * 1145.14 / 32768, rtol=1e-6)


def test_training_waveform_is_the_mix_over_32768_clipped_to_unit_range():
    wave = np.array([0.5, -0.25, 0.1], np.float32)
    np.testing.assert_allclose(audio.training_waveform(wave), wave / 0.5 * 0.475 + 0.5 * wave, rtol=1e-6)
    loud = np.array([2.0, -1.0, 0.2], np.float32)
    stored = audio.training_waveform(loud)
    assert stored.dtype == np.float32
    np.testing.assert_allclose(stored, [1.0, -(0.475 / 2 + 0.5), 0.475 * 0.1 + 0.1], rtol=1e-6)


def test_loudness_mix_rejects_peaks_above_2_2_and_silence():
    with pytest.raises(audio.AudioError, match=r"utt7: peak 2\.300 exceeds 2\.2"):
        audio.normalize_loudness(np.array([0.1, 2.3]), 32768.0, name="utt7")
    assert audio.normalize_loudness(np.array([0.1, 2.2]), 32768.0).max() == pytest.approx(0.95 * 0.5 * 32768 + 0.5 * 32768 * 2.2)
    with pytest.raises(audio.AudioError, match="utt8: silent"):
        audio.training_waveform(np.zeros(100), name="utt8")


def test_ssl_input_is_the_1145_mix_resampled_to_16k(speech):
    ssl_input = audio.ssl_input_waveform(speech, CFG)
    assert ssl_input.dtype == np.float32
    assert len(ssl_input) == (len(speech) + 1) // 2
    expected = audio.resample(audio.normalize_loudness(speech, 1145.14), 32000, 16000)
    np.testing.assert_array_equal(ssl_input, expected)
    peak = 1145.14 * (0.475 + 0.5 * np.abs(speech).max())
    assert np.abs(ssl_input).max() == pytest.approx(peak, rel=0.05)


# --------------------------------------------------------------------------- loading


def test_stereo_44k_loads_as_channel_mean_at_32k(tmp_path):
    t = np.arange(44100) / 44100
    left = 0.8 * np.sin(2 * np.pi * 440 * t)
    right = 0.4 * np.sin(2 * np.pi * 1000 * t)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    wave = audio.load_audio(path, 32000)
    assert wave.dtype == np.float32 and wave.shape == (32000,)
    assert dominant_frequency(wave, 32000) == 440.0
    assert sine_amplitude(wave, 32000, 440) == pytest.approx(0.4, rel=1e-2)
    assert sine_amplitude(wave, 32000, 1000) == pytest.approx(0.2, rel=1e-2)
    mean = ((left + right) / 2).astype(np.float32)
    np.testing.assert_allclose(wave, librosa.resample(mean, orig_sr=44100, target_sr=32000, res_type="soxr_hq"), atol=1e-6)


def test_16k_mono_is_upsampled_keeping_its_frequency(tmp_path):
    t = np.arange(8000) / 16000
    path = tmp_path / "mono16k.wav"
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 1000 * t), 16000, subtype="PCM_16")
    wave = audio.load_audio(path, 32000)
    assert wave.shape == (16000,)
    assert dominant_frequency(wave, 32000) == 1000.0
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    freqs = np.fft.rfftfreq(len(wave), 1 / 32000)
    assert spectrum[freqs > 8500].max() < 1e-3 * spectrum.max()


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_flac_and_ogg_load_like_the_wav(tmp_path, fmt):
    data, sr = soundfile.read(FIXTURES / "speech_en_us.wav")
    path = tmp_path / f"speech.{fmt.lower()}"
    soundfile.write(path, data, sr, format=fmt)
    wave = audio.load_audio(path, 32000)
    reference = audio.load_audio(FIXTURES / "speech_en_us.wav", 32000)
    assert wave.shape == reference.shape
    if fmt == "FLAC":
        np.testing.assert_array_equal(wave, reference)
    else:
        assert np.corrcoef(wave, reference)[0, 1] > 0.99


def write_bad_file(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.wav"
    if case == "corrupt":
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not audio" + bytes(range(256)))
    elif case == "empty":
        soundfile.write(path, np.zeros((0,), np.float32), 16000)
    elif case == "silent":
        soundfile.write(path, np.zeros(16000, np.float32), 16000)
    elif case == "nan":
        samples = np.full(1600, 0.1, np.float32)
        samples[100] = np.nan
        soundfile.write(path, samples, 16000, subtype="FLOAT")
    return path


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "file not found"),
        ("corrupt", "cannot decode audio"),
        ("empty", r"empty \(0 samples\)"),
        ("silent", r"silent \(peak 0"),
        ("nan", r"1 non-finite \(NaN or inf\) samples"),
    ],
)
def test_load_audio_errors_name_the_file_and_the_reason(tmp_path, case, reason):
    path = write_bad_file(tmp_path, case)
    with pytest.raises(audio.AudioError, match=reason) as info:
        audio.load_audio(path, 32000)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_load_audio_rejects_a_directory_and_opposite_phase_stereo(tmp_path):
    with pytest.raises(audio.AudioError, match="not a regular file"):
        audio.load_audio(tmp_path, 32000)
    tone = 0.5 * np.sin(np.linspace(0, 100, 16000))
    path = tmp_path / "cancels.wav"
    soundfile.write(path, np.stack([tone, -tone], axis=1), 16000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match=r"silent \(peak .* after mixing to mono"):
        audio.load_audio(path, 32000)
