"""Freshly initialised SoVITS parameters hold what upstream's freshly built modules hold.

``tests/fixtures/upstream/init_stats_v2.json`` records, for every parameter of upstream's
v2 ``SynthesizerTrn`` (with ``enc_q``) and ``MultiPeriodDiscriminator`` built as
``s2_train.py`` builds them, its shape and its mean, standard deviation and mean absolute
value over four seeds (``tools/make_upstream_fixtures.py init-stats``, run with torch).
The project's ``init_sovits_variables`` at ``configs/v2.yaml`` must match them leaf by leaf:
an initialiser on the wrong scale (e.g. the decoder's ``N(0, 0.01)`` that upstream's
``init_weights`` never applies) shows up as a ratio far from 1.
"""

import dataclasses
import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from gptsovits_jax.convert import sovits_param_path
from gptsovits_jax.train.common import init_key
from gptsovits_jax.train.sovits_step import init_sovits_variables

# Statistics of n values drawn from the right distribution stay within a few percent of the
# reference for the sizes compared (n >= MIN_VALUES); a wrong scale is off by tens of percent.
MIN_VALUES = 1024
RTOL = 0.1


@pytest.fixture(scope="module")
def upstream_stats(repo_root):
    return json.loads((repo_root / "tests/fixtures/upstream/init_stats_v2.json").read_text())


@dataclasses.dataclass(frozen=True)
class LeafStats:
    """What the tests read of one freshly initialised parameter (kept instead of the v2 arrays themselves)."""

    size: int
    mean: float
    std: float
    mean_abs: float
    min: float
    max: float


@pytest.fixture(scope="module")
def fresh_v2(v2_config):
    """Statistics of every freshly initialised v2 generator and discriminator parameter.

    Built once, by the one test below (under xdist a fixture is built by every worker whose tests
    need it), from the jitted initialiser with the training's key (``init_key``), as training does;
    the float64 copies of the v2 parameters the statistics come from are dropped.
    """
    params_g, _, params_d = jax.jit(init_sovits_variables, static_argnums=0)(v2_config, init_key(0))

    def stats(x) -> LeafStats:
        x = np.asarray(x, np.float64)
        return LeafStats(x.size, x.mean(), x.std(), np.abs(x).mean(), x.min(), x.max())

    return {
        part: {path: stats(x) for path, x in traverse_util.flatten_dict(tree, sep="/").items()}
        for part, tree in (("generator", params_g), ("discriminator", params_d))
    }


def statistics_off_upstream(upstream_stats: dict, fresh: dict, part: str) -> tuple[int, list[str]]:
    """How many of ``part``'s parameters were compared, and each statistic that is off upstream's."""
    compared, off = 0, []
    for key, ref in upstream_stats[part].items():
        x = fresh[part][sovits_param_path(key)]
        if ref["std"] == 0:  # a constant: LayerNorm gamma/beta, the coupling layers' zero-initialised post
            if not x.min == x.max == ref["mean"]:
                off.append(f"{key}: upstream holds the constant {ref['mean']}, project values {x.min:.4g}..{x.max:.4g}")
            continue
        if x.size < MIN_VALUES:
            continue
        compared += 1
        for name, value in (("std", x.std), ("mean_abs", x.mean_abs)):
            if not abs(value - ref[name]) <= RTOL * ref[name] + 1e-12:
                off.append(f"{key} {name}: project {value:.4g}, upstream {ref[name]:.4g}")
        # Means: zero for random initialisers (within sampling error), exact for constants (LayerNorm gamma = 1).
        if not abs(x.mean - ref["mean"]) <= 6 * ref["std"] / np.sqrt(x.size) + 1e-12:
            off.append(f"{key} mean: project {x.mean:.4g}, upstream {ref['mean']:.4g}")
    return compared, off


@pytest.mark.slow
def test_fresh_parameters_have_upstream_statistics(upstream_stats, fresh_v2):
    """Generator and discriminator leaf by leaf, in one test so that one worker builds the v2 parameters."""
    for part, at_least in (("generator", 200), ("discriminator", 40)):
        compared, off = statistics_off_upstream(upstream_stats, fresh_v2, part)
        assert compared > at_least, part  # most parameters, not a vacuous comparison
        assert not off, "\n".join(off)

    # The decoder is where the two inits parted: upstream's ups/resblock gains are ||U(-b, b)|| ~ 0.577 (k3 resblock of 256
    # channels: sqrt(768) * b / sqrt(3) with b = 1/sqrt(768)), N(0, 0.01) kernels would give 0.28.
    g = fresh_v2["generator"]
    for path in ("dec/resblocks_0/convs1_0/weight_g", "dec/ups_0/weight_g"):
        assert abs(g[path].mean - 1 / np.sqrt(3)) < 0.01, path
    assert abs(upstream_stats["generator"]["dec.resblocks.0.convs1.0.weight_g"]["mean"] - 1 / np.sqrt(3)) < 0.01
