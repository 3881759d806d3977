"""The ``gptsovits-jax`` command. Each subcommand imports what it needs when it runs.

Subcommands: ``preprocess``, ``train-sovits``, ``extract-semantic``, ``train-gpt``,
``synthesize``, ``demo`` (all of them on the embedded corpus), ``report``, ``summary``, ``plot-lr``,
``import-upstream`` and ``export-upstream`` (upstream GPT-SoVITS v2 weight files in and out).

Run as a program, the command first restarts itself with jemalloc preloaded when that is installed and the
run is on the CPU (``--allocator``, :mod:`gptsovits_jax.allocator`): faster CPU steps for more host memory.
Every command uses JAX's persistent compilation cache (``--compile-cache``, ``--no-compile-cache``,
:mod:`gptsovits_jax.compile_cache`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gptsovits_jax.allocator import ALLOCATORS, host_allocator, use_allocator
from gptsovits_jax.compile_cache import disable_compile_cache, enable_compile_cache
from gptsovits_jax.text.frontend import LANGUAGES, TextError, canonical_language

LANGUAGE_HELP = (
    f"one of {', '.join(LANGUAGES)}, in any case (jp = ja); ja, ko and yue need the extras of the same name "
    "(default: auto, which splits mixed text by script)"
)


def _language(spelling: str) -> str:
    """argparse type: an upstream language spelling -> its canonical code."""
    try:
        return canonical_language(spelling)
    except TextError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


DEMO_SENTENCE = "The quick brown fox jumps over the lazy dog."
ALLOW_ANY_SIZE_HELP = (
    "accept a config without upstream v2's sizes, for small models such as the test fixtures "
    "(weights are still mapped strictly: every key, every shape)"
)


def _add_config(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML config, e.g. configs/tiny.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)"
    )


def _add_checkpoints(parser: argparse.ArgumentParser) -> None:
    """``--gpt-ckpt`` and ``--sovits-ckpt``: the two trained stages a command reads."""
    parser.add_argument("--gpt-ckpt", required=True, help="GPT run directory or checkpoint")
    parser.add_argument("--sovits-ckpt", required=True, help="SoVITS run directory or checkpoint")


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


def cmd_summary(args: argparse.Namespace) -> int:
    from gptsovits_jax.summary import format_counts, parameter_counts

    counts = parameter_counts(_load(args))
    print(json.dumps(counts, indent=2) if args.json else format_counts(counts))
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from gptsovits_jax.data.preprocess import preprocess

    config = _load(args)
    preprocess(config, list_path=args.list, cache_dir=args.cache_dir, num_workers=args.workers, progress=not args.no_progress)
    return 0


def _with_init_from(config, stage: str, init_from: str | None, init_from_d: str | None):
    """``config`` with ``--init-from`` / ``--init-from-d`` in place of the config's ``init_from`` keys, validated again."""
    import dataclasses

    from gptsovits_jax.config import validate

    if init_from is None and init_from_d is None:
        return config
    field = f"{stage}_train"
    changes = {} if init_from is None else {"init_from": init_from}
    if init_from_d is not None:
        changes["init_from_discriminator"] = init_from_d
    config = dataclasses.replace(config, **{field: dataclasses.replace(getattr(config, field), **changes)})
    validate(config)
    return config


def _train(stage: str, args: argparse.Namespace) -> int:
    from gptsovits_jax.train.stages import run_training

    config = _with_init_from(_load(args), stage, args.init_from, getattr(args, "init_from_d", None))
    result = run_training(
        stage,
        config,
        args.workdir,
        resume=args.resume,
        synthetic=args.synthetic,
        progress=not args.no_progress,
        stop_after=args.stop_after,
        require_v2=not args.allow_any_size,
    )
    state = "interrupted" if result.interrupted else "finished"
    print(
        f"{stage} training {state} at step {int(result.state.step)} ({result.steps_per_second:.2f} steps/s); run directory {Path(args.workdir).absolute()}"
    )
    return 0


