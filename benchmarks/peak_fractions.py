"""A step's fraction of the matmul peak across ``step_throughput.py`` runs, under each way of pairing step and peak.

    PYTHONPATH=. python benchmarks/peak_fractions.py benchmarks/results/step_throughput_cpu*.jsonl \
        [--model gpt] [--size v2] [--allocator jemalloc] [--reference-peak 180e9] [--target 0.6] [--out FILE]

On a shared machine the peak moves while a run measures it: on the development CPU the
rate of the same 4096-square matmul moved between about 130 and 230 GFLOP/s within one
minute, in both directions, with no trend. A fraction of "the" peak then depends on which
step time is set against which peak sample. For every record this script computes:

- ``median_step_vs_best_peak``: the median step against the best peak sample of the run
  (before the steps, after them and between them). The most pessimistic pairing, a typical
  step against the machine's fastest moment; it can be lower than the record's
  ``fraction_of_matmul_peak``, which leaves out the samples between the steps.
- ``best_step_vs_best_peak``: the fastest step against the fastest peak.
- ``paired``: the median over steps of each step's FLOP/s against the peak timed right after
  that step (the record's ``fraction_of_interleaved_peak``).
- ``median_step_vs_median_peak``: the median step against the median of those per-step peaks.
- ``median_step_vs_reference``: the median step against a fixed ``--reference-peak`` (FLOP/s).

Records are grouped by model, size, precision, shapes, config overrides, ``XLA_FLAGS`` and
host allocator; each group
gives the median, minimum and maximum of every fraction over its runs and how many runs
reach ``--target``. One JSON object per group goes to stdout (and is appended to ``--out``);
a table follows on stderr. Records without per-step peaks (``--interleaved-peak-repeats 0``)
have no ``paired`` or ``median_step_vs_median_peak`` and are left out of those statistics.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from gptsovits_jax.allocator import JEMALLOC_CONF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_throughput import emit_record, paired_fraction

# Every pairing of step and peak, with its column in the table.
PAIRINGS = (
    ("median_step_vs_best_peak", "med/best"),
    ("best_step_vs_best_peak", "best/best"),
    ("paired", "paired"),
    ("median_step_vs_median_peak", "med/med"),
    ("median_step_vs_reference", "med/ref"),
)
SHAPE_KEYS = ("batch", "text_len", "semantic_len", "frames")


def allocator_label(machine: dict[str, Any]) -> str:
    """``jemalloc`` (decay off, as ``step_throughput.py`` preloads it), ``jemalloc:<MALLOC_CONF>``, ``system``, ``preloaded`` or ``unknown``.

    The label comes from the record's ``allocator_env`` (``LD_PRELOAD``, ``MALLOC_CONF``),
    which some records from before the ``allocator`` field already have; without it the
    ``allocator`` field is used, and a record with neither is ``unknown``.
    """
    env = machine.get("allocator_env")
    if env is None:
        return machine.get("allocator") or "unknown"
    if "jemalloc" not in env.get("LD_PRELOAD", ""):
        return "system" if not env.get("LD_PRELOAD") else "preloaded"
    conf = env.get("MALLOC_CONF", "")
    return "jemalloc" if conf == JEMALLOC_CONF else f"jemalloc:{conf}"


def run_fractions(record: dict[str, Any], reference_peak: float | None = None) -> dict[str, Any]:
    """One ``step_throughput`` record's step and peak rates (FLOP/s) and its fraction under every pairing."""
    flops = record["flops_per_step"]
    median_rate = flops / record["median_step_s"]
    best_rate = flops / record["min_step_s"]
    step_peaks = record.get("interleaved_peak_flops_per_s") or []
    best_peak = max([record["matmul_peak"]["flops_per_s"], *step_peaks])
    median_peak = statistics.median(step_peaks) if step_peaks else None
    fractions = {
        "median_step_vs_best_peak": median_rate / best_peak,
        "best_step_vs_best_peak": best_rate / best_peak,
        "paired": paired_fraction(flops, record["step_times_s"], step_peaks) if step_peaks else None,
        "median_step_vs_median_peak": median_rate / median_peak if step_peaks else None,
        "median_step_vs_reference": median_rate / reference_peak if reference_peak else None,
    }
    return {
        "date": record["date"],
        "load_avg_start": record["machine"]["load_avg_start"][0],
        "median_step_s": record["median_step_s"],
        "min_step_s": record["min_step_s"],
        "median_flops_per_s": median_rate,
        "best_flops_per_s": best_rate,
        "best_peak_flops_per_s": best_peak,
        "median_step_peak_flops_per_s": median_peak,
        **fractions,
    }


