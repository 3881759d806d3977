"""gptsovits_jax.host_memory: freed host memory stays mapped, so XLA's temporary buffer is not page-faulted every call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gptsovits_jax import host_memory

REPO = Path(__file__).resolve().parents[1]

# A jitted function whose 144 MB dot output lives in XLA's temporary buffer: every call allocates and frees it.
_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from gptsovits_jax.host_memory import reuse_freed_memory
    applied = reuse_freed_memory(sys.argv[1])
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x: jnp.max(x @ x.T) + jnp.min(jnp.sin(x @ x.T)))
    x = jnp.ones((6000, 16), jnp.float32)
    faults = []
    for _ in range(24):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(f(x))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
    print(json.dumps({"applied": applied, "faults": faults, "temp_bytes": temp}))
    """
)


def _probe(mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env.pop(host_memory.ENV_VAR, None)
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=env, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(host_memory._glibc() is None, reason="needs glibc's mallopt (Linux)")
def test_temporary_buffer_is_faulted_every_call_by_default_and_reused_when_applied():
    page = os.sysconf("SC_PAGE_SIZE")
    default = _probe("off")
    assert default["applied"] is False
    pages = default["temp_bytes"] // page
    assert pages > 30_000  # the probe really has a big temporary buffer
    # glibc's default: a fresh mmap per call, every page of it faulted again.
    assert all(f > 0.9 * pages for f in default["faults"][-4:]), default

    reused = _probe("on")
    assert reused["applied"] is True
    # The heap grows for the first few calls (about 10 at most here: a call may allocate before the previous one's
    # buffer is freed, and small blocks split freed ones); from then on every buffer is one already mapped.
    assert sum(reused["faults"][-8:]) < 0.05 * pages, reused


def test_off_and_invalid_modes(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied", False)
    assert host_memory.reuse_freed_memory("off") is False
    assert host_memory.reuse_freed_memory("0") is False
    monkeypatch.setenv(host_memory.ENV_VAR, "sometimes")
    with pytest.raises(ValueError, match=f"{host_memory.ENV_VAR}='sometimes'"):
        host_memory.reuse_freed_memory()


@pytest.mark.parametrize(("platforms", "expected"), [("cpu", False), ("cuda", True), ("cpu,tpu", True), ("tpu", True), (" CPU ", False)])
def test_auto_mode_follows_jax_platforms(monkeypatch, platforms, expected):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert host_memory._accelerator_expected() is expected


def test_auto_mode_skips_accelerator_machines(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied", False)
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert host_memory.reuse_freed_memory("auto") is False
    assert host_memory._applied is False


def test_cli_applies_it_before_running_a_command(monkeypatch, capsys, tmp_path):
    from gptsovits_jax import cli

    calls = []
    monkeypatch.setattr(host_memory, "reuse_freed_memory", lambda mode=None: calls.append(mode) or True)
    assert cli.main(["plot-lr", "--config", str(REPO / "configs" / "tiny.yaml"), "--stage", "gpt", "--out", str(tmp_path / "lr.png")]) == 0
    assert calls == [None]
    capsys.readouterr()
