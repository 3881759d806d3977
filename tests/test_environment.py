"""gptsovits_jax.environment: temporary os.environ changes for child processes."""

import os
import subprocess
import sys

import pytest

from gptsovits_jax.environment import apply_changes, environment


def test_environment_applies_changes_and_restores_them(monkeypatch):
    monkeypatch.setenv("MALLOC_CONF", "narenas:1")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    with environment({"LD_PRELOAD": "/x/libjemalloc.so.2", "MALLOC_CONF": None}):
        assert os.environ["LD_PRELOAD"] == "/x/libjemalloc.so.2" and "MALLOC_CONF" not in os.environ
    assert os.environ["MALLOC_CONF"] == "narenas:1" and "LD_PRELOAD" not in os.environ


def test_apply_changes_sets_and_removes_in_any_mapping():
    env = {"A": "1", "B": "2"}
    apply_changes(env, {"A": None, "C": "3", "D": None})
    assert env == {"B": "2", "C": "3"}


def test_children_see_the_changes_and_an_error_still_restores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    with pytest.raises(RuntimeError), environment({"OMP_NUM_THREADS": "1"}):
        child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"], capture_output=True, text=True)
        assert child.stdout.strip() == "1"
        raise RuntimeError
    assert os.environ["OMP_NUM_THREADS"] == "4"
