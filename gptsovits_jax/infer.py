"""End-to-end synthesis: a reference utterance and a text -> 32 kHz speech, from trained GPT and SoVITS checkpoints.

The pipeline of upstream's ``get_tts_wav`` (v2), for one sentence:

1. Reference: the audio gets exactly the features preprocessing stores for training
   (:func:`gptsovits_jax.data.preprocess.compute_features`: loudness mix, linear spectrogram of
   the 32 kHz training waveform, SSL features of the 16 kHz SSL-input mix aligned to the same
   50 Hz frames, then the cache's float16 rounding). The SoVITS quantizer turns its SSL
   features into the prompt's semantic tokens (``extract_latent``, 25 Hz).
2. GPT: the phonemes of the reference text followed by those of the target text, and the
   prompt tokens; new tokens are sampled (upstream defaults: top-k 15, top-p 1, temperature 1,
   repetition penalty 1.35) until EOS or ``max_seconds`` worth of tokens.
3. SoVITS ``decode``: the new tokens, the target phonemes and the reference spectrogram (the
   speaker) -> waveform, trimmed to ``tokens * 2 * hop`` samples (two 50 Hz frames per token).

BERT features: with ``text.bert_path`` in the GPT's config (or ``bert_path`` given), the reference
text and the target text each get their BERT features computed separately and concatenated, as
upstream's ``get_phones_and_bert`` does (Chinese runs through BERT, zeros for other runs), rounded
through float16 like the training cache's; without it the GPT reads zeros, as it did in training.

A text that does not end in punctuation gets a "." phoneme, as upstream appends one to the
reference and target texts (a Chinese final run reads that "." through BERT, as upstream's does). Upstream's sentence splitting and its leading "." before short
texts are not done here: one call is one utterance.

Compilation: text, prompt, reference frames and token counts are padded to multiples of
:data:`BUCKET` (tokens and phonemes; twice that in 50 Hz frames), and the padding is masked
out, so sentences of similar lengths share one compiled function. The functions are jitted at
module level with the model as a static argument: every :class:`Synthesizer` of the same
configs shares them.

Of the checkpoints only the parameters and the SoVITS codebook are read
(:func:`gptsovits_jax.train.restore.restore_variables`), never the optimizer moments.
:func:`semantic_encoder` gives semantic extraction the same SoVITS encoding as the prompt's.

With untrained (freshly initialised) checkpoints the output is noise of the right length.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import soundfile

from gptsovits_jax.audio import AudioError
from gptsovits_jax.config import Config, to_dict
from gptsovits_jax.data import preprocess
from gptsovits_jax.models.gpt import generate
from gptsovits_jax.models.sovits import SynthesizerTrn
from gptsovits_jax.text.frontend import SUPPORTED_LANGUAGES, TextError, canonical_language, text_to_phonemes
from gptsovits_jax.text.symbols import PUNCTUATION, symbols_to_ids
from gptsovits_jax.train.checkpoint import CheckpointMismatchError
from gptsovits_jax.train.gpt_step import gpt_model
from gptsovits_jax.train.restore import INFERENCE_FIELDS, StageVariables, restore_variables
from gptsovits_jax.train.sovits_step import sovits_synthesizer

log = logging.getLogger(__name__)

BUCKET = 32
"""Phonemes, prompt tokens, generated tokens and decoded tokens are padded to multiples of this."""
DEFAULT_MAX_SECONDS = 54.0
"""Upstream's cap: ``early_stop_num = 25 Hz * 54 s`` semantic tokens."""
MIN_NEW_TOKENS = 10
"""EOS is excluded before this many tokens (upstream drops it for its first steps)."""
REFERENCE_SECONDS = (3.0, 10.0)
"""Upstream refuses references outside this range; here they only log a warning."""


