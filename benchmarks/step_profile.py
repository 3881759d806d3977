"""Where a compiled train step spends its time: profiler events summed per model module, forward or backward, matmul or not.

    PYTHONPATH=. python benchmarks/step_profile.py [--model gpt] [--size v2] [--steps 2] [--top 25]
        [--out benchmarks/results/step_profile_cpu.jsonl]

It builds the same step and synthetic batch as ``step_throughput.py`` (same shape flags and
defaults), has XLA dump the step's optimized HLO, runs ``--warmup`` steps, then records
``--steps`` steps under ``jax.profiler.trace``. Every profiler event named after an
instruction of the step's HLO (an XLA:CPU thunk: a fusion, a dot, a copy, ...) is
attributed through that instruction's ``op_name`` metadata to the Flax module that made it
(``h/layers_N/linear1``; layer indices become ``N`` unless ``--keep-indices``), to the
forward pass, the backward pass (``transpose(jvp(...))``) or neither (the optimizer), and
to ``matmul`` when the instruction (or the computation it fuses) has a dot or a
convolution. Times are thread time per step: on a multi-threaded backend events overlap,
so they can add up to more than the step's wall time.

One JSON object (rows sorted by time, totals per kind and per pass, the traced steps' wall
times, the machine) goes to stdout and, with ``--out``, is appended to a JSON-lines file;
the top rows follow as a table on stderr. The process restarts itself with jemalloc as
``step_throughput.py``'s children do (``--allocator``). Events of the runtime itself
(``ThunkExecutor::Execute``, thread-pool waits) name no instruction and are left out;
``--keep DIR`` keeps the dump and the trace (open it in ui.perfetto.dev). On GPU and TPU
the kernels may be named differently from the HLO instructions; the script then stops
with an error rather than print an empty table.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gptsovits_jax.allocator import ALLOCATORS, use_allocator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_throughput import BENCH_OVERRIDES, MODELS, SIZES, add_shape_flags, build_step, emit_record, machine_info, shapes_from_args

# Instructions whose events enclose the events of the instructions they run.
_CONTAINERS = re.compile(r"\s(conditional|while|call)\(")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")  # unindented; instructions are indented
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_SCANNED_LAYER = re.compile(r"(?P<stack>[\w.]+)/(?P=stack)\._scanned/while/body/(?:[^/]+/)*?DecoderLayer(?=/|$)")
_MATMUL = re.compile(r"\s(dot|convolution)\(")
_INSTRUCTION_LIKE = re.compile(r"^[a-z][\w\-]*\.\d+$")


def parse_hlo(text: str) -> dict[str, dict[str, Any]]:
    """``{instruction name: {"op_name", "matmul", "container"}}`` for an HLO module's text.

    ``matmul`` is true for a dot or convolution and for a fusion whose computation (or a
    computation that one calls) has one.
    """
    computations: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = computations.setdefault(header.group(1), [])
            continue
        if line.strip() == "}":
            current = None
        elif current is not None:
            current.append(line)

    memo: dict[str, bool] = {}

    def has_matmul(name: str) -> bool:
        if name not in memo:
            memo[name] = False  # guards against cycles
            lines = computations.get(name, [])
            memo[name] = any(_MATMUL.search(line) for line in lines) or any(
                has_matmul(callee) for line in lines for callee in _CALLS.findall(line)
            )
        return memo[name]

    instructions = {}
    for lines in computations.values():
        for line in lines:
            match = _INSTRUCTION.match(line)
            if not match:
                continue
            op_name = _OP_NAME.search(line)
            instructions[match.group(1)] = {
                "op_name": op_name.group(1) if op_name else "",
                "matmul": bool(_MATMUL.search(line)) or any(has_matmul(c) for c in _CALLS.findall(line)),
                "container": bool(_CONTAINERS.search(line)),
            }
    return instructions


def attribute(op_name: str, keep_indices: bool = False) -> tuple[str, str]:
    """``(pass, module)`` of an ``op_name``: ``forward``/``backward``/``other`` and the module path without the primitive.

    ``jit(step)/transpose(jvp(Model))/h/layers_3/linear1/dot_general`` -> ``("backward", "h/layers_N/linear1")``.
    """
    parts = [p for p in op_name.split("/") if p and not p.startswith("jit(")]
    wrappers = [p for p in parts if p.startswith(("jvp(", "transpose(", "vmap("))]
    if any(p.startswith("transpose(") for p in wrappers):
        pass_ = "backward"
    elif wrappers:
        pass_ = "forward"
    else:
        pass_ = "other"
    path = [p for p in parts if p not in wrappers][:-1]  # the last part is the primitive
    module = "/".join(path) or "(top level)"
    # A scanned stack runs one layer body for every layer (``h/h._scanned/while/body/.../DecoderLayer/linear1``):
    # its ops belong to every ``layers_i`` at once, so they are reported as ``layers_N`` even with keep_indices.
    module = _SCANNED_LAYER.sub(r"\g<stack>/layers_N", module)
    if not keep_indices:
        module = re.sub(r"_\d+(?=/|$)", "_N", module)
    return pass_, module


def summarize(events: list[dict[str, Any]], instructions: dict[str, dict[str, Any]], steps: int, keep_indices: bool = False):
    """Thread time per step of complete (``ph == "X"``) trace events per ``(pass, module, kind)``.

    Returns ``(rows, unmatched)``: the rows sorted by time, and how many events were named
    like an HLO instruction (``fusion.12``) but are not one of ``instructions`` (another
    computation's, or a trace and a dump of different compilations).
    """
    times: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    unmatched = 0
    for event in events:
        if event.get("ph") != "X":
            continue
        name = event.get("name", "")
        info = instructions.get(name)
        if info is None:
            unmatched += bool(_INSTRUCTION_LIKE.match(name))
            continue
        if info["container"]:
            continue
        key = (*attribute(info["op_name"], keep_indices), "matmul" if info["matmul"] else "other")
        times[key] += event.get("dur", 0.0)  # microseconds
        counts[key] += 1
    total = sum(times.values())
    rows = [
        {
            "pass": p,
            "module": m,
            "kind": k,
            "ms_per_step": t / 1e3 / steps,
            "events_per_step": counts[(p, m, k)] / steps,
            "fraction": t / total if total else 0.0,
        }
        for (p, m, k), t in times.most_common()
    ]
    return rows, unmatched


def _totals(rows: list[dict[str, Any]], field: str) -> dict[str, float]:
    out: collections.Counter = collections.Counter()
    for row in rows:
        out[row[field]] += row["ms_per_step"]
    return dict(out.most_common())


def _table(rows: list[dict[str, Any]], top: int) -> str:
    lines = [f"{'ms/step':>9} {'share':>6} {'kind':6} {'pass':8} module", "-" * 72]
    lines += [f"{r['ms_per_step']:9.1f} {100 * r['fraction']:5.1f}% {r['kind']:6} {r['pass']:8} {r['module']}" for r in rows[:top]]
    return "\n".join(lines)


def profile(args: argparse.Namespace, dump_dir: Path) -> dict[str, Any]:
    load_start = os.getloadavg()
    import jax

    from gptsovits_jax.config import load_config

    shapes = shapes_from_args(args, args.model)
    config = load_config(SIZES[args.size], [*BENCH_OVERRIDES[args.model], *args.override])
    step, state, batch, _ = build_step(args.model, config, shapes, args.seed)
    rng = jax.random.PRNGKey(args.seed)
    compiled = step.lower(state, batch, rng).compile()
    for _ in range(args.warmup):
        state, _ = jax.block_until_ready(compiled(state, batch, rng))
    keys = jax.block_until_ready([jax.random.fold_in(rng, i) for i in range(args.steps)])  # nothing but the step in the trace
    trace_dir = dump_dir / "trace"
    times = []
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        for key in keys:
            start = time.perf_counter()
            state, _ = jax.block_until_ready(compiled(state, batch, key))
            times.append(time.perf_counter() - start)

    module = f"jit_{args.model}_train_step"
    hlo_files = sorted(dump_dir.glob(f"*{module}*after_optimizations.txt"))
    traces = sorted(trace_dir.glob("**/perfetto_trace.json.gz"))
    if not hlo_files or not traces:
        raise SystemExit(f"step_profile: no optimized HLO of {module} or no trace under {dump_dir} (is XLA_FLAGS overriding the dump?)")
    instructions = parse_hlo(hlo_files[-1].read_text())
    with gzip.open(traces[-1]) as f:
        trace = json.load(f)
    rows, unmatched = summarize(trace["traceEvents"], instructions, args.steps, args.keep_indices)
    if not rows:
        raise SystemExit(f"step_profile: no trace event named an instruction of {hlo_files[-1].name} ({unmatched} looked like one)")
    return {
        "benchmark": "step_profile",
        "model": args.model,
        "size": args.size,
        **shapes,
        "overrides": [*BENCH_OVERRIDES[args.model], *args.override],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(load_start),
        "warmup_steps": args.warmup,
        "steps": args.steps,
        "step_times_s": times,
        "attributed_ms_per_step": sum(r["ms_per_step"] for r in rows),
        "unmatched_instruction_events": unmatched,
        "ms_per_step_by_kind": _totals(rows, "kind"),
        "ms_per_step_by_pass": _totals(rows, "pass"),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="gpt")
    parser.add_argument("--size", choices=sorted(SIZES), default="v2")
    parser.add_argument("--steps", type=int, default=2, help="traced steps after warm-up")
    parser.add_argument("--warmup", type=int, default=2, help="untraced steps after compilation")
    add_shape_flags(parser)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-indices", action="store_true", help="one row per layer (layers_3) instead of layers_N")
    parser.add_argument("--top", type=int, default=25, help="rows in the table on stderr")
    parser.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default="auto",
        help="host allocator, as step_throughput.py's (default auto: jemalloc when installed)",
    )
    parser.add_argument("--out", type=Path, help="append the JSON record to this file")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the HLO dump and the trace (trace/**/perfetto_trace.json.gz, for ui.perfetto.dev) in DIR",
    )
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    try:
        use_allocator(args.allocator)
    except FileNotFoundError as err:
        parser.error(str(err))
    user_flags = os.environ.get("XLA_FLAGS", "")
    with tempfile.TemporaryDirectory(prefix="step_profile_") as tmp:
        dump_dir = Path(tmp) if args.keep is None else args.keep.resolve()
        dump_dir.mkdir(parents=True, exist_ok=True)
        # Set before jax starts: the dump of the step's optimized HLO names every instruction the trace shows.
        os.environ["XLA_FLAGS"] = (
            f"{user_flags} --xla_dump_to={dump_dir} --xla_dump_hlo_as_text --xla_dump_hlo_module_re=jit_{args.model}_train_step"
        ).strip()
        record = profile(args, dump_dir)
    record["machine"]["xla_flags"] = user_flags  # the dump flags name a temporary directory of this machine
    emit_record(record, args.out)
    print(_table(record["rows"], args.top), file=sys.stderr)
    print(
        f"attributed {record['attributed_ms_per_step']:.0f} ms/step of thread time "
        f"({', '.join(f'{k} {v:.0f}' for k, v in record['ms_per_step_by_kind'].items())}); "
        f"steps {', '.join(f'{t:.3f}' for t in record['step_times_s'])} s wall",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
