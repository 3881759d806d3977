"""Write reference fixtures from upstream GPT-SoVITS's own PyTorch modules (run by hand, never by CI or users).

Needs a Python with torch, einops, numpy, tqdm, pyyaml and torchmetrics (not the project's venv)
and a local upstream checkout; nothing is downloaded. Upstream's modules are imported from
``--upstream`` (its ``GPT_SoVITS/`` folder); the ``f5_tts.model`` module that v2 does
not use is stubbed.

    python3.11 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 einops numpy tqdm pyyaml torchmetrics
    /tmp/torchenv/bin/python tools/make_upstream_fixtures.py init-stats --upstream /path/to/GPT-SoVITS/GPT_SoVITS

Subcommands:

* ``init-stats``: builds upstream's v2 ``SynthesizerTrn`` (``configs/s2.json``, with ``enc_q``)
  and ``MultiPeriodDiscriminator`` exactly as ``s2_train.py`` does, under several seeds, and
  writes every parameter's upstream name, shape and statistics (mean, standard deviation,
  mean absolute value, pooled over the seeds) to ``tests/fixtures/upstream/init_stats_v2.json``.
  The file is also the key/shape manifest of upstream's v2 training generator and discriminator.
* ``manifest``: the key, shape and dtype of every tensor in upstream's three full-size v2 files
  (the GPT ``Text2SemanticDecoder`` of ``configs/s1longer-v2.yaml`` under the ``model.`` prefix that
  its Lightning module's state dict and the ``weight`` dict of s1 checkpoints use; the generator
  with ``enc_q`` and the quantizer's buffers; the discriminator), as their state dicts hold them, to
  ``tests/fixtures/upstream/manifest_v2.json``.
* ``parity``: upstream's GPT, generator and discriminator at small sizes with seeded random weights
  (rounded to float16, so the float16 files hold exactly the weights the outputs were computed
  with; a random codebook with ``inited = 1``), saved as upstream saves them (``parity_s1.ckpt``,
  ``parity_s2G.pth``, ``parity_s2D.pth``), with inputs and outputs of upstream's own forward code
  (``parity_v2.npz``) and the sizes and project overrides (``parity_v2.json``).
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
    import AR.models.t2s_model as t2s_model
    import module.models as models

    return {"models": models, "t2s_model": t2s_model}


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


# --------------------------------------------------------------------------- manifest


def _gpt_v2_config(upstream: Path) -> dict:
    import yaml

    return yaml.safe_load((upstream / "configs" / "s1longer-v2.yaml").read_text())


def _records(state_dict, prefix: str = "") -> dict[str, dict]:
    return {prefix + k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in state_dict.items()}


def manifest(upstream: Path, out_dir: Path) -> Path:
    """Key, shape and dtype of every tensor in upstream's full-size v2 GPT, generator and discriminator state dicts."""
    import torch

    mods = import_upstream(upstream)
    config = _gpt_v2_config(upstream)
    gpt = mods["t2s_model"].Text2SemanticDecoder(config=config, top_k=3)
    net_g, net_d = _build_v2(mods["models"], upstream, 0)
    payload = {
        "about": "every tensor of upstream GPT-SoVITS v2's three model files, as the modules' state dicts hold them "
        "(names, shapes, dtypes; no values). gpt: Text2SemanticDecoder at configs/s1longer-v2.yaml, keys with the "
        "'model.' prefix of Text2SemanticLightningModule that s1 checkpoints' 'weight' dict uses; generator: "
        "SynthesizerTrn v2 (configs/s2.json) with enc_q and the quantizer's codebook buffers; discriminator: "
        "MultiPeriodDiscriminator v2. Upstream's exported and pretrained files hold the same keys as float16 "
        "(s1_train.py and process_ckpt.savee call .half(); exports leave out enc_q).",
        "torch": torch.__version__,
        "gpt_model_config": config["model"],
        "gpt": _records(gpt.state_dict(), "model."),
        "generator": _records(net_g.state_dict()),
        "discriminator": _records(net_d.state_dict()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "manifest_v2.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path}: " + ", ".join(f"{part} {len(payload[part])} tensors" for part in ("gpt", "generator", "discriminator")))
    return path


# --------------------------------------------------------------------------- parity

# Small sizes that upstream's modules and the project's both accept. Upstream hard-codes some sizes in its
# constructors (the 768-channel SSL projection and 1024 x 768 codebook, the 192/512-channel MRTE, the reference
# encoder's 128 hidden channels, the discriminators' channel lists, the 732-symbol phoneme table of TextEncoder);
# the tool rebuilds exactly those submodules from upstream's own classes at small sizes, in place, so the state
# dicts keep upstream's key names and order, and upstream's forward code runs unchanged.
PARITY_GPT = {"vocab_size": 33, "phoneme_vocab_size": 732, "hidden_dim": 32, "head": 2, "n_layer": 2}
PARITY_SOVITS = {
    "ssl_dim": 16,
    "inter_channels": 8,
    "hidden_channels": 8,
    "filter_channels": 16,
    "n_heads": 2,
    "n_layers": 2,
    "kernel_size": 3,
    "gin_channels": 16,
    "ref_hidden": 8,
    "mrte_heads": 2,
    "codebook_size": 32,
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
}
PARITY_DISC = {"period_channels": [4, 8, 8, 8, 8], "scale_channels": [4, 8, 8, 8, 8, 8], "scale_groups": [1, 2, 2, 2, 2, 1]}

# The same sizes as overrides of configs/tiny.yaml (gptsovits_jax.config.load_config).
PARITY_OVERRIDES = [
    "gpt.vocab_size=33",
    "gpt.hidden_dim=32",
    "gpt.num_heads=2",
    "gpt.num_layers=2",
    "gpt.ffn_dim=128",
    "ssl.dim=16",
    "sovits.inter_channels=8",
    "sovits.hidden_channels=8",
    "sovits.filter_channels=16",
    "sovits.n_heads=2",
    "sovits.n_layers=2",
    "sovits.kernel_size=3",
    "sovits.window_size=4",
    "sovits.gin_channels=16",
    "sovits.ref_spec_bins=704",
    "sovits.ref_hidden=8",
    "sovits.mrte_hidden=16",
    "sovits.mrte_heads=2",
    "sovits.codebook_size=32",
    "sovits.n_q=1",
    "sovits.posterior_layers=16",
    "sovits.posterior_kernel=5",
    "sovits.flow_layers=4",
    "sovits.n_flows=4",
    "sovits.flow_kernel=5",
    "sovits.upsample_rates=[10, 8, 2, 2, 2]",
    "sovits.upsample_kernel_sizes=[16, 16, 8, 2, 2]",
    "sovits.upsample_initial_channel=32",
    "sovits.resblock_kernel_sizes=[3, 5]",
    "sovits.resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]]",
    "discriminator.periods=[2, 3, 5, 7, 11]",
    "discriminator.period_channels=[4, 8, 8, 8, 8]",
    "discriminator.scale_channels=[4, 8, 8, 8, 8, 8]",
    "discriminator.scale_groups=[1, 2, 2, 2, 2, 1]",
    "discriminator.use_spectral_norm=false",
]


def _randomise(module, generator) -> None:
    """Seeded random values in every parameter and buffer, rounded to float16 (the files' precision).

    Weights are N(0, 1/fan_in) scaled, norms' gains and ``alpha`` near 1, ``weight_g`` positive; nothing
    is left at a constant initial value (upstream zero-initialises the coupling layers' ``post``, which
    would make the flow the identity).
    """
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "weight_g" or leaf == "alpha" or (p.ndim == 1 and ("norm" in name and leaf in ("weight", "gamma"))):
                value = 1.0 + 0.2 * torch.rand(p.shape, generator=generator)
            elif p.ndim == 1:
                value = 0.1 * torch.randn(p.shape, generator=generator)
            elif "embedding" in name or "emb_rel" in name:
                value = torch.randn(p.shape, generator=generator) * (0.5 if "emb_rel" in name else 1.0)
            else:
                fan_in = p[0].numel()
                value = torch.randn(p.shape, generator=generator) / fan_in**0.5
            p.copy_(value.half().float())


def _small_gpt(mods, upstream: Path, generator):
    config = _gpt_v2_config(upstream)
    config["model"].update(PARITY_GPT, embedding_dim=PARITY_GPT["hidden_dim"], EOS=PARITY_GPT["vocab_size"] - 1)
    gpt = mods["t2s_model"].Text2SemanticDecoder(config=config, top_k=3).eval()
    _randomise(gpt, generator)
    return gpt, config


def _small_generator(mods, generator):
    import torch
    from module import modules
    from module.mrte_model import MRTE
    from module.quantize import ResidualVectorQuantizer

    c = PARITY_SOVITS
    net_g = mods["models"].SynthesizerTrn(
        1025,
        32,
        c["inter_channels"],
        c["hidden_channels"],
        c["filter_channels"],
        c["n_heads"],
        c["n_layers"],
        c["kernel_size"],
        0.1,
        "1",
        c["resblock_kernel_sizes"],
        c["resblock_dilation_sizes"],
        [10, 8, 2, 2, 2],
        c["upsample_initial_channel"],
        [16, 16, 8, 2, 2],
        n_speakers=300,
        gin_channels=c["gin_channels"],
        semantic_frame_rate="25hz",
        freeze_quantizer=True,
        version="v2",
    )
    # Upstream's hard-coded sizes, rebuilt small from the same classes (attribute order, hence key order, kept).
    ssl, h, gin = c["ssl_dim"], c["hidden_channels"], c["gin_channels"]
    net_g.ssl_proj = torch.nn.Conv1d(ssl, ssl, 2, stride=2)
    net_g.quantizer = ResidualVectorQuantizer(dimension=ssl, n_q=1, bins=c["codebook_size"])
    net_g.enc_p.ssl_proj = torch.nn.Conv1d(ssl, h, 1)
    net_g.enc_p.mrte = MRTE(content_enc_channels=h, hidden_size=gin, out_channels=h, n_heads=c["mrte_heads"])
    net_g.ref_enc = modules.MelStyleEncoder(704, style_hidden=c["ref_hidden"], style_vector_dim=gin)
    net_g.eval()
    _randomise(net_g, generator)
    codebook = net_g.quantizer.vq.layers[0]._codebook
    with torch.no_grad():
        codebook.embed.copy_(torch.randn(codebook.embed.shape, generator=generator).half().float())
        codebook.embed_avg.copy_((codebook.embed * 3.0).half().float())
        codebook.cluster_size.copy_((1.0 + 5.0 * torch.rand(codebook.cluster_size.shape, generator=generator)).half().float())
        codebook.inited.fill_(1.0)
    return net_g


def _small_discriminator(mods, generator):
    import torch
    from torch.nn.utils import weight_norm

    models = mods["models"]
    net_d = models.MultiPeriodDiscriminator(False, version="v2")
    ch, groups = PARITY_DISC["scale_channels"], PARITY_DISC["scale_groups"]
    scale = net_d.discriminators[0]
    scale.convs = torch.nn.ModuleList(
        [weight_norm(torch.nn.Conv1d(1, ch[0], 15, 1, padding=7))]
        + [weight_norm(torch.nn.Conv1d(ch[i - 1], ch[i], 41, 4, groups=groups[i], padding=20)) for i in range(1, 5)]
        + [weight_norm(torch.nn.Conv1d(ch[4], ch[5], 5, 1, padding=2))]
    )
    scale.conv_post = weight_norm(torch.nn.Conv1d(ch[5], 1, 3, 1, padding=1))
    pch = [1] + PARITY_DISC["period_channels"]
    for disc in net_d.discriminators[1:]:
        disc.convs = torch.nn.ModuleList(
            weight_norm(torch.nn.Conv2d(pch[i], pch[i + 1], (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0))) for i in range(5)
        )
        disc.conv_post = weight_norm(torch.nn.Conv2d(pch[5], 1, (3, 1), 1, padding=(1, 0)))
    net_d.eval()
    _randomise(net_d, generator)
    return net_d


def _half_weights(state_dict, prefix: str = ""):
    from collections import OrderedDict

    return OrderedDict((prefix + k, v.detach().half()) for k, v in state_dict.items())


def parity(upstream: Path, out_dir: Path, seed: int) -> None:
    """Small upstream models with random weights, their files, and their outputs on fixed inputs."""
    import torch

    mods = import_upstream(upstream)
    from module import commons

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    out: dict[str, np.ndarray] = {}

    def record(name, tensor):
        out[name] = tensor.detach().numpy() if tensor.dtype in (torch.int32, torch.float16) else tensor.detach().float().numpy()

    def random_input(*shape):
        # Float16 values, stored as float16: exact in the fixture at half the size.
        return torch.randn(*shape, generator=generator).half()

    # GPT: teacher-forced logits on a batch without padding (upstream pads text on the left in its mask but
    # right in its collate; only full-length samples mean the same in both).
    gpt, gpt_config = _small_gpt(mods, upstream, generator)
    batch, tx, ty = 2, 5, 4
    phonemes = torch.randint(0, PARITY_GPT["phoneme_vocab_size"], (batch, tx), generator=generator)
    bert = random_input(batch, 1024, tx)
    semantic = torch.randint(0, PARITY_GPT["vocab_size"] - 1, (batch, ty), generator=generator)
    x_lens, y_lens = torch.full((batch,), tx), torch.full((batch,), ty)
    with torch.no_grad():
        xy_pos, xy_attn_mask, targets = gpt.make_input_data(phonemes, x_lens, semantic, y_lens, bert.float())
        xy_dec, _ = gpt.h((xy_pos, None), mask=xy_attn_mask)
        logits = gpt.ar_predict_layer(xy_dec[:, tx - 1 :])
    record("gpt/phoneme_ids", phonemes.int())
    record("gpt/bert", bert.transpose(1, 2))
    record("gpt/semantic_ids", semantic.int())
    record("gpt/targets", targets.int())
    record("gpt/logits", logits)

    # Generator pieces, channels-first as upstream computes them; batch of two with different lengths.
    net_g = _small_generator(mods, generator)
    frames, lengths, text_lens = 8, torch.tensor([8, 6]), torch.tensor([5, 3])
    y_mask = torch.unsqueeze(commons.sequence_mask(lengths, frames), 1).half()
    ssl = random_input(2, PARITY_SOVITS["ssl_dim"], frames)
    spec = random_input(2, 1025, frames).abs() * y_mask
    text = torch.randint(0, 732, (2, 5), generator=generator)
    latent = random_input(2, PARITY_SOVITS["inter_channels"], 4)
    record("generator/ssl", ssl)
    record("generator/spec", spec)
    record("generator/latent", latent)
    ssl, spec, latent, y_mask = ssl.float(), spec.float(), latent.float(), y_mask.float()
    with torch.no_grad():
        ge = net_g.ref_enc(spec[:, :704] * y_mask, y_mask)
        quantized, codes, _, _ = net_g.quantizer(net_g.ssl_proj(ssl), layers=[0])
        quantized50 = torch.nn.functional.interpolate(quantized, size=int(quantized.shape[-1] * 2), mode="nearest")
        _, m_p, logs_p, _, _, _ = net_g.enc_p(quantized50, lengths, text, text_lens, ge)
        _, m_q, logs_q, _ = net_g.enc_q(spec, lengths, g=ge)
        z_p = net_g.flow(m_q, y_mask, g=ge)
        z_rev = net_g.flow(m_p, y_mask, g=ge, reverse=True)
        audio = net_g.dec(latent, g=ge)
    for name, value in {
        "spec_lens": lengths.int(),
        "text": text.int(),
        "text_lens": text_lens.int(),
        "ge": ge[..., 0],
        "codes": codes.int(),
        "quantized": quantized,
        "m_p": m_p,
        "logs_p": logs_p,
        "m_q": m_q,
        "logs_q": logs_q,
        "flow_forward": z_p,
        "flow_reverse": z_rev,
        "audio": audio[:, 0],
    }.items():
        record(f"generator/{name}", value)

    # Discriminators on a waveform whose length no period divides (reflect padding).
    net_d = _small_discriminator(mods, generator)
    wave = torch.tanh(random_input(1, 1, 523).float()).half()
    record("discriminator/audio", wave[:, 0])
    wave = wave.float()
    with torch.no_grad():
        for i, disc in enumerate(net_d.discriminators):
            logit, fmaps = disc(wave)
            record(f"discriminator/{i}/logits", logit)
            for j, fmap in enumerate(fmaps):
                record(f"discriminator/{i}/fmap_{j}", fmap)

    # Files as upstream writes them: s1 export (s1_train.py), s2 generator and discriminator ("weight" dicts).
    s2_config = json.loads((upstream / "configs" / "s2.json").read_text())
    s2_config["model"].update({k: v for k, v in PARITY_SOVITS.items() if k in s2_config["model"]}, version="v2")
    files = {
        "parity_s1.ckpt": {"weight": _half_weights(gpt.state_dict(), "model."), "config": gpt_config, "info": "GPT-e1"},
        "parity_s2G.pth": {"weight": _half_weights(net_g.state_dict()), "config": s2_config, "info": "parity-fixture"},
        "parity_s2D.pth": {"weight": _half_weights(net_d.state_dict())},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, obj in files.items():
        torch.save(obj, out_dir / name)
    np.savez_compressed(out_dir / "parity_v2.npz", **out)
    meta = {
        "about": "small upstream GPT-SoVITS v2 models with seeded random float16 weights (tools/make_upstream_fixtures.py parity); "
        "outputs of upstream's own forward code in float32; load the files through configs/tiny.yaml with project_overrides",
        "torch": torch.__version__,
        "seed": seed,
        "gpt": PARITY_GPT,
        "sovits": PARITY_SOVITS,
        "discriminator": PARITY_DISC,
        "project_overrides": PARITY_OVERRIDES,
        "outputs": {k: {"shape": list(v.shape), "max_abs": float(np.abs(v).max()) if v.size else 0.0} for k, v in out.items()},
    }
    (out_dir / "parity_v2.json").write_text(json.dumps(meta, indent=1) + "\n")
    sizes = ", ".join(f"{name} {(out_dir / name).stat().st_size // 1024} KiB" for name in [*files, "parity_v2.npz"])
    print(f"wrote {out_dir}: {sizes}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init-stats", help="statistics of freshly built upstream v2 SoVITS modules")
    p.add_argument("--upstream", type=Path, required=True, help="upstream checkout's GPT_SoVITS folder")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p = sub.add_parser("manifest", help="key/shape/dtype manifest of upstream's full-size v2 model files")
    p.add_argument("--upstream", type=Path, required=True, help="upstream checkout's GPT_SoVITS folder")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p = sub.add_parser("parity", help="small upstream models, their files, inputs and outputs")
    p.add_argument("--upstream", type=Path, required=True, help="upstream checkout's GPT_SoVITS folder")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "init-stats":
        init_stats(args.upstream.resolve(), args.out, args.seeds)
    elif args.command == "manifest":
        manifest(args.upstream.resolve(), args.out)
    elif args.command == "parity":
        parity(args.upstream.resolve(), args.out, args.seed)


if __name__ == "__main__":
    main()
