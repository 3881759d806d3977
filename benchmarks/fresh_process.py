"""A command timed in a fresh process, from outside: wall seconds, peak RSS and the load average around it.

The benchmarks that measure a whole ``gptsovits-jax`` command (``import_upstream.py``, ``train_allocator.py``) run
it as a child of the benchmark with :func:`run_fresh`. The peak RSS is the child's ``ru_maxrss`` from ``os.wait4``
(Linux: KiB), so the CLI's jemalloc restart, an ``execve``, counts as the same process, and the benchmark's own
memory does not count at all. The child runs in the repository with :func:`child_env`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """This environment with the repository first on ``PYTHONPATH`` and the persistent compilation cache on (the
    Makefile's ``.cache/jax`` unless ``JAX_COMPILATION_CACHE_DIR`` is set), so one run's compiles serve the next."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": str(REPO) if not path else f"{REPO}{os.pathsep}{path}"}
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    return env


@dataclass(frozen=True)
class FreshRun:
    """One finished process: its output (stdout and stderr interleaved), wall seconds, peak RSS in MiB and the
    1/5/15-minute load averages before it started and after it ended."""

    output: str
    wall_s: float
    peak_rss_mb: float
    load_avg_start: tuple[float, float, float]
    load_avg_end: tuple[float, float, float]


def run_fresh(command: Sequence[str]) -> FreshRun:
    """Run ``command`` in the repository with :func:`child_env` and wait for it.

    Raises ``RuntimeError`` with the command and the last 20 lines of its output when it exits non-zero.
    """
    load_start = os.getloadavg()
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.stdout.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = "\n".join(output.splitlines()[-20:])
        raise RuntimeError(f"{shlex.join(command)} exited with {process.returncode}:\n{tail}")
    return FreshRun(output, wall, usage.ru_maxrss / 1024, load_start, os.getloadavg())
