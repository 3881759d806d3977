"""A one-picture report of a SoVITS + GPT run: what it makes of an evaluation utterance, and how it trained.

The PNG has, on one colour scale, the log-mel spectrograms of an evaluation utterance
(ground truth; the SoVITS resynthesis from the utterance's own content and reference, as
the TensorBoard samples; the GPT + SoVITS synthesis of its text in its own voice), and per
stage the training and validation losses over the steps with every optimizer group's
learning rate underneath. :func:`write_report` also measures how well each synthesis
follows the recording's energy envelope (:func:`gptsovits_jax.eval_metrics.log_energy_correlation`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gptsovits_jax import audio, eval_metrics
from gptsovits_jax.data import preprocess
from gptsovits_jax.train.metrics_log import read_metrics

# (stage, training loss, validation metric, label) of each stage's loss panel.
_CURVES = (
    ("sovits", "loss/g/mel", "val/mel", "SoVITS mel L1 x c_mel"),
    ("gpt", "loss/ce", "val/ce", "GPT cross-entropy"),
)
_FLOOR = math.log(1e-5)  # log-mel of silence (upstream clamps the mel at 1e-5)


@dataclasses.dataclass(frozen=True)
class EvalUtterance:
    """One utterance of a preprocessed cache: ``wav [T * hop]``, ``spec [T, F]``, ``ssl [T, D]`` float32, ``phoneme_ids [L]``."""

    key: str
    text: str
    language: str
    wav_path: Path
    wav: np.ndarray
    spec: np.ndarray
    ssl: np.ndarray
    phoneme_ids: np.ndarray


def evaluation_utterance(cache_dir: str | os.PathLike, key: str | None = None) -> EvalUtterance:
    """``key`` (default: the first utterance of the evaluation split) from the preprocessed cache ``cache_dir``."""
    index = preprocess.load_index(cache_dir)
    entries = {u["key"]: u for u in index["utterances"]}
    if key is None:
        if not index["split"]["eval"]:
            raise ValueError(f"{cache_dir}: the cache has no evaluation utterance; name one with --utterance")
        key = index["split"]["eval"][0]
    if key not in entries:
        raise ValueError(f"{cache_dir}: no utterance {key!r} in the cache")
    entry = entries[key]
    arrays = {name: x.astype(np.float32) for name, x in preprocess.load_utterance(cache_dir, key).items()}
    return EvalUtterance(
        key=key,
        text=entry["text"],
        language=entry["language"],
        wav_path=Path(entry["wav_path"]),
        phoneme_ids=preprocess.load_phonemes(cache_dir)[key].astype(np.int32),
        **arrays,
    )


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`write_report` drew and measured."""

    path: Path
    utterance: str
    resynthesis_correlation: float  # per-frame log-energy correlation of the SoVITS resynthesis with the truth
    synthesis_seconds: float  # length of the GPT + SoVITS synthesis


def resynthesize_utterance(synth: Any, variables: Any, utt: EvalUtterance, hop_length: int) -> np.ndarray:
    """The SoVITS resynthesis ``[T * hop]`` of ``utt`` from its own content and reference (:func:`resynthesize`, noise key 0)."""
    from gptsovits_jax.train.sovits_step import resynthesize

    frames = utt.spec.shape[0] - utt.spec.shape[0] % 2
    batch = {
        "ssl": utt.ssl[None, :frames],
        "spec": utt.spec[None, :frames],
        "spec_lens": np.asarray([frames], np.int32),
        "text": utt.phoneme_ids[None],
        "text_lens": np.asarray([utt.phoneme_ids.size], np.int32),
    }
    wave = jax.jit(functools.partial(resynthesize, synth))(variables["params"], variables["quantizer"], batch)
    return np.asarray(wave[0, : frames * hop_length])


