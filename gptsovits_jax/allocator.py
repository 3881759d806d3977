"""The host memory allocator of a CPU run: jemalloc with its decay off, or the system's (standard library only).

XLA:CPU allocates each call's temporary buffer (2.3 GB for the v2 GPT train step) and frees it when the call
returns. glibc maps and unmaps blocks that large on every call, and jemalloc's default decay returns the pages
within seconds: either way every step page-faults the whole buffer in again (~600,000 faults, about 1 s of the v2
GPT step on the development CPU). With its decay off, jemalloc keeps the freed pages mapped for the next call; the
cost is host memory (freed pages stay with the process: about 1 GB more peak RSS for the v2 steps). See
benchmarks/results/performance_log_2026-11.md, change 4.

An allocator is chosen when a process starts (``LD_PRELOAD``), so a running process can only get another one by
starting again: :func:`allocator_env` gives the environment a fresh process needs, and :func:`use_allocator`
re-executes the current command with it (the ``gptsovits-jax`` command calls it; ``--allocator``).
"""

from __future__ import annotations

import os
import sys
import warnings

from gptsovits_jax.environment import apply_changes

__all__ = [
    "ALLOCATORS",
    "ALLOCATOR_ENV_VARS",
    "JEMALLOC_CANDIDATES",
    "JEMALLOC_CONF",
    "accelerator_expected",
    "allocator_env",
    "find_jemalloc",
    "host_allocator",
    "needs_restart",
    "use_allocator",
]

ALLOCATORS = ("auto", "jemalloc", "system")
# Environment variables that change the host allocator (and so CPU step times).
ALLOCATOR_ENV_VARS = ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES")
# Where Debian/Ubuntu (package libjemalloc2), Fedora/RHEL and source installs put jemalloc.
JEMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)
# Never return freed pages to the system (dirty and muzzy decay off): the next step reuses them.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def host_allocator() -> str:
    """``"jemalloc"`` when this process has jemalloc loaded, ``"preloaded"`` for another ``LD_PRELOAD``, else ``"system"``.

    Where ``/proc/self/maps`` exists (Linux) it decides whether jemalloc is loaded; elsewhere ``LD_PRELOAD`` does.
    """
    try:
        with open("/proc/self/maps") as maps:
            loaded = "libjemalloc" in maps.read()
    except OSError:
        loaded = "jemalloc" in os.environ.get("LD_PRELOAD", "")
    if loaded:
        return "jemalloc"
    return "preloaded" if os.environ.get("LD_PRELOAD", "").strip() else "system"


# Plugins that give JAX a GPU or TPU backend, which then runs the steps: the host allocator no longer matters.
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm7_plugin", "jax_rocm60_plugin", "libtpu")


def accelerator_expected(plugins: tuple[str, ...] = ACCELERATOR_PLUGINS) -> bool:
    """Whether JAX will run on an accelerator, decided without importing jax (so before any restart).

    ``JAX_PLATFORMS`` decides when it is set (its first entry other than ``cpu``, e.g. ``cuda,cpu``);
    otherwise an installed GPU or TPU plugin (one of ``plugins``) does, since JAX then prefers it.
    """
    platforms = [p.strip() for p in os.environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return platforms[0] != "cpu"
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in plugins)


def find_jemalloc(candidates: tuple[str, ...] = JEMALLOC_CANDIDATES) -> str | None:
    """The first of ``candidates`` that exists, or ``None``."""
    return next((path for path in candidates if os.path.exists(path)), None)


def allocator_env(allocator: str, candidates: tuple[str, ...] = JEMALLOC_CANDIDATES) -> dict[str, str | None]:
    """Changes to the environment that make a fresh process use ``allocator`` (``None``: unset the variable).

    ``"system"`` unsets ``LD_PRELOAD`` and ``MALLOC_CONF``; ``"jemalloc"`` preloads the first of ``candidates`` with
    :data:`JEMALLOC_CONF` (``FileNotFoundError`` naming the paths tried when there is none); ``"auto"`` is
    ``"jemalloc"`` when it is found, ``LD_PRELOAD`` is not already set and the run is on the CPU (not
    :func:`accelerator_expected`: the gain is XLA:CPU's), otherwise no change.
    """
    if allocator not in ALLOCATORS:
        raise ValueError(f"unknown allocator {allocator!r}: expected one of {', '.join(ALLOCATORS)}")
    if allocator == "system":
        return {"LD_PRELOAD": None, "MALLOC_CONF": None}
    if allocator == "auto" and accelerator_expected():
        return {}
    path = find_jemalloc(candidates)
    if path is None:
        if allocator == "jemalloc":
            raise FileNotFoundError(
                f"--allocator jemalloc: libjemalloc.so.2 is not in any of {', '.join(candidates)}; "
                "install it (Debian/Ubuntu: apt-get install libjemalloc2) or use --allocator system"
            )
        return {}
    if allocator == "auto" and os.environ.get("LD_PRELOAD"):
        return {}
    return {"LD_PRELOAD": path, "MALLOC_CONF": JEMALLOC_CONF}


def needs_restart(changes: dict[str, str | None]) -> bool:
    """Whether this process's environment differs from ``changes`` (as :func:`allocator_env` gives them)."""
    return any(os.environ.get(key) != value for key, value in changes.items())


def use_allocator(allocator: str, candidates: tuple[str, ...] = JEMALLOC_CANDIDATES) -> None:
    """Make this command run with ``allocator``: return if it already does, else start it again with the right environment.

    The restart replaces this process (``os.execve`` of ``sys.executable`` with ``sys.orig_argv``: the same interpreter
    options, script or module, and arguments), so call it first thing in a program's entry point, before it has done
    anything it would not want done twice. The restarted process finds its environment already right and goes on, so
    there is at most one restart. Errors as :func:`allocator_env`.
    """
    changes = allocator_env(allocator, candidates)
    if not needs_restart(changes):
        return
    if not sys.executable or len(sys.orig_argv) < 2:
        # An embedded interpreter: there is no command line to start again.
        warnings.warn(f"cannot restart this process with --allocator {allocator}: no command line to re-run", RuntimeWarning, stacklevel=2)
        return
    env = dict(os.environ)
    apply_changes(env, changes)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