class CompatibilityError(ValueError):
    """A GPT and a SoVITS checkpoint that were not trained for each other."""


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class Reference:
    """The features of one reference utterance (the voice and the GPT prompt).

    Attributes:
      path: the audio file.
      phoneme_ids: int32 ``[Lr]`` phonemes of the reference text.
      prompt: int32 ``[Tp]`` semantic tokens of the audio (25 Hz).
      spec: float32 ``[Tr, F]`` linear spectrogram (50 Hz frames, ``F = n_fft / 2 + 1``).
      bert: float32 ``[Lr, bert_dim]`` BERT features of the reference text, or None without a BERT model.
    """

    path: Path
    phoneme_ids: np.ndarray
    prompt: np.ndarray
    spec: np.ndarray
    bert: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Synthesis:
    """One synthesized utterance.

    Attributes:
      audio: float32 ``[N]`` in [-1, 1] at 32 kHz, ``N = 2 * len(tokens) * hop``.
      tokens: int32 ``[n]`` generated semantic tokens (25 Hz), EOS excluded.
      stopped: the GPT produced EOS within the cap (False: cut at ``max_seconds``).
    """

    audio: np.ndarray
    tokens: np.ndarray
    stopped: bool


@dataclasses.dataclass(frozen=True)
class SynthesisResult:
    """What :func:`synthesize` wrote.

    Attributes:
      path: the 16-bit PCM mono WAV.
      sample_rate: Hz (32000 in v2).
      seconds: duration, ``num_samples / sample_rate``.
      num_samples: samples written, ``num_tokens * 2 * hop``.
      num_tokens: generated semantic tokens (25 Hz).
      stopped: the GPT produced EOS within ``max_seconds`` (False: the audio was cut there).
      peak: largest absolute sample, as a fraction of full scale.
      rms: root mean square of the samples, as a fraction of full scale.
    """

    path: Path
    sample_rate: int
    seconds: float
    num_samples: int
    num_tokens: int
    stopped: bool
    peak: float
    rms: float

    def __str__(self) -> str:
        end = "EOS" if self.stopped else "cut at max_seconds"
        return (
            f"wrote {self.path}: {self.seconds:.2f} s at {self.sample_rate} Hz, {self.num_tokens} semantic tokens ({end}), "
            f"peak {self.peak:.3f}, rms {self.rms:.3f}"
        )


# --------------------------------------------------------------------------- compiled pieces


def _bucket(n: int, multiple: int = BUCKET) -> int:
    """``n`` rounded up to a positive multiple of ``multiple``."""
    return max(multiple, math.ceil(n / multiple) * multiple)


