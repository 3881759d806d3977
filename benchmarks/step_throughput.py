"""Throughput of the compiled GPT and SoVITS train steps, with FLOP/s against the device's measured matmul peak.

    PYTHONPATH=. python benchmarks/step_throughput.py [--models gpt sovits] [--sizes tiny v2] [--steps 10]
        [--out benchmarks/results/step_throughput_cpu.jsonl]

For each (model, size) it builds the real train state and the jitted step
(``jit_gpt_train_step`` / ``jit_sovits_train_step``, state donated), compiles it ahead of
time on a synthetic batch, runs ``--warmup`` steps, then times ``--steps`` steps (each
blocked on). One JSON object per configuration goes to stdout and, with ``--out``, is
appended to a JSON-lines file; a short table follows on stderr. Every object records the
machine (backend, device kind and count, CPU count, jax version, 1-minute load average at
start), compile time, median/min step time, steps/s, samples/s, tokens/s (GPT: padded text +
semantic positions) or seconds of audio per second (SoVITS: batch x utterance seconds),
peak host RSS, peak device memory where the backend reports it, XLA's FLOP count of the
step, the achieved FLOP/s and its fraction of the f32 matmul peak measured in the same
process (best of ``--peak-repeats`` ``--peak-size``-square matmuls, before building the
step and again after the timed steps).

Each configuration runs in a fresh process (``spawn``), so compile caches, host RSS and
device memory are its own; the persistent compilation cache is off unless
``--compile-cache`` is given, so ``compile_s`` is a real compile. That process preloads
jemalloc with its decay off when it is installed (``--allocator``, default ``auto``): it
keeps XLA:CPU's per-call temporary buffer mapped between steps, where glibc maps and
page-faults it anew every step (about 1 s of the v2 GPT step on the development CPU).
The same command runs on CPU, GPU and TPU (``JAX_PLATFORMS`` picks the backend).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from gptsovits_jax.allocator import ALLOCATOR_ENV_VARS, ALLOCATORS, allocator_env, host_allocator, needs_restart
from gptsovits_jax.environment import environment

REPO = Path(__file__).resolve().parents[1]
SIZES = {"tiny": REPO / "configs" / "tiny.yaml", "v2": REPO / "configs" / "v2.yaml"}
MODELS = ("gpt", "sovits")
# Per-model defaults of the shape flags (the v2 settings; tiny uses the same shapes).
DEFAULTS = {
    "gpt": {"batch": 4, "text_len": 64, "semantic_len": 200},
    "sovits": {"batch": 2, "text_len": 64, "frames": 200},
}
# A benchmark step is one full optimizer step: gradient accumulation would apply the update every k-th call only.
BENCH_OVERRIDES = {"gpt": ["gpt_train.optim.grad_accum_steps=1"], "sovits": []}


def _display_path(path: Path | str) -> str:
    """``path`` relative to the repository when it is inside it (records do not name the machine's directories)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def machine_info(load_start: tuple[float, ...] | list[float]) -> dict[str, Any]:
    """Backend, first device's kind, device and CPU counts, processor, jax and Python versions, load average at the
    start (``load_start``) and now, ``XLA_FLAGS`` and the host allocator's environment (``LD_PRELOAD``,
    ``MALLOC_CONF``, ``GLIBC_TUNABLES`` where set): the ``machine`` field of every record."""
    import jax

    return {
        "backend": jax.default_backend(),
        "device_kind": jax.local_devices()[0].device_kind,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "jax_version": jax.__version__,
        "python_version": platform.python_version(),
        "load_avg_start": list(load_start),
        "load_avg_end": list(os.getloadavg()),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "allocator": host_allocator(),
        "allocator_env": {k: os.environ[k] for k in ALLOCATOR_ENV_VARS if k in os.environ},
    }


def emit_record(record: dict[str, Any], out: Path | None) -> None:
    """Print ``record`` as one JSON line on stdout and, when ``out`` is given, append it to that JSON-lines file."""
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(line + "\n")


# --------------------------------------------------------------------------- measurements (run in the child)


def _matmul_timer(size: int):
    """A compiled ``[size, size] @ [size, size]`` float32 matmul on fixed inputs: ``best_s(repeats)`` times it."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    fn = jax.jit(jnp.matmul)
    fn(a, b).block_until_ready()

    def best_s(repeats: int) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn(a, b).block_until_ready()
            best = min(best, time.perf_counter() - start)
        return best

    return best_s


def timed_call(fn, *args: Any) -> tuple[Any, float, int]:
    """``(fn(*args), wall seconds, minor page faults of this process)`` for one call of ``fn``.

    The faults count every page the kernel mapped in for the process during the call
    (``getrusage``), so they include other threads' and are the cost of fresh memory:
    XLA:CPU's temporary buffer faults in anew each step unless the allocator keeps it.
    """
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    return result, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def paired_fraction(flops: float, step_times: list[float], step_peaks: list[float]) -> float:
    """Median over steps of each step's FLOP/s against the peak (FLOP/s) timed right after it."""
    return statistics.median(flops / t / p for t, p in zip(step_times, step_peaks, strict=True))


def matmul_peak(size: int, repeats: int) -> dict[str, Any]:
    """Best FLOP/s of a jitted ``[size, size] @ [size, size]`` float32 matmul over ``repeats`` timed calls."""
    best = _matmul_timer(size)(repeats)
    return {"size": size, "dtype": "float32", "repeats": repeats, "best_s": best, "flops_per_s": 2.0 * size**3 / best}


def _device_memory() -> dict[str, Any] | None:
    import jax

    stats = jax.local_devices()[0].memory_stats()
    if not stats:
        return None
    keys = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
    return {k: int(stats[k]) for k in keys if k in stats}


def _flops(compiled: Any) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def _memory_analysis(compiled: Any) -> dict[str, int] | None:
    try:
        m = compiled.memory_analysis()
    except NotImplementedError:
        return None
    if m is None:
        return None
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "generated_code_size_in_bytes")
    return {f: int(getattr(m, f)) for f in fields if hasattr(m, f)}


