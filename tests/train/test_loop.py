"""The training loop: exact resume in a fresh process, signals, NaN batches, checkpoints and logs."""

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gptsovits_jax.config import load_config
from gptsovits_jax.data.preprocess import preprocess
from gptsovits_jax.data.semantic import extract_semantic
from gptsovits_jax.train.checkpoint import Checkpointer, CheckpointMismatchError
from gptsovits_jax.train.gpt_step import create_gpt_state
from gptsovits_jax.train.loop import TrainingDivergedError
from gptsovits_jax.train.metrics_log import read_metrics
from gptsovits_jax.train.stages import train_stage
from gptsovits_jax.train.synthetic import RepeatingBatches, synthetic_gpt_batch
from tests.conftest import SMALL_SOVITS

REPO = Path(__file__).resolve().parents[2]
N = 3


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
    return env


def cli(*args: str, check: bool = True, timeout: int = 1500) -> subprocess.CompletedProcess:
    """``gptsovits-jax ...`` in a fresh process."""
    cmd = [sys.executable, "-m", "gptsovits_jax.cli", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout, cwd=REPO)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    """The demo corpus preprocessed for the tiny config, with stand-in semantic tokens for the GPT stage."""
    cache = tmp_path_factory.mktemp("cache")
    config = load_config(REPO / "configs/tiny.yaml", [f"data.cache_dir={cache}"])
    preprocess(config, num_workers=1, progress=False)
    codes = config.sovits.codebook_size

    def encode(ssl):  # a fixed frame-local code: the strongest of the first channels of each 25 Hz frame
        pairs = np.asarray(ssl)[:, : ssl.shape[1] // 2 * 2].reshape(ssl.shape[0], -1, 2, ssl.shape[2]).mean(2)
        return np.argmax(pairs[..., :codes], axis=-1)

    extract_semantic(cache, encode, batch_size=8, progress=False)
    return cache


def overrides(stage: str, cache: Path, steps: int) -> list[str]:
    common = [f"data.cache_dir={cache}", "data.bucket_boundaries=[32, 160]"]
    if stage == "gpt":
        return [
            *common,
            f"gpt_train.steps={steps}",
            "gpt_train.log_every=1",
            "gpt_train.eval_every=2",
            "gpt_train.checkpoint_every=2",
            "gpt_train.optim.schedule.warmup_steps=1",
        ]
    return [
        *common,
        *SMALL_SOVITS,
        f"sovits_train.steps={steps}",
        "sovits_train.log_every=1",
        "sovits_train.eval_every=2",
        "sovits_train.checkpoint_every=2",
        "sovits_train.optim_g.schedule.warmup_steps=1",
        "sovits_train.optim_d.schedule.warmup_steps=1",
    ]


def _set(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def losses(workdir: Path, prefix: str) -> list[tuple[int, dict[str, float]]]:
    """``(step, {metric: value})`` of every logged training step (evaluation records have no ``prefix`` metric)."""
    records = read_metrics(workdir / "metrics.jsonl")
    return [(r["step"], {k: v for k, v in r.items() if k.startswith(prefix)}) for r in records if any(k.startswith(prefix) for k in r)]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["gpt", "sovits"])
def test_resume_in_a_fresh_process_matches_the_uninterrupted_run(demo_cache, tmp_path, stage):
    args = _set(overrides(stage, demo_cache, 2 * N))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cli(f"train-{stage}", "--config", "configs/tiny.yaml", "--workdir", str(straight), "--no-progress", *args)
    first = cli(
        f"train-{stage}", "--config", "configs/tiny.yaml", "--workdir", str(resumed), "--no-progress", "--stop-after", str(N), *args
    )
    assert f"at step {N}" in first.stdout
    second = cli(f"train-{stage}", "--config", "configs/tiny.yaml", "--workdir", str(resumed), "--no-progress", "--resume", *args)
    assert f"resuming {stage}" in second.stdout and f"at step {2 * N}" in second.stdout
    prefix = "loss/"
    a, b = losses(straight, prefix), losses(resumed, prefix)
    assert [s for s, _ in a] == list(range(1, 2 * N + 1))
    assert [s for s, _ in b] == [s for s, _ in a]
    for (step, la), (_, lb) in zip(a, b):
        for name, value in la.items():
            assert lb[name] == pytest.approx(value, rel=1e-6, abs=1e-7), f"step {step} {name}"
    # The resumed process loads every shape of its step from the persistent cache (the first processes wrote them).
    last = [r for r in read_metrics(resumed / "metrics.jsonl") if "compile/train_step" in r][-1]
    assert 1 <= last["compile/train_step"] == last["compile/train_step_from_cache"] <= 2


def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path):
    workdir = tmp_path / "run"
    args = ["train-gpt", "--config", "configs/tiny.yaml", "--workdir", str(workdir), "--synthetic", "--no-progress"]
    args += _set(["gpt_train.steps=100000", "gpt_train.log_every=1", "gpt_train.eval_every=100000", "gpt_train.checkpoint_every=100000"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptsovits_jax.cli", *args], env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "stopped by SIGTERM" in stdout + stderr
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and 3 <= saved[-1] < 100000
    out = cli(*args, "--resume", "--stop-after", "2")
    assert f"resuming gpt from {workdir / 'checkpoints' / str(saved[-1])}" in out.stdout
    steps = [r["step"] for r in read_metrics(metrics) if "loss/ce" in r]
    assert steps[-2:] == [saved[-1] + 1, saved[-1] + 2]


@pytest.fixture(scope="module")
def gpt_config():
    return load_config(
        REPO / "configs/tiny.yaml",
        [
            "gpt_train.batch_size=4",
            "gpt_train.steps=6",
            "gpt_train.optim.schedule.warmup_steps=1",
            "gpt_train.log_every=1",
            "gpt_train.eval_every=3",
            "gpt_train.checkpoint_every=3",
            "gpt_train.keep_checkpoints=1",
        ],
    )


def _nan_batch(config, seed):
    batch = synthetic_gpt_batch(config, 4, 16, 24, seed=seed)
    batch["keys"] = np.asarray([f"broken-{seed}-{i}" for i in range(4)])
    batch["bert"] = np.full((4, 16, config.gpt.bert_dim), np.nan, np.float32)
    return batch


def _good_batch(config, seed):
    batch = synthetic_gpt_batch(config, 4, 16, 24, seed=seed)
    batch["bert"] = np.zeros((4, 16, config.gpt.bert_dim), np.float32)
    return batch


def test_nan_batches_are_skipped_counted_and_named(gpt_config, tmp_path, caplog):
    batches = RepeatingBatches([_good_batch(gpt_config, 0), _nan_batch(gpt_config, 1), _good_batch(gpt_config, 2)])
    evals = [_good_batch(gpt_config, 9)]
    with caplog.at_level(logging.WARNING):
        result = train_stage("gpt", gpt_config, tmp_path, batches, evals, progress=False)
    assert int(result.state.step) == 6
    records = read_metrics(tmp_path / "metrics.jsonl")
    skipped = [r["skipped/gpt"] for r in records if "skipped/gpt" in r]
    assert skipped == [0, 1, 1, 1, 2, 2]
    assert "broken-1-0" in caplog.text and "updates were skipped" in caplog.text
    assert np.isfinite(result.last_eval["val/ce"])


def test_training_stops_with_a_clear_error_when_every_batch_is_nan(gpt_config, tmp_path):
    config = dataclasses.replace(gpt_config, gpt_train=dataclasses.replace(gpt_config.gpt_train, max_nonfinite_steps=3))
    batches = RepeatingBatches([_nan_batch(config, 1)])
    with pytest.raises(TrainingDivergedError, match=r"3 consecutive steps with non-finite loss/ce .*broken-1-0"):
        train_stage("gpt", config, tmp_path, batches, [], progress=False)
    assert any(p.name.isdigit() for p in (tmp_path / "checkpoints").iterdir())


def test_logs_checkpoints_and_best_are_written(gpt_config, tmp_path):
    batches = RepeatingBatches([_good_batch(gpt_config, s) for s in range(3)])
    train_stage("gpt", gpt_config, tmp_path, batches, [_good_batch(gpt_config, 9)], progress=False)
    records = read_metrics(tmp_path / "metrics.jsonl")
    train_records = [r for r in records if "loss/ce" in r]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4, 5, 6]
    assert all({"lr/gpt", "lr/gpt_frozen_bottom", "acc/top3", "grad_norm/gpt"} <= r.keys() for r in train_records)
    assert [r["step"] for r in records if "val/ce" in r] == [3, 6]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()] == ["6"]
    assert len([p for p in (tmp_path / "best").iterdir() if p.name.isdigit()]) == 1


