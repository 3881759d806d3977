"""Upstream GPT-SoVITS's own PyTorch train steps (GPT, SoVITS G+D), timed at ``step_throughput.py``'s shapes.

    PYTHONPATH=. /work/torchenv/bin/python benchmarks/upstream_step.py --upstream /work/upstream/GPT_SoVITS
        [--models gpt sovits] [--steps 5] [--warmup 1] [--threads 2]
        [--out benchmarks/results/upstream_step_cpu.jsonl]

Run by hand, never in CI: it needs a Python of its own with torch (CPU build) and what upstream's
v2 training modules import (numpy, scipy, librosa, pytorch-lightning, torchmetrics, einops, tqdm,
matplotlib, pyyaml), plus a checkout of upstream (RVC-Boss/GPT-SoVITS); ``--upstream`` is its
``GPT_SoVITS`` folder. None of that is a dependency of this project. ``PYTHONPATH=.`` (the
repository root) lets it take the shape defaults and flags from ``step_throughput.py``, which
imports no JAX at module level, so both scripts time the same work; alternate runs of the two to
compare them on a shared machine.

What each step is, in upstream's own code (fp32, upstream's v2 sizes and hyperparameters):

* ``gpt``: ``Text2SemanticLightningModule.training_step`` (``AR/models/t2s_lightning_module.py``,
  config ``configs/s1longer-v2.yaml``) called as its 5th micro-batch, so every call is
  ``forward_old`` (upstream's non-DPO loss, cross-entropy summed, top-3 accuracy), backward,
  ``ScaledAdam.step``, ``zero_grad`` and the schedule's step: one full optimizer step, as
  ``step_throughput.py`` runs with ``grad_accum_steps=1``. The optimizer and schedule come from the
  module's ``configure_optimizers``; outside a Lightning ``Trainer``, ``manual_backward`` is plain
  ``backward`` (what it does in fp32 on one device) and ``log`` does nothing.
* ``sovits``: one generator + discriminator iteration in ``s2_train.py``'s order, rebuilt here
  from upstream's modules (``SynthesizerTrn`` v2, ``MultiPeriodDiscriminator``, ``module.losses``,
  ``module.mel_processing``; ``configs/s2.json``): generator forward, mel of the real spectrogram
  and of the generated slice, discriminator on (real, generated detached), discriminator loss,
  backward, grad-norm measurement and AdamW step; discriminator again on (real, generated),
  generator loss (mel L1 x 45 + KL + feature matching + adversarial + commitment), backward,
  grad-norm measurement and the generator's AdamW step (upstream's four parameter groups).
  fp16 autocast and the GradScaler are off (upstream's ``fp16_run`` false); the per-epoch
  ExponentialLR step and the logging are not part of a step.

Inputs are synthetic and made before timing (no data loader): GPT phoneme and semantic ids at
full length with zero BERT features (upstream's features for non-Chinese text); SoVITS a harmonic
tone of ``frames`` hops, its spectrogram by upstream's ``spectrogram_torch``, standard-normal SSL
features and random phoneme ids. The frozen quantizer's codebook is random and marked
initialised (upstream loads it from the pretrained checkpoint; its k-means init needs
torch.distributed). ``f5_tts.model`` (v3's DiT, which ``module/models.py`` imports) is stubbed.

Each model runs in a fresh process with ``torch.set_num_threads(--threads)``; after ``--warmup``
untimed steps each of ``--steps`` steps is timed with ``time.perf_counter``. One JSON object per
model goes to stdout and, with ``--out``, is appended to a JSON-lines file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

from step_throughput import MODELS, add_shape_flags, emit_record, shapes_from_args

REPO = Path(__file__).resolve().parents[1]
SEED = 1234  # upstream's train.seed in both stages' configs
GPT_CONFIG = "configs/s1longer-v2.yaml"
SOVITS_CONFIG = "configs/s2.json"


def _git_commit(path: Path) -> str | None:
    """Short commit of the git work tree at ``path``, or None when it is not one."""
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def _import_upstream(upstream: Path) -> None:
    """Put upstream's ``GPT_SoVITS`` folder first on ``sys.path`` (its modules import each other as top-level
    packages) and stub ``f5_tts.model``: ``module/models.py`` imports v3's DiT, which v2 never builds."""

    class DiT:
        def __init__(self, *args: Any, **kwargs: Any):
            raise RuntimeError("f5_tts.model.DiT is stubbed by upstream_step.py: v3/v4 are not benchmarked")

    for name in ("f5_tts", "f5_tts.model"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["f5_tts.model"].DiT = DiT
    sys.path.insert(0, str(upstream))


# --------------------------------------------------------------------------- the steps (run in the child)


def build_gpt(upstream: Path, shapes: dict[str, int]):
    """``(step, work)``: ``step()`` runs upstream's GPT ``training_step`` once and returns its loss."""
    import torch
    import yaml
    from AR.models.t2s_lightning_module import Text2SemanticLightningModule

    config = yaml.safe_load((upstream / GPT_CONFIG).read_text())
    module = Text2SemanticLightningModule(config, output_dir=None, is_train=False)
    module.train()
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    losses = []

    def backward(loss):
        losses.append(loss.detach())
        loss.backward()

    # What a Trainer would hand the module under manual optimisation, fp32 on one device.
    module.optimizers = lambda: optimizer
    module.lr_schedulers = lambda: scheduler
    module.manual_backward = backward
    module.log = lambda *args, **kwargs: None

    b, tx, ty = shapes["batch"], shapes["text_len"], shapes["semantic_len"]
    model = config["model"]
    batch = {
        "phoneme_ids": torch.randint(1, model["phoneme_vocab_size"], (b, tx)),
        "phoneme_ids_len": torch.full((b,), tx, dtype=torch.long),
        "semantic_ids": torch.randint(0, model["EOS"], (b, ty)),
        "semantic_ids_len": torch.full((b,), ty, dtype=torch.long),
        "bert_feature": torch.zeros(b, 1024, tx),
    }

    def step() -> float:
        # batch_idx 4: upstream steps the optimizer on every 4th micro-batch; here on every call.
        module.training_step(batch, batch_idx=4)
        return float(losses.pop())

    return step, {"samples": b, "tokens": b * (tx + ty)}


def _synthetic_audio(batch: int, frames: int, hop: int, sample_rate: int, generator):
    """``[batch, 1, frames * hop]`` harmonic tones (5 harmonics of 110-260 Hz, peak below 1)."""
    import math

    import torch

    t = torch.arange(frames * hop, dtype=torch.float64) / sample_rate
    f0 = 110.0 + 150.0 * torch.rand(batch, 1, 1, generator=generator, dtype=torch.float64)
    phase = 2 * math.pi * f0 * t
    return sum(torch.sin(k * phase) / k for k in range(1, 6)).mul(0.3).float()


def build_sovits(upstream: Path, shapes: dict[str, int]):
    """``(step, work)``: ``step()`` runs one of ``s2_train.py``'s G+D iterations and returns ``loss/g/total``."""
    import torch
    import torch.nn.functional as F
    from module import commons
    from module.losses import discriminator_loss, feature_loss, generator_loss, kl_loss
    from module.mel_processing import mel_spectrogram_torch, spec_to_mel_torch, spectrogram_torch
    from module.models import MultiPeriodDiscriminator, SynthesizerTrn

    hps = json.loads((upstream / SOVITS_CONFIG).read_text())
    data, train, model = hps["data"], hps["train"], {**hps["model"], "version": "v2"}
    segment_frames = train["segment_size"] // data["hop_length"]
    net_g = SynthesizerTrn(data["filter_length"] // 2 + 1, segment_frames, n_speakers=data["n_speakers"], **model)
    net_d = MultiPeriodDiscriminator(model["use_spectral_norm"], version=model["version"])
    for vq in net_g.quantizer.vq.layers:
        vq._codebook.embed.normal_()
        vq._codebook.embed_avg.copy_(vq._codebook.embed)
        vq._codebook.inited.fill_(1.0)

    # s2_train.py's optimizers: the text embedding, text encoder and MRTE at text_low_lr_rate x lr.
    low = [net_g.enc_p.text_embedding, net_g.enc_p.encoder_text, net_g.enc_p.mrte]
    low_ids = {id(p) for m in low for p in m.parameters()}
    base_params = [p for p in net_g.parameters() if id(p) not in low_ids and p.requires_grad]
    lr = train["learning_rate"]
    optim_g = torch.optim.AdamW(
        [{"params": base_params, "lr": lr}] + [{"params": m.parameters(), "lr": lr * train["text_low_lr_rate"]} for m in low],
        lr,
        betas=train["betas"],
        eps=train["eps"],
    )
    optim_d = torch.optim.AdamW(net_d.parameters(), lr, betas=train["betas"], eps=train["eps"])
    net_g.train()
    net_d.train()

    b, frames, text_len = shapes["batch"], shapes["frames"], shapes["text_len"]
    generator = torch.Generator().manual_seed(SEED)
    y = _synthetic_audio(b, frames, data["hop_length"], data["sampling_rate"], generator)
    spec = spectrogram_torch(
        y.squeeze(1), data["filter_length"], data["sampling_rate"], data["hop_length"], data["win_length"], center=False
    )
    assert spec.shape == (b, data["filter_length"] // 2 + 1, frames), spec.shape
    ssl = torch.randn(b, 768, frames, generator=generator)
    text = torch.randint(1, 732, (b, text_len), generator=generator)
    spec_lengths = torch.full((b,), frames, dtype=torch.long)
    text_lengths = torch.full((b,), text_len, dtype=torch.long)
    mel_args = (data["filter_length"], data["n_mel_channels"], data["sampling_rate"])

    def step() -> float:
        y_hat, kl_ssl, ids_slice, _, z_mask, (_, z_p, m_p, logs_p, _, logs_q), _ = net_g(ssl, spec, spec_lengths, text, text_lengths)
        mel = spec_to_mel_torch(spec, *mel_args, data["mel_fmin"], data["mel_fmax"])
        y_mel = commons.slice_segments(mel, ids_slice, segment_frames)
        y_hat_mel = mel_spectrogram_torch(
            y_hat.squeeze(1), *mel_args, data["hop_length"], data["win_length"], data["mel_fmin"], data["mel_fmax"]
        )
        y_real = commons.slice_segments(y, ids_slice * data["hop_length"], train["segment_size"])

        y_d_hat_r, y_d_hat_g, _, _ = net_d(y_real, y_hat.detach())
        loss_disc, _, _ = discriminator_loss(y_d_hat_r, y_d_hat_g)
        optim_d.zero_grad()
        loss_disc.backward()
        commons.clip_grad_value_(net_d.parameters(), None)
        optim_d.step()

        y_d_hat_r, y_d_hat_g, fmap_r, fmap_g = net_d(y_real, y_hat)
        loss_mel = F.l1_loss(y_mel, y_hat_mel) * train["c_mel"]
        loss_kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask) * train["c_kl"]
        loss_fm = feature_loss(fmap_r, fmap_g)
        loss_gen, _ = generator_loss(y_d_hat_g)
        loss_gen_all = loss_gen + loss_fm + loss_mel + kl_ssl * 1 + loss_kl
        optim_g.zero_grad()
        loss_gen_all.backward()
        commons.clip_grad_value_(net_g.parameters(), None)
        optim_g.step()
        return float(loss_gen_all)

    return step, {"samples": b, "audio_seconds": b * frames * data["hop_length"] / data["sampling_rate"]}


def run_model(spec: dict[str, Any]) -> dict[str, Any]:
    """Build and time one model's upstream step; returns its JSON record."""
    load_start = os.getloadavg()
    import torch

    torch.set_num_threads(spec["threads"])
    upstream = Path(spec["upstream"])
    _import_upstream(upstream)
    torch.manual_seed(SEED)
    model, shapes = spec["model"], spec["shapes"]
    start = time.perf_counter()
    step, work = (build_gpt if model == "gpt" else build_sovits)(upstream, shapes)
    build_s = time.perf_counter() - start

    for _ in range(spec["warmup"]):
        step()
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)

    median = statistics.median(times)
    return {
        "benchmark": "upstream_step",
        "model": model,
        "size": "v2",
        "config": f"GPT_SoVITS/{GPT_CONFIG if model == 'gpt' else SOVITS_CONFIG}",
        "precision": "float32",
        **shapes,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(REPO),
        "upstream_commit": spec["upstream_commit"] or _git_commit(upstream),
        "machine": {
            "backend": "cpu",
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "python_version": platform.python_version(),
            "load_avg_start": list(load_start),
            "load_avg_end": list(os.getloadavg()),
        },
        "build_s": build_s,
        "warmup_steps": spec["warmup"],
        "steps": spec["steps"],
        "step_times_s": times,
        "median_step_s": median,
        "min_step_s": min(times),
        "steps_per_s": 1.0 / median,
        "samples_per_s": work["samples"] / median,
        "tokens_per_s": work["tokens"] / median if "tokens" in work else None,
        "audio_seconds_per_s": work["audio_seconds"] / median if "audio_seconds" in work else None,
        "final_loss": loss,
        "peak_host_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True, help="upstream checkout's GPT_SoVITS folder")
    parser.add_argument("--upstream-commit", help="recorded as upstream_commit (default: git's, if --upstream is in a work tree)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps after warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    add_shape_flags(parser)
    parser.add_argument("--out", type=Path, help="append one JSON line per model to this file")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if not (args.upstream / "module" / "models.py").is_file():
        parser.error(f"{args.upstream} is not upstream's GPT_SoVITS folder (no module/models.py)")

    for model in args.models:
        spec = {
            "model": model,
            "shapes": shapes_from_args(args, model),
            "upstream": str(args.upstream.resolve()),
            "upstream_commit": args.upstream_commit,
            "steps": args.steps,
            "warmup": args.warmup,
            "threads": args.threads,
        }
        print(f"[upstream_step] {model} {spec['shapes']}", file=sys.stderr, flush=True)
        # A fresh process per model, as step_throughput.py: its own host memory and thread pools.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            record = pool.apply(run_model, (spec,))
        emit_record(record, args.out)
        print(
            f"[upstream_step] {model}: median {record['median_step_s']:.3f} s, min {record['min_step_s']:.3f} s "
            f"over {args.steps} steps, loss {record['final_loss']:.3f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
