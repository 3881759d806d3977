"""Test setup: persistent XLA compilation cache and shared fixtures."""

import functools
import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests' programs are tiny and run a few times: XLA:CPU's backend optimisation level 0 halves their compile
# time (a small SoVITS step 26 s instead of 60 s) for a slower run. Subprocesses inherit it. Pass your own
# --xla_backend_optimization_level in XLA_FLAGS to test at another level.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` imported as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The tiny Hugging Face models of tools/make_hf_fixtures.py and transformers' outputs on them.
HF = REPO / "tests" / "fixtures" / "hf"


def hf_formats(model: str) -> dict[str, Path]:
    """The tiny ``model``'s (``"bert"``, ``"hubert"``) directory per weight format: ``safetensors`` and ``bin``."""
    return {"safetensors": HF / f"tiny-{model}-safetensors", "bin": HF / f"tiny-{model}-bin"}


def hf_reference(model: str) -> dict[str, np.ndarray]:
    """Every array of ``tiny_<model>.npz``: the inputs and transformers' outputs of the tiny ``model``."""
    with np.load(HF / f"tiny_{model}.npz") as npz:
        return {name: npz[name] for name in npz.files}


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """Largest absolute difference over the reference's largest magnitude."""
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


@functools.partial(jax.jit, static_argnums=0)
def apply_params(module, params, *inputs):
    """``module.apply({"params": params}, *inputs)``, jitted (the linen module is a static argument)."""
    return module.apply({"params": params}, *inputs)


def assert_loss_and_grads_close(ours, reference, leaf_atol: float) -> None:
    """``(loss, grads)`` pairs of two ways of running the same model (e.g. scanned against looped layers).

    Loss to 1e-5; the whole gradient to 1e-5 in norm; every leaf to 1e-4 of its norm plus ``leaf_atol``
    (the two programs sum in another order).
    """
    import optax

    from gptsovits_jax.optim import param_path

    assert float(ours[0]) == pytest.approx(float(reference[0]), rel=1e-5)
    diff = jax.tree.map(lambda x, y: x - y, ours[1], reference[1])
    assert float(optax.tree.norm(diff)) <= 1e-5 * float(optax.tree.norm(reference[1]))
    for (path, d), g in zip(jax.tree_util.tree_leaves_with_path(diff), jax.tree.leaves(reference[1])):
        assert float(jnp.linalg.norm(d)) <= 1e-4 * float(jnp.linalg.norm(g)) + leaf_atol, param_path(path)


def copy_of(directory: Path, tmp_path: Path) -> Path:
    """A copy of ``directory`` under ``tmp_path``, for a test to break."""
    target = tmp_path / f"copy-{directory.name}"
    shutil.copytree(directory, target)
    return target


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_config():
    from gptsovits_jax.config import load_config

    return load_config(REPO / "configs" / "tiny.yaml")


@pytest.fixture(scope="session")
def v2_config():
    from gptsovits_jax.config import load_config

    return load_config(REPO / "configs" / "v2.yaml")


# Fewer and narrower layers than configs/tiny.yaml: same code paths, a fraction of the compile time.
SMALL_SOVITS = [
    "sovits.hidden_channels=16",
    "sovits.inter_channels=16",
    "sovits.filter_channels=32",
    "sovits.n_layers=1",
    "sovits.gin_channels=16",
    "sovits.ref_hidden=16",
    "sovits.mrte_hidden=16",
    "sovits.posterior_layers=1",
    "sovits.flow_layers=1",
    "sovits.n_flows=1",
    "sovits.upsample_initial_channel=32",
    "sovits.resblock_kernel_sizes=[3]",
    "sovits.resblock_dilation_sizes=[[1]]",
    "sovits.segment_frames=8",
    "sovits.codebook_size=16",
    "gpt.vocab_size=17",
    "discriminator.periods=[2, 3]",
    "discriminator.period_channels=[4, 8, 8]",
    "discriminator.scale_channels=[4, 8, 8]",
    "discriminator.scale_groups=[1, 2, 2]",
    "sovits_train.batch_size=2",
    "sovits_train.steps=100",
]


def random_params(abstract, seed):
    """Random values shaped like ``abstract`` (from ``jax.eval_shape``), scaled like the real initialisers.

    Compiling the real initialisers of a whole synthesizer takes minutes on CPU (one
    random-bits computation per parameter); the tests that need the real init use small modules.
    """
    rng = np.random.default_rng(seed)

    def leaf(path, a):
        name = path[-1].key
        if name == "gamma":
            value = np.ones(a.shape)
        elif name == "beta":
            value = np.zeros(a.shape)
        elif name == "weight_g":
            value = rng.uniform(0.3, 0.8, a.shape)
        elif name in ("kernel", "weight_v", "weight_orig"):
            value = rng.normal(size=a.shape) / np.sqrt(np.prod(a.shape[:-1]))
        elif name == "embedding":
            value = rng.normal(size=a.shape)
        else:
            value = 0.1 * rng.normal(size=a.shape)
        return jnp.asarray(value, a.dtype)

    return jax.tree_util.tree_map_with_path(leaf, abstract)


# The GPT of configs/tiny.yaml narrower and one layer deep, for tests that compile it several times.
SMALL_GPT = [
    "gpt.hidden_dim=32",
    "gpt.num_heads=2",
    "gpt.num_layers=1",
    "gpt.ffn_dim=64",
]


@pytest.fixture(scope="session")
def small_sovits_config(repo_root):
    from gptsovits_jax.config import load_config

    return load_config(repo_root / "configs/tiny.yaml", SMALL_SOVITS)