@pytest.fixture
def device_reads(monkeypatch):
    """Records reads of device arrays inside the loop's no-transfer regions.

    JAX's device-to-host transfer guard does not fire on CPU (whose arrays are host memory), so the
    read paths of ``jax.Array`` are counted instead: ``jax.device_get``, ``float``/``int``/``bool``,
    ``.item()``, ``.tolist()``, ``block_until_ready``. (A bare ``np.asarray`` reads CPU arrays through
    the buffer protocol, which only the real guard on an accelerator sees.) The loop's implicit
    host-to-device guard is JAX's own and stays active.
    """
    from jax._src.array import ArrayImpl

    from gptsovits_jax.train import loop as loop_lib

    reads: list[str] = []
    guarded = [False]
    real_guard = loop_lib._no_transfers

    @contextlib.contextmanager
    def recording_guard(enabled):
        with real_guard(enabled):
            guarded[0] = enabled
            try:
                yield
            finally:
                guarded[0] = False

    def record(name):
        real = getattr(ArrayImpl, name)
        if isinstance(real, property):
            monkeypatch.setattr(ArrayImpl, name, property(lambda self: (guarded[0] and reads.append(name), real.fget(self))[1]))
        else:
            monkeypatch.setattr(ArrayImpl, name, lambda self, *a, **k: (guarded[0] and reads.append(name), real(self, *a, **k))[1])

    for name in ("_value", "item", "block_until_ready", "copy_to_host_async"):
        record(name)
    monkeypatch.setattr(loop_lib, "_no_transfers", recording_guard)
    return reads, recording_guard


