"""Check that upstream GPT-SoVITS's own inference loaders read what ``export-upstream`` writes, at full v2 size.

Run by hand, never by CI or users; two steps in two Pythons:

1. ``write`` (the project's venv): full-size v2 files from seeded random weights, written by the same
   function ``export-upstream`` uses (:func:`gptsovits_jax.upstream_io.write_upstream_files`), with
   ``configs/finetune-v2.yaml``'s values in their configs; also an untagged copy of the SoVITS file;
2. ``check`` (a Python with torch and upstream's requirements for its model modules, e.g.
   /work/torchenv, and a checkout of upstream): what upstream's ``inference_webui.py`` /
   ``TTS_infer_pack/TTS.py`` do with the files, step by step:

   - GPT: ``torch.load(path, weights_only=False)``; ``config["data"]["max_sec"]``; upstream's
     ``Text2SemanticDecoder(config=config)`` (the model of ``Text2SemanticLightningModule``) and a
     strict ``load_state_dict`` of ``weight`` without its ``model.`` prefix;
   - SoVITS: ``process_ckpt.get_sovits_version_from_path_fast`` (v2 expected, tagged and untagged);
     ``process_ckpt.load_sovits_new``; ``SynthesizerTrn(filter_length // 2 + 1, segment_size //
     hop_length, n_speakers=n_speakers, **model)``, ``del enc_q`` and ``load_state_dict`` with no
     missing or unexpected key;
   - every tensor torch reads equals, bit for bit, what the project's torch-free reader reads.

Usage::

    .venv/bin/python tools/check_upstream_export.py write --out /tmp/export_check
    git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/gpt-sovits    # an upstream checkout
    /work/torchenv/bin/python tools/check_upstream_export.py check --files /tmp/export_check --upstream /tmp/gpt-sovits
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
NAME = "check"


def write(out: Path) -> None:
    import jax

    from gptsovits_jax.config import load_config
    from gptsovits_jax.torch_checkpoint import read_torch_checkpoint, write_torch_checkpoint
    from gptsovits_jax.train.restore import abstract_variables
    from gptsovits_jax.upstream_io import write_upstream_files

    config = load_config(REPO / "configs" / "finetune-v2.yaml")
    rng = np.random.default_rng(0)

    def random(leaf):
        if leaf.dtype == np.bool_:
            return np.ones(leaf.shape, np.bool_)
        return (0.05 * rng.standard_normal(leaf.shape)).astype(np.float32)

    gpt = jax.tree.map(random, abstract_variables("gpt", config))
    sovits = jax.tree.map(random, abstract_variables("sovits", config))
    generator = {"params": sovits["params_g"], "quantizer": sovits["quantizer"]}
    gpt_path, sovits_path = write_upstream_files(out, NAME, gpt["params"], config, 15, generator, config, 8, 96)
    untagged = out / f"{NAME}_untagged.pth"
    write_torch_checkpoint(read_torch_checkpoint(sovits_path), untagged)
    for path in (gpt_path, sovits_path, untagged):
        print(f"wrote {path} ({path.stat().st_size:,} bytes, {path.stat().st_size / 1024:,.0f} KiB)")


def _import_upstream(upstream: Path):
    root = upstream
    code = upstream / "GPT_SoVITS"
    f5 = types.ModuleType("f5_tts")  # v3/v4 only; not installed here
    f5_model = types.ModuleType("f5_tts.model")
    f5_model.DiT = None
    f5.model = f5_model
    sys.modules.setdefault("f5_tts", f5)
    sys.modules.setdefault("f5_tts.model", f5_model)
    cwd = os.getcwd()
    os.chdir(root)  # process_ckpt's i18n reads locale files relative to the working directory
    try:
        sys.path.insert(0, str(root))
        sys.path.insert(0, str(code))
        import process_ckpt
        from AR.models.t2s_model import Text2SemanticDecoder
        from module.models import SynthesizerTrn
    finally:
        os.chdir(cwd)
    return process_ckpt, Text2SemanticDecoder, SynthesizerTrn


def _same_bits(torch_tensors, ours, what: str) -> None:
    assert set(torch_tensors) == set(ours), f"{what}: keys differ"
    for key, tensor in torch_tensors.items():
        theirs = tensor.numpy()
        assert theirs.dtype == ours[key].dtype == np.float16, (what, key, theirs.dtype)
        assert np.array_equal(theirs.view(np.uint16), ours[key].view(np.uint16)), (what, key)


def check(files: Path, upstream: Path) -> None:
    import torch

    from gptsovits_jax.torch_checkpoint import read_torch_checkpoint

    process_ckpt, Text2SemanticDecoder, SynthesizerTrn = _import_upstream(upstream)
    gpt_path = next(files.glob(f"{NAME}-e*.ckpt"))
    sovits_path = next(files.glob(f"{NAME}_e*_s*.pth"))
    untagged = files / f"{NAME}_untagged.pth"

    dict_s1 = torch.load(gpt_path, map_location="cpu", weights_only=False)
    config = dict_s1["config"]
    print(f"{gpt_path.name}: keys {list(dict_s1)}, info {dict_s1['info']!r}, max_sec {config['data']['max_sec']}")
    model = Text2SemanticDecoder(config=config, top_k=3)
    result = model.load_state_dict({k.removeprefix("model."): v for k, v in dict_s1["weight"].items()}, strict=True)
    print(f"  Text2SemanticDecoder(config) strict load_state_dict: {result}")
    _same_bits(dict_s1["weight"], read_torch_checkpoint(gpt_path)["weight"], gpt_path.name)
    print(f"  {len(dict_s1['weight'])} float16 tensors, bit-identical to the project's reader")

    for path in (sovits_path, untagged):
        print(f"{path.name}: first bytes {path.read_bytes()[:2]!r}, {path.stat().st_size / 1024:,.0f} KiB")
        version = process_ckpt.get_sovits_version_from_path_fast(str(path))
        print(f"  get_sovits_version_from_path_fast: {tuple(version)}")
        assert tuple(version) == ("v2", "v2", False), version
    dict_s2 = process_ckpt.load_sovits_new(str(sovits_path))
    hps = dict_s2["config"]
    print(f"  load_sovits_new: keys {list(dict_s2)}, info {dict_s2['info']!r}")
    net = SynthesizerTrn(
        hps["data"]["filter_length"] // 2 + 1,
        hps["train"]["segment_size"] // hps["data"]["hop_length"],
        n_speakers=hps["data"]["n_speakers"],
        **hps["model"],
    )
    del net.enc_q  # inference_webui.py does this for every non-pretrained file
    result = net.load_state_dict(dict_s2["weight"], strict=False)
    print(f"  SynthesizerTrn(**config) load_state_dict: {result}")
    assert not result.missing_keys and not result.unexpected_keys, result
    _same_bits(dict_s2["weight"], read_torch_checkpoint(sovits_path)["weight"], sovits_path.name)
    print(f"  {len(dict_s2['weight'])} float16 tensors, bit-identical to the project's reader")
    print("all checks passed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("write", help="full-size v2 exports of random weights (project venv)")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("check", help="read them with upstream's own loaders and modules (torch venv)")
    p.add_argument("--files", type=Path, required=True)
    p.add_argument("--upstream", type=Path, required=True, help="upstream checkout (the folder holding GPT_SoVITS/)")
    args = parser.parse_args()
    if args.command == "write":
        write(args.out)
    else:
        check(args.files, args.upstream)


if __name__ == "__main__":
    main()