def build_step(model: str, config: Any, shapes: dict[str, int], seed: int) -> tuple[Any, Any, dict[str, Any], dict[str, float]]:
    """``(jitted step, state, device batch, work per step)`` for one configuration."""
    import jax

    from gptsovits_jax.train import synthetic

    if model == "gpt":
        from gptsovits_jax.train.gpt_step import create_gpt_state, jit_gpt_train_step

        state, setup = create_gpt_state(config)
        step = jit_gpt_train_step(setup)
        batch = synthetic.synthetic_gpt_batch(config, shapes["batch"], shapes["text_len"], shapes["semantic_len"], seed)
        work = {"samples": shapes["batch"], "tokens": shapes["batch"] * (shapes["text_len"] + shapes["semantic_len"])}
    else:
        from gptsovits_jax.train.sovits_step import create_sovits_state, jit_sovits_train_step

        state, setup = create_sovits_state(config)
        step = jit_sovits_train_step(setup)
        batch = synthetic.synthetic_sovits_batch(config, shapes["batch"], shapes["frames"], shapes["text_len"], seed, ragged=False)
        work = {"samples": shapes["batch"], "audio_seconds": shapes["batch"] * shapes["frames"] / config.audio.frame_rate}
    batch.pop("keys")
    return step, state, jax.device_put(batch), work


