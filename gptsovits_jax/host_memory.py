"""Keep freed host memory mapped so XLA:CPU does not page-fault a fresh temporary buffer every step.

XLA's CPU runtime allocates one temporary buffer per executable call (the activations kept
for the backward pass and every other intermediate: 2.26 GB for the v2 GPT train step at
batch 4) and frees it when the call returns. glibc's ``malloc`` serves a block this large
with its own anonymous ``mmap`` and gives it back with ``munmap``, so every step the kernel
maps, zeroes and page-faults the whole buffer again, 4 KiB at a time: about 590,000 minor
faults per v2 GPT step. On the 2-core VM of ``benchmarks/README.md`` the v2 GPT step took
5.39 s median with that and 4.51 s without it, alternating step by step in one process.

:func:`reuse_freed_memory` asks glibc (``mallopt``) to serve every block from the one
``brk`` heap of the main arena and never to shrink that heap: the buffer a step frees is
the buffer the next step gets, already mapped. The cost is that the process keeps its
peak heap mapped, which a training process reaches every step anyway.

It must run before XLA's threads first allocate (before the first computation, best before
``import jax``): a thread that already has its own glibc arena keeps it, and blocks from a
non-main arena larger than its 64 MB heaps are always ``mmap``-ed. The ``gptsovits-jax``
command and ``benchmarks/step_throughput.py`` call it first thing. Only the standard library
is imported here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import sys

ENV_VAR = "GPTSOVITS_JAX_REUSE_HOST_MEMORY"
"""``1`` always applies :func:`reuse_freed_memory` (when asked to), ``0`` never, unset or ``auto``: on CPU-only machines."""

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# Plugins whose presence means an accelerator backend (host temporaries are then small).
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")

_applied = False


def _accelerator_expected() -> bool:
    """True when jax will probably run on an accelerator: ``JAX_PLATFORMS`` names one, or (unset) a plugin is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return any(p.strip() not in ("", "cpu") for p in platforms.split(","))
    return any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS)


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # gnu_get_libc_version exists only in glibc (not musl), whose mallopt understands these parameters.
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def reuse_freed_memory(mode: str | None = None) -> bool:
    """Make glibc keep freed blocks mapped and hand them out again; True when applied (now or before).

    Args:
      mode: ``"1"``/``"on"`` apply, ``"0"``/``"off"`` do not, ``"auto"`` apply unless an
        accelerator backend is expected (``JAX_PLATFORMS``, or an installed CUDA/ROCm/TPU
        plugin). ``None`` reads :data:`ENV_VAR` (default ``auto``).

    Returns:
      True when glibc accepted the three settings (one arena, no ``mmap`` for big blocks,
      no heap trimming); False when switched off, on an accelerator in ``auto`` mode, or not
      on glibc Linux (nothing is changed then).

    Raises:
      ValueError: ``mode`` (or the environment variable) is not one of the values above.
    """
    global _applied
    if _applied:
        return True
    mode = (os.environ.get(ENV_VAR, "auto") if mode is None else mode).strip().lower()
    if mode not in ("1", "on", "0", "off", "auto"):
        raise ValueError(f"{ENV_VAR}={mode!r}: expected 1, 0 or auto")
    if mode in ("0", "off") or (mode == "auto" and _accelerator_expected()):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # One arena: threads share the main arena's brk heap. No mmap: big blocks come from that
    # heap too. Trim threshold -1: the heap top is never given back (glibc's documented value).
    ok = all(libc.mallopt(param, value) == 1 for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
    _applied = ok
    return ok
