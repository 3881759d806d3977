"""Runs a few train steps of each stage on a given mesh and saves losses and parameters (used by test_parallel.py).

Invoked in a subprocess, because the number of (simulated) devices and the distributed
runtime are fixed when JAX starts::

    python parallel_worker.py devices OUT_DIR                     # 1 and 8 devices of one process
    python parallel_worker.py distributed OUT_DIR PORT PROCESS_ID # one of two processes (GPT stage)

and the training entry itself (``run_training``, synthetic data, both stages into
``OUT_DIR/gpt`` and ``OUT_DIR/sovits``; evaluations, regular and final saves coincide)::

    python parallel_worker.py loop OUT_DIR whole                        # one process (on two devices in the test), all LOOP_STEPS
    python parallel_worker.py loop OUT_DIR first PORT PROCESS_ID        # two processes, stop after FIRST_STEPS
    python parallel_worker.py loop OUT_DIR resume PORT PROCESS_ID       # two processes, resume to LOOP_STEPS
    python parallel_worker.py endless OUT_DIR PORT PROCESS_ID           # two processes, GPT until a signal
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gptsovits_jax.config import load_config
from gptsovits_jax.optim import param_path
from gptsovits_jax.train.loop import split_keys
from gptsovits_jax.train.parallel import global_batch_from_local, initialize_distributed, make_mesh, process_rows
from gptsovits_jax.train.stages import build_stage, run_training
from gptsovits_jax.train.synthetic import synthetic_gpt_batch, synthetic_sovits_batch
from tests.conftest import SMALL_GPT, SMALL_SOVITS

REPO = Path(__file__).resolve().parents[2]
GLOBAL_BATCH = 8
STEPS = 3
LOOP_STEPS = 6
FIRST_STEPS = 4
# Every second step evaluates (and may save into best/) and saves into checkpoints/; the last
# step of each run is also the final save.
LOOP = [
    *SMALL_SOVITS,
    *SMALL_GPT,
    f"sovits_train.steps={LOOP_STEPS}",
    "sovits_train.log_every=1",
    "sovits_train.eval_every=2",
    "sovits_train.checkpoint_every=2",
    "sovits_train.optim_g.schedule.warmup_steps=1",
    "sovits_train.optim_d.schedule.warmup_steps=1",
    f"gpt_train.steps={LOOP_STEPS}",
    "gpt_train.log_every=1",
    "gpt_train.eval_every=2",
    "gpt_train.checkpoint_every=2",
    "gpt_train.optim.schedule.warmup_steps=1",
]


def stage_config(stage: str, extra: list[str]):
    overrides = [*SMALL_SOVITS, f"sovits_train.batch_size={GLOBAL_BATCH}", f"gpt_train.batch_size={GLOBAL_BATCH}", *extra]
    return load_config(REPO / "configs/tiny.yaml", overrides)


def batches(stage: str, config):
    if stage == "sovits":
        return [synthetic_sovits_batch(config, GLOBAL_BATCH, 24, 12, seed=s) for s in range(STEPS)]
    return [synthetic_gpt_batch(config, GLOBAL_BATCH, 16, 24, seed=s) for s in range(STEPS)]


def run(stage: str, config, out: Path) -> None:
    mesh = make_mesh(config.parallel.num_devices)
    loop, state = build_stage(stage, config, mesh)
    rows = process_rows(GLOBAL_BATCH)
    losses = []
    for host_batch in batches(stage, config):
        arrays, _ = split_keys({k: v[rows] for k, v in host_batch.items()})
        state, metrics = loop.train_step(state, global_batch_from_local(arrays, mesh))
        losses.append({k: float(v) for k, v in jax.device_get(metrics).items() if k.startswith("loss")})
    params = state.params_g if stage == "sovits" else state.params
    if jax.process_index() == 0:
        flat = {param_path(p): np.asarray(jax.device_get(x)) for p, x in jax.tree_util.tree_leaves_with_path(params)}
        np.savez(out / f"{stage}_params.npz", **flat)
        (out / f"{stage}_losses.json").write_text(json.dumps(losses))


def two_processes(port: str, pid: str) -> list[str]:
    return [
        "parallel.distributed=true",
        f"parallel.coordinator_address=127.0.0.1:{port}",
        "parallel.num_processes=2",
        f"parallel.process_id={pid}",
    ]


def loop(out: Path, phase: str, extra: list[str]) -> None:
    config = load_config(REPO / "configs/tiny.yaml", [*LOOP, *extra])
    for stage in ("gpt", "sovits"):
        stop_after = FIRST_STEPS if phase == "first" else None
        run_training(stage, config, out / stage, resume=phase == "resume", synthetic=True, progress=False, stop_after=stop_after)


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "loop":
        phase = sys.argv[3]
        loop(out, phase, [] if phase == "whole" else two_processes(*sys.argv[4:6]))
        return
    if mode == "endless":
        config = load_config(REPO / "configs/tiny.yaml", [*LOOP, "gpt_train.steps=100000", *two_processes(*sys.argv[3:5])])
        run_training("gpt", config, out, synthetic=True, progress=False)
        return
    if mode == "devices":
        for stage in ("gpt", "sovits"):
            for n in (1, 8):
                target = out / f"devices{n}"
                target.mkdir(parents=True, exist_ok=True)
                run(stage, stage_config(stage, [f"parallel.num_devices={n}"]), target)
    elif mode == "distributed":
        port, pid = sys.argv[3], int(sys.argv[4])
        config = stage_config("gpt", two_processes(port, pid))
        initialize_distributed(config.parallel)
        assert jax.process_count() == 2 and jax.device_count() == 2, (jax.process_count(), jax.devices())
        out.mkdir(parents=True, exist_ok=True)
        run("gpt", config, out)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