def _extract(sovits_ckpt: str | Path, cache_dir: str | Path | None, batch_size: int, progress: bool) -> Path:
    from gptsovits_jax.data.semantic import extract_semantic
    from gptsovits_jax.infer import semantic_encoder

    encode, encoder_id, config = semantic_encoder(sovits_ckpt)
    return extract_semantic(cache_dir or config.data.cache_dir, encode, batch_size, encoder_id=encoder_id, progress=progress)


def cmd_extract_semantic(args: argparse.Namespace) -> int:
    path = _extract(args.sovits_ckpt, args.cache_dir, args.batch_size, not args.no_progress)
    print(f"semantic tokens written to {path}")
    return 0


def cmd_synthesize(args: argparse.Namespace) -> int:
    from gptsovits_jax.infer import synthesize

    result = synthesize(
        args.gpt_ckpt,
        args.sovits_ckpt,
        args.ref_wav,
        args.ref_text,
        args.text,
        args.out,
        ref_language=args.ref_language,
        language=args.language,
        top_k=args.top_k,
        top_p=args.top_p,
        temperature=args.temperature,
        repetition_penalty=args.repetition_penalty,
        noise_scale=args.noise_scale,
        max_seconds=args.max_seconds,
        seed=args.seed,
        bert_path=args.bert_path,
    )
    ending = "EOS" if result.stopped else f"cut at --max-seconds {args.max_seconds}"
    print(
        f"wrote {result.path}: {result.seconds:.2f} s, {result.num_tokens} semantic tokens ({ending}), peak {result.peak:.2f}, rms {result.rms:.3f}"
    )
    return 0


