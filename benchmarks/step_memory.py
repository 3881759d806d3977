"""Memory of the compiled train steps from XLA's own buffer assignment, across batch, clip length and remat.

    PYTHONPATH=. python benchmarks/step_memory.py [--models gpt sovits] [--batches 1 2 4 8] [--seconds 5 10 20]
        [--remat none dots full] [--out benchmarks/results/step_memory_cpu.jsonl] [--plot benchmarks/results/step_memory_cpu.png]
    PYTHONPATH=. python benchmarks/step_memory.py --from benchmarks/results/step_memory_cpu.jsonl --plot OUT.png   # fit and plot only
    PYTHONPATH=. python benchmarks/step_memory.py --models sovits --batches 2 --seconds 4 --part step grad disc grad_dec
        # compile seconds of the step's parts (GPT: step grad forward; SoVITS also disc and grad_<submodule>)

Each configuration is lowered and compiled ahead of time on abstract inputs (``jax.eval_shape`` of
the train state: nothing is allocated or run) and ``compiled.memory_analysis()`` is recorded:
arguments (parameters, optimizer state, batch), outputs, the aliased (donated) part and the
temporaries, plus the step's total ``arguments + outputs - aliased + temporaries`` (the device
memory the step needs). The figures are deterministic for a given program and backend, so they
compare across commits even on a noisy machine; they are the figures of the backend the script
runs on (XLA:CPU here), whose buffer assignment is close to, not identical with, GPU and TPU.

Compile time is recorded as wall-clock seconds (``compile_s``) and as the compiling process's CPU
seconds (``compile_cpu_s``, all its threads), which a busy machine inflates less, with the 1-minute
load average before and after (``load_1min``).

Clip lengths are seconds of audio: GPT ``Ty = 25 s`` semantic tokens and ``Tx = 12 s`` phonemes
(a typical phoneme rate); SoVITS ``50 s`` frames with ``Tx = 12 s`` phonemes. Each configuration
compiles in a fresh process (no compilation cache) and its compile seconds are recorded too. At
the end, a linear fit of total memory against batch (exact for these programs up to alignment)
gives the largest batch of 10-second clips that fits in 16, 40 and 80 GB, per model and remat.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "v2.yaml"
MEMORY_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes")
DEVICE_GB = (16, 40, 80)
PHONEMES_PER_SECOND = 12


def _shapes(model: str, seconds: float) -> dict[str, int]:
    if model == "gpt":
        return {"text_len": round(PHONEMES_PER_SECOND * seconds), "semantic_len": round(25 * seconds)}
    frames = round(50 * seconds)
    return {"text_len": round(PHONEMES_PER_SECOND * seconds), "frames": frames + frames % 2}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Lower and compile one configuration on abstract inputs; its memory analysis and compile time."""
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    import jax

    from gptsovits_jax.config import load_config
    from gptsovits_jax.models import layers
    from gptsovits_jax.train import synthetic

    if spec.get("native_convolutions"):  # this process only: convolutions as GPUs and TPUs lower them
        layers.matmul_convolutions = lambda: False
    model, batch, seconds = spec["model"], spec["batch"], spec["seconds"]
    overrides = list(spec["overrides"])
    if model == "gpt":
        overrides += [f"gpt_train.remat={spec['remat']}", "gpt_train.optim.grad_accum_steps=1"]
    elif spec["remat"] != "none":
        overrides += ["sovits_train.scan_layers=true", f"sovits_train.remat={spec['remat']}"]
    config = load_config(spec["config"], overrides)
    shapes = _shapes(model, seconds)
    part = spec.get("part", "step")
    if model == "gpt" and part not in ("step", "grad", "forward"):
        raise ValueError(f"GPT parts are step, grad and forward, got {part!r}")
    if model == "gpt":
        from gptsovits_jax.train.gpt_step import _forward, create_gpt_state, jit_gpt_train_step

        state = jax.eval_shape(lambda: create_gpt_state(config)[0])
        _, setup = create_gpt_state(config, params=state.params)
        step = jit_gpt_train_step(setup)
        if part != "step":  # the forward alone, or forward + backward without the optimizer update
            loss = lambda params, b, r: _forward(setup, params, b, r)[0]  # noqa: E731
            step = jax.jit(loss if part == "forward" else jax.value_and_grad(loss))
            state = state.params
        host = synthetic.synthetic_gpt_batch(config, batch, shapes["text_len"], shapes["semantic_len"], 0)
    else:
        from gptsovits_jax.train.sovits_step import create_sovits_state, jit_sovits_train_step

        state = jax.eval_shape(lambda: create_sovits_state(config)[0])
        _, setup = create_sovits_state(config, variables=(state.params_g, state.quantizer, state.params_d))
        step = jit_sovits_train_step(setup)
        if part != "step":
            step, state = sovits_part(setup, state, part)
        host = synthetic.synthetic_sovits_batch(config, batch, shapes["frames"], shapes["text_len"], 0, ragged=False)
    host.pop("keys")
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host.items()}
    rng = jax.ShapeDtypeStruct((2,), jax.numpy.uint32)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    lowered = step.lower(state, abstract_batch, rng)
    lowered_at = time.perf_counter()
    cpu_before = time.process_time()
    compiled = lowered.compile()
    done = time.perf_counter()
    compile_cpu = time.process_time() - cpu_before
    analysis = compiled.memory_analysis()
    memory = {f: int(getattr(analysis, f)) for f in MEMORY_FIELDS}
    memory["total_bytes"] = (
        memory["argument_size_in_bytes"] + memory["output_size_in_bytes"] - memory["alias_size_in_bytes"] + memory["temp_size_in_bytes"]
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "benchmark": "step_memory",
        "model": model,
        "config": str(Path(spec["config"]).relative_to(REPO)) if Path(spec["config"]).is_relative_to(REPO) else spec["config"],
        "overrides": overrides,
        "batch": batch,
        "seconds": seconds,
        **shapes,
        "remat": spec["remat"],
        "part": part,
        "native_convolutions": bool(spec.get("native_convolutions")),
        "lower_s": round(lowered_at - started, 2),
        "compile_s": round(done - lowered_at, 2),
        "compile_cpu_s": round(compile_cpu, 2),
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        **memory,
        "machine": {
            "backend": jax.default_backend(),
            "device_kind": jax.local_devices()[0].device_kind,
            "cpu_count": os.cpu_count(),
            "jax_version": jax.__version__,
            "python_version": platform.python_version(),
        },
    }


