"""`gptsovits-jax plot-lr`: every group's curve, written as a PNG."""

import numpy as np
import pytest

from gptsovits_jax import schedules
from gptsovits_jax.cli import main
from gptsovits_jax.lr_plot import learning_rate_curves


def test_curves_cover_every_group_of_the_stage(tiny_config):
    steps, curves = learning_rate_curves(tiny_config, "sovits", num_points=31)
    assert list(curves) == ["frozen", "text_low_lr", "generator", "discriminator"]
    assert steps[0] == 0 and steps[-1] == tiny_config.sovits_train.steps
    assert np.all(curves["frozen"] == 0)
    np.testing.assert_allclose(curves["text_low_lr"], 0.4 * curves["generator"], rtol=1e-6)
    ref = schedules.warmup_cosine(2e-3, 20, 600, init_lr=1e-5, end_lr=1e-5)  # configs/tiny.yaml's generator
    np.testing.assert_allclose(curves["generator"], [float(ref(int(s))) for s in steps], rtol=1e-6)


def test_gpt_curves_show_staged_unfreezing(tiny_config):
    steps, curves = learning_rate_curves(tiny_config, "gpt", num_points=301)
    bottom = curves["gpt_frozen_bottom"]
    assert np.all(bottom[steps < 50] == 0) and np.all(bottom[steps >= 50] > 0)


def test_plot_lr_command_writes_png(repo_root, tmp_path, capsys):
    out = tmp_path / "lr.png"
    assert main(["plot-lr", "--config", str(repo_root / "configs/v2.yaml"), "--stage", "sovits", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "text_low_lr" in printed and "discriminator" in printed


def test_plot_lr_reports_config_errors(repo_root, tmp_path, capsys):
    code = main(
        [
            "plot-lr",
            "--config",
            str(repo_root / "configs/tiny.yaml"),
            "--stage",
            "gpt",
            "--set",
            "gpt_train.steps=0",
            "--out",
            str(tmp_path / "x.png"),
        ]
    )
    assert code == 2
    assert "gpt_train.steps: must be > 0" in capsys.readouterr().err


def test_unknown_stage_is_rejected(tiny_config):
    with pytest.raises(ValueError, match="unknown stage"):
        learning_rate_curves(tiny_config, "vocoder")


def test_gpt_schedule_spans_the_optimizer_updates_of_an_accumulating_run(v2_config):
    # configs/v2.yaml: 40000 training steps, 4 micro-batches per update; the schedule counts updates.
    steps, curves = learning_rate_curves(v2_config, "gpt", num_points=101)
    assert steps[-1] == 40000 // 4
    ref = schedules.warmup_cosine(1e-4, 2000, 10000, init_lr=1e-6, end_lr=1e-6)
    np.testing.assert_allclose(curves["gpt"], [float(ref(int(s))) for s in steps], rtol=1e-6)
    assert curves["gpt"][-1] == pytest.approx(1e-6)  # the cosine ends where the run does
