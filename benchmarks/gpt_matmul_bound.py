"""How fast the GPT train step could be if it were nothing but its matrix multiplications.

    PYTHONPATH=. python benchmarks/gpt_matmul_bound.py [--size v2] [--batch 4 --text-len 64 --semantic-len 200] \\
        [--repeats 7] [--out benchmarks/results/gpt_matmul_bound_cpu.jsonl]

Every matrix multiplication of one GPT train step (forward, input gradient, weight gradient)
is timed on its own, as a jitted ``jnp.einsum`` with the shapes and operand layouts of the
step, on float32 random data. Their times, summed with each one's count per step, are a
lower bound on the step's time from matmuls alone (everything else free, each matmul as
fast as XLA runs it in isolation), and ``matmul_flops / that time`` an upper bound on the
FLOP/s the step can reach; the script reports it as a fraction of the square-matmul peak
measured in the same process (as ``step_throughput.py`` does). Per layer (``M = batch x
(text_len + semantic_len)`` rows, ``D`` hidden, ``F`` feed-forward, ``H`` heads of ``d``):

* ``in_proj [M, D] x [D, 3D]``, ``out_proj [M, D] x [D, D]``, ``linear1 [M, D] x [D, F]``,
  ``linear2 [M, F] x [F, D]``: forward, input gradient ``dY W^T``, weight gradient ``X^T dY``;
* ``scores [L, d] x [d, L]`` and ``context [L, L] x [L, d]`` batched over ``batch x H``:
  forward and both operand gradients.

Once per step: ``bert_proj [batch x text_len, 1024] x [1024, D]`` (forward and weight
gradient; the BERT features are an input) and ``ar_predict_layer [batch x (semantic_len + 1),
D] x [D, vocab]`` (forward and both gradients). One JSON object to stdout (and appended to
``--out``), a table to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from step_throughput import SIZES, emit_record, machine_info, matmul_peak  # noqa: E402


def gemms(cfg: Any, batch: int, text_len: int, semantic_len: int) -> list[dict[str, Any]]:
    """The step's matmuls: name, einsum spec, operand shapes, count per step."""
    rows, length = batch * (text_len + semantic_len), text_len + semantic_len
    d, f, h, layers = cfg.hidden_dim, cfg.ffn_dim, cfg.num_heads, cfg.num_layers
    hd, bh = d // h, batch * h
    out = []

    def dense(name: str, m: int, k: int, n: int, count: int, input_grad: bool = True) -> None:
        out.append({"name": f"{name} fwd", "spec": "mk,kn->mn", "shapes": [(m, k), (k, n)], "count": count})
        if input_grad:
            out.append({"name": f"{name} dx", "spec": "mn,kn->mk", "shapes": [(m, n), (k, n)], "count": count})
        out.append({"name": f"{name} dw", "spec": "mk,mn->kn", "shapes": [(m, k), (m, n)], "count": count})

    def batched(name: str, m: int, k: int, n: int, count: int) -> None:
        out.append({"name": f"{name} fwd", "spec": "bmk,bkn->bmn", "shapes": [(bh, m, k), (bh, k, n)], "count": count})
        out.append({"name": f"{name} da", "spec": "bmn,bkn->bmk", "shapes": [(bh, m, n), (bh, k, n)], "count": count})
        out.append({"name": f"{name} db", "spec": "bmk,bmn->bkn", "shapes": [(bh, m, k), (bh, m, n)], "count": count})

    dense("in_proj", rows, d, 3 * d, layers)
    dense("out_proj", rows, d, d, layers)
    dense("linear1", rows, d, f, layers)
    dense("linear2", rows, f, d, layers)
    batched("scores", length, hd, length, layers)
    batched("context", length, length, hd, layers)
    dense("bert_proj", batch * text_len, cfg.bert_dim, d, 1, input_grad=False)
    dense("ar_predict_layer", batch * (semantic_len + 1), d, cfg.vocab_size, 1)
    for g in out:
        # One contraction per einsum: 2 x the product of every distinct axis (batch, rows, contracted, columns).
        operands = g["spec"].split("->")[0].split(",")
        sizes = {axis: n for names, shape in zip(operands, g["shapes"]) for axis, n in zip(names, shape)}
        g["flops"] = 2.0 * math.prod(sizes.values())
    return out


def time_gemm(spec: str, shapes: list[tuple[int, ...]], repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of the jitted einsum (after one untimed call)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), shapes[0], jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), shapes[1], jnp.float32)
    fn = jax.jit(lambda x, y: jnp.einsum(spec, x, y))
    fn(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="v2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--semantic-len", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--peak-size", type=int, default=4096)
    parser.add_argument("--peak-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also append the JSON object to this JSON-lines file")
    args = parser.parse_args(argv)

    from gptsovits_jax.config import load_config

    load_start = os.getloadavg()
    cfg = load_config(SIZES[args.size]).gpt
    peak_before = matmul_peak(args.peak_size, args.peak_repeats)
    rows = []
    for g in gemms(cfg, args.batch, args.text_len, args.semantic_len):
        times = time_gemm(g["spec"], g["shapes"], args.repeats)
        best, median = min(times), statistics.median(times)
        rows.append({**g, "best_s": best, "median_s": median, "flops_per_s_best": g["flops"] / best})
    peak_after = matmul_peak(args.peak_size, args.peak_repeats)
    peak = max(peak_before["flops_per_s"], peak_after["flops_per_s"])
    flops = sum(r["flops"] * r["count"] for r in rows)
    time_best = sum(r["best_s"] * r["count"] for r in rows)
    time_median = sum(r["median_s"] * r["count"] for r in rows)
    record = {
        "benchmark": "gpt_matmul_bound",
        "size": args.size,
        "batch": args.batch,
        "text_len": args.text_len,
        "semantic_len": args.semantic_len,
        "repeats": args.repeats,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(load_start),
        "matmul_peak": {"before": peak_before, "after": peak_after, "flops_per_s": peak},
        "matmul_flops_per_step": flops,
        "matmul_time_per_step_s": {"best": time_best, "median": time_median},
        "bound_flops_per_s": {"best": flops / time_best, "median": flops / time_median},
        "bound_fraction_of_peak": {"best": flops / time_best / peak, "median": flops / time_median / peak},
        "gemms": [{**r, "shapes": [list(s) for s in r["shapes"]]} for r in rows],
    }
    emit_record(record, args.out)
    print(f"{'matmul':<24} {'shapes':<34} {'count':>5} {'GFLOP':>8} {'best ms':>9} {'GFLOP/s':>8}", file=sys.stderr)
    for r in rows:
        shapes = " x ".join(str(tuple(s)) for s in r["shapes"])
        print(
            f"{r['name']:<24} {shapes:<34} {r['count']:>5} {r['flops'] / 1e9:>8.3f} {1e3 * r['best_s']:>9.2f} {r['flops_per_s_best'] / 1e9:>8.1f}",
            file=sys.stderr,
        )
    print(
        f"matmuls: {flops / 1e9:.1f} GFLOP per step in {time_best:.2f} s (best) / {time_median:.2f} s (median) = "
        f"{flops / time_best / 1e9:.1f} / {flops / time_median / 1e9:.1f} GFLOP/s; "
        f"{100 * flops / time_best / peak:.0f}% / {100 * flops / time_median / peak:.0f}% of the {peak / 1e9:.0f} GFLOP/s peak",
        file=sys.stderr,
    )
    return record


if __name__ == "__main__":
    main()
