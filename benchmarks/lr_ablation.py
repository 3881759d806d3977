"""Learning-rate schedule ablation: the same tiny SoVITS and GPT runs under four schedules.

    PYTHONPATH=. python benchmarks/lr_ablation.py [--stages sovits gpt] [--sovits-steps 400] [--gpt-steps 600] \\
        [--workdir runs/lr_ablation] [--out benchmarks/results/lr_ablation]

Every run starts from the same initialisation (``*_train.seed``) and sees the same batches in
the same order; only the learning-rate schedule of every optimizer changes:

* ``constant``: the config's peak learning rate at every step (the control);
* ``warmup_cosine``: linear warmup from ``init_lr`` to the peak, cosine decay to ``end_lr`` at the last step;
* ``warmup_exponential``: the same warmup, then ``peak * r ** (s - warmup)`` with ``r`` chosen
  so that it reaches ``end_lr`` at the last step;
* ``warmup_step``: the same warmup, then two drops by ``sqrt(end_lr / peak)`` at 1/2 and 3/4 of
  the run, so it also ends at ``end_lr``.

Peak, ``init_lr``, ``end_lr`` and warmup come from each optimizer's schedule in the config
(``configs/tiny.yaml``: generator 2e-3, discriminator 1e-3, GPT 1e-3; 20 warmup steps from 1e-5;
floor 1e-5). A group with its own schedule (the GPT's bottom layer, unfrozen at step 50) gets
the same shape on its own clock. All decaying schedules thus share peak, warmup and final
rate and differ only in the shape of the decay; the constant run is the schedule-free
baseline at the rate the others warm up to.

Measured per run: the validation metric (SoVITS ``val/mel``: mel L1 x 45 of whole eval
utterances resynthesised from their own content, noise scale 0.5, fixed noise; GPT
``val/ce``, ``val/top3``) every ``--*-eval-every`` steps, the training loss every ``log_every``
steps and, for SoVITS, the mel-cepstral distortion (:mod:`gptsovits_jax.eval_metrics`) of the
eval utterances resynthesised the same way from every kept checkpoint against their cached
32 kHz waveforms. Steps to target: the target is the constant run's final smoothed validation
metric (mean of its last ``--smooth`` evaluations); a run reaches it at the first evaluation
whose trailing ``--smooth``-evaluation mean is at or below it.

The GPT stage needs semantic tokens: they are extracted once, with the final checkpoint of the
``--semantic-from`` SoVITS run, into ``<workdir>/gpt_cache`` (a view of the preprocessed cache
holding symlinks; the shared cache is not written to) and used by every GPT run.

Writes ``<out>/summary.json`` (per stage and schedule: curves, final and smoothed validation
metric, MCD per checkpoint, steps to target, wall time) and ``<out>/lr_ablation.png`` (loss
curves with the learning-rate curves aligned underneath), and prints a table. Run directories
(checkpoints, ``metrics.jsonl``) go to ``--workdir``; a finished run with the same settings is
not trained again unless ``--fresh`` is given. ``--synthetic`` trains on the fixed synthetic
batches instead of the corpus (smoke runs).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gptsovits_jax.config import Config, ScheduleConfig, load_config, to_dict
from gptsovits_jax.eval_metrics import log_energy_correlation, mel_cepstral_distortion
from gptsovits_jax.lr_plot import learning_rate_curves
from gptsovits_jax.train.metrics_log import read_metrics

SCHEDULES = ("constant", "warmup_cosine", "warmup_exponential", "warmup_step")
STAGES = ("sovits", "gpt")
RUN_RECORD = "ablation_run.json"


# --------------------------------------------------------------------------- schedules


def schedule_fields(name: str, base: ScheduleConfig, total_steps: int) -> dict[str, Any]:
    """The ``name`` schedule with ``base``'s peak, init, floor and warmup over ``total_steps`` optimizer steps."""
    peak, init, end, warmup = base.peak_lr, base.init_lr, base.end_lr, base.warmup_steps
    if name == "constant":
        return {"name": "constant", "peak_lr": peak}
    if not 0 < end < peak:
        raise ValueError(f"schedule {base.name}: the decaying schedules need 0 < end_lr < peak_lr, got end_lr {end} and peak_lr {peak}")
    if not warmup < total_steps:
        raise ValueError(f"schedule {base.name}: warmup_steps {warmup} leaves no decay in {total_steps} steps")
    common = {"peak_lr": peak, "init_lr": init, "end_lr": end, "warmup_steps": warmup, "total_steps": total_steps}
    if name == "warmup_cosine":
        return {"name": name, **common}
    if name == "warmup_exponential":
        return {"name": name, **common, "decay_rate": (end / peak) ** (1.0 / (total_steps - warmup)), "decay_every": 1}
    if name == "warmup_step":
        boundaries = sorted({max(warmup + 1, total_steps // 2), max(warmup + 2, 3 * total_steps // 4)})
        return {"name": name, **common, "boundaries": boundaries, "drop_factor": math.sqrt(end / peak)}
    raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")


def optimizer_overrides(key: str, optim_cfg: Any, name: str, steps: int) -> list[str]:
    """Overrides that put every schedule of the optimizer at ``key`` (e.g. ``gpt_train.optim``) into shape ``name``."""
    out = [f"{key}.schedule={json.dumps(schedule_fields(name, optim_cfg.schedule, steps))}"]
    if any(g.schedule is not None for g in optim_cfg.groups):
        groups = []
        for g in optim_cfg.groups:
            group = to_dict(g)
            if g.schedule is not None:
                group["schedule"] = schedule_fields(name, g.schedule, steps - (g.unfreeze_step or 0))
            groups.append(group)
        out.append(f"{key}.groups={json.dumps(groups)}")
    return out


def stage_overrides(stage: str, base: Config, name: str, seed: int, args: argparse.Namespace) -> list[str]:
    """Seed, loop lengths, evaluation and checkpoint cadence, and every schedule of ``stage`` for schedule ``name``."""
    if stage == "sovits":
        steps, every = args.sovits_steps, args.checkpoint_every
        loop = [
            f"sovits_train.seed={seed}",
            f"sovits_train.steps={steps}",
            f"sovits_train.eval_every={args.sovits_eval_every}",
            f"sovits_train.checkpoint_every={every}",
            f"sovits_train.keep_checkpoints={steps // every + 1}",
            f"sovits_train.log_every={args.log_every}",
        ]
        st = base.sovits_train
        return (
            loop
            + optimizer_overrides("sovits_train.optim_g", st.optim_g, name, steps)
            + optimizer_overrides("sovits_train.optim_d", st.optim_d, name, steps)
        )
    steps = args.gpt_steps
    loop = [
        f"gpt_train.seed={seed}",
        f"gpt_train.steps={steps}",
        f"gpt_train.eval_every={args.gpt_eval_every}",
        f"gpt_train.checkpoint_every={steps}",
        "gpt_train.keep_checkpoints=1",
        f"gpt_train.log_every={args.log_every}",
    ]
    return loop + optimizer_overrides("gpt_train.optim", base.gpt_train.optim, name, steps)


# --------------------------------------------------------------------------- training


def train_run(
    stage: str, config: Config, run_dir: Path, overrides: list[str], synthetic: bool, semantic_path: Path | None, fresh: bool
) -> dict[str, Any]:
    """Train one run into ``run_dir`` (or reuse a finished one with the same overrides); returns its record."""
    from gptsovits_jax.train.stages import data_sources, train_stage

    steps = (config.sovits_train if stage == "sovits" else config.gpt_train).steps
    record_path = run_dir / RUN_RECORD
    if not fresh and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("overrides") == overrides and record.get("synthetic") == synthetic and record.get("final_step") == steps:
            print(f"  reusing {run_dir}", file=sys.stderr, flush=True)
            return record
    shutil.rmtree(run_dir, ignore_errors=True)
    train, evals = data_sources(stage, config, synthetic=synthetic, semantic_path=semantic_path)
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the loop's log lines; stdout keeps the table
            result = train_stage(stage, config, run_dir, train, evals, progress=False)
    finally:
        close = getattr(train, "close", None)
        if close is not None:
            close()
    final_step = int(jax.device_get(result.state.step))
    if final_step != steps:  # stopped early (SIGTERM, Ctrl-C, divergence): not a result, and not reused next time
        raise RuntimeError(f"{run_dir}: training stopped at step {final_step} of {steps}; rerun to train it again")
    record = {
        "overrides": overrides,
        "synthetic": synthetic,
        "wall_s": time.perf_counter() - started,
        "steps_per_s_with_compile": result.steps_per_second,
        "final_step": final_step,
    }
    record_path.write_text(json.dumps(record, indent=1))
    return record


def extract_tokens(sovits_run: Path, cache_dir: Path, view: Path) -> Path:
    """Semantic tokens of the whole cache by ``sovits_run``'s final checkpoint, written into ``view`` (symlinks to ``cache_dir``)."""
    from gptsovits_jax.cli import _extract
    from gptsovits_jax.data import preprocess

    if not (sovits_run / "checkpoints").is_dir():
        raise FileNotFoundError(f"{sovits_run}: no SoVITS checkpoints to extract semantic tokens with; run the sovits stage first")
    view.mkdir(parents=True, exist_ok=True)
    for name in (preprocess.INDEX_NAME, preprocess.PHONEMES_NAME, preprocess.UTTERANCES_DIR):
        link = view / name
        if not link.exists():
            link.symlink_to((cache_dir / name).absolute())
    return _extract(sovits_run, view, 8, False)


# --------------------------------------------------------------------------- measurements


def metric_curve(records: list[dict[str, Any]], name: str) -> list[tuple[int, float]]:
    """``[(step, value)]`` of every record of ``metrics.jsonl`` holding ``name``."""
    return [(int(r["step"]), float(r[name])) for r in records if name in r]


def trailing_mean(values: Sequence[float], window: int) -> np.ndarray:
    """``out[i] = mean(values[max(0, i - window + 1) : i + 1])``."""
    v = np.asarray(values, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(len(v))
    lo = np.maximum(0, idx - window + 1)
    return (csum[idx + 1] - csum[lo]) / (idx + 1 - lo)


def steps_to_target(curve: list[tuple[int, float]], target: float, window: int) -> int | None:
    """First step whose trailing ``window``-evaluation mean is ``<= target`` (None if never)."""
    if not curve:
        return None
    steps = [s for s, _ in curve]
    smooth = trailing_mean([v for _, v in curve], window)
    hits = np.flatnonzero(smooth <= target + 1e-12)
    return int(steps[hits[0]]) if hits.size else None


class Synthesizers:
    """Jitted :func:`~gptsovits_jax.train.sovits_step.resynthesize`, one per model shape, reused over checkpoints and runs."""

    def __init__(self) -> None:
        self._fns: dict[str, Any] = {}

    def get(self, setup: Any) -> Any:
        from gptsovits_jax.train.sovits_step import resynthesize

        cfg = setup.config
        key = json.dumps([to_dict(cfg.sovits), to_dict(cfg.audio), cfg.ssl.dim, cfg.text.phoneme_vocab_size, cfg.sovits_train.precision])
        if key not in self._fns:
            self._fns[key] = jax.jit(functools.partial(resynthesize, setup.synth))
        return self._fns[key]


def checkpoint_mcd(run_dir: Path, eval_batches: list[dict[str, np.ndarray]], synthesizers: Synthesizers) -> list[dict[str, Any]]:
    """MCD (dB) and energy-envelope correlation of the eval utterances resynthesised by every checkpoint.

    Each utterance is synthesised by ``resynthesize`` (``SynthesizerTrn.infer_full`` on its own
    content and reference spectrogram, noise scale 0.5, noise key 0), cut to its ``spec_lens * hop`` samples
    and compared with the batch's ``wav``, the cached 32 kHz training waveform of that utterance:
    ``mcd_db`` (mel-cepstral distortion) and ``energy_r`` (Pearson r of the per-frame log energies,
    :func:`gptsovits_jax.eval_metrics.log_energy_correlation`: near 0 for a model that ignores its
    latent), each the mean over utterances. Checkpoints come from ``run_dir/checkpoints``.
    """
    from gptsovits_jax.audio import mel_spectrogram_np
    from gptsovits_jax.train.restore import restore_train_state

    out = []
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    for step in steps:
        state, setup, config = restore_train_state(run_dir / "checkpoints" / str(step), "sovits")
        synthesize = synthesizers.get(setup)
        hop, sample_rate = config.audio.hop_length, config.audio.sample_rate
        per_utterance, energy_r = {}, {}
        for batch in eval_batches:
            inputs = {k: batch[k] for k in ("ssl", "spec", "spec_lens", "text", "text_lens")}
            wave = np.asarray(synthesize(state.params_g, state.quantizer, inputs))
            valid = batch.get("valid", np.ones(len(batch["spec_lens"]), bool))
            for row in np.flatnonzero(valid):
                n = int(batch["spec_lens"][row]) * hop
                key = str(batch["keys"][row])
                per_utterance[key] = mel_cepstral_distortion(batch["wav"][row, :n], wave[row, :n], sample_rate)
                truth, resynth = (mel_spectrogram_np(w[row, :n], config.audio) for w in (batch["wav"], wave))
                energy_r[key] = log_energy_correlation(truth, resynth)
        out.append(
            {
                "step": step,
                "mcd_db": float(np.mean(list(per_utterance.values()))),
                "energy_r": float(np.nanmean(list(energy_r.values()))),
                "per_utterance": per_utterance,
                "energy_r_per_utterance": energy_r,
            }
        )
    return out


def sovits_eval_batches(config: Config, synthetic: bool) -> list[dict[str, np.ndarray]]:
    """The eval batches the SoVITS runs validate on (the corpus's eval split, or the synthetic eval batch)."""
    if synthetic:
        from gptsovits_jax.train.stages import data_sources

        return data_sources("sovits", config, synthetic=True)[1]
    from gptsovits_jax.data.pipeline import sovits_eval_batches as corpus_eval_batches

    return corpus_eval_batches(config)


def lr_curve(config: Config, stage: str, group: str, every: int) -> list[tuple[int, float]]:
    """``[(step, lr)]`` of ``group`` every ``every`` steps (and at the last step) of ``config``'s ``stage`` run."""
    steps, curves = learning_rate_curves(config, stage, num_points=10**9)
    keep = (steps % every == 0) | (steps == steps[-1])
    return [(int(s), float(v)) for s, v in zip(steps[keep], curves[group][keep])]


TRAIN_WINDOW = 5
"""Logged training losses in the trailing mean of the training-loss target (50 steps at ``log_every`` 10)."""

STAGE_INFO = {
    "sovits": {"val": "val/mel", "extra_val": "val/kl", "train": "loss/g/mel", "lr_group": "generator"},
    "gpt": {"val": "val/ce", "extra_val": "val/top3", "train": "loss/ce", "lr_group": "gpt"},
}


def summarize_run(stage: str, config: Config, run_dir: Path, record: dict[str, Any], window: int) -> dict[str, Any]:
    """Curves and final numbers of one run from its ``metrics.jsonl``."""
    info = STAGE_INFO[stage]
    records = read_metrics(run_dir / "metrics.jsonl")
    val = metric_curve(records, info["val"])
    train_cfg = config.sovits_train if stage == "sovits" else config.gpt_train
    return {
        "overrides": record["overrides"],
        "wall_s": round(record["wall_s"], 1),
        "val": val,
        info["extra_val"]: metric_curve(records, info["extra_val"]),
        "train_loss": metric_curve(records, info["train"]),
        "lr": lr_curve(config, stage, info["lr_group"], train_cfg.log_every),
        "final_val": val[-1][1] if val else None,
        "smoothed_final_val": float(trailing_mean([v for _, v in val], window)[-1]) if val else None,
        "best_val": min(v for _, v in val) if val else None,
    }


def compare(runs: dict[str, dict[str, Any]], window: int, baseline: str = "constant") -> dict[str, Any]:
    """Target (the baseline's smoothed final validation metric), steps to it and changes relative to the baseline."""
    if baseline not in runs:
        return {}
    base = runs[baseline]
    target = base["smoothed_final_val"]
    train_target = float(trailing_mean([v for _, v in base["train_loss"]], TRAIN_WINDOW)[-1])
    out: dict[str, Any] = {
        "target": target,
        "steps_to_target": {},
        "train_target": train_target,
        "train_steps_to_target": {},
        "vs_baseline_pct": {},
    }
    base_steps = steps_to_target(base["val"], target, window)
    for name, run in runs.items():
        steps = steps_to_target(run["val"], target, window)
        out["steps_to_target"][name] = steps
        out["train_steps_to_target"][name] = steps_to_target(run["train_loss"], train_target, TRAIN_WINDOW)
        pct = {
            "final_val": 100.0 * (run["final_val"] / base["final_val"] - 1.0),
            "smoothed_final_val": 100.0 * (run["smoothed_final_val"] / base["smoothed_final_val"] - 1.0),
            "steps_to_target": None if steps is None or not base_steps else 100.0 * (steps / base_steps - 1.0),
        }
        if run.get("mcd") and base.get("mcd"):
            pct["final_mcd"] = 100.0 * (run["mcd"][-1]["mcd_db"] / base["mcd"][-1]["mcd_db"] - 1.0)
        out["vs_baseline_pct"][name] = pct
    return out


# --------------------------------------------------------------------------- aggregate and report


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values)), "values": values}


def aggregate(by_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per schedule, over seeds: smoothed final validation metric, final MCD, steps to target, changes vs constant."""
    names = next(iter(by_seed.values()))["runs"]
    out = {}
    for name in names:
        runs = [seeded["runs"][name] for seeded in by_seed.values()]
        comparisons = [seeded["comparison"] for seeded in by_seed.values() if seeded["comparison"]]
        entry = {"smoothed_final_val": _stats([r["smoothed_final_val"] for r in runs])}
        if all(r.get("mcd") for r in runs):
            entry["final_mcd_db"] = _stats([r["mcd"][-1]["mcd_db"] for r in runs])
            entry["final_energy_r"] = _stats([r["mcd"][-1]["energy_r"] for r in runs])
        if comparisons:
            entry["steps_to_target"] = [c["steps_to_target"][name] for c in comparisons]
            entry["train_steps_to_target"] = [c["train_steps_to_target"][name] for c in comparisons]
            entry["smoothed_vs_constant_pct"] = [c["vs_baseline_pct"][name]["smoothed_final_val"] for c in comparisons]
            if all("final_mcd" in c["vs_baseline_pct"][name] for c in comparisons):
                entry["mcd_vs_constant_pct"] = [c["vs_baseline_pct"][name]["final_mcd"] for c in comparisons]
        out[name] = entry
    return out


def plot(summary: dict[str, Any], out: Path) -> Path:
    """Per stage one column: validation metric, smoothed training loss, MCD (SoVITS) or top-3 (GPT), learning rate.

    The first seed's runs are drawn solid; other seeds' validation and MCD curves thin.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES if s in summary["stages"]]
    fig, axes = plt.subplots(4, len(stages), figsize=(6.5 * len(stages), 11), sharex="col", squeeze=False)
    colors = dict(zip(SCHEDULES, ("black", "tab:blue", "tab:orange", "tab:green")))
    for col, stage in enumerate(stages):
        info, result = STAGE_INFO[stage], summary["stages"][stage]
        ax_val, ax_train, ax_third, ax_lr = axes[:, col]
        for index, seeded in enumerate(result["by_seed"].values()):
            first = index == 0
            style = {"linewidth": 1.5 if first else 0.8, "alpha": 1.0 if first else 0.5}
            for name, run in seeded["runs"].items():
                color, label = colors.get(name), name if first else None
                if run["val"]:
                    ax_val.plot(*zip(*run["val"]), marker="o", markersize=3 if first else 0, color=color, label=label, **style)
                if stage == "sovits" and run.get("mcd"):
                    steps = [m["step"] for m in run["mcd"]]
                    ax_third.plot(steps, [m["mcd_db"] for m in run["mcd"]], marker="s", color=color, label=label, **style)
                elif stage == "gpt" and run.get(info["extra_val"]):
                    ax_third.plot(
                        *zip(*run[info["extra_val"]]), marker="o", markersize=3 if first else 0, color=color, label=label, **style
                    )
                if not first:
                    continue
                if run["train_loss"]:
                    t_steps, t_values = zip(*run["train_loss"])
                    ax_train.plot(t_steps, trailing_mean(t_values, TRAIN_WINDOW), color=color, label=name)
                config = load_config(summary["config"], run["overrides"])
                l_steps, curves = learning_rate_curves(config, stage, num_points=2000)
                ax_lr.plot(l_steps, curves[info["lr_group"]], color=color, label=name)
            target = seeded.get("comparison", {}).get("target")
            if first and target is not None:
                ax_val.axhline(target, color="grey", linestyle=":", linewidth=1, label="target (constant, smoothed final)")
        seeds = ", ".join(result["by_seed"])
        ax_val.set_title(f"{stage}: {info['val']} on the eval split (seeds {seeds})")
        ax_train.set_title(f"{stage}: training {info['train']} (trailing mean of {TRAIN_WINDOW} logs)")
        ax_third.set_title(f"{stage}: " + ("MCD of eval utterances at checkpoints [dB]" if stage == "sovits" else info["extra_val"]))
        ax_lr.set_title(f"{stage}: learning rate ({info['lr_group']} group)")
        ax_lr.set_yscale("log")
        ax_lr.set_xlabel("optimizer step")
        for ax in axes[:, col]:
            ax.grid(True, alpha=0.3)
        ax_val.legend(fontsize=8)
    fig.suptitle(f"Learning-rate schedule ablation ({summary['config']})")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _fmt(value: Any, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def _range(stats: dict[str, Any] | None, spec: str) -> str:
    if stats is None:
        return "-"
    if len(stats["values"]) == 1:
        return format(stats["mean"], spec)
    return f"{format(stats['mean'], spec)} [{format(stats['min'], spec)}, {format(stats['max'], spec)}]"


def table(summary: dict[str, Any]) -> str:
    """Markdown tables: per stage and seed, every run; then, with several seeds, the means over seeds."""
    lines = []
    for stage, result in summary["stages"].items():
        info = STAGE_INFO[stage]
        for seed, seeded in result["by_seed"].items():
            comparison = seeded.get("comparison", {})
            lines.append(f"\n{stage}, seed {seed}, {result['steps']} steps; target {info['val']} {_fmt(comparison.get('target'))}\n")
            head = f"| schedule | final {info['val']} | smoothed | best |"
            head += " MCD per checkpoint [dB] | energy r per checkpoint |" if stage == "sovits" else f" final {info['extra_val']} |"
            head += " steps to target (val) | steps to target (train) | Δ smoothed vs constant | Δ MCD vs constant | wall [s] |"
            lines += [head, "|" + " --- |" * (head.count("|") - 1)]
            for name, run in seeded["runs"].items():
                pct = comparison.get("vs_baseline_pct", {}).get(name, {})
                row = f"| {name} | {_fmt(run['final_val'])} | {_fmt(run['smoothed_final_val'])} | {_fmt(run['best_val'])} |"
                if stage == "sovits":
                    row += " " + ", ".join(f"{m['step']}: {m['mcd_db']:.2f}" for m in run.get("mcd", [])) + " |"
                    row += " " + ", ".join(f"{m['step']}: {m['energy_r']:.2f}" for m in run.get("mcd", [])) + " |"
                else:
                    extra = run.get(info["extra_val"])
                    row += f" {_fmt(extra[-1][1] if extra else None)} |"
                for key in ("steps_to_target", "train_steps_to_target"):
                    reached = comparison.get(key, {}).get(name)
                    row += f" {reached if reached is not None else 'not reached'} |"
                row += f" {_fmt(pct.get('smoothed_final_val'), '+.1f')}% |"
                row += f" {_fmt(pct.get('final_mcd'), '+.1f')}% |" if "final_mcd" in pct else " - |"
                row += f" {run['wall_s']:.0f} |"
                lines.append(row)
        if len(result["by_seed"]) > 1:
            lines.append(f"\n{stage}, mean [min, max] over seeds {', '.join(result['by_seed'])}\n")
            head = (
                f"| schedule | smoothed final {info['val']} | final MCD [dB] | final energy r | steps to target (val) |"
                " Δ smoothed vs constant [%] | Δ MCD vs constant [%] |"
            )
            lines += [head, "|" + " --- |" * (head.count("|") - 1)]
            for name, agg in result["aggregate"].items():
                pct = agg.get("smoothed_vs_constant_pct")
                mcd_pct = agg.get("mcd_vs_constant_pct")
                lines.append(
                    f"| {name} | {_range(agg['smoothed_final_val'], '.4g')} | {_range(agg.get('final_mcd_db'), '.2f')} |"
                    f" {_range(agg.get('final_energy_r'), '.2f')} |"
                    f" {agg.get('steps_to_target', '-')} | {_range(_stats(pct), '+.1f') if pct else '-'} |"
                    f" {_range(_stats(mcd_pct), '+.1f') if mcd_pct else '-'} |"
                )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def rounded(value: Any, digits: int = 6) -> Any:
    """``value`` with every float rounded to ``digits`` significant digits (a smaller, readable summary.json)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def machine() -> dict[str, Any]:
    return {
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="extra config override for every run")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES))
    p.add_argument("--sovits-steps", type=int, default=400)
    p.add_argument("--gpt-steps", type=int, default=600)
    p.add_argument("--sovits-seeds", type=int, nargs="+", help="one set of runs per seed (default: sovits_train.seed)")
    p.add_argument("--gpt-seeds", type=int, nargs="+", help="one set of runs per seed (default: gpt_train.seed)")
    p.add_argument("--sovits-eval-every", type=int, default=25)
    p.add_argument("--gpt-eval-every", type=int, default=25)
    p.add_argument("--checkpoint-every", type=int, default=100, help="SoVITS checkpoints kept for MCD")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--smooth", type=int, default=3, help="evaluations in the trailing mean that defines targets")
    p.add_argument(
        "--semantic-from", choices=SCHEDULES, default="warmup_cosine", help="SoVITS run (first seed) whose quantizer makes the GPT's tokens"
    )
    p.add_argument("--workdir", default="runs/lr_ablation", help="run directories (checkpoints, metrics.jsonl)")
    p.add_argument("--out", default="benchmarks/results/lr_ablation", help="summary.json and lr_ablation.png")
    p.add_argument("--synthetic", action="store_true", help="fixed synthetic batches instead of the corpus (smoke runs)")
    p.add_argument("--fresh", action="store_true", help="retrain runs that finished before with the same settings")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's routine notes (read-only restores) are absl warnings
    workdir, out = Path(args.workdir), Path(args.out)
    base = load_config(args.config, args.overrides)
    if not args.synthetic:
        from gptsovits_jax.data.preprocess import preprocess

        with contextlib.redirect_stdout(sys.stderr):
            preprocess(base, progress=False)
    seeds = {"sovits": args.sovits_seeds or [base.sovits_train.seed], "gpt": args.gpt_seeds or [base.gpt_train.seed]}
    summary: dict[str, Any] = {
        "benchmark": "lr_ablation",
        "command": "PYTHONPATH=. python benchmarks/lr_ablation.py " + shlex.join(argv),
        "config": args.config,
        "overrides": args.overrides,
        "synthetic": args.synthetic,
        "smooth_window": args.smooth,
        "train_window": TRAIN_WINDOW,
        "machine_start": machine(),
        "stages": {},
    }
    synthesizers = Synthesizers()
    for stage in [s for s in STAGES if s in args.stages]:
        semantic_path = None
        if stage == "gpt" and not args.synthetic:
            source = workdir / "sovits" / args.semantic_from / f"seed{seeds['sovits'][0]}"
            semantic_path = extract_tokens(source, Path(base.data.cache_dir), workdir / "gpt_cache")
            summary["semantic_tokens_from"] = str(source)
        steps = args.sovits_steps if stage == "sovits" else args.gpt_steps
        by_seed = {}
        for seed in seeds[stage]:
            runs = {}
            for name in args.schedules:
                overrides = [*args.overrides, *stage_overrides(stage, base, name, seed, args)]
                config = load_config(args.config, overrides)
                run_dir = workdir / stage / name / f"seed{seed}"
                print(f"{stage} / {name} / seed {seed}: {steps} steps in {run_dir}", file=sys.stderr, flush=True)
                record = train_run(stage, config, run_dir, overrides, args.synthetic, semantic_path, args.fresh)
                run = summarize_run(stage, config, run_dir, record, args.smooth)
                if stage == "sovits":
                    run["mcd"] = checkpoint_mcd(run_dir, sovits_eval_batches(config, args.synthetic), synthesizers)
                runs[name] = run
                print(f"  final {STAGE_INFO[stage]['val']} {run['final_val']:.4g}, {run['wall_s']:.0f} s", file=sys.stderr, flush=True)
            by_seed[str(seed)] = {"runs": runs, "comparison": compare(runs, args.smooth)}
        summary["stages"][stage] = {"steps": steps, "seeds": seeds[stage], "by_seed": by_seed, "aggregate": aggregate(by_seed)}
    summary["machine_end"] = machine()
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(rounded(summary), indent=1))
    png = plot(summary, out / "lr_ablation.png")
    print(table(summary))
    print(f"\nwrote {out / 'summary.json'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