def _curves(run: Path, train_key: str, val_key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (steps, values)}`` of the training loss, the validation metric and every ``lr/<group>`` of ``run/metrics.jsonl``."""
    series: dict[str, tuple[list, list]] = {}
    for record in read_metrics(run / "metrics.jsonl"):
        for name, value in record.items():
            if name in (train_key, val_key) or name.startswith("lr/"):
                steps, values = series.setdefault(name, ([], []))
                steps.append(record["step"])
                values.append(value)
    return {name: (np.asarray(s), np.asarray(v, np.float64)) for name, (s, v) in series.items()}


def _run_dir(path: str | os.PathLike) -> Path:
    """The run directory of a checkpoint path (the run itself, its ``checkpoints``/``best``, or one step's folder)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if (candidate / "metrics.jsonl").is_file():
            return candidate
    raise FileNotFoundError(f"{path}: no metrics.jsonl in this run directory or above it")


def write_report(
    gpt_ckpt: str | os.PathLike,
    sovits_ckpt: str | os.PathLike,
    out: str | os.PathLike,
    *,
    utterance: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Report:
    """Draw the report PNG of the runs behind ``gpt_ckpt`` and ``sovits_ckpt`` into ``out``.

    The utterance comes from ``cache_dir`` (default: the SoVITS checkpoint's ``data.cache_dir``);
    default the first evaluation utterance. The GPT + SoVITS synthesis speaks its text with the
    utterance itself as the reference (seed 0).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gptsovits_jax.infer import Synthesizer

    synthesizer = Synthesizer.from_checkpoints(gpt_ckpt, sovits_ckpt)
    config = synthesizer.config
    utt = evaluation_utterance(cache_dir or config.data.cache_dir, utterance)
    truth = audio.spec_to_mel_np(utt.spec, config.audio)
    resynth = audio.mel_spectrogram_np(
        resynthesize_utterance(synthesizer.synth, synthesizer.sovits_variables, utt, config.audio.hop_length), config.audio
    )
    seconds = utt.spec.shape[0] / config.audio.frame_rate
    synthesis = synthesizer.synthesize(
        synthesizer.reference(utt.wav_path, utt.text, utt.language), utt.text, utt.language, max_seconds=2 * seconds + 1, seed=0
    )
    synth_mel = audio.mel_spectrogram_np(synthesis.audio, config.audio) if synthesis.audio.size >= config.audio.hop_length else None
    r = eval_metrics.log_energy_correlation(truth, resynth)

    fig = plt.figure(figsize=(15, 10), constrained_layout=True)
    grid = fig.add_gridspec(3, 6, height_ratios=[1.2, 1, 0.7])
    vmax = float(truth.max())
    panels = (
        (f"ground truth: {utt.key}", truth),
        (f"SoVITS resynthesis (energy r = {r:.2f})", resynth),
        (f"GPT + SoVITS synthesis ({synthesis.audio.size / config.audio.sample_rate:.2f} s)", synth_mel),
    )
    for i, (title, mel) in enumerate(panels):
        ax = fig.add_subplot(grid[0, 2 * i : 2 * i + 2])
        if mel is None:
            ax.text(0.5, 0.5, "no audio generated", ha="center", va="center", transform=ax.transAxes)
        else:
            extent = (0, len(mel) / config.audio.frame_rate, 0, mel.shape[1])
            image = ax.imshow(mel.T, origin="lower", aspect="auto", vmin=_FLOOR, vmax=vmax, extent=extent, cmap="magma")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("seconds")
        ax.set_ylabel("mel bin")
    fig.colorbar(image, ax=fig.axes[:3], label="log mel", shrink=0.8)
    fig.suptitle(f'"{utt.text}"  ({utt.language}; GPT {Path(gpt_ckpt)}, SoVITS {Path(sovits_ckpt)})', fontsize=11)

    for col, (stage, train_key, val_key, label) in enumerate(_CURVES):
        run = _run_dir(gpt_ckpt if stage == "gpt" else sovits_ckpt)
        curves = _curves(run, train_key, val_key)
        ax = fig.add_subplot(grid[1, 3 * col : 3 * col + 3])
        if train_key in curves:
            ax.plot(*curves[train_key], lw=1, color="tab:blue", label=f"train {train_key}")
        ax.set_ylabel(f"train {train_key}", color="tab:blue")
        ax.set_title(f"{label}: {run}", fontsize=10)
        if val_key in curves:
            val_ax = ax.twinx()
            val_ax.plot(*curves[val_key], "o-", color="tab:red", label=val_key)
            val_ax.set_ylabel(val_key, color="tab:red")
        lr_ax = fig.add_subplot(grid[2, 3 * col : 3 * col + 3], sharex=ax)
        for name, (steps, values) in sorted(curves.items()):
            if name.startswith("lr/"):
                lr_ax.plot(steps, values, lw=1.2, label=name[3:])
        lr_ax.set_ylabel("learning rate")
        lr_ax.set_xlabel("step")
        lr_ax.legend(fontsize=8, loc="upper right")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return Report(path=out, utterance=utt.key, resynthesis_correlation=r, synthesis_seconds=synthesis.audio.size / config.audio.sample_rate)
