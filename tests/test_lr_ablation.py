"""The learning-rate ablation benchmark: its schedules, its target rule, and a few-step run end to end."""

import json
import math

import numpy as np
import pytest

from gptsovits_jax import schedules
from gptsovits_jax.config import ScheduleConfig, load_config
from tests.conftest import SMALL_SOVITS, load_benchmark

SMALL_GPT = ["gpt.hidden_dim=16", "gpt.num_heads=2", "gpt.num_layers=1", "gpt.ffn_dim=32", "gpt_train.batch_size=2"]
# Four-step runs: one warmup step, and no separately scheduled GPT group (tiny's unfreezes at step 50).
SHORT_WARMUP = [
    "sovits_train.optim_g.schedule.warmup_steps=1",
    "sovits_train.optim_d.schedule.warmup_steps=1",
    "gpt_train.optim.schedule.warmup_steps=1",
    'gpt_train.optim.groups=[{name: gpt, pattern: ""}]',
]


@pytest.fixture(scope="module")
def ablation():
    return load_benchmark("lr_ablation")


BASE = ScheduleConfig(name="warmup_cosine", peak_lr=2e-4, init_lr=1e-5, end_lr=1e-5, warmup_steps=20)


@pytest.mark.parametrize("name", ["warmup_cosine", "warmup_exponential", "warmup_step"])
def test_decaying_schedules_share_warmup_peak_and_final_rate(ablation, name):
    fn = schedules.from_config(ablation.schedule_fields(name, BASE, 400))
    assert float(fn(0)) == pytest.approx(1e-5, rel=1e-5)
    assert float(fn(20)) == pytest.approx(2e-4, rel=1e-5)
    assert float(fn(400)) == pytest.approx(1e-5, rel=1e-3)


def test_step_schedule_drops_twice_by_the_square_root_of_the_range(ablation):
    fields = ablation.schedule_fields("warmup_step", BASE, 400)
    assert fields["boundaries"] == [200, 300]
    fn = schedules.from_config(fields)
    assert [float(fn(s)) for s in (199, 200, 300)] == pytest.approx([2e-4, 2e-4 * math.sqrt(0.05), 1e-5], rel=1e-5)


def test_constant_is_the_peak_rate(ablation):
    assert ablation.schedule_fields("constant", BASE, 400) == {"name": "constant", "peak_lr": 2e-4}


def test_overrides_reshape_a_group_schedule_on_its_own_clock(ablation, repo_root):
    base = load_config(repo_root / "configs" / "tiny.yaml")
    overrides = ablation.optimizer_overrides("gpt_train.optim", base.gpt_train.optim, "warmup_exponential", 600)
    config = load_config(repo_root / "configs" / "tiny.yaml", overrides)
    main, bottom = config.gpt_train.optim.schedule, config.gpt_train.optim.groups[0].schedule
    assert (main.name, main.peak_lr, main.total_steps) == ("warmup_exponential", 1e-3, 600)
    assert (bottom.name, bottom.peak_lr, bottom.total_steps) == ("warmup_exponential", 5e-4, 550)
    assert config.gpt_train.optim.groups[0].unfreeze_step == 50
    assert bottom.decay_rate ** (550 - 20) == pytest.approx(1e-5 / 5e-4, rel=1e-9)


def test_steps_to_target_uses_the_trailing_mean(ablation):
    curve = [(10, 5.0), (20, 1.0), (30, 3.0), (40, 1.0)]
    np.testing.assert_allclose(ablation.trailing_mean([5.0, 1.0, 3.0, 1.0], 2), [5.0, 3.0, 2.0, 2.0])
    assert ablation.steps_to_target(curve, 2.0, 2) == 30
    assert ablation.steps_to_target(curve, 1.0, 1) == 20
    assert ablation.steps_to_target(curve, 0.5, 2) is None