def group_key(record: dict[str, Any]) -> tuple:
    machine = record["machine"]
    return (
        record["model"],
        record["size"],
        record.get("precision"),
        tuple((k, record[k]) for k in SHAPE_KEYS if record.get(k) is not None),
        tuple(record.get("overrides") or ()),
        machine.get("xla_flags") or "",
        allocator_label(machine),
    )


def summarize(records: list[dict[str, Any]], reference_peak: float | None, target: float) -> list[dict[str, Any]]:
    """Per group of like runs: every run's fractions and, per pairing, median/min/max and the runs reaching ``target``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        if not record.get("flops_per_step"):
            continue
        groups.setdefault(group_key(record), []).append(record)
    summaries = []
    for (model, size, precision, shapes, overrides, xla_flags, allocator), members in groups.items():
        runs = sorted((run_fractions(r, reference_peak) for r in members), key=lambda run: run["date"])
        stats = {}
        for pairing, _ in PAIRINGS:
            values = [run[pairing] for run in runs if run[pairing] is not None]
            if values:
                stats[pairing] = {
                    "runs": len(values),
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "runs_reaching_target": sum(v >= target for v in values),
                }
        summaries.append(
            {
                "benchmark": "peak_fractions",
                "model": model,
                "size": size,
                "precision": precision,
                **dict(shapes),
                "overrides": list(overrides),
                "xla_flags": xla_flags,
                "allocator": allocator,
                "reference_peak_flops_per_s": reference_peak,
                "target": target,
                "runs": runs,
                "fractions": stats,
            }
        )
    return summaries


def read_records(paths: list[Path]) -> list[dict[str, Any]]:
    """Every ``step_throughput`` record in the JSON-lines ``paths``; a line that is not JSON is an error naming its file and line."""
    records = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise SystemExit(f"{path}:{number}: not a JSON line ({err.msg})") from None
            if record.get("benchmark") == "step_throughput":
                records.append(record)
    return records


def _cells(values: list[str]) -> str:
    return " ".join(f"{value:>9}" for value in values)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _table(summary: dict[str, Any]) -> str:
    title = (
        f"{summary['model']} {summary['size']} {summary['precision']}, overrides {' '.join(summary['overrides']) or '-'}, "
        f"allocator {summary['allocator']}, XLA_FLAGS {summary['xla_flags']!r}"
    )
    header = f"{'date (UTC)':17} {'load':>5} {'median s':>8} {'GFLOP/s':>7} {'best pk':>7} " + _cells([name for _, name in PAIRINGS])
    rows = [title, header, "-" * len(header)]
    for run in summary["runs"]:
        rates = f"{run['median_flops_per_s'] / 1e9:7.1f} {run['best_peak_flops_per_s'] / 1e9:7.1f}"
        fractions = _cells([_percent(run[key]) for key, _ in PAIRINGS])
        rows.append(f"{run['date'][:16]:17} {run['load_avg_start']:5.2f} {run['median_step_s']:8.3f} {rates} {fractions}")
    stats = summary["fractions"]
    for stat in ("median", "min", "max"):
        rows.append(f"{stat:>49} " + _cells([_percent(stats[key][stat]) if key in stats else "" for key, _ in PAIRINGS]))
    reached = [f"{stats[key]['runs_reaching_target']}/{stats[key]['runs']}" if key in stats else "" for key, _ in PAIRINGS]
    rows.append(f"{'runs >= ' + _percent(summary['target']):>49} " + _cells(reached))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="step_throughput JSON-lines files")
    parser.add_argument("--model", help="only this model (gpt, sovits)")
    parser.add_argument("--size", help="only this size (tiny, v2)")
    parser.add_argument("--allocator", help="only runs with this allocator label (jemalloc, system, ...)")
    parser.add_argument("--reference-peak", type=float, help="a fixed peak in FLOP/s to set the median step against (e.g. 180e9)")
    parser.add_argument("--target", type=float, default=0.6, help="fraction to count the runs reaching (default 0.6)")
    parser.add_argument("--out", type=Path, help="append the JSON objects to this file")
    args = parser.parse_args(argv)

    for path in args.files:
        if not path.is_file():
            parser.error(f"{path}: no such file")
    records = [
        r
        for r in read_records(args.files)
        if (args.model is None or r["model"] == args.model)
        and (args.size is None or r["size"] == args.size)
        and (args.allocator is None or allocator_label(r["machine"]) == args.allocator)
    ]
    if not records:
        parser.error("no step_throughput record in these files matches the filters")
    for summary in summarize(records, args.reference_peak, args.target):
        emit_record(summary, args.out)
        print(_table(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
