"""Wall time and peak host memory of a training command under each host allocator: jemalloc (decay off) and the system's.

    PYTHONPATH=. python benchmarks/train_allocator.py [--config configs/tiny.yaml] [--stage sovits] [--steps 150] \\
        [--pairs 2] [--out benchmarks/results/train_allocator_cpu.jsonl]

Every run is a fresh ``gptsovits-jax --verbose --allocator A train-<stage> --config C --workdir <new dir>
--stop-after N`` process. A first run (system allocator, marked ``"warmup": true``) fills the persistent
compilation cache, evaluation steps included, so that the timed runs all load the same compiled steps. The timed runs
then alternate system, jemalloc, jemalloc, system, ... (``--pairs`` of each), so a machine whose speed drifts does not
favour one side. Each run's record holds the allocator the process logged (``host allocator: ...``, read from its
memory maps), its wall time, its peak RSS (``os.wait4``), the steps/s it printed, its last logged loss (the allocator
does not change the numbers, so it is the same in every run) and the load average. A last record (``"summary": true``)
gives the median wall time and peak RSS per allocator; a table goes to stderr.

The SoVITS stage trains on the demo corpus (preprocessed first, a no-op when cached); ``--synthetic`` trains on a
fixed synthetic batch instead, which the GPT stage needs (it has no semantic tokens without a trained SoVITS).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gptsovits_jax.allocator import find_jemalloc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fresh_process import child_env, run_fresh
from step_throughput import emit_record

REPO = Path(__file__).resolve().parents[1]
MAIN_LOSS = {"sovits": "loss/g/total", "gpt": "loss/ce"}


def _cli(args: argparse.Namespace, *words: str) -> list[str]:
    """``python -m gptsovits_jax.cli <words> --config C --set ...`` (the config and overrides of this benchmark)."""
    command = [sys.executable, "-m", "gptsovits_jax.cli", *words, "--config", args.config]
    for override in args.overrides:
        command += ["--set", override]
    return command


def _command(args: argparse.Namespace, allocator: str, workdir: Path) -> list[str]:
    command = _cli(args, "--verbose", "--allocator", allocator, f"train-{args.stage}")
    command += ["--workdir", str(workdir), "--stop-after", str(args.steps), "--no-progress"]
    if args.synthetic:
        command.append("--synthetic")
    return command


def run_training(args: argparse.Namespace, allocator: str, workdir: Path) -> dict[str, Any]:
    """One training process with ``allocator``: its record (wall time, peak RSS, logged allocator, last loss)."""
    command = _command(args, allocator, workdir)
    run = run_fresh(command)
    logged = re.search(r"host allocator: (\w+)", run.output)
    rate = re.search(r"\(([0-9.]+) steps/s\)", run.output)
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    last = next(m for m in reversed(metrics) if MAIN_LOSS[args.stage] in m)
    return {
        "allocator": allocator,
        "allocator_logged": logged.group(1) if logged else None,
        "wall_s": run.wall_s,
        "peak_rss_mb": run.peak_rss_mb,
        "steps_per_s_printed": float(rate.group(1)) if rate else None,
        "last_step": last["step"],
        "last_loss": {MAIN_LOSS[args.stage]: last[MAIN_LOSS[args.stage]]},
        "load_avg_start": list(run.load_avg_start),
        "load_avg_end": list(run.load_avg_end),
        "command": shlex.join(["gptsovits-jax", *command[3:]]).replace(str(workdir), "<new dir>"),
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Median wall time and peak RSS per allocator over the timed (non-warm-up) runs."""
    summary: dict[str, Any] = {"summary": True}
    for allocator in ("system", "jemalloc"):
        runs = [r for r in records if r["allocator"] == allocator and not r["warmup"]]
        summary[allocator] = {
            "runs": len(runs),
            "median_wall_s": statistics.median(r["wall_s"] for r in runs),
            "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        }
    summary["wall_change"] = summary["jemalloc"]["median_wall_s"] / summary["system"]["median_wall_s"] - 1
    summary["same_last_loss"] = len({json.dumps(r["last_loss"]) for r in records}) == 1
    return summary


def _table(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [f"{'run':>3} {'allocator':>9} {'logged':>8} {'wall s':>7} {'steps/s':>7} {'RSS MB':>7} {'load':>5}"]
    for r in records:
        name = "warm" if r["warmup"] else str(r["run"])
        rate = "" if r["steps_per_s_printed"] is None else f"{r['steps_per_s_printed']:.2f}"
        lines.append(
            f"{name:>3} {r['allocator']:>9} {r['allocator_logged'] or '?':>8} {r['wall_s']:7.1f} {rate:>7} "
            f"{r['peak_rss_mb']:7.0f} {r['load_avg_start'][0]:5.2f}"
        )
    lines.append(
        f"median wall: system {summary['system']['median_wall_s']:.1f} s, jemalloc {summary['jemalloc']['median_wall_s']:.1f} s "
        f"({summary['wall_change']:+.1%}); same last loss in every run: {summary['same_last_loss']}"
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--stage", choices=tuple(MAIN_LOSS), default="sovits")
    parser.add_argument("--steps", type=int, default=150, help="training steps per run (--stop-after)")
    parser.add_argument("--pairs", type=int, default=2, help="timed runs per allocator, ordered system, jemalloc, jemalloc, system, ...")
    parser.add_argument("--synthetic", action="store_true", help="train on a fixed synthetic batch (needed for --stage gpt)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--workdir", help="where the runs' directories go (default: a temporary directory, removed)")
    parser.add_argument("--out", type=Path, help="append one JSON line per run (and the summary) to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 1 or args.pairs < 1:
        parser.error("--steps and --pairs must be at least 1")
    if args.stage == "gpt" and not args.synthetic:
        parser.error("--stage gpt needs --synthetic (the GPT trains on semantic tokens of a trained SoVITS)")
    if find_jemalloc() is None:
        parser.error("jemalloc is not installed (Debian/Ubuntu: apt-get install libjemalloc2): nothing to compare")
    if not args.synthetic:
        preprocess = [*_cli(args, "preprocess"), "--no-progress"]
        result = subprocess.run(preprocess, cwd=REPO, env=child_env(), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{shlex.join(preprocess)} exited with {result.returncode}:\n{result.stdout}{result.stderr}")
    order = ["system"] + [a for i in range(args.pairs) for a in (("system", "jemalloc") if i % 2 == 0 else ("jemalloc", "system"))]
    common = {
        "benchmark": "train_allocator",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": args.config,
        "stage": args.stage,
        "steps": args.steps,
        "synthetic": args.synthetic,
        "overrides": args.overrides,
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "jax_version": importlib.metadata.version("jax"),
            "python_version": platform.python_version(),
        },
    }
    records = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as root:
        for run, allocator in enumerate(order):
            print(f"[train_allocator] run {run}: {allocator}", file=sys.stderr, flush=True)
            record = {**common, "run": run, "warmup": run == 0, **run_training(args, allocator, Path(root) / f"run{run}")}
            records.append(record)
            emit_record(record, args.out)
    summary = {**common, **summarize(records)}
    emit_record(summary, args.out)
    print(_table(records, summary), file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