SOVITS_PARTS = ("forward", "grad", "disc", "grad_enc_p", "grad_enc_q", "grad_flow", "grad_dec")


def sovits_part(setup: Any, state: Any, part: str) -> tuple[Any, Any]:
    """``(jitted fn(first, batch, rng), first)`` for one part of the SoVITS train step.

    ``forward``: the generator's training forward (dropout on); ``grad``: its forward and
    backward (gradient of a stand-in scalar of every differentiable output); ``disc``: the
    discriminator's loss and gradient on real vs generated-size audio plus the generator's
    adversarial and feature-matching gradient through it (steps 2-5 without the generator);
    ``grad_<module>``: forward and backward of one generator submodule alone (``enc_p``,
    ``enc_q``, ``flow``, ``dec``) on batch-shaped stand-in inputs.
    """
    import jax
    import jax.numpy as jnp

    from gptsovits_jax import losses
    from gptsovits_jax.models.layers import sequence_mask

    cfg = setup.config
    seg = cfg.sovits.segment_frames * cfg.audio.hop_length

    def scalar(tree):
        return sum(jnp.mean(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating))

    if part in ("forward", "grad"):

        def forward(params_g, quantizer, batch, rng):
            k_drop, k_sample = jax.random.split(rng)
            out = setup.synth.apply(
                {"params": params_g, "quantizer": quantizer},
                batch["ssl"],
                batch["spec"],
                batch["spec_lens"],
                batch["text"],
                batch["text_lens"],
                train=True,
                rngs={"dropout": k_drop, "sample": k_sample},
            )
            return {"audio": out.audio, "z_p": out.z_p, "logs_q": out.logs_q, "m_p": out.m_p, "logs_p": out.logs_p}

        if part == "forward":
            return jax.jit(lambda v, b, r: forward(*v, b, r)), (state.params_g, state.quantizer)
        return jax.jit(lambda v, b, r: jax.value_and_grad(lambda p: scalar(forward(p, v[1], b, r)))(v[0])), (
            state.params_g,
            state.quantizer,
        )
    if part == "disc":

        def disc(params_d, batch, rng):
            real, fake = batch["wav"][:, :seg], batch["wav"][:, -seg:]
            n = real.shape[0]

            def run(p, f):
                return setup.disc.apply({"params": p}, jnp.concatenate([real, f], axis=0), rngs={"dropout": rng})

            def loss_d(p):
                logits, _ = run(p, jax.lax.stop_gradient(fake))
                return losses.discriminator_loss([x[:n] for x in logits], [x[n:] for x in logits])[0]

            def loss_g(f):
                logits, fmaps = run(params_d, f)
                fm = losses.feature_matching_loss([[x[:n] for x in layer] for layer in fmaps], [[x[n:] for x in layer] for layer in fmaps])
                return fm + losses.generator_adversarial_loss([x[n:] for x in logits])

            return jax.value_and_grad(loss_d)(params_d), jax.value_and_grad(loss_g)(fake)

        return jax.jit(disc), state.params_d
    if part not in SOVITS_PARTS:
        raise ValueError(f"unknown SoVITS part {part!r}; choose step or one of {', '.join(SOVITS_PARTS)}")
    module = part.removeprefix("grad_")
    s = cfg.sovits

    def module_forward(synth, batch, rng):
        mask = sequence_mask(batch["spec_lens"], batch["spec"].shape[1])
        ge = jnp.full((mask.shape[0], s.gin_channels), 0.1, synth.dtype)
        z = batch["spec"][..., : s.inter_channels].astype(synth.dtype)
        if module == "enc_p":
            text_mask = sequence_mask(batch["text_lens"], batch["text"].shape[1])
            return synth.enc_p(batch["ssl"], mask, batch["text"], text_mask, ge, deterministic=False)
        if module == "enc_q":
            return synth.enc_q(batch["spec"].astype(synth.dtype), mask, ge)
        if module == "flow":
            return synth.flow(z, mask, ge)
        return synth.dec(z[:, : s.segment_frames], ge)

    def loss(params_g, batch, rng):
        k_drop, k_sample = jax.random.split(rng)
        out = setup.synth.apply({"params": params_g}, batch, rng, method=module_forward, rngs={"dropout": k_drop, "sample": k_sample})
        return scalar(out)

    return jax.jit(jax.value_and_grad(loss)), state.params_g