@pytest.mark.bench
def test_few_step_synthetic_ablation_writes_summary_and_plot(ablation, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--synthetic", "--schedules", "constant", "warmup_step", "--sovits-steps", "4", "--gpt-steps", "4", "--gpt-seeds", "1", "2"]
    argv += ["--sovits-eval-every", "2", "--gpt-eval-every", "2", "--checkpoint-every", "2", "--log-every", "2", "--smooth", "1"]
    argv += ["--workdir", str(tmp_path / "runs"), "--out", str(out)]
    for override in SMALL_SOVITS + SMALL_GPT + SHORT_WARMUP:
        argv += ["--set", override]
    assert ablation.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "lr_ablation.png").stat().st_size > 10_000
    assert summary["command"].startswith("PYTHONPATH=. python benchmarks/lr_ablation.py --synthetic")
    sovits, gpt = summary["stages"]["sovits"], summary["stages"]["gpt"]
    assert sovits["seeds"] == [1234] and gpt["seeds"] == [1, 2]
    seeded = sovits["by_seed"]["1234"]
    assert list(seeded["runs"]) == ["constant", "warmup_step"]
    for run in seeded["runs"].values():
        assert [s for s, _ in run["val"]] == [2, 4]
        assert [m["step"] for m in run["mcd"]] == [2, 4]
        assert all(m["mcd_db"] > 0 and math.isfinite(m["mcd_db"]) for m in run["mcd"])
        assert len(run["mcd"][0]["per_utterance"]) == 2  # the synthetic eval batch's rows
        assert run["mcd"][0]["energy_r_per_utterance"].keys() == run["mcd"][0]["per_utterance"].keys()
        assert all(-1.0 <= r <= 1.0 for m in run["mcd"] for r in m["energy_r_per_utterance"].values() if not math.isnan(r))
    constant = seeded["runs"]["constant"]
    assert seeded["comparison"]["target"] == constant["val"][-1][1]  # --smooth 1: the final value itself
    assert seeded["comparison"]["steps_to_target"]["constant"] <= 4
    assert {lr for _, lr in constant["lr"]} == {2e-3}  # configs/tiny.yaml's generator peak, held
    assert "sovits_train.seed=1234" in constant["overrides"]
    gpt_finals = [gpt["by_seed"][seed]["runs"]["warmup_step"]["smoothed_final_val"] for seed in ("1", "2")]
    assert gpt["aggregate"]["warmup_step"]["smoothed_final_val"]["mean"] == pytest.approx(np.mean(gpt_finals), rel=1e-5)
    assert gpt["aggregate"]["constant"]["smoothed_vs_constant_pct"] == [0.0, 0.0]
    printed = capsys.readouterr().out
    assert "| constant |" in printed and "mean [min, max] over seeds 1, 2" in printed


def test_a_run_stopped_early_is_an_error_and_not_recorded(ablation, repo_root, tmp_path, monkeypatch):
    """A SIGTERM'd run returns normally from the loop; it must not be kept as a finished run."""
    import types

    from gptsovits_jax.train import stages

    config = load_config(repo_root / "configs" / "tiny.yaml", ["sovits_train.steps=40"])

    def trained_to(step):
        def train_stage(stage, config, run_dir, *args, **kwargs):
            run_dir.mkdir(parents=True, exist_ok=True)
            return types.SimpleNamespace(state=types.SimpleNamespace(step=np.int32(step)), steps_per_second=1.0)

        return train_stage

    monkeypatch.setattr(stages, "data_sources", lambda *args, **kwargs: ([], []))
    monkeypatch.setattr(stages, "train_stage", trained_to(17))
    with pytest.raises(RuntimeError, match="stopped at step 17 of 40"):
        ablation.train_run("sovits", config, tmp_path / "run", ["x=1"], True, None, fresh=False)
    assert not (tmp_path / "run" / ablation.RUN_RECORD).exists()

    monkeypatch.setattr(stages, "train_stage", trained_to(40))
    record = ablation.train_run("sovits", config, tmp_path / "run", ["x=1"], True, None, fresh=False)
    assert record["final_step"] == 40
    monkeypatch.setattr(stages, "train_stage", lambda *args, **kwargs: pytest.fail("a finished run is trained again"))
    assert ablation.train_run("sovits", config, tmp_path / "run", ["x=1"], True, None, fresh=False) == record
