"""The ``gptsovits-jax`` command. Each subcommand imports what it needs when it runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/tiny.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)"
    )


def _load(args: argparse.Namespace):
    from gptsovits_jax.config import load_config

    return load_config(args.config, args.overrides)


def cmd_plot_lr(args: argparse.Namespace) -> int:
    from gptsovits_jax.lr_plot import learning_rate_curves, plot_learning_rates

    config = _load(args)
    out = plot_learning_rates(config, args.stage, args.out)
    steps, curves = learning_rate_curves(config, args.stage, num_points=5)
    print(f"wrote {out}")
    for name, lr in curves.items():
        values = ", ".join(f"{s}: {v:.3g}" for s, v in zip(steps, lr))
        print(f"  {name:>20}  {values}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptsovits-jax", description="GPT-SoVITS v2 training in JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plot-lr", help="plot every optimizer group's learning rate over a stage's run")
    _add_config(p)
    p.add_argument("--stage", choices=("sovits", "gpt"), required=True)
    p.add_argument("--out", default="lr.png", help="output PNG path")
    p.set_defaults(func=cmd_plot_lr)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from gptsovits_jax.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
