"""Parameter counts per top-level submodule, computed from shapes only (no compile, no memory)."""

from __future__ import annotations

from typing import Any

import jax

from gptsovits_jax.config import Config


def _count(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def _by_submodule(params: dict[str, Any]) -> dict[str, int]:
    return {name: _count(sub) for name, sub in params.items()}


def parameter_counts(config: Config) -> dict[str, dict[str, Any]]:
    """``{"gpt" | "sovits" | "discriminator": {"total": n, "submodules": {name: n}}}``.

    Counts weight-normed convolutions by their stored ``weight_g`` and ``weight_v`` (as
    upstream does); the quantizer codebook is a buffer, not a parameter.
    """
    from gptsovits_jax.train.common import init_key
    from gptsovits_jax.train.gpt_step import init_gpt_params
    from gptsovits_jax.train.sovits_step import init_sovits_variables

    key = init_key(0)
    gpt = jax.eval_shape(lambda k: init_gpt_params(config, k), key)
    params_g, quantizer, params_d = jax.eval_shape(lambda k: init_sovits_variables(config, k), key)
    out = {}
    for name, params in (("gpt", gpt), ("sovits", params_g), ("discriminator", params_d)):
        out[name] = {"total": _count(params), "submodules": _by_submodule(params)}
    out["sovits"]["buffers"] = {"quantizer": _count(quantizer)}
    return out


def format_counts(counts: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of :func:`parameter_counts`."""
    lines = []
    for model, entry in counts.items():
        lines.append(f"{model:<16}{entry['total']:>14,}")
        for name, n in entry["submodules"].items():
            lines.append(f"  {name:<26}{n:>14,}")
        for name, n in entry.get("buffers", {}).items():
            lines.append(f"  {name + ' (buffer)':<26}{n:>14,}")
    return "\n".join(lines)
