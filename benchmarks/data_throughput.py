"""Batches per second of the SoVITS and GPT input pipelines on the preprocessed demo corpus.

    PYTHONPATH=. python benchmarks/data_throughput.py [--configs configs/tiny.yaml configs/v2.yaml] [--batches 60] \\
        [--out benchmarks/results/data_throughput_cpu.jsonl]

Preprocesses the demo corpus into each config's ``data.cache_dir`` first if needed (resumable,
so a no-op the second time). GPT batches need semantic tokens; when the cache has none, the
benchmark writes zero tokens of the right lengths to a temporary file (never into the cache),
since their values do not change the loading cost. Prints one JSON object per config to stdout:
batches/s (and utterances/s, seconds of audio/s) for each stage with the config's global batch
size and the default read options, after ``--warmup`` batches (``--out FILE`` appends the same
lines to a JSON-lines file). Compare ``batches_per_s`` with the
train step's steps/s: the pipeline must stay ahead of the step.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import grain
import numpy as np

from gptsovits_jax.config import load_config
from gptsovits_jax.data import pipeline, preprocess, semantic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_throughput import emit_record


def _time_batches(iterator: pipeline.BatchIterator, warmup: int, batches: int, frame_key: str, frames_per_second: float) -> dict:
    start = time.perf_counter()
    next(iterator)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        next(iterator)
    utterances = frames = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
        utterances += len(batch["keys"])
        frames += int(batch[frame_key].sum())
    elapsed = time.perf_counter() - start
    return {
        "batches_per_s": batches / elapsed,
        "utterances_per_s": utterances / elapsed,
        "audio_seconds_per_s": frames / frames_per_second / elapsed,
        "first_batch_s": first,
    }


def _zero_tokens(cache_dir: Path, out: Path) -> Path:
    index = preprocess.load_index(cache_dir)
    preprocess.write_id_table(out, semantic.COLUMN, [(u["key"], np.zeros(u["frames"] // 2, np.int32)) for u in index["utterances"]])
    return out


def benchmark(config_path: str, batches: int, warmup: int, threads: int, prefetch: int, overrides: tuple[str, ...] = ()) -> dict:
    """Preprocess (if needed) and time both stages' train iterators of one config; returns its JSON record."""
    load_start = os.getloadavg()
    config = load_config(config_path, list(overrides))
    cache_dir = Path(config.data.cache_dir)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        summary = preprocess.preprocess(config, progress=False)
    preprocess_s = time.perf_counter() - start
    cache_bytes = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file())
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)
    result = {
        "benchmark": "data_throughput",
        "config": config.name,
        "config_path": str(config_path),
        "overrides": list(overrides),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_avg_start": list(load_start),
        },
        "batches": batches,
        "warmup": warmup,
        "cache_dir": str(cache_dir),
        "preprocess_s": preprocess_s,
        "features_computed": summary.computed,
        "utterances": summary.kept,
        "audio_hours": summary.hours,
        "cache_megabytes": cache_bytes / 1e6,
        "read_options": {"num_threads": threads, "prefetch_buffer_size": prefetch},
    }
    sovits = pipeline.sovits_data(config, "train", cache_dir)
    with pipeline.train_iterator(sovits, config.sovits_train.batch_size, config.sovits_train.seed, read_options=options) as it:
        result["sovits"] = {
            "batch_size": config.sovits_train.batch_size,
            **_time_batches(it, warmup, batches, "spec_lens", config.audio.frame_rate),
            "padded_fraction": pipeline.padding_report(sovits).padded_fraction,
        }
    with tempfile.TemporaryDirectory() as tmp:
        has_tokens = (cache_dir / semantic.SEMANTIC_NAME).is_file()
        tokens = None if has_tokens else _zero_tokens(cache_dir, Path(tmp) / semantic.SEMANTIC_NAME)
        gpt = pipeline.gpt_data(config, "train", cache_dir, semantic_path=tokens)
        with pipeline.train_iterator(gpt, config.gpt_train.batch_size, config.gpt_train.seed, read_options=options) as it:
            result["gpt"] = {
                "batch_size": config.gpt_train.batch_size,
                "semantic_tokens": "cache" if has_tokens else "zeros",
                **_time_batches(it, warmup, batches, "semantic_lens", config.audio.frame_rate / 2),
                "padded_fraction": pipeline.padding_report(gpt).padded_fraction,
            }
    result["machine"]["load_avg_end"] = list(os.getloadavg())
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["configs/tiny.yaml", "configs/v2.yaml"])
    parser.add_argument("--batches", type=int, default=60, help="timed batches per stage")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first (thread start, page cache)")
    parser.add_argument("--threads", type=int, default=pipeline.default_read_options().num_threads)
    parser.add_argument("--prefetch", type=int, default=pipeline.default_read_options().prefetch_buffer_size)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override for every config"
    )
    parser.add_argument("--out", type=Path, help="also append one JSON line per config to this file")
    args = parser.parse_args(argv)
    for config_path in args.configs:
        record = benchmark(config_path, args.batches, max(args.warmup, 1), args.threads, args.prefetch, tuple(args.overrides))
        emit_record(record, args.out)


if __name__ == "__main__":
    main()