def run_configuration(spec: dict[str, Any]) -> dict[str, Any]:
    """Build, compile and time one (model, size) configuration; returns its JSON record."""
    load_start = os.getloadavg()
    import jax

    if not spec["compile_cache"]:
        jax.config.update("jax_enable_compilation_cache", False)
    from gptsovits_jax.config import load_config

    model, shapes = spec["model"], spec["shapes"]
    overrides = [*BENCH_OVERRIDES[model], *spec["overrides"]]
    if spec["precision"]:
        overrides.append(f"{model}_train.precision={spec['precision']}")
    config = load_config(spec["config_path"], overrides)
    peak = matmul_peak(spec["peak_size"], spec["peak_repeats"])

    start = time.perf_counter()
    step, state, batch, work = build_step(model, config, shapes, spec["seed"])
    jax.block_until_ready(state)
    build_s = time.perf_counter() - start
    rng = jax.random.PRNGKey(spec["seed"])
    start = time.perf_counter()
    compiled = step.lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - start
    flops = _flops(compiled)

    for _ in range(spec["warmup"]):
        state, metrics = compiled(state, batch, rng)
        jax.block_until_ready((state, metrics))

    def run_step(state, key):
        return jax.block_until_ready(compiled(state, batch, key))

    times, step_peaks, step_faults = [], [], []
    timer = _matmul_timer(spec["peak_size"]) if spec["interleaved_peak_repeats"] else None
    for i in range(spec["steps"]):
        key = jax.random.fold_in(rng, i)
        (state, metrics), seconds, faults = timed_call(run_step, state, key)
        times.append(seconds)
        step_faults.append(faults)
        if timer is not None:
            # The peak right after each step: on a shared machine it drifts with the load as the step does.
            step_peaks.append(2.0 * spec["peak_size"] ** 3 / timer(spec["interleaved_peak_repeats"]))
    loss_key = "loss/ce" if model == "gpt" else "loss/g/total"
    # Measured again after the steps: on a shared machine the best of both is the closer estimate of the true peak.
    peak_after = matmul_peak(spec["peak_size"], spec["peak_repeats"])
    peak = {
        **max(peak, peak_after, key=lambda m: m["flops_per_s"]),
        "before_steps_flops_per_s": peak["flops_per_s"],
        "after_steps_flops_per_s": peak_after["flops_per_s"],
    }

    median, best = statistics.median(times), min(times)
    record = {
        "benchmark": "step_throughput",
        "model": model,
        "size": spec["size"],
        "config": _display_path(spec["config_path"]),
        "overrides": overrides,
        "precision": config.gpt_train.precision if model == "gpt" else config.sovits_train.precision,
        **shapes,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(load_start),
        "minor_page_faults_per_step": step_faults,
        "build_s": build_s,
        "compile_s": compile_s,
        "warmup_steps": spec["warmup"],
        "steps": spec["steps"],
        "step_times_s": times,
        "median_step_s": median,
        "min_step_s": best,
        "steps_per_s": 1.0 / median,
        "samples_per_s": work["samples"] / median,
        "tokens_per_s": work["tokens"] / median if "tokens" in work else None,
        "audio_seconds_per_s": work["audio_seconds"] / median if "audio_seconds" in work else None,
        "final_loss": float(metrics[loss_key]),
        "peak_host_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "device_memory": _device_memory(),
        "xla_memory": _memory_analysis(compiled),
        "flops_per_step": flops,
        "achieved_flops_per_s": flops / median if flops else None,
        "achieved_flops_per_s_best": flops / best if flops else None,
        "matmul_peak": peak,
        "fraction_of_matmul_peak": flops / median / peak["flops_per_s"] if flops else None,
        "fraction_of_matmul_peak_best": flops / best / peak["flops_per_s"] if flops else None,
        "interleaved_peak_flops_per_s": step_peaks or None,
        "fraction_of_interleaved_peak": (paired_fraction(flops, times, step_peaks) if flops and step_peaks else None),
    }
    return record


# --------------------------------------------------------------------------- driver


def _table(records: list[dict[str, Any]]) -> str:
    header = f"{'model':7} {'size':5} {'compile s':>9} {'median s':>9} {'min s':>8} {'steps/s':>8} {'GFLOP/step':>10} {'GFLOP/s':>8} {'peak':>6} {'step pk':>7} {'load':>5} {'alloc':>8}"
    rows = [header, "-" * len(header)]
    for r in records:
        gflop = (r["flops_per_step"] or 0.0) / 1e9
        frac, inter = r["fraction_of_matmul_peak"], r.get("fraction_of_interleaved_peak")
        rows.append(
            f"{r['model']:7} {r['size']:5} {r['compile_s']:9.1f} {r['median_step_s']:9.3f} {r['min_step_s']:8.3f} "
            f"{r['steps_per_s']:8.2f} {gflop:10.1f} {gflop / r['median_step_s']:8.1f} "
            f"{'' if frac is None else f'{100 * frac:5.1f}%':>6} {'' if inter is None else f'{100 * inter:5.1f}%':>7} "
            f"{r['machine']['load_avg_start'][0]:5.2f} {r['machine'].get('allocator', ''):>8}"
        )
    return "\n".join(rows)


