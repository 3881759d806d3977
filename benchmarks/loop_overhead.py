"""Time the training loop spends per step outside the step itself.

    PYTHONPATH=. python benchmarks/loop_overhead.py [--config configs/tiny.yaml] [--steps 200] [--repeats 3]
        [--out benchmarks/results/loop_overhead_cpu.jsonl]

Runs the tiny GPT stage on a fixed synthetic batch two ways in one process, alternated
``--repeats`` times: the bare jitted train step in a Python loop (dispatch only, one block at
the end), and ``train_stage`` (the real loop: batches put on the mesh, metrics, progress,
checkpoints at the end) with ``log_every`` = ``--log-every``, once for ``--steps`` and once for
twice as many: the difference of the two is the per-step cost of the loop without its fixed
costs (state, compile-cache loads, the final checkpoint). The loop's overhead per step is the difference of the two
per-step wall times; a loop that waits for every step's result pays the device's step time
minus nothing it could overlap, one that does not pays only its own host work. Run it with
another checkout first on ``PYTHONPATH`` to compare code versions side by side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="", help="a name for the code version measured (e.g. a commit)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import jax

    import gptsovits_jax
    from gptsovits_jax.config import load_config
    from gptsovits_jax.train.gpt_step import create_gpt_state, jit_gpt_train_step
    from gptsovits_jax.train.stages import train_stage
    from gptsovits_jax.train.synthetic import RepeatingBatches, synthetic_gpt_batch

    def config_of(steps: int):
        overrides = [
            f"gpt_train.steps={steps}",
            f"gpt_train.log_every={args.log_every}",
            f"gpt_train.eval_every={10 * steps}",
            f"gpt_train.checkpoint_every={10 * steps}",
        ]
        return load_config(args.config, overrides)

    config = config_of(args.steps)
    host_batch = synthetic_gpt_batch(config, config.gpt_train.batch_size, 32, 64, seed=0)
    device_batch = jax.device_put({k: v for k, v in host_batch.items() if k != "keys"})

    def bare() -> float:
        state, setup = create_gpt_state(config)
        step = jit_gpt_train_step(setup)
        state, _ = step(state, device_batch, jax.random.fold_in(state.rng, 0))
        jax.block_until_ready(state)
        started = time.perf_counter()
        for s in range(1, args.steps + 1):
            state, _ = step(state, device_batch, jax.random.fold_in(state.rng, s))
        jax.block_until_ready(state)
        return (time.perf_counter() - started) / args.steps

    def loop_seconds(steps: int) -> float:
        with tempfile.TemporaryDirectory() as workdir:
            started = time.perf_counter()
            result = train_stage("gpt", config_of(steps), workdir, RepeatingBatches([host_batch]), [], progress=False)
            jax.block_until_ready(result.state)
            return time.perf_counter() - started

    def loop() -> float:
        return (loop_seconds(2 * args.steps) - loop_seconds(args.steps)) / args.steps

    loop_seconds(args.log_every)  # compiles (and warms the persistent cache for the runs below)
    bare()
    rows = []
    for _ in range(args.repeats):
        rows.append((bare(), loop()))
    bare_s = statistics.median(b for b, _ in rows)
    loop_s = statistics.median(lp for _, lp in rows)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(gptsovits_jax.__file__).parents[1]
    )
    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "benchmark": "loop_overhead",
        "label": args.label,
        "code": commit.stdout.strip(),
        "config": args.config,
        "steps": args.steps,
        "log_every": args.log_every,
        "bare_step_s": [round(b, 5) for b, _ in rows],
        "loop_step_s": [round(lp, 5) for _, lp in rows],
        "overhead_per_step_ms": round(1000 * (loop_s - bare_s), 2),
        "load_avg": list(os.getloadavg()),
    }
    print(json.dumps(record))
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