def _pad(x: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad axis 0 of ``x`` to ``length``."""
    return np.pad(x, [(0, length - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


@functools.partial(jax.jit, static_argnums=0)
def encode_semantic(synth: SynthesizerTrn, variables: Any, ssl: jax.Array) -> jax.Array:
    """``ssl [B, T, D]`` (50 Hz, T even) -> semantic codes of the first quantizer ``[B, T / 2]`` int32.

    Upstream's ``extract_latent`` followed by ``codes[0]``, as its semantic extraction and its
    inference take the prompt. ``variables``: ``{"params": params_g, "quantizer": codebooks}``.
    """
    return synth.apply(variables, ssl, method=SynthesizerTrn.extract_latent)[0]


@functools.partial(jax.jit, static_argnums=0)
def _decode(
    synth: SynthesizerTrn,
    variables: Any,
    codes: jax.Array,
    code_lens: jax.Array,
    text: jax.Array,
    text_lens: jax.Array,
    spec: jax.Array,
    spec_lens: jax.Array,
    noise_scale: jax.Array,
    rng: jax.Array,
) -> jax.Array:
    """``codes [1, T25]`` + phonemes ``[1, L]`` + reference ``spec [1, Tr, F]`` -> waveform ``[1, 2 * T25 * hop]``."""
    return synth.apply(variables, codes[None], text, text_lens, spec, spec_lens, noise_scale, rng, code_lens, method=SynthesizerTrn.decode)


# --------------------------------------------------------------------------- checks


def _sections(config: Config) -> dict[str, Any]:
    return {"audio": to_dict(config.audio), "ssl": to_dict(config.ssl), "text.phoneme_vocab_size": config.text.phoneme_vocab_size}


def check_compatible(gpt_config: Config, sovits_config: Config, gpt_name: str = "GPT", sovits_name: str = "SoVITS") -> None:
    """Raise :class:`CompatibilityError` unless the GPT's tokens are the SoVITS model's codes.

    Checks ``gpt.vocab_size == sovits.codebook_size + 1`` (codes + EOS), a single code stream
    (``sovits.n_q == 1``, the GPT predicts one), and equal ``audio``, ``ssl`` and phoneme-table
    settings. The message names both checkpoints (``gpt_name``, ``sovits_name``) and every mismatch.
    """
    problems = []
    vocab, codebook = gpt_config.gpt.vocab_size, sovits_config.sovits.codebook_size
    if vocab != codebook + 1:
        problems.append(f"GPT gpt.vocab_size {vocab} != SoVITS sovits.codebook_size {codebook} + 1 (codes + EOS)")
    if sovits_config.sovits.n_q != 1:
        problems.append(f"SoVITS sovits.n_q is {sovits_config.sovits.n_q}; the GPT predicts a single code stream")
    if gpt_config.gpt.phoneme_vocab_size != sovits_config.text.phoneme_vocab_size:
        problems.append(
            f"GPT gpt.phoneme_vocab_size {gpt_config.gpt.phoneme_vocab_size} != SoVITS text.phoneme_vocab_size "
            f"{sovits_config.text.phoneme_vocab_size}"
        )
    gpt_sections, sovits_sections = _sections(gpt_config), _sections(sovits_config)
    for name, gpt_value in gpt_sections.items():
        sovits_value = sovits_sections[name]
        if isinstance(gpt_value, dict):
            for key in gpt_value:
                if gpt_value[key] != sovits_value[key]:
                    problems.append(f"{name}.{key}: GPT {gpt_value[key]!r} vs SoVITS {sovits_value[key]!r}")
        elif gpt_value != sovits_value:
            problems.append(f"{name}: GPT {gpt_value!r} vs SoVITS {sovits_value!r}")
    if problems:
        listed = "\n  ".join(problems)
        raise CompatibilityError(f"GPT checkpoint {gpt_name} and SoVITS checkpoint {sovits_name} were not trained together:\n  {listed}")


def _check_settings(
    top_k: int, top_p: float, temperature: float, repetition_penalty: float, noise_scale: float, max_seconds: float
) -> None:
    checks = (
        (
            isinstance(top_k, (int, np.integer)) and not isinstance(top_k, bool) and top_k >= 0,
            "top_k",
            f"must be an integer >= 0 (0 keeps every token), got {top_k!r}",
        ),
        (0.0 < top_p <= 1.0, "top_p", f"must be in (0, 1], got {top_p!r}"),
        (temperature > 0.0, "temperature", f"must be > 0, got {temperature!r}"),
        (repetition_penalty > 0.0, "repetition_penalty", f"must be > 0, got {repetition_penalty!r}"),
        (noise_scale >= 0.0, "noise_scale", f"must be >= 0, got {noise_scale!r}"),
        (max_seconds > 0.0 and math.isfinite(max_seconds), "max_seconds", f"must be a finite number > 0, got {max_seconds!r}"),
    )
    for ok, name, message in checks:
        if not ok:
            raise ValueError(f"{name}: {message}")


def _phonemes(text: str, language: str, argument: str) -> tuple[np.ndarray, bool]:
    """Phoneme ids ``[L]`` of ``text``, ending in punctuation, and whether a "." was appended; errors name ``argument``."""
    try:
        language = canonical_language(language)
    except TextError:
        raise TextError(f"{argument}: unsupported language {language!r}; expected one of {', '.join(SUPPORTED_LANGUAGES)}") from None
    try:
        phonemes = text_to_phonemes(text, language)
    except TextError as err:
        raise TextError(f"{argument}: {err}") from None
    appended = phonemes[-1] not in PUNCTUATION
    if appended:
        phonemes.append(".")
    return np.asarray(symbols_to_ids(phonemes), np.int32), appended


def _phoneme_ids(text: str, language: str, argument: str) -> np.ndarray:
    """Phoneme ids ``[L]`` of ``text``, ending in punctuation; errors name ``argument``."""
    return _phonemes(text, language, argument)[0]


def _text_inputs(text: str, language: str, argument: str, bert: Any, bert_dim: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Phoneme ids ``[L]`` and, with a BERT extractor, their features float32 ``[L, bert_dim]``; errors name ``argument``."""
    from gptsovits_jax.data.bert_features import BertTextError, utterance_features

    ids, appended = _phonemes(text, language, argument)
    if bert is None:
        return ids, None
    try:
        features = utterance_features(text, language, bert, bert_dim, final_period=appended)
    except BertTextError as err:
        raise TextError(f"{argument}: {err}") from None
    # Training read these features back from float16 storage; inference sees the same rounding.
    return ids, features.astype(preprocess.BERT_STORAGE_DTYPE).astype(np.float32)


def _restore(path: str | os.PathLike, stage: str, argument: str) -> StageVariables:
    """The parameters (and codebook) inference needs, on this process's first device; errors name the argument and the path."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{argument}: checkpoint not found: {path}")
    try:
        return restore_variables(path, stage, INFERENCE_FIELDS[stage], device=jax.local_devices()[0])
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{argument}: {err}") from None
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"{argument}: {err}") from None


@dataclasses.dataclass(frozen=True)
class SovitsModel:
    """A SoVITS checkpoint's generator, ready for inference.

    Attributes:
      synth: the module, in the compute dtype training used.
      variables: ``{"params": params_g, "quantizer": codebooks}``.
      config: the checkpoint's config.
      step: the checkpoint's step.
    """

    synth: SynthesizerTrn
    variables: Any
    config: Config
    step: int

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, argument: str = "sovits_ckpt") -> SovitsModel:
        """Read the generator's parameters and codebook (nothing else) from a SoVITS checkpoint.

        ``path``: a run directory, its ``checkpoints``/``best`` folder or one step's folder.

        Raises:
          FileNotFoundError: no checkpoint at ``path`` (the message names ``argument``).
          CheckpointMismatchError: a GPT checkpoint, or arrays that do not fit its config.
        """
        restored = _restore(path, "sovits", argument)
        variables = {"params": restored.variables["params_g"], "quantizer": restored.variables["quantizer"]}
        return cls(sovits_synthesizer(restored.config), variables, restored.config, restored.step)

    def encode(self, ssl: np.ndarray | jax.Array) -> jax.Array:
        """``ssl [B, T, D]`` float32 (50 Hz, T even) -> semantic codes ``[B, T / 2]`` int32 (see :func:`encode_semantic`)."""
        return encode_semantic(self.synth, self.variables, jnp.asarray(ssl, jnp.float32))


def semantic_encoder(sovits_ckpt: str | os.PathLike):
    """``(encode_fn, encoder_id, config)`` for :func:`gptsovits_jax.data.semantic.extract_semantic` from a SoVITS checkpoint.

    ``encode_fn``: SSL features ``[B, T, D]`` (50 Hz, T even) -> semantic codes ``[B, T / 2]``, the
    same codes :meth:`Synthesizer.reference` takes as the prompt; ``encoder_id`` names the
    checkpoint and its step.
    """
    model = SovitsModel.from_checkpoint(sovits_ckpt)
    return model.encode, f"{Path(sovits_ckpt).absolute()}@{model.step}", model.config


# --------------------------------------------------------------------------- synthesizer


class Synthesizer:
    """Both models, loaded once, for many sentences.

    Args:
      gpt_params: the GPT's ``params`` collection.
      gpt_config: the GPT checkpoint's config.
      synth: the SoVITS module (:class:`SynthesizerTrn`).
      sovits_variables: ``{"params": params_g, "quantizer": codebooks}``.
      sovits_config: the SoVITS checkpoint's config.
      gpt_dtype: the GPT's compute dtype.
      names: how errors refer to the two models (e.g. their checkpoint paths).
      bert: a :class:`~gptsovits_jax.data.bert_features.BertFeatureExtractor` of ``gpt.bert_dim``-wide
        features for the texts, or None for zeros (a GPT trained without ``text.bert_path``).

    Raises:
      CompatibilityError: the two models do not fit together (see :func:`check_compatible`).
    """

    def __init__(
        self,
        gpt_params: Any,
        gpt_config: Config,
        synth: SynthesizerTrn,
        sovits_variables: Any,
        sovits_config: Config,
        gpt_dtype: Any = jnp.float32,
        names: tuple[str, str] = ("GPT", "SoVITS"),
        bert: Any = None,
    ):
        check_compatible(gpt_config, sovits_config, *names)
        self.bert = bert
        self.gpt_params = gpt_params
        self.gpt_config = gpt_config
        self.gpt_dtype = gpt_dtype
        self.synth = synth
        self.sovits_variables = sovits_variables
        self.config = sovits_config

    @classmethod
    def from_checkpoints(
        cls, gpt_ckpt: str | os.PathLike, sovits_ckpt: str | os.PathLike, bert_path: str | os.PathLike | None = None
    ) -> Synthesizer:
        """Load a GPT and a SoVITS checkpoint (run directory, ``checkpoints``/``best`` folder or one step's folder).

        The BERT model is the GPT config's ``text.bert_path`` (``bert_path`` names another copy of it,
        e.g. on another machine); a GPT trained without one reads zeros.

        Raises:
          FileNotFoundError: a path does not exist or holds no checkpoint (the message names the argument),
            or the BERT directory, its weights or vocabulary are missing (the message names text.bert_path).
          CheckpointMismatchError: a checkpoint of the other stage was given.
          CompatibilityError: the two were not trained for each other.
          BertConfigError, BertWeightsError: the BERT directory cannot give ``gpt.bert_dim``-wide features.
        """
        gpt = _restore(gpt_ckpt, "gpt", "gpt_ckpt")
        sovits = SovitsModel.from_checkpoint(sovits_ckpt, "sovits_ckpt")
        bert = None
        if bert_path is not None or gpt.config.text.bert_path is not None:
            from gptsovits_jax.data.bert_features import BertFeatureExtractor

            bert = BertFeatureExtractor(bert_path if bert_path is not None else gpt.config.text.bert_path, gpt.config.gpt.bert_dim)
        return cls(
            gpt.variables["params"],
            gpt.config,
            sovits.synth,
            sovits.variables,
            sovits.config,
            gpt_dtype=gpt_model(gpt.config).dtype,
            names=(str(gpt_ckpt), str(sovits_ckpt)),
            bert=bert,
        )

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz (32000 in v2)."""
        return self.config.audio.sample_rate

    @property
    def token_rate(self) -> float:
        """Semantic tokens per second (25 Hz in v2): one per two spectrogram frames."""
        return self.config.audio.frame_rate / 2

    def max_tokens(self, max_seconds: float) -> int:
        """Tokens in ``max_seconds`` of audio: ``floor(max_seconds * 25 Hz)``, at least 1."""
        return max(1, int(max_seconds * self.token_rate))

    def reference(self, ref_wav: str | os.PathLike, ref_text: str, ref_language: str = "auto") -> Reference:
        """The features of a reference utterance; reuse the result for many sentences in its voice.

        Raises:
          AudioError: the file is missing, unreadable, silent or too short (the message names it).
          TextError: ``ref_text`` is empty or has nothing to pronounce, or ``ref_language`` is unknown.
        """
        phoneme_ids, bert = _text_inputs(ref_text, ref_language, "ref_text", self.bert, self.gpt_config.gpt.bert_dim)
        path = Path(ref_wav)
        try:
            features = preprocess.compute_features(path, self.config.audio, self.config.ssl)
        except AudioError as err:
            raise AudioError(f"ref_wav: {err}") from None
        # Training read these features back from float16 storage; inference sees the same values.
        spec, ssl = (features[name].astype(preprocess.STORAGE_DTYPES[name]).astype(np.float32) for name in ("spec", "ssl"))
        frames = spec.shape[0] - spec.shape[0] % 2
        if frames == 0:
            raise AudioError(f"ref_wav: {path}: {spec.shape[0]} frame(s), too short for one semantic token")
        seconds = frames / self.config.audio.frame_rate
        if not REFERENCE_SECONDS[0] <= seconds <= REFERENCE_SECONDS[1]:
            log.warning("%s: reference of %.2f s; upstream expects %g-%g s", path, seconds, *REFERENCE_SECONDS)
        padded = _pad(ssl[:frames], _bucket(frames, 2 * BUCKET))
        prompt = np.asarray(encode_semantic(self.synth, self.sovits_variables, jnp.asarray(padded[None])))[0, : frames // 2]
        return Reference(path=path, phoneme_ids=phoneme_ids, prompt=prompt.astype(np.int32), spec=spec, bert=bert)

    def synthesize(
        self,
        reference: Reference,
        text: str,
        language: str = "auto",
        *,
        top_k: int = 15,
        top_p: float = 1.0,
        temperature: float = 1.0,
        repetition_penalty: float = 1.35,
        noise_scale: float = 0.5,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        seed: int = 0,
    ) -> Synthesis:
        """Speak ``text`` in the voice of ``reference``; deterministic in ``seed``.

        Args:
          reference: from :meth:`reference`.
          text: what to say; language one of ``text.frontend.LANGUAGES`` or an upstream spelling of one
            (``"en"``, ``"zh"``, ``"ja"``/``"JP"``, ``"ko"``, ``"yue"``, ``"all_ja"``..., ``"auto"`` splits by script).
          top_k, top_p, temperature, repetition_penalty: GPT sampling (upstream's order and defaults).
          noise_scale: SoVITS prior temperature.
          max_seconds: cap on the generated audio; the GPT stops after ``floor(max_seconds * 25)`` tokens.
          seed: draws the GPT's samples and the prior noise.

        Returns:
          :class:`Synthesis` with ``audio`` float32 ``[2 * n * hop]`` for ``n`` generated tokens.

        Raises:
          TextError: ``text`` is empty or unpronounceable, or ``language`` is unknown.
          ValueError: a sampling setting is out of range (the message names it).
        """
        _check_settings(top_k, top_p, temperature, repetition_penalty, noise_scale, max_seconds)
        target_ids, target_bert = _text_inputs(text, language, "text", self.bert, self.gpt_config.gpt.bert_dim)
        gpt_rng, noise_rng = jax.random.split(jax.random.PRNGKey(seed))

        gpt_ids = np.concatenate([reference.phoneme_ids, target_ids])
        bert = None
        if target_bert is not None:
            if reference.bert is None:
                raise ValueError("reference: made without BERT features, but this synthesizer has a BERT model; call reference() again")
            # Upstream computes the prompt's and the target's features separately and concatenates them.
            both = np.concatenate([reference.bert, target_bert])
            bert = jnp.asarray(_pad(both, _bucket(gpt_ids.size))[None])
        cap = self.max_tokens(max_seconds)
        tokens, counts = generate(
            self.gpt_params,
            self.gpt_config.gpt,
            jnp.asarray(_pad(gpt_ids, _bucket(gpt_ids.size))[None]),
            bert,
            jnp.asarray(_pad(reference.prompt, _bucket(reference.prompt.size))[None]),
            gpt_rng,
            _bucket(cap),
            top_k,
            top_p,
            temperature,
            repetition_penalty,
            min(MIN_NEW_TOKENS, cap),
            phoneme_lens=jnp.asarray([gpt_ids.size], jnp.int32),
            prompt_lens=jnp.asarray([reference.prompt.size], jnp.int32),
            dtype=self.gpt_dtype,
        )
        # The loop runs to a bucketed cap so that max_seconds does not recompile it; cut at the exact cap.
        count = int(counts[0])
        stopped = count < tokens.shape[1] and count <= cap
        new_tokens = np.asarray(tokens[0, : min(count, cap)], np.int32)
        if new_tokens.size == 0:
            return Synthesis(np.zeros(0, np.float32), new_tokens, stopped)

        spec = reference.spec
        wave = _decode(
            self.synth,
            self.sovits_variables,
            jnp.asarray(_pad(new_tokens, _bucket(new_tokens.size))[None]),
            jnp.asarray([new_tokens.size], jnp.int32),
            jnp.asarray(_pad(target_ids, _bucket(target_ids.size))[None]),
            jnp.asarray([target_ids.size], jnp.int32),
            jnp.asarray(_pad(spec, _bucket(spec.shape[0], 2 * BUCKET))[None]),
            jnp.asarray([spec.shape[0]], jnp.int32),
            jnp.asarray(noise_scale, jnp.float32),
            noise_rng,
        )
        samples = 2 * new_tokens.size * self.config.audio.hop_length
        audio = np.clip(np.asarray(wave[0, :samples], np.float32), -1.0, 1.0)
        return Synthesis(audio, new_tokens, stopped)


# --------------------------------------------------------------------------- one call


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> Path:
    """Write float ``audio [N]`` in [-1, 1] as a 16-bit PCM mono WAV (``round(x * 32767)``); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    soundfile.write(path, pcm, sample_rate, subtype="PCM_16", format="WAV")
    return path


def synthesize(
    gpt_ckpt: str | os.PathLike,
    sovits_ckpt: str | os.PathLike,
    ref_wav: str | os.PathLike,
    ref_text: str,
    text: str,
    out: str | os.PathLike,
    *,
    ref_language: str = "auto",
    language: str = "auto",
    top_k: int = 15,
    top_p: float = 1.0,
    temperature: float = 1.0,
    repetition_penalty: float = 1.35,
    noise_scale: float = 0.5,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    seed: int = 0,
    bert_path: str | os.PathLike | None = None,
) -> SynthesisResult:
    """Load both checkpoints, speak ``text`` in the voice of ``ref_wav`` and write ``out`` (16-bit PCM WAV).

    Args:
      gpt_ckpt, sovits_ckpt: run directories, their ``checkpoints``/``best`` folders or one step's folder.
      ref_wav: reference audio (any format soundfile reads); ``ref_text`` its transcript.
      text: what to say.
      ref_language, language: one of ``text.frontend.LANGUAGES`` or an upstream spelling of one.
      top_k, top_p, temperature, repetition_penalty, noise_scale, max_seconds, seed: as
        :meth:`Synthesizer.synthesize`.
      bert_path: the BERT directory, when not the GPT config's ``text.bert_path``.

    Returns:
      :class:`SynthesisResult`; the file holds ``num_tokens * 2 * hop`` samples at 32 kHz.

    Raises:
      FileNotFoundError, CheckpointMismatchError, CompatibilityError: see :meth:`Synthesizer.from_checkpoints`.
      AudioError: ``ref_wav`` cannot be used. TextError: a text or language is unusable.
      ValueError: a sampling setting is out of range.
    """
    _check_settings(top_k, top_p, temperature, repetition_penalty, noise_scale, max_seconds)
    _phoneme_ids(ref_text, ref_language, "ref_text")
    _phoneme_ids(text, language, "text")
    synthesizer = Synthesizer.from_checkpoints(gpt_ckpt, sovits_ckpt, bert_path)
    reference = synthesizer.reference(ref_wav, ref_text, ref_language)
    result = synthesizer.synthesize(
        reference,
        text,
        language,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        repetition_penalty=repetition_penalty,
        noise_scale=noise_scale,
        max_seconds=max_seconds,
        seed=seed,
    )
    path = write_wav(out, result.audio, synthesizer.sample_rate)
    audio = result.audio.astype(np.float64)
    return SynthesisResult(
        path=path,
        sample_rate=synthesizer.sample_rate,
        seconds=audio.size / synthesizer.sample_rate,
        num_samples=int(audio.size),
        num_tokens=int(result.tokens.size),
        stopped=result.stopped,
        peak=float(np.max(np.abs(audio))) if audio.size else 0.0,
        rms=float(np.sqrt(np.mean(audio**2))) if audio.size else 0.0,
    )