def add_shape_flags(parser: argparse.ArgumentParser) -> None:
    """The ``--gpt-*`` and ``--sovits-*`` shape flags (unset: :data:`DEFAULTS`); read them with :func:`shapes_from_args`."""
    parser.add_argument("--gpt-batch", type=int, help=f"default {DEFAULTS['gpt']['batch']}")
    parser.add_argument("--gpt-text-len", type=int, help=f"phonemes per sample, default {DEFAULTS['gpt']['text_len']}")
    parser.add_argument(
        "--gpt-semantic-len", type=int, help=f"semantic tokens (25 Hz) per sample, default {DEFAULTS['gpt']['semantic_len']}"
    )
    parser.add_argument("--sovits-batch", type=int, help=f"default {DEFAULTS['sovits']['batch']}")
    parser.add_argument("--sovits-text-len", type=int, help=f"phonemes per sample, default {DEFAULTS['sovits']['text_len']}")
    parser.add_argument("--sovits-frames", type=int, help=f"50 Hz frames per utterance (even), default {DEFAULTS['sovits']['frames']}")


def shapes_from_args(args: argparse.Namespace, model: str) -> dict[str, int]:
    """``model``'s shapes: each flag of :func:`add_shape_flags` that was given, else its default."""
    return {k: getattr(args, f"{model}_{k}") or v for k, v in DEFAULTS[model].items()}


def _specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    specs = []
    for size in args.sizes:
        for model in args.models:
            shapes = shapes_from_args(args, model)
            specs.append(
                {
                    "model": model,
                    "size": size,
                    "config_path": str(SIZES[size]),
                    "shapes": shapes,
                    "overrides": list(args.override),
                    "precision": args.precision,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "seed": args.seed,
                    "peak_size": args.peak_size,
                    "peak_repeats": args.peak_repeats,
                    "compile_cache": args.compile_cache,
                    "interleaved_peak_repeats": args.interleaved_peak_repeats,
                }
            )
    return specs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["tiny", "v2"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps after warm-up")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    add_shape_flags(parser)
    parser.add_argument("--precision", choices=["float32", "bfloat16"], help="compute dtype (default: the config's)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peak-size", type=int, default=4096, help="side of the square matmul that measures the peak")
    parser.add_argument("--peak-repeats", type=int, default=5)
    parser.add_argument(
        "--interleaved-peak-repeats",
        type=int,
        default=2,
        help="after every timed step, time the peak matmul this many times (best kept); 0: do not",
    )
    parser.add_argument("--compile-cache", action="store_true", help="allow the persistent compilation cache (compile_s may be a load)")
    parser.add_argument("--in-process", action="store_true", help="run every configuration in this process (host RSS is cumulative)")
    parser.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default="auto",
        help="host allocator of each configuration's process: jemalloc with its decay off (preloaded), the system's, "
        "or auto: jemalloc when installed and LD_PRELOAD is unset (default)",
    )
    parser.add_argument("--out", type=Path, help="append one JSON line per configuration to this file")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    try:
        env_changes = allocator_env(args.allocator)
    except FileNotFoundError as err:
        parser.error(str(err))
    if args.in_process and needs_restart(env_changes):
        if args.allocator != "auto":
            parser.error(
                f"--allocator {args.allocator} needs a fresh process: drop --in-process, or set {', '.join(env_changes)} "
                "yourself before starting Python"
            )
        env_changes = {}  # auto: this process keeps the allocator it started with

    records = []
    for spec in _specs(args):
        print(f"[step_throughput] {spec['model']} {spec['size']} {spec['shapes']}", file=sys.stderr, flush=True)
        if args.in_process:
            record = run_configuration(spec)
        else:
            # A spawned child is a fresh interpreter: it starts with the environment (and so the allocator) set here.
            with environment(env_changes), multiprocessing.get_context("spawn").Pool(1) as pool:
                record = pool.apply(run_configuration, (spec,))
        records.append(record)
        emit_record(record, args.out)
    print(_table(records), file=sys.stderr)


if __name__ == "__main__":
    main()
