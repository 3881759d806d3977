"""Compile and run seconds of the parameter initialisation at a config's sizes, per PRNG and XLA options.

    PYTHONPATH=. python benchmarks/init_compile.py [--config configs/v2.yaml] [--models gpt sovits]
        [--variants rbg threefry threefry_cheap] [--rounds 3] [--out benchmarks/results/init_compile_cpu.jsonl]

Each measurement is a fresh process with the persistent compilation cache off, timing
``jax.jit(init).lower``, ``.compile`` and the first call (until the parameters are ready) of
``init_gpt_params`` / ``init_sovits_variables`` on one device. Variants, alternated round by
round so a shared machine's load falls on all of them alike:

- ``rbg``: an ``unsafe_rbg`` key (XLA's RngBitGenerator; its values depend on the partitioning);
- ``threefry``: a ``threefry2x32`` key (partitionable threefry: the same values on any mesh);
- ``threefry_cheap``: the same key compiled with ``xla_llvm_disable_expensive_passes`` (an attempt
  to cut threefry's compile time; it did not, and training does not use it).

Training initialises with threefry (:func:`gptsovits_jax.train.common.init_key`).

Each record holds the one-minute load average before and after the measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "rbg": ("unsafe_rbg", None),
    "threefry": ("threefry2x32", None),
    "threefry_cheap": ("threefry2x32", {"xla_llvm_disable_expensive_passes": True}),
}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Lower, compile and run one model's initialisation as ``spec`` says; seconds of each."""
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    import jax

    from gptsovits_jax.config import load_config

    load_before = os.getloadavg()[0]
    config = load_config(spec["config"], [])
    if spec["model"] == "gpt":
        from gptsovits_jax.train.gpt_step import init_gpt_params as init
    else:
        from gptsovits_jax.train.sovits_step import init_sovits_variables as init
    impl, options = VARIANTS[spec["variant"]]
    key = jax.random.key(0, impl=impl)
    started = time.perf_counter()
    lowered = jax.jit(init, static_argnums=0).lower(config, key)
    lowered_at = time.perf_counter()
    compiled = lowered.compile(compiler_options=options)
    compiled_at = time.perf_counter()
    jax.block_until_ready(compiled(key))
    done = time.perf_counter()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "benchmark": "init_compile",
        "model": spec["model"],
        "variant": spec["variant"],
        "impl": impl,
        "compiler_options": options,
        "config": spec["config"],
        "lower_s": round(lowered_at - started, 2),
        "compile_s": round(compiled_at - lowered_at, 2),
        "run_s": round(done - compiled_at, 2),
        "total_s": round(done - started, 2),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "jax_version": jax.__version__,
        "cpu_count": os.cpu_count(),
    }


def _run_isolated(spec: dict[str, Any]) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (spec,))


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, variant): medians of the compile, run and total seconds and of the loads."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["model"], r["variant"]), []).append(r)
    return [
        {
            "model": model,
            "variant": variant,
            "n": len(rows),
            **{
                f"median_{k}": statistics.median(r[k] for r in rows) for k in ("compile_s", "run_s", "total_s", "load_before", "load_after")
            },
        }
        for (model, variant), rows in sorted(groups.items())
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "v2.yaml"))
    parser.add_argument("--models", nargs="+", default=["gpt", "sovits"], choices=["gpt", "sovits"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="append the JSON records to this file")
    args = parser.parse_args(argv)

    records = []
    for model in args.models:
        for _ in range(args.rounds):
            for variant in args.variants:
                record = _run_isolated({"model": model, "variant": variant, "config": args.config})
                records.append(record)
                print(json.dumps(record), flush=True)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(record) + "\n")
    for row in summarise(records):
        print(json.dumps({"benchmark": "init_compile_summary", **row}), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