def _run_isolated(spec: dict[str, Any]) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (spec,))


def largest_batches(records: list[dict[str, Any]], seconds: float = 10.0) -> list[dict[str, Any]]:
    """Per (model, remat): the linear fit ``total = fixed + per_row * batch`` at ``seconds`` and the largest batch per device size."""
    out = []
    groups: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    for r in records:
        if r["seconds"] == seconds and r.get("part", "step") == "step":
            groups.setdefault((r["model"], r["remat"], r.get("native_convolutions", False)), []).append(r)
    for (model, remat, native), rows in sorted(groups.items()):
        rows = sorted(rows, key=lambda r: r["batch"])
        if len(rows) < 2:
            continue
        first, last = rows[0], rows[-1]
        per_row = (last["total_bytes"] - first["total_bytes"]) / (last["batch"] - first["batch"])
        fixed = first["total_bytes"] - per_row * first["batch"]
        fits = {f"max_batch_{gb}gb": max(0, int((gb * 1e9 - fixed) // per_row)) for gb in DEVICE_GB}
        out.append(
            {
                "model": model,
                "remat": remat,
                "native_convolutions": native,
                "seconds": seconds,
                "fixed_gb": fixed / 1e9,
                "per_row_gb": per_row / 1e9,
                **fits,
            }
        )
    return out


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in records})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = [r for r in records if r["model"] == model and r.get("part", "step") == "step"]
        lengths = sorted({r["seconds"] for r in rows})
        for remat, native, seconds in itertools.product(sorted({r["remat"] for r in rows}), (False, True), lengths):
            line = [r for r in rows if r["remat"] == remat and r.get("native_convolutions", False) == native and r["seconds"] == seconds]
            if line:
                line.sort(key=lambda r: r["batch"])
                style = {"none": "-", "dots": "--", "full": ":"}[remat]
                ax.plot(
                    [r["batch"] for r in line],
                    [r["total_bytes"] / 1e9 for r in line],
                    style,
                    marker="s" if native else "o",
                    label=f"{seconds:g} s, remat {remat}" + (", native convolutions" if native else ""),
                )
        ax.set_title(f"v2 {model.upper()} train step: XLA memory")
        ax.set_xlabel("batch (clips)")
        ax.set_ylabel("GB (arguments + outputs - donated + temporaries)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gpt", "sovits"], choices=["gpt", "sovits"])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--seconds", nargs="+", type=float, default=[5.0, 10.0, 20.0])
    parser.add_argument("--remat", nargs="+", help="remat settings (default: GPT none dots full, SoVITS none)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument(
        "--part",
        nargs="+",
        default=["step"],
        choices=["step", "grad", "forward", *SOVITS_PARTS[2:]],
        help="the train step, forward + backward only (SoVITS: the generator's), or the forward only; "
        "SoVITS also: disc (the discriminator's part of the step), grad_enc_p / grad_enc_q / grad_flow / grad_dec "
        "(forward + backward of one generator submodule)",
    )
    parser.add_argument(
        "--native-convolutions",
        action="store_true",
        help="keep every convolution in XLA's native form, as on GPU and TPU (on CPU, strided and grouped ones "
        "otherwise become slices and matmuls, whose saved activations are kernel-size times larger)",
    )
    parser.add_argument("--out", type=Path, help="append the JSON records to this file")
    parser.add_argument("--plot", type=Path, help="write the memory curves to this PNG")
    parser.add_argument("--from", dest="source", type=Path, help="measure nothing: fit and plot the records of this JSON-lines file")
    args = parser.parse_args(argv)

    records = []
    if args.source:
        records = [json.loads(line) for line in args.source.read_text().splitlines() if line.strip()]
        records = [r for r in records if r.get("benchmark") == "step_memory"]
        args.models = []
    for model in args.models:
        for remat in args.remat or (["none", "dots", "full"] if model == "gpt" else ["none"]):
            for seconds in args.seconds:
                for batch, part in itertools.product(args.batches, args.part):
                    spec = {
                        "model": model,
                        "config": args.config,
                        "batch": batch,
                        "seconds": seconds,
                        "remat": remat,
                        "part": part,
                        "overrides": args.override,
                        "native_convolutions": args.native_convolutions,
                    }
                    record = _run_isolated(spec)
                    records.append(record)
                    print(json.dumps(record), flush=True)
                    print(
                        f"{model:6s} {part:10s} remat {record['remat']:4s} {seconds:4g} s batch {batch:3d}: total {record['total_bytes'] / 1e9:7.2f} GB, "
                        f"temp {record['temp_size_in_bytes'] / 1e9:7.2f} GB, compile {record['compile_s']:6.1f} s "
                        f"({record['compile_cpu_s']:.1f} s CPU, load {record['load_1min'][0]:.1f})",
                        file=sys.stderr,
                        flush=True,
                    )
                    if args.out:
                        with args.out.open("a") as f:
                            f.write(json.dumps(record) + "\n")
    for fit in largest_batches(records):
        print(json.dumps({"benchmark": "step_memory_fit", **fit}), flush=True)
    if args.plot:
        plot(records, args.plot)


if __name__ == "__main__":
    main()
