"""Wall time and peak host memory of ``gptsovits-jax import-upstream`` on three full-size v2 files.

    PYTHONPATH=. python benchmarks/import_upstream.py [--runs 3] [--workdir DIR] \\
        [--out benchmarks/results/import_upstream_cpu.jsonl]

The files are STAND-INS, not upstream's released weights (which are not downloaded here): the script
first writes, into a temporary directory, a GPT ``.ckpt``, a generator ``.pth`` (with ``enc_q``, as the
pretrained ``s2G2333k.pth``) and a discriminator ``.pth`` holding every key and shape of
``tests/fixtures/upstream/manifest_v2.json`` (upstream's three full-size v2 files) as float16, the
dtype of upstream's released files, with seeded random values (the codebook's ``inited`` is 1), laid
out as upstream's files are (``{"weight": OrderedDict, "config": {...}, "info": ...}``; the
discriminator ``{"weight": ...}``) by the project's own writer
(:func:`gptsovits_jax.torch_checkpoint.write_torch_checkpoint`). Their sizes are the real files'
within the pickle's few hundred kilobytes.

Each import is a fresh ``python -m gptsovits_jax.cli import-upstream --config configs/v2.yaml --s1 ...
--s2g ... --s2d ... --out <new dir>`` process: wall time from outside, peak RSS from ``os.wait4``
(the command's jemalloc restart is an ``execve``, the same process). The persistent compilation cache is on
(as for users), so the first run may compile what later runs load. One JSON line per invocation: date, the
files' sizes, every run's seconds, peak RSS and its ratio to the files' total size, the load average
before and after, and the medians. Issue 15's targets: under 20 s and under 2x the files' size.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gptsovits_jax.config import load_config
from gptsovits_jax.torch_checkpoint import write_torch_checkpoint
from gptsovits_jax.upstream_io import upstream_gpt_config, upstream_sovits_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fresh_process import child_env as _env
from fresh_process import run_fresh
from step_throughput import emit_record

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "tests" / "fixtures" / "upstream" / "manifest_v2.json"
CONFIG = "configs/v2.yaml"
FILES = {"gpt": "s1bert25hz-stand-in.ckpt", "generator": "s2G-stand-in.pth", "discriminator": "s2D-stand-in.pth"}
FLAGS = {"gpt": "--s1", "generator": "--s2g", "discriminator": "--s2d"}


def stand_in_weights(part: str, manifest: dict[str, Any], seed: int) -> OrderedDict[str, np.ndarray]:
    """Every key of ``manifest[part]`` in its order and shape, float16 random values (0.02 x normal; ``inited`` = 1)."""
    rng = np.random.default_rng(seed)
    weights = OrderedDict()
    for key, spec in manifest[part].items():
        if key.endswith("inited"):
            weights[key] = np.ones(spec["shape"], np.float16)
        else:
            weights[key] = (0.02 * rng.standard_normal(spec["shape"], np.float32)).astype(np.float16)
    return weights


def write_stand_ins(folder: Path) -> dict[str, Path]:
    """The three stand-in files in ``folder`` (see the module docstring); part -> path."""
    manifest = json.loads(MANIFEST.read_text())
    config = load_config(REPO / CONFIG)
    contents = {
        "gpt": OrderedDict(weight=stand_in_weights("gpt", manifest, 0), config=upstream_gpt_config(config, 12, "stand-in"), info="GPT-e12"),
        "generator": OrderedDict(
            weight=stand_in_weights("generator", manifest, 1), config=upstream_sovits_config(config, 1, "stand-in"), info="stand-in"
        ),
        "discriminator": OrderedDict(weight=stand_in_weights("discriminator", manifest, 2)),
    }
    paths = {}
    for part, content in contents.items():
        paths[part] = folder / FILES[part]
        write_torch_checkpoint(content, paths[part])
    return paths


def _git_commit() -> str | None:
    """The measured code's commit (``+dirty`` with uncommitted changes), or None outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty.strip() else "")


def import_command(files: dict[str, Path], out: Path, allocator: str | None = None) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "gptsovits_jax.cli",
        *(["--allocator", allocator] if allocator else []),
        "import-upstream",
        "--config",
        CONFIG,
    ]
    for part, path in files.items():
        command += [FLAGS[part], str(path)]
    return [*command, "--out", str(out)]


def run_import(files: dict[str, Path], out: Path, allocator: str | None = None) -> dict[str, Any]:
    """One import process: wall seconds, peak RSS (MB) and the load average around it."""
    run = run_fresh(import_command(files, out, allocator))
    return {
        "wall_s": round(run.wall_s, 2),
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "load_avg_start": [round(x, 2) for x in run.load_avg_start],
        "load_avg_end": [round(x, 2) for x in run.load_avg_end],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="import processes to time")
    parser.add_argument("--workdir", help="where the stand-in files and imports go (default: a temporary directory, removed)")
    parser.add_argument("--out", type=Path, help="append the JSON record to this file")
    parser.add_argument("--allocator", choices=("jemalloc", "system"), help="the command's --allocator (default: the command's own choice)")
    parser.add_argument("--note", default="", help="free text stored with the record (e.g. which code was measured)")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with tempfile.TemporaryDirectory(dir=args.workdir) as root:
        root = Path(root)
        start = time.perf_counter()
        files = write_stand_ins(root)
        print(f"[import_upstream] wrote the stand-in files in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        sizes = {part: path.stat().st_size for part, path in files.items()}
        total_mb = sum(sizes.values()) / 2**20
        runs = []
        for run in range(args.runs):
            out = root / f"import{run}"
            result = run_import(files, out, args.allocator)
            result["rss_to_files"] = round(result["peak_rss_mb"] / total_mb, 2)
            print(f"[import_upstream] run {run}: {json.dumps(result)}", file=sys.stderr, flush=True)
            runs.append(result)
            shutil.rmtree(out)
    record = {
        "benchmark": "import_upstream",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "files": "stand-ins: upstream v2's keys, shapes and float16 dtype (tests/fixtures/upstream/manifest_v2.json), random values",
        "file_bytes": sizes,
        "files_mb": round(total_mb, 1),
        "runs": runs,
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "median_rss_to_files": statistics.median(r["rss_to_files"] for r in runs),
        "targets": {"wall_s": 20, "rss_to_files": 2},
        "command": shlex.join(["gptsovits-jax", *import_command(files, Path("<new dir>"), args.allocator)[3:]]).replace(str(root), "<tmp>"),
        "code": _git_commit(),
        "note": args.note,
        "compile_cache": _env()["JAX_COMPILATION_CACHE_DIR"],
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "jax_version": importlib.metadata.version("jax"),
            "python_version": platform.python_version(),
        },
    }
    emit_record(record, args.out)
    return record


if __name__ == "__main__":
    main()
