"""gptsovits_jax.allocator: choosing jemalloc or the system allocator, and the command restarting itself with it."""

import os
import subprocess
import sys

import pytest

from gptsovits_jax import allocator, cli
from gptsovits_jax.allocator import JEMALLOC_CONF, allocator_env, find_jemalloc, host_allocator, needs_restart, use_allocator


@pytest.fixture
def fake_jemalloc(tmp_path, monkeypatch):
    """Candidate paths where only the second exists, no LD_PRELOAD/MALLOC_CONF in the environment, a CPU run."""
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    lib = tmp_path / "libjemalloc.so.2"
    lib.touch()
    return (str(tmp_path / "absent" / "libjemalloc.so.2"), str(lib))


def test_allocator_env_preloads_jemalloc_with_decay_off_or_names_what_is_missing(fake_jemalloc, monkeypatch):
    missing, lib = fake_jemalloc
    expected = {"LD_PRELOAD": lib, "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}
    assert find_jemalloc(fake_jemalloc) == lib
    assert allocator_env("jemalloc", fake_jemalloc) == expected
    assert allocator_env("auto", fake_jemalloc) == expected
    assert allocator_env("system", fake_jemalloc) == {"LD_PRELOAD": None, "MALLOC_CONF": None}
    assert allocator_env("auto", (missing,)) == {}  # nothing found: the system allocator, no error
    with pytest.raises(FileNotFoundError, match=r"absent/libjemalloc\.so\.2.*apt-get install libjemalloc2"):
        allocator_env("jemalloc", (missing,))
    with pytest.raises(ValueError, match="unknown allocator 'tcmalloc'"):
        allocator_env("tcmalloc", fake_jemalloc)
    monkeypatch.setenv("LD_PRELOAD", "/opt/other/libmalloc.so")
    assert allocator_env("auto", fake_jemalloc) == {}  # a preload the user chose is kept


def test_accelerator_expected_from_jax_platforms_or_an_installed_plugin(monkeypatch):
    for platforms, expected in (("cuda", True), ("tpu,cpu", True), ("cpu", False), (" cpu , cuda", False)):
        monkeypatch.setenv("JAX_PLATFORMS", platforms)
        assert allocator.accelerator_expected(("json",)) is expected, platforms  # JAX_PLATFORMS wins over plugins
    monkeypatch.delenv("JAX_PLATFORMS")
    assert allocator.accelerator_expected(("json",)) is True  # stands in for an installed jax_cuda12_plugin
    assert allocator.accelerator_expected(("no_such_plugin_gptsovits",)) is False


def test_auto_keeps_the_system_allocator_on_an_accelerator(fake_jemalloc, monkeypatch):
    _, lib = fake_jemalloc
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert allocator_env("auto", fake_jemalloc) == {}  # the steps run on the GPU: no restart
    assert allocator_env("jemalloc", fake_jemalloc)["LD_PRELOAD"] == lib  # asked for explicitly: still given


def test_needs_restart_compares_with_this_process_environment(fake_jemalloc, monkeypatch):
    _, lib = fake_jemalloc
    assert not needs_restart({}) and not needs_restart({"LD_PRELOAD": None, "MALLOC_CONF": None})
    assert needs_restart({"LD_PRELOAD": lib, "MALLOC_CONF": JEMALLOC_CONF})
    monkeypatch.setenv("LD_PRELOAD", lib)
    assert needs_restart({"LD_PRELOAD": lib, "MALLOC_CONF": JEMALLOC_CONF})  # MALLOC_CONF still missing
    monkeypatch.setenv("MALLOC_CONF", JEMALLOC_CONF)
    assert not needs_restart({"LD_PRELOAD": lib, "MALLOC_CONF": JEMALLOC_CONF})
    assert needs_restart({"LD_PRELOAD": None, "MALLOC_CONF": None})


def test_use_allocator_restarts_the_same_command_once_with_the_new_environment(fake_jemalloc, monkeypatch):
    _, lib = fake_jemalloc
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-X", "faulthandler", "-m", "gptsovits_jax.cli", "demo", "--workdir", "w"])
    monkeypatch.setenv("OTHER", "kept")

    use_allocator("jemalloc", fake_jemalloc)
    (path, argv, env) = calls.pop()
    assert path == sys.executable
    assert argv == [sys.executable, "-X", "faulthandler", "-m", "gptsovits_jax.cli", "demo", "--workdir", "w"]
    assert env["LD_PRELOAD"] == lib and env["MALLOC_CONF"] == JEMALLOC_CONF and env["OTHER"] == "kept"
    assert "LD_PRELOAD" not in os.environ  # this process's environment is untouched

    # The restarted process finds its environment right and goes on: no second restart.
    monkeypatch.setenv("LD_PRELOAD", lib)
    monkeypatch.setenv("MALLOC_CONF", JEMALLOC_CONF)
    use_allocator("jemalloc", fake_jemalloc)
    use_allocator("auto", fake_jemalloc)
    assert calls == []

    use_allocator("system", fake_jemalloc)
    (_, _, env) = calls.pop()
    assert "LD_PRELOAD" not in env and "MALLOC_CONF" not in env and env["OTHER"] == "kept"


def test_use_allocator_without_a_command_line_warns_and_goes_on(fake_jemalloc, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
    monkeypatch.setattr(sys, "orig_argv", ["python3"])  # an embedded interpreter: re-running it would start a REPL
    with pytest.warns(RuntimeWarning, match="no command line to re-run"):
        use_allocator("jemalloc", fake_jemalloc)
    assert calls == []


def test_host_allocator_reports_what_is_loaded_not_what_is_asked(monkeypatch):
    with open("/proc/self/maps") as maps:
        if "libjemalloc" in maps.read():
            pytest.skip("the test process itself runs with jemalloc")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert host_allocator() == "system"
    monkeypatch.setenv("LD_PRELOAD", "/x/libjemalloc.so.2")  # set now, so not loaded: this process has no jemalloc
    assert host_allocator() == "preloaded"


def _cli_allocator(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``gptsovits-jax --verbose <args> train-gpt`` with a missing config: fails fast, after logging its allocator."""
    command = [sys.executable, "-m", "gptsovits_jax.cli", "--verbose", *args, "train-gpt", "--config", "/nonexistent/tiny.yaml"]
    return subprocess.run([*command, "--workdir", "unused"], env=env, capture_output=True, text=True, timeout=120)


def test_command_restarts_itself_with_jemalloc_and_back(repo_root):
    lib = find_jemalloc()
    if lib is None:
        pytest.skip("jemalloc is not installed (apt-get install libjemalloc2)")
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")} | {"PYTHONPATH": str(repo_root)}

    result = _cli_allocator([], base)  # auto
    assert result.returncode == 2 and "config file not found: /nonexistent/tiny.yaml" in result.stderr
    assert "host allocator: jemalloc" in result.stderr, result.stderr  # read from /proc/self/maps: really loaded

    result = _cli_allocator(["--allocator", "system"], base | {"LD_PRELOAD": lib, "MALLOC_CONF": JEMALLOC_CONF})
    assert result.returncode == 2 and "host allocator: system" in result.stderr, result.stderr


def test_command_names_the_missing_library_as_a_usage_error(tmp_path, monkeypatch, capsys):
    missing = (str(tmp_path / "lib" / "libjemalloc.so.2"),)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(cli, "use_allocator", lambda choice: allocator.use_allocator(choice, missing))
    monkeypatch.setattr(sys, "argv", ["gptsovits-jax", "--allocator", "jemalloc", "summary", "--config", "configs/tiny.yaml"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert f"libjemalloc.so.2 is not in any of {missing[0]}" in capsys.readouterr().err