def test_the_read_recorder_sees_reads_in_a_guarded_region(device_reads):
    import jax
    import jax.numpy as jnp

    reads, guard = device_reads
    x, y, z = jnp.ones(3) * 2, jnp.ones(3) * 3, jnp.ones(()) * 4
    float(x[0])
    assert reads == []
    with guard(True):
        jax.device_get(y)
        float(z)
        x.block_until_ready()
    assert reads == ["copy_to_host_async", "_value", "_value", "block_until_ready"]
    with guard(True), pytest.raises(Exception, match="Disallowed host-to-device transfer"):
        jnp.add(x, np.ones(3, np.float32))


def test_no_transfer_from_the_devices_between_sync_points(gpt_config, tmp_path, device_reads):
    """The loop reads nothing back between log/eval/checkpoint steps and transfers nothing implicitly."""
    reads, _ = device_reads
    config = dataclasses.replace(
        gpt_config, gpt_train=dataclasses.replace(gpt_config.gpt_train, log_every=8, eval_every=8, checkpoint_every=8, steps=8)
    )
    batches = RepeatingBatches([_good_batch(config, 0), _nan_batch(config, 1), _good_batch(config, 2)])
    result = train_stage("gpt", config, tmp_path, batches, [_good_batch(config, 9)], progress=False, guard_transfers=True)
    assert reads == [] and int(result.state.step) == 8
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss/ce" in r]
    assert [r["step"] for r in records] == [8] and records[-1]["skipped/gpt"] == 3
    # The step compiled once; its compile shows in the metrics.
    assert records[-1]["compile/train_step"] == 1 and records[-1]["compile/seconds"] > 0


def test_nonfinite_steps_between_log_steps_are_reported_as_a_range(gpt_config, tmp_path, caplog):
    config = dataclasses.replace(
        gpt_config, gpt_train=dataclasses.replace(gpt_config.gpt_train, log_every=6, eval_every=6, max_nonfinite_steps=3)
    )
    batches = RepeatingBatches([_good_batch(config, 0), _nan_batch(config, 2), _nan_batch(config, 2), _nan_batch(config, 1)])
    with caplog.at_level(logging.WARNING), pytest.raises(TrainingDivergedError, match=r"3 consecutive steps .*steps 2-4.*broken-1-0"):
        train_stage("gpt", config, tmp_path, batches, [], progress=False)


def test_checkpoint_from_another_config_names_the_shapes(gpt_config, tmp_path):
    state, _ = create_gpt_state(gpt_config)
    saver = Checkpointer(tmp_path, gpt_config, "gpt", asynchronous=False)
    saver.save(1, state, {"position": 1})
    saver.close()
    other = load_config(REPO / "configs/tiny.yaml", ["gpt.hidden_dim=32", "gpt.num_heads=2"])
    other_state, _ = create_gpt_state(other)
    with pytest.raises(CheckpointMismatchError) as err:
        Checkpointer(tmp_path, other, "gpt").restore(other_state)
    message = str(err.value)
    assert "params/ar_text_embedding/embedding: checkpoint [732, 64] vs config [732, 32]" in message
    assert "params/bert_proj/kernel: checkpoint [1024, 64] vs config [1024, 32]" in message
    with pytest.raises(CheckpointMismatchError, match="is a 'gpt' checkpoint, not 'sovits'"):
        Checkpointer(tmp_path, gpt_config, "sovits").restore(state)


def test_checkpoint_with_another_optimizer_layout_says_so(gpt_config, tmp_path):
    per_layer = load_config(REPO / "configs/tiny.yaml", ["gpt_train.optim.stack_layers=false"])
    state, _ = create_gpt_state(per_layer)
    saver = Checkpointer(tmp_path, per_layer, "gpt", asynchronous=False)
    saver.save(1, state, {"position": 1})
    saver.close()
    stacked_state, _ = create_gpt_state(gpt_config)
    with pytest.raises(CheckpointMismatchError, match=r"Only the optimizer state differs.*optim\.stack_layers=false") as err:
        Checkpointer(tmp_path, gpt_config, "gpt").restore(stacked_state)
    assert "params/" not in str(err.value)