def demo_reference(config) -> tuple[Path, str, str]:
    """The demo's reference: the manifest's first English utterance of upstream's 3-10 s.

    Falls back to the longest English utterance when none is in that range. Returns
    ``(wav path, text, language)``.
    """
    import soundfile

    from gptsovits_jax.data.manifest import read_manifest
    from gptsovits_jax.infer import REFERENCE_SECONDS

    english = [utt for utt in read_manifest(config.data.list_path) if utt.language == "en"]
    if not english:
        raise ValueError(f"{config.data.list_path}: no English utterance to use as the demo reference")
    seconds = {}
    for utt in english:
        try:
            seconds[utt.wav_path] = soundfile.info(str(utt.wav_path)).duration
        except (OSError, RuntimeError):  # unreadable: preprocessing reports it; it is just not a candidate
            seconds[utt.wav_path] = 0.0
        if REFERENCE_SECONDS[0] <= seconds[utt.wav_path] <= REFERENCE_SECONDS[1]:
            return Path(utt.wav_path), utt.text, utt.language
    utt = max(english, key=lambda u: seconds[u.wav_path])
    return Path(utt.wav_path), utt.text, utt.language


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything on the embedded corpus: preprocess, SoVITS, semantic tokens, GPT, one synthesized sentence, the report."""
    from gptsovits_jax.data.preprocess import preprocess
    from gptsovits_jax.infer import synthesize
    from gptsovits_jax.report import write_report
    from gptsovits_jax.train.stages import run_training

    config = _load(args)
    workdir = Path(args.workdir).absolute()
    progress = not args.no_progress
    started = time.perf_counter()
    timings = {}

    def timed(name, fn, *a, **kw):
        t0 = time.perf_counter()
        print(f"\n== {name}", flush=True)
        out = fn(*a, **kw)
        timings[name] = time.perf_counter() - t0
        return out

    timed("preprocess", preprocess, config, progress=progress)
    timed("train SoVITS", run_training, "sovits", config, workdir / "sovits", resume=True, progress=progress)
    timed("extract semantic tokens", _extract, workdir / "sovits", None, 8, progress)
    timed("train GPT", run_training, "gpt", config, workdir / "gpt", resume=True, progress=progress)
    ref_wav, ref_text, ref_language = demo_reference(config)
    result = timed(
        "synthesize",
        synthesize,
        workdir / "gpt",
        workdir / "sovits",
        ref_wav,
        ref_text,
        args.text,
        workdir / "demo.wav",
        ref_language=ref_language,
        language="en",
        seed=0,
    )
    report = timed("report", write_report, workdir / "gpt", workdir / "sovits", workdir / "report.png")
    total = time.perf_counter() - started
    print("\n== done in {:.0f} s ({})".format(total, ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())))
    print(f"  synthesized: {result.path} ({result.seconds:.2f} s of audio, peak {result.peak:.2f}; reference {ref_wav}: {ref_text!r})")
    print(f"  report:      {report.path} (spectrograms of evaluation utterance {report.utterance}, losses, learning rates)")
    print(
        f"  resynthesis: SoVITS follows the energy envelope of {report.utterance} at r = {report.resynthesis_correlation:.2f} (per-frame log energy)"
    )
    print(f"  TensorBoard: tensorboard --logdir {workdir}")
    print(f"  metrics:     {workdir / 'sovits' / 'metrics.jsonl'}, {workdir / 'gpt' / 'metrics.jsonl'}")
    print(f"  checkpoints: {workdir / 'sovits' / 'checkpoints'}, {workdir / 'gpt' / 'checkpoints'}")
    return 0


def cmd_import_upstream(args: argparse.Namespace) -> int:
    from gptsovits_jax.upstream_io import import_upstream

    config = _load(args)
    result = import_upstream(config, args.out, args.s1, args.s2g, args.s2d, require_v2=not args.allow_any_size)
    print(result)
    return 0


def cmd_export_upstream(args: argparse.Namespace) -> int:
    from gptsovits_jax.upstream_io import export_upstream

    result = export_upstream(
        args.gpt_ckpt,
        args.sovits_ckpt,
        args.out,
        args.name,
        require_v2=not args.allow_any_size,
        cache_dir=args.cache_dir,
        gpt_epochs=args.gpt_epochs,
        sovits_epochs=args.sovits_epochs,
        version_tag=not args.no_version_tag,
    )
    print(result)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from gptsovits_jax.report import write_report

    try:
        report = write_report(args.gpt_ckpt, args.sovits_ckpt, args.out, utterance=args.utterance, cache_dir=args.cache_dir)
    except ValueError as err:  # an utterance that is not in the cache
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {report.path}: evaluation utterance {report.utterance}")
    print(f"  SoVITS resynthesis energy-envelope correlation r = {report.resynthesis_correlation:.3f}")
    print(f"  GPT + SoVITS synthesis: {report.synthesis_seconds:.2f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptsovits-jax", description="GPT-SoVITS v2 training in JAX")
    parser.add_argument("--verbose", action="store_true", help="log at INFO level")
    parser.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default="auto",
        help="host memory allocator: jemalloc with its decay off (the command restarts itself with it preloaded; "
        "12-21%% faster CPU steps, 1-2 GB more peak host memory), the system's, or auto: jemalloc when installed "
        "(apt-get install libjemalloc2), LD_PRELOAD is unset and the run is on the CPU (default)",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--compile-cache",
        metavar="DIR",
        help="persistent XLA compilation cache: a compiled step is loaded, not compiled again, by the next run "
        "(default: $JAX_COMPILATION_CACHE_DIR, else ~/.cache/gptsovits-jax/xla)",
    )
    cache.add_argument("--no-compile-cache", action="store_true", help="compile everything afresh, write no cache")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("preprocess", help="validate a .list manifest and cache features (resumable)")
    _add_config(p)
    p.add_argument("--list", help="manifest (default: data.list_path)")
    p.add_argument("--cache-dir", help="feature cache (default: data.cache_dir)")
    p.add_argument("--workers", type=int, help="processes (default: data.num_workers)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_preprocess)

    for stage in ("sovits", "gpt"):
        p = sub.add_parser(f"train-{stage}", help=f"train the {'SoVITS synthesizer (stage 2)' if stage == 'sovits' else 'GPT (stage 1)'}")
        _add_config(p)
        p.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics.jsonl, TensorBoard events")
        p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --workdir")
        p.add_argument("--synthetic", action="store_true", help="train on a fixed synthetic batch (no corpus needed)")
        p.add_argument("--stop-after", type=int, metavar="N", help="stop (with a checkpoint) after N more steps; --resume continues")
        p.add_argument(
            "--init-from",
            metavar="PATH",
            help=f"start from these weights instead of a random initialisation ({stage}_train.init_from): upstream's "
            + ("generator file (.pth)" if stage == "sovits" else "GPT file (.ckpt)")
            + " or a project run/checkpoint directory (e.g. import-upstream's output); parameters only, fresh optimizer state, "
            "step 0. With --resume a checkpoint in --workdir wins",
        )
        if stage == "sovits":
            p.add_argument(
                "--init-from-d",
                metavar="FILE",
                help="upstream's discriminator file (.pth) beside an upstream generator file in --init-from "
                "(sovits_train.init_from_discriminator); without it the discriminator starts fresh",
            )
        p.add_argument("--allow-any-size", action="store_true", help=ALLOW_ANY_SIZE_HELP)
        p.add_argument("--no-progress", action="store_true")
        p.set_defaults(func=lambda a, s=stage: _train(s, a))

    p = sub.add_parser("extract-semantic", help="semantic tokens of the cached corpus with a trained SoVITS quantizer")
    p.add_argument("--sovits-ckpt", required=True, help="SoVITS run directory or checkpoint")
    p.add_argument("--cache-dir", help="feature cache (default: the checkpoint config's data.cache_dir)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_extract_semantic)

    p = sub.add_parser("synthesize", help="speak a sentence in the voice of a reference recording")
    _add_checkpoints(p)
    p.add_argument("--ref-wav", required=True, help="reference recording (any format soundfile reads)")
    p.add_argument("--ref-text", required=True, help="what the reference recording says")
    p.add_argument("--ref-language", default="auto", type=_language, help=LANGUAGE_HELP)
    p.add_argument("--text", required=True, help="the sentence to speak")
    p.add_argument("--language", default="auto", type=_language, help=LANGUAGE_HELP)
    p.add_argument("--out", required=True, help="output WAV (32 kHz, 16-bit)")
    p.add_argument("--top-k", type=int, default=15)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.35)
    p.add_argument("--noise-scale", type=float, default=0.5)
    p.add_argument("--max-seconds", type=float, default=54.0, help="cap on the generated audio (upstream: 54 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bert-path", default=None, help="BERT directory if not the GPT config's text.bert_path (e.g. moved)")
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("demo", help="the whole pipeline on the embedded demo corpus (resumable)")
    _add_config(p)
    p.add_argument("--workdir", required=True)
    p.add_argument("--text", default=DEMO_SENTENCE, help="the sentence to synthesize at the end")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "report", help="one PNG: spectrograms of an evaluation utterance (truth, resynthesis, synthesis), losses, learning rates"
    )
    _add_checkpoints(p)
    p.add_argument("--out", default="report.png", help="output PNG path")
    p.add_argument("--utterance", help="cache key of the utterance (default: the first of the evaluation split)")
    p.add_argument("--cache-dir", help="feature cache (default: the SoVITS checkpoint config's data.cache_dir)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("import-upstream", help="upstream GPT-SoVITS v2 weight files -> step-0 project checkpoints OUT/gpt, OUT/sovits")
    _add_config(p)
    p.add_argument("--s1", required=True, metavar="FILE", help="upstream's GPT file, e.g. s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt")
    p.add_argument(
        "--s2g", required=True, metavar="FILE", help="upstream's SoVITS generator file, e.g. s2G2333k.pth or a *_e*_s*.pth export"
    )
    p.add_argument("--s2d", metavar="FILE", help="upstream's SoVITS discriminator file, e.g. s2D2333k.pth (default: initialised fresh)")
    p.add_argument("--out", required=True, help="output directory: OUT/gpt and OUT/sovits are written")
    p.add_argument("--allow-any-size", action="store_true", help=ALLOW_ANY_SIZE_HELP)
    p.set_defaults(func=cmd_import_upstream)

    p = sub.add_parser("export-upstream", help="a GPT and a SoVITS run -> NAME-e{E}.ckpt and NAME_e{E}_s{S}.pth for upstream's inference")
    _add_checkpoints(p)
    p.add_argument("--out", required=True, help="output directory (copy the files into upstream's GPT_weights_v2/ and SoVITS_weights_v2/)")
    p.add_argument("--name", help="file name stem (default: the GPT checkpoint config's name)")
    p.add_argument(
        "--cache-dir", help="preprocessed cache the runs trained on, to count epochs (default: each checkpoint config's data.cache_dir)"
    )
    p.add_argument("--gpt-epochs", type=int, metavar="E", help="E of the GPT file name, instead of counting it from the training data")
    p.add_argument(
        "--sovits-epochs", type=int, metavar="E", help="E of the SoVITS file name, instead of counting it from the training data"
    )
    p.add_argument(
        "--no-version-tag",
        action="store_true",
        help="write the SoVITS file as a plain zip (upstream classifies untagged files by size; plain torch.load reads them) "
        "instead of with upstream's v2 tag '01' (read by its inference through load_sovits_new)",
    )
    p.add_argument("--allow-any-size", action="store_true", help=ALLOW_ANY_SIZE_HELP)
    p.set_defaults(func=cmd_export_upstream)

    p = sub.add_parser("summary", help="parameter counts per top-level submodule (GPT, generator, discriminator)")
    _add_config(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("plot-lr", help="plot every optimizer group's learning rate over a stage's run")
    _add_config(p)
    p.add_argument("--stage", choices=("sovits", "gpt"), required=True)
    p.add_argument("--out", default="lr.png", help="output PNG path")
    p.set_defaults(func=cmd_plot_lr)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: this program's arguments).

    Run as a program (``argv`` None), the command first restarts itself when ``--allocator`` asks for another host
    allocator than the one it has (:func:`gptsovits_jax.allocator.use_allocator`); called with ``argv`` it keeps this
    process's allocator.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:
        try:
            use_allocator(args.allocator)
        except FileNotFoundError as err:
            parser.error(str(err))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # orbax logs routine notes (e.g. opening a checkpoint read-only) as warnings through absl.
        logging.getLogger("absl").setLevel(logging.ERROR)
    log = logging.getLogger(__name__)
    if log.isEnabledFor(logging.INFO):  # host_allocator() reads /proc/self/maps: only when it is logged
        log.info("host allocator: %s", host_allocator())
    if args.no_compile_cache:
        disable_compile_cache()
    else:
        log.info("compilation cache: %s", enable_compile_cache(args.compile_cache))
    from gptsovits_jax.audio import AudioError
    from gptsovits_jax.config import ConfigError
    from gptsovits_jax.data.manifest import ManifestError
    from gptsovits_jax.infer import CompatibilityError
    from gptsovits_jax.text.extras import MissingExtraError
    from gptsovits_jax.torch_checkpoint import CheckpointFormatError
    from gptsovits_jax.train.checkpoint import CheckpointMismatchError
    from gptsovits_jax.train.loop import TrainingDivergedError
    from gptsovits_jax.upstream_io import UpstreamIOError
    from gptsovits_jax.upstream_weights import WeightMappingError

    try:
        return int(args.func(args) or 0)
    except (
        ConfigError,
        FileNotFoundError,
        ManifestError,
        AudioError,
        TextError,
        MissingExtraError,
        CompatibilityError,
        CheckpointMismatchError,
        TrainingDivergedError,
        CheckpointFormatError,
        WeightMappingError,
        UpstreamIOError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
