"""Learning-rate curves of every optimizer group of a stage, for inspection before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gptsovits_jax.config import Config, optimizer_steps
from gptsovits_jax.optim import groups_from_config

STAGES = ("sovits", "gpt")


def stage_optimizers(config: Config, stage: str) -> dict[str, object]:
    """The optimizer configs of a stage by name: SoVITS ``{"g": ..., "d": ...}``, GPT ``{"gpt": ...}``."""
    if stage == "sovits":
        return {"g": config.sovits_train.optim_g, "d": config.sovits_train.optim_d}
    if stage == "gpt":
        return {"gpt": config.gpt_train.optim}
    raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


def stage_steps(config: Config, stage: str) -> int:
    """Optimizer steps of a stage's run (its training steps over the gradient accumulation)."""
    if stage == "sovits":
        return optimizer_steps(config.sovits_train.steps, config.sovits_train.optim_g)
    return optimizer_steps(config.gpt_train.steps, config.gpt_train.optim)


def learning_rate_curves(config: Config, stage: str, num_points: int = 1000) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(steps [P], {group: lr [P]})`` sampled evenly over the run (frozen groups are all zeros)."""
    total = stage_steps(config, stage)
    steps = np.unique(np.linspace(0, total, num=min(num_points, total + 1)).astype(np.int64))
    curves: dict[str, np.ndarray] = {}
    for optim_cfg in stage_optimizers(config, stage).values():
        for group in groups_from_config(optim_cfg, total_steps=total):
            if group.schedule is None:
                curves[group.name] = np.zeros(len(steps))
            else:
                curves[group.name] = np.asarray([float(group.schedule(int(s))) for s in steps])
    return steps, curves


def plot_learning_rates(config: Config, stage: str, out: str | Path, num_points: int = 1000) -> Path:
    """Write a PNG with one line per group (log y axis); frozen groups are listed in the legend only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, curves = learning_rate_curves(config, stage, num_points)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, lr in curves.items():
        if not np.any(lr > 0):
            ax.plot([], [], linestyle=":", label=f"{name} (frozen)")
            continue
        ax.plot(steps, np.where(lr > 0, lr, np.nan), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{config.name}: {stage} learning rates")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
