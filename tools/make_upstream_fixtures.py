"""Write reference fixtures from upstream GPT-SoVITS's own PyTorch modules (run by hand, never by CI or users).

Needs a Python with torch, einops, numpy, tqdm and pyyaml (not the project's venv) and a
local upstream checkout; nothing is downloaded. Upstream's modules are imported from
``--upstream`` (its ``GPT_SoVITS/`` folder); the ``f5_tts.model`` module that v2 does
not use is stubbed.

    python3.11 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 einops numpy tqdm pyyaml
    /tmp/torchenv/bin/python tools/make_upstream_fixtures.py init-stats --upstream /path/to/GPT-SoVITS/GPT_SoVITS

Subcommands:

* ``init-stats``: builds upstream's v2 ``SynthesizerTrn`` (``configs/s2.json``, with ``enc_q``)
  and ``MultiPeriodDiscriminator`` exactly as ``s2_train.py`` does, under several seeds, and
  writes every parameter's upstream name, shape and statistics (mean, standard deviation,
  mean absolute value, pooled over the seeds) to ``tests/fixtures/upstream/init_stats_v2.json``.
  The file is also the key/shape manifest of upstream's v2 training generator and discriminator.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "upstream"


def import_upstream(upstream: Path) -> dict[str, types.ModuleType]:
    """Upstream's ``module.models`` and its config, imported from the checkout's ``GPT_SoVITS`` folder."""
    if not (upstream / "module" / "models.py").is_file():
        raise SystemExit(f"{upstream}: not upstream's GPT_SoVITS folder (no module/models.py)")
    f5 = types.ModuleType("f5_tts")
    f5_model = types.ModuleType("f5_tts.model")
    f5_model.DiT = None  # v3/v4 only
    f5.model = f5_model
    sys.modules.setdefault("f5_tts", f5)
    sys.modules.setdefault("f5_tts.model", f5_model)
    sys.path.insert(0, str(upstream))
    import module.models as models

    return {"models": models}


def _build_v2(models: types.ModuleType, upstream: Path, seed: int):
    import torch

    hps = json.loads((upstream / "configs" / "s2.json").read_text())
    data, model, train = hps["data"], dict(hps["model"]), hps["train"]
    model["version"] = "v2"
    torch.manual_seed(seed)
    net_g = models.SynthesizerTrn(
        data["filter_length"] // 2 + 1,
        train["segment_size"] // data["hop_length"],
        n_speakers=data["n_speakers"],
        **model,
    )
    net_d = models.MultiPeriodDiscriminator(model["use_spectral_norm"], version="v2")
    return net_g, net_d


def init_stats(upstream: Path, out_dir: Path, seeds: list[int]) -> Path:
    """Per-parameter statistics of freshly built upstream v2 modules, pooled over ``seeds``."""
    mods = import_upstream(upstream)
    pooled: dict[str, dict] = {}
    for seed in seeds:
        net_g, net_d = _build_v2(mods["models"], upstream, seed)
        for prefix, net in (("generator", net_g), ("discriminator", net_d)):
            for name, p in net.named_parameters():
                x = p.detach().double().numpy()
                entry = pooled.setdefault(f"{prefix}:{name}", {"shape": list(x.shape), "values": []})
                entry["values"].append(x.ravel())
    records = {"generator": {}, "discriminator": {}}
    for key, entry in pooled.items():
        part, name = key.split(":", 1)
        x = np.concatenate(entry["values"])
        records[part][name] = {
            "shape": entry["shape"],
            "mean": float(x.mean()),
            "std": float(x.std()),
            "mean_abs": float(np.abs(x).mean()),
        }
    import torch

    payload = {
        "about": "upstream GPT-SoVITS v2 SynthesizerTrn (configs/s2.json, enc_q included) and MultiPeriodDiscriminator, "
        "freshly constructed as s2_train.py does; per-parameter statistics pooled over the seeds",
        "torch": torch.__version__,
        "seeds": seeds,
        **records,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "init_stats_v2.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path}: {len(records['generator'])} generator and {len(records['discriminator'])} discriminator parameters")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init-stats", help="statistics of freshly built upstream v2 SoVITS modules")
    p.add_argument("--upstream", type=Path, required=True, help="upstream checkout's GPT_SoVITS folder")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    args = parser.parse_args(argv)
    if args.command == "init-stats":
        init_stats(args.upstream.resolve(), args.out, args.seeds)


if __name__ == "__main__":
    main()
