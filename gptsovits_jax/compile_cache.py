"""JAX's persistent compilation cache for every command: a compiled step is read from disk the next time.

A resumed or repeated run of the same config compiles the same programs again; with the cache they are
loaded instead (on this project's 2-core CPU the tiny SoVITS step's compile is most of a short run). The
cache directory is, in order: ``--compile-cache DIR``, the ``JAX_COMPILATION_CACHE_DIR`` environment
variable, ``$XDG_CACHE_HOME/gptsovits-jax/xla`` (``~/.cache/gptsovits-jax/xla``). ``--no-compile-cache``
turns it off. Entries are keyed by the program, the JAX/XLA version and the device, so one directory serves
several configs and machines; deleting it is always safe.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
# Programs that compile faster than this are not written (JAX's own default is 1 s).
MIN_COMPILE_SECONDS = 0.5


def default_compile_cache_dir() -> Path:
    """``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/gptsovits-jax/xla`` (``~/.cache/...``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gptsovits-jax" / "xla"


def _set(env: str, flag: str, value: object) -> None:
    """Set JAX option ``flag``: through its environment variable if jax is not imported yet (no start-up cost), else directly."""
    os.environ[env] = str(value)
    if "jax" in sys.modules:
        sys.modules["jax"].config.update(flag, value)


def enable_compile_cache(directory: str | os.PathLike | None = None) -> Path:
    """Point JAX's persistent compilation cache at ``directory`` (default :func:`default_compile_cache_dir`).

    Call before the first compile of the process. Returns the directory (created if missing). A minimum
    compile time already set by ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` is kept.
    """
    path = Path(directory) if directory is not None else default_compile_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    _set(CACHE_ENV, "jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        _set("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path


def disable_compile_cache() -> None:
    """No persistent compilation cache for this process, whatever ``JAX_COMPILATION_CACHE_DIR`` says."""
    _set("JAX_ENABLE_COMPILATION_CACHE", "jax_enable_compilation_cache", False)
