"""gptsovits_jax.compile_cache: every command reuses compiled programs from a persistent cache unless told not to."""

import os
import subprocess
import sys
from pathlib import Path

from gptsovits_jax.compile_cache import default_compile_cache_dir


def test_default_directory_is_the_environment_variable_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    assert default_compile_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_compile_cache_dir() == tmp_path / "xdg" / "gptsovits-jax" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_compile_cache_dir() == tmp_path / "home" / ".cache" / "gptsovits-jax" / "xla"


def _plot_lr(repo_root: Path, tmp_path: Path, flags: list[str], env: dict[str, str]) -> None:
    """``gptsovits-jax FLAGS plot-lr``: a command whose schedules compile a few small XLA programs."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_ENABLE_COMPILATION_CACHE", "XDG_CACHE"))}
    # Write every program, however small or quick to compile, so that a command this short leaves entries.
    base |= {
        "PYTHONPATH": str(repo_root),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    command = [sys.executable, "-m", "gptsovits_jax.cli", *flags, "plot-lr", "--config", str(repo_root / "configs/tiny.yaml")]
    command += ["--stage", "gpt", "--out", str(tmp_path / "lr.png")]
    subprocess.run(command, env=base | env, check=True, capture_output=True, timeout=300)


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_commands_write_compiled_programs_to_the_cache_by_default(repo_root, tmp_path):
    _plot_lr(repo_root, tmp_path, [], {"HOME": str(tmp_path / "home")})
    assert any(name.endswith("-cache") for name in _entries(tmp_path / "home/.cache/gptsovits-jax/xla"))
    _plot_lr(repo_root, tmp_path, ["--compile-cache", str(tmp_path / "chosen")], {"HOME": str(tmp_path / "home2")})
    assert _entries(tmp_path / "chosen") and not _entries(tmp_path / "home2/.cache/gptsovits-jax/xla")


def test_no_compile_cache_overrides_the_environment_variable(repo_root, tmp_path):
    _plot_lr(
        repo_root, tmp_path, ["--no-compile-cache"], {"HOME": str(tmp_path / "home"), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "env")}
    )
    assert not _entries(tmp_path / "env") and not _entries(tmp_path / "home/.cache/gptsovits-jax/xla")
