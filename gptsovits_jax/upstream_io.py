"""Upstream GPT-SoVITS v2 files in and out of this project's runs.

Three uses, one per command:

* ``import-upstream`` (:func:`import_upstream`): upstream's GPT, generator and (optionally)
  discriminator files -> step-0 project checkpoints ``DIR/gpt`` and ``DIR/sovits`` holding the
  parameters as the files hold them (no optimizer state: whatever reads them starts a fresh one),
  so ``synthesize``, ``--init-from`` and ``--resume`` read them like any run;
* ``train-gpt`` / ``train-sovits --init-from`` (:func:`starting_variables`): a stage's parameters
  (and for SoVITS the codebook) from an upstream file or a project checkpoint; the optimizer
  state and the step start fresh;
* ``export-upstream`` (:func:`export_upstream`): a GPT run and a SoVITS run -> the two files
  upstream's inference loads (``inference_webui.py``, ``TTS_infer_pack/TTS.py``, ``api.py``), named
  and laid out as its trainers write them:

  - ``NAME-e{E}.ckpt`` (``s1_train.py``'s per-epoch half-precision weights): ``{"weight":
    {"model.<key>": float16}, "config": {...}, "info": "GPT-e{E}"}``; inference reads
    ``config["model"]`` to build the model and ``config["data"]["max_sec"]``;
  - ``NAME_e{E}_s{S}.pth`` (``process_ckpt.savee``): ``{"weight": float16 generator state dict
    without enc_q (the codebook included), "config": {...}, "info": "{E}epoch_{S}iteration"}``;
    inference builds ``SynthesizerTrn(data.filter_length // 2 + 1, train.segment_size //
    data.hop_length, n_speakers=data.n_speakers, **model)``.

  ``config`` is a plain dict in the layout of upstream's ``s1longer-v2.yaml`` / ``s2.json``, built
  from the run's config. E is the number of **completed epochs**: the global batches the run
  consumed (its iterator position, saved with the checkpoint) divided by the batches per epoch of
  its training data, which is rebuilt from the preprocessed cache the run trained on (the same
  utterances, buckets, batch size and seed, checked by the iterator's digest); a run on the
  synthetic batch has one batch per epoch. S is the step.

  The SoVITS file carries upstream's v2 tag ``01`` in place of the zip's leading ``PK`` (unless
  ``version_tag=False``): upstream's ``get_sovits_version_from_path_fast`` classifies untagged files
  by size (under 82,978 KiB is v1), and a full-size v2 export written here is 83,004 KiB, 26 KiB
  (0.03%) above that threshold (upstream's own v1 and v2 exports are about 82,942 and 83,014 KiB),
  so the tag makes the classification certain. Every inference path of upstream reads
  SoVITS files through ``process_ckpt.load_sovits_new``, which restores ``PK``; a plain
  ``torch.load`` (upstream's ``s2_train.py`` loading a *pretrained* generator, ``onnx_export.py``)
  cannot read a tagged file, hence the option.

Every config check runs before a file is read; by default the config must have upstream v2's
sizes (:func:`~gptsovits_jax.upstream_weights.check_config_holds_v2`). ``require_v2=False`` (the
commands' ``--allow-any-size``) skips that check, for small models such as the test fixtures;
the mapping stays strict either way.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gptsovits_jax.config import Config
from gptsovits_jax.train.restore import INFERENCE_FIELDS, abstract_variables, restore_variables
from gptsovits_jax.upstream_weights import (
    ImportReport,
    check_config_holds_v2,
    load_upstream_checkpoint,
    project_to_upstream,
)

log = logging.getLogger(__name__)

SOVITS_VERSION_TAG = b"01"
"""Upstream's v2 tag (``process_ckpt.head2version``)."""

UPSTREAM_WEIGHT_DIRS = {"gpt": "GPT_weights_v2", "sovits": "SoVITS_weights_v2"}
"""Where upstream's inference tools list v2 weights (``config.py``: ``GPT_weight_root``, ``SoVITS_weight_root``)."""


class UpstreamIOError(ValueError):
    """An import, initialisation or export that cannot be done as asked; the message says why."""


# --------------------------------------------------------------------------- stage variables


def fresh_variables(stage: str, config: Config) -> dict[str, Any]:
    """A fresh initialisation of ``stage``'s :data:`~gptsovits_jax.train.restore.STAGE_FIELDS` (the stage's seed, as :func:`create_*_state`)."""
    from gptsovits_jax.train.common import init_key

    if stage == "gpt":
        from gptsovits_jax.train.gpt_step import init_gpt_params

        return {"params": jax.jit(init_gpt_params, static_argnums=0)(config, init_key(config.gpt_train.seed))}
    from gptsovits_jax.train.sovits_step import init_sovits_variables

    params_g, quantizer, params_d = jax.jit(init_sovits_variables, static_argnums=0)(config, init_key(config.sovits_train.seed))
    return {"params_g": params_g, "quantizer": quantizer, "params_d": params_d}


def count_values(tree: Any) -> int:
    """Scalars in ``tree`` (parameters, codebook entries)."""
    return sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree.leaves(tree))


@dataclasses.dataclass(frozen=True)
class PartSource:
    """Where one part of a stage's starting point came from.

    Attributes:
      part: ``"gpt"``, ``"generator"`` or ``"discriminator"``.
      source: the file or checkpoint read, or None when the part is initialised fresh.
      report: the mapping report of an upstream file (None for project checkpoints and fresh parts).
      values: scalars of the part in the project tree (parameters; for the generator with the codebook).
      fresh_values: of those, how many were initialised fresh.
    """

    part: str
    source: str | None
    report: ImportReport | None
    values: int
    fresh_values: int

    def __str__(self) -> str:
        if self.source is None:
            return f"{self.part}: no file given, initialised fresh ({self.values:,} values)"
        if self.report is None:
            return f"{self.part}: {self.values:,} values from project checkpoint {self.source}"
        r = self.report
        line = f"{self.part}: {r.tensors} keys, {r.values:,} values ({'/'.join(r.source_dtypes)} -> float32) from {self.source}"
        fresh = [f"{self.part}: {what}: not in the file, initialised fresh ({self.fresh_values:,} values)" for what in r.fresh]
        return "\n".join([line, *fresh])


def _fresh_count(report: ImportReport, target: Any) -> int:
    flat = {"/".join(path): leaf for path, leaf in _flatten(target).items()}
    return sum(int(np.prod(np.shape(flat[p]))) for p in report.fresh_leaves)


def _flatten(tree: Any) -> dict[tuple[str, ...], Any]:
    from flax import traverse_util
    from flax.core import unfreeze

    return traverse_util.flatten_dict(unfreeze(tree))


def load_upstream_stage(
    stage: str,
    config: Config,
    path: str | Path,
    discriminator_path: str | Path | None = None,
    *,
    require_v2: bool = True,
    dtype: Any = np.float32,
) -> tuple[dict[str, Any], list[PartSource]]:
    """``stage``'s :data:`~gptsovits_jax.train.restore.STAGE_FIELDS` from upstream's files, and where each part came from.

    GPT: ``path`` is the s1 file. SoVITS: ``path`` is the generator file (``enc_q`` initialised fresh
    when it is an inference export), ``discriminator_path`` the discriminator file (fresh when None).
    The config is checked (all parts of the stage, ``require_v2``) before any file is opened.
    ``dtype``: of the imported leaves (None: the files' own, e.g. float16; fresh parts are float32).
    """
    if require_v2:
        check_config_holds_v2(config, ("gpt",) if stage == "gpt" else ("generator", "discriminator"))
    if stage == "gpt":
        params, report = load_upstream_checkpoint("gpt", path, config, require_v2=False, dtype=dtype)
        return {"params": params}, [PartSource("gpt", str(path), report, count_values(params), 0)]
    # The files are mapped onto shapes; the model is initialised only for what they lack (an
    # export's enc_q, a missing discriminator file): a full v2 initialisation costs ~10 s and ~2 GB.
    abstract = abstract_variables("sovits", config)
    target = {"params": abstract["params_g"], "quantizer": abstract["quantizer"]}
    generator, report = load_upstream_checkpoint("generator", path, config, target, require_v2=False, dtype=dtype)
    params_d, report_d = abstract["params_d"], None
    if discriminator_path is not None:
        params_d, report_d = load_upstream_checkpoint("discriminator", discriminator_path, config, params_d, require_v2=False, dtype=dtype)
    if report.fresh_leaves or discriminator_path is None:
        fresh = fresh_variables("sovits", config)
        generator = _fill_abstract(generator, {"params": fresh["params_g"], "quantizer": fresh["quantizer"]})
        params_d = _fill_abstract(params_d, fresh["params_d"])
    d_values = count_values(params_d)
    sources = [
        PartSource("generator", str(path), report, count_values(generator), _fresh_count(report, target)),
        PartSource("discriminator", None if report_d is None else str(discriminator_path), report_d, d_values, 0 if report_d else d_values),
    ]
    return {"params_g": generator["params"], "quantizer": generator["quantizer"], "params_d": params_d}, sources


def _fill_abstract(tree: Any, fresh: Any) -> Any:
    """``tree`` with every abstract leaf (``jax.ShapeDtypeStruct``: not in the file) taken from ``fresh``."""
    return jax.tree.map(lambda leaf, new: new if isinstance(leaf, jax.ShapeDtypeStruct) else leaf, tree, fresh)


def _run_dir(path: Path, stage: str) -> Path:
    """``path`` itself, or its ``stage`` folder when ``path`` is an ``import-upstream`` output (``DIR/gpt``, ``DIR/sovits``)."""
    return path / stage if (path / stage / "checkpoints").is_dir() else path


def load_project_stage(stage: str, config: Config, path: str | Path) -> tuple[dict[str, Any], list[PartSource]]:
    """``stage``'s :data:`~gptsovits_jax.train.restore.STAGE_FIELDS` from a project run, checkpoints folder or checkpoint (or an import's output folder).

    Only those fields are read (no optimizer moments); their shapes must be ``config``'s, whatever
    else the checkpoint's own config says (other schedules, steps, data).

    Raises:
      CheckpointMismatchError: a checkpoint of the other stage, or arrays of other shapes (all listed).
    """
    folder = _run_dir(Path(path), stage)
    restored = restore_variables(folder, stage, config=config)
    variables, step = restored.variables, restored.step
    source = f"{folder} (step {step})"
    if stage == "gpt":
        return variables, [PartSource("gpt", source, None, count_values(variables["params"]), 0)]
    generator = {"params": variables["params_g"], "quantizer": variables["quantizer"]}
    return variables, [
        PartSource("generator", source, None, count_values(generator), 0),
        PartSource("discriminator", source, None, count_values(variables["params_d"]), 0),
    ]


def load_stage(
    stage: str, config: Config, path: str | Path, discriminator_path: str | Path | None = None, *, require_v2: bool = True
) -> tuple[dict[str, Any], list[PartSource]]:
    """``stage``'s starting variables from ``path``: an upstream file (``.ckpt``/``.pth``) or a project checkpoint directory.

    For an upstream file the config is checked (``require_v2``) before the file is looked at.

    Raises:
      FileNotFoundError: ``path`` (or ``discriminator_path``) does not exist.
      UpstreamIOError: a discriminator file beside a project checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        if discriminator_path is not None:
            raise UpstreamIOError(f"{discriminator_path}: a discriminator file goes with an upstream generator file, not with {path}")
        return load_project_stage(stage, config, path)
    if require_v2:
        check_config_holds_v2(config, ("gpt",) if stage == "gpt" else ("generator", "discriminator"))
    for p in (path, discriminator_path):
        if p is not None and not Path(p).is_file():
            raise FileNotFoundError(f"{p}: no such file")
    if stage == "gpt":
        return load_upstream_stage("gpt", config, path, require_v2=False)
    return load_upstream_stage("sovits", config, path, discriminator_path, require_v2=False)


def has_checkpoint(workdir: str | Path) -> bool:
    """Whether ``workdir/checkpoints`` holds a saved step (what ``--resume`` continues from)."""
    folder = Path(workdir) / "checkpoints"
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def starting_variables(
    stage: str, config: Config, workdir: str | Path, *, resume: bool = False, require_v2: bool = True
) -> dict[str, Any] | None:
    """What a training run of ``stage`` starts from: ``{stage}_train.init_from``, or None (a fresh initialisation).

    With ``resume`` and a checkpoint in ``workdir`` the checkpoint wins: ``init_from`` is not read,
    and the log and the console say so.
    """
    train_cfg = config.gpt_train if stage == "gpt" else config.sovits_train
    init_from = train_cfg.init_from
    if init_from is None:
        return None
    if resume and has_checkpoint(workdir):
        message = f"--resume: {Path(workdir) / 'checkpoints'} holds a checkpoint; continuing from it, not from {stage}_train.init_from {init_from}"
        log.info(message)
        if jax.process_index() == 0:
            print(message)
        return None
    discriminator = getattr(train_cfg, "init_from_discriminator", None)
    variables, sources = load_stage(stage, config, init_from, discriminator, require_v2=require_v2)
    lines = [f"{stage}: starting from {init_from} (fresh optimizer state, step 0)", *(str(s) for s in sources)]
    for line in lines:
        log.info(line)
    if jax.process_index() == 0:
        print("\n".join(lines))
    return variables


# --------------------------------------------------------------------------- import-upstream


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What :func:`import_upstream` wrote: ``stage -> run directory`` and where every part came from."""

    runs: dict[str, Path]
    sources: list[PartSource]

    def __str__(self) -> str:
        lines = [str(s) for s in self.sources]
        lines += [f"wrote {stage} checkpoint (step 0): {path}" for stage, path in self.runs.items()]
        return "\n".join(lines)


def import_upstream(
    config: Config,
    out: str | Path,
    s1: str | Path,
    s2g: str | Path,
    s2d: str | Path | None = None,
    *,
    require_v2: bool = True,
) -> ImportResult:
    """Upstream's GPT (``s1``), generator (``s2g``) and discriminator (``s2d``, optional) files -> ``out/gpt``, ``out/sovits``.

    Each is a step-0 *fields* checkpoint (:func:`~gptsovits_jax.train.checkpoint.save_fields`)
    saved with ``config``: the stage's parameters (and codebook, marked initialised) exactly as the
    files hold them (float16 stays float16; restoring upcasts exactly to float32), no optimizer
    state: ``--init-from``, ``--resume`` of that folder, ``synthesize`` and ``export-upstream`` give
    it a fresh one. A generator without ``enc_q`` (an inference export) gets a fresh posterior
    encoder; without ``s2d`` the discriminator is fresh (float32). The config (``require_v2``) and
    the output folders are checked before any file is read; an import that fails removes what it
    wrote. One stage at a time is read, mapped and written, each file's tensors released as they are
    mapped: peak memory is about the larger stage's files above the interpreter's.

    Raises:
      WeightMappingError: a config without v2's sizes, or a file that does not map (everything listed).
      CheckpointFormatError: a file that is not a readable PyTorch checkpoint.
      UpstreamIOError: an output folder that already holds a checkpoint.
    """
    from gptsovits_jax.train.checkpoint import save_fields

    if require_v2:
        check_config_holds_v2(config)
    out = Path(out).absolute()
    runs = {"gpt": out / "gpt", "sovits": out / "sovits"}
    for path in runs.values():
        if has_checkpoint(path):
            raise UpstreamIOError(f"{path} already holds a checkpoint; choose another --out")
    for p in (s1, s2g, s2d):
        if p is not None and not Path(p).is_file():
            raise FileNotFoundError(f"{p}: no such file")
    # One stage at a time (read, map, write, release): the peak holds one stage's files. A file
    # that fails takes back what this call wrote, so a failed import leaves nothing behind.
    loads = {
        "gpt": lambda: load_upstream_stage("gpt", config, s1, require_v2=False, dtype=None),
        "sovits": lambda: load_upstream_stage("sovits", config, s2g, s2d, require_v2=False, dtype=None),
    }
    sources, created = [], [path for path in runs.values() if not path.exists()]
    try:
        for stage, load in loads.items():
            variables, found = load()
            sources += found
            save_fields(runs[stage], config, stage, 0, _on_device(variables))
            del variables
    except BaseException:
        for path in runs.values():
            shutil.rmtree(path if path in created else path / "checkpoints", ignore_errors=True)
        raise
    return ImportResult(runs=runs, sources=sources)


def _on_device(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree``'s leaves as ``jax.Array`` s, each numpy leaf dropped from ``tree`` as it is copied (peak: one leaf more).

    ``tree`` (nested dicts) is emptied; the caller must hold no other reference to its arrays.
    """
    out = {}
    for key in list(tree):
        value = tree.pop(key)
        out[key] = _on_device(value) if isinstance(value, dict) else jax.device_put(value)
        del value
    return out


# --------------------------------------------------------------------------- export-upstream


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def upstream_gpt_config(config: Config, epochs: int, name: str) -> dict[str, Any]:
    """The ``config`` of an s1 export: ``s1longer-v2.yaml``'s layout with this run's values.

    Inference reads ``model`` (``Text2SemanticDecoder``: ``hidden_dim``, ``embedding_dim``, ``head``,
    ``n_layer``, ``vocab_size``, ``phoneme_vocab_size``, ``dropout``, ``EOS``) and ``data.max_sec``
    (the cap on generated speech, ``gpt_train.max_semantic_tokens`` at 25 tokens per second).
    """
    g, t = config.gpt, config.gpt_train
    schedule = t.optim.schedule
    token_rate = config.audio.frame_rate / 2
    return {
        "train": {
            "seed": t.seed,
            "epochs": epochs,
            "batch_size": t.batch_size,
            "save_every_n_epoch": 1,
            "precision": "32" if t.precision == "float32" else "bf16-mixed",
            "gradient_clip": t.optim.clip_norm if t.optim.clip_norm is not None else 0.0,
            "exp_name": name,
        },
        "optimizer": {
            "lr": schedule.peak_lr,
            "lr_init": schedule.init_lr,
            "lr_end": schedule.end_lr,
            "warmup_steps": schedule.warmup_steps,
            "decay_steps": schedule.total_steps if schedule.total_steps is not None else t.steps,
        },
        "data": {
            "max_eval_sample": 8,
            "max_sec": _number(t.max_semantic_tokens / token_rate),
            "num_workers": config.data.num_workers,
            "pad_val": g.eos,
        },
        "model": {
            "vocab_size": g.vocab_size,
            "phoneme_vocab_size": g.phoneme_vocab_size,
            "embedding_dim": g.hidden_dim,
            "hidden_dim": g.hidden_dim,
            "head": g.num_heads,
            "linear_units": g.ffn_dim,
            "n_layer": g.num_layers,
            "dropout": g.embedding_dropout,
            "EOS": g.eos,
            "random_bert": 0,
        },
        "inference": {"top_k": 15},
    }


def _text_low_lr_rate(config: Config) -> float:
    for group in config.sovits_train.optim_g.groups:
        if "text_embedding" in group.pattern and not group.frozen:
            return group.lr_mult
    return 1.0


def upstream_sovits_config(config: Config, epochs: int, name: str) -> dict[str, Any]:
    """The ``config`` of an s2 export: ``s2.json``'s layout (and the fields upstream's WebUI adds) with this run's values.

    Inference reads ``data.filter_length``, ``data.hop_length``, ``data.win_length``,
    ``data.sampling_rate``, ``data.n_speakers``, ``train.segment_size`` and every ``model`` field
    (``SynthesizerTrn``'s keyword arguments; ``model.version`` "v2").
    """
    a, s, t = config.audio, config.sovits, config.sovits_train
    optim_g = t.optim_g
    return {
        "train": {
            "log_interval": t.log_every,
            "eval_interval": t.eval_every,
            "seed": t.seed,
            "epochs": epochs,
            "learning_rate": optim_g.schedule.peak_lr,
            "betas": [optim_g.b1, optim_g.b2],
            "eps": optim_g.eps,
            "batch_size": t.batch_size,
            "fp16_run": False,
            "lr_decay": optim_g.schedule.decay_rate,
            "segment_size": s.segment_frames * a.hop_length,
            "init_lr_ratio": 1,
            "warmup_epochs": 0,
            "c_mel": t.c_mel,
            "c_kl": t.c_kl,
            "text_low_lr_rate": _text_low_lr_rate(config),
            "grad_ckpt": False,
        },
        "data": {
            "max_wav_value": 32768.0,
            "sampling_rate": a.sample_rate,
            "filter_length": a.n_fft,
            "hop_length": a.hop_length,
            "win_length": a.win_length,
            "n_mel_channels": a.n_mels,
            "mel_fmin": a.fmin,
            "mel_fmax": a.fmax,
            "add_blank": True,
            "n_speakers": 300,  # upstream's s2.json; v2 builds no speaker table from it
            "cleaned_text": True,
        },
        "model": {
            "inter_channels": s.inter_channels,
            "hidden_channels": s.hidden_channels,
            "filter_channels": s.filter_channels,
            "n_heads": s.n_heads,
            "n_layers": s.n_layers,
            "kernel_size": s.kernel_size,
            "p_dropout": s.dropout,
            "resblock": "1",
            "resblock_kernel_sizes": _plain(s.resblock_kernel_sizes),
            "resblock_dilation_sizes": _plain(s.resblock_dilation_sizes),
            "upsample_rates": _plain(s.upsample_rates),
            "upsample_initial_channel": s.upsample_initial_channel,
            "upsample_kernel_sizes": _plain(s.upsample_kernel_sizes),
            "n_layers_q": 3,
            "use_spectral_norm": config.discriminator.use_spectral_norm,
            "gin_channels": s.gin_channels,
            "semantic_frame_rate": "25hz",
            "freeze_quantizer": s.freeze_quantizer,
            "version": "v2",
        },
        "content_module": "cnhubert",
        "name": name,
        "version": "v2",
        "save_weight_dir": UPSTREAM_WEIGHT_DIRS["sovits"],
    }


@dataclasses.dataclass(frozen=True)
class Epochs:
    """Completed epochs of a run at a checkpoint and how they were counted."""

    epochs: int
    how: str


def completed_epochs(stage: str, config: Config, step: int, data_state: dict[str, Any], cache_dir: str | Path | None = None) -> Epochs:
    """Completed passes over the training data after ``step`` steps (see the module docstring).

    Raises:
      UpstreamIOError: the data cannot be rebuilt as it was (cache missing or changed).
    """
    if "position" in data_state:  # train/synthetic.py's repeating batch
        return Epochs(int(data_state["position"]), "synthetic data: one batch per epoch")
    if "next_batch" not in data_state:
        if step == 0:
            return Epochs(0, "step 0: nothing trained yet")
        raise UpstreamIOError(f"the {stage} checkpoint at step {step} records no data position to count epochs from")
    from gptsovits_jax.data import pipeline

    cache = Path(cache_dir if cache_dir is not None else config.data.cache_dir)
    try:
        data = pipeline.sovits_data(config, "train", cache) if stage == "sovits" else pipeline.gpt_data(config, "train", cache)
    except (FileNotFoundError, ValueError) as err:
        raise UpstreamIOError(f"cannot count the {stage} run's epochs from its training data: {err}") from None
    if data.identity() != data_state.get("data"):
        raise UpstreamIOError(f"cannot count the {stage} run's epochs: the training data in {cache} is no longer what the run trained on")
    batches = pipeline.BucketSampler(data.bucket_of, int(data_state["batch_size"]), int(data_state["seed"])).batches_per_epoch
    consumed = int(data_state["next_batch"])
    how = f"{consumed} batches of {data_state['batch_size']} / {batches} per epoch ({len(data)} training utterances in {cache})"
    return Epochs(consumed // batches, how)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_upstream` wrote."""

    gpt_path: Path
    sovits_path: Path
    gpt_epochs: Epochs
    sovits_epochs: Epochs
    sovits_step: int
    version_tag: bytes | None

    def __str__(self) -> str:
        tag = f"upstream's v2 tag {self.version_tag.decode()}" if self.version_tag else "no version tag"
        return "\n".join(
            [
                f"wrote {self.gpt_path} (GPT, epoch {self.gpt_epochs.epochs}: {self.gpt_epochs.how})",
                f"wrote {self.sovits_path} (SoVITS, epoch {self.sovits_epochs.epochs}, step {self.sovits_step}: "
                f"{self.sovits_epochs.how}; {tag})",
                f"upstream: copy them into {UPSTREAM_WEIGHT_DIRS['gpt']}/ and {UPSTREAM_WEIGHT_DIRS['sovits']}/ of its checkout",
            ]
        )


def write_upstream_files(
    out: str | Path,
    name: str,
    gpt_params: Any,
    gpt_config: Config,
    gpt_epochs: int,
    generator: Any,
    sovits_config: Config,
    sovits_epochs: int,
    sovits_step: int,
    *,
    version_tag: bool = True,
) -> tuple[Path, Path]:
    """Write ``out/NAME-e{E}.ckpt`` and ``out/NAME_e{E}_s{S}.pth`` from project trees; returns both paths.

    ``gpt_params`` is the GPT's parameter tree, ``generator`` ``{"params": params_g, "quantizer": codebooks}``
    (``enc_q`` is left out of the file). Values are rounded to float16.
    """
    from gptsovits_jax.torch_checkpoint import write_torch_checkpoint

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gpt_path = out / f"{name}-e{gpt_epochs}.ckpt"
    gpt_file = OrderedDict(
        weight=project_to_upstream("gpt", gpt_params, dtype=np.float16),
        config=upstream_gpt_config(gpt_config, gpt_epochs, name),
        info=f"GPT-e{gpt_epochs}",
    )
    write_torch_checkpoint(gpt_file, gpt_path)
    sovits_path = out / f"{name}_e{sovits_epochs}_s{sovits_step}.pth"
    sovits_file = OrderedDict(
        weight=dict(project_to_upstream("generator", generator, include_enc_q=False, dtype=np.float16)),
        config=upstream_sovits_config(sovits_config, sovits_epochs, name),
        info=f"{sovits_epochs}epoch_{sovits_step}iteration",
    )
    write_torch_checkpoint(sovits_file, sovits_path, version_tag=SOVITS_VERSION_TAG if version_tag else None)
    return gpt_path, sovits_path


def export_upstream(
    gpt_ckpt: str | Path,
    sovits_ckpt: str | Path,
    out: str | Path,
    name: str | None = None,
    *,
    require_v2: bool = True,
    cache_dir: str | Path | None = None,
    gpt_epochs: int | None = None,
    sovits_epochs: int | None = None,
    version_tag: bool = True,
) -> ExportResult:
    """A GPT run and a SoVITS run -> ``out/NAME-e{E}.ckpt`` and ``out/NAME_e{E}_s{S}.pth`` for upstream's inference.

    Args:
      gpt_ckpt, sovits_ckpt: run directories, their ``checkpoints``/``best`` folders or one step's folder.
      name: the file names' stem (default: the GPT checkpoint config's ``name``).
      require_v2: refuse configs without upstream v2's sizes (checked before any weight is read).
      cache_dir: the preprocessed cache the runs trained on (default: each checkpoint config's).
      gpt_epochs, sovits_epochs: E in the names, instead of counting it from the training data.
      version_tag: write upstream's v2 tag in the SoVITS file (see the module docstring).

    Raises:
      WeightMappingError: a config without v2's sizes or a value beyond float16's range.
      CompatibilityError: runs that were not trained together (vocabulary, audio, SSL settings).
      UpstreamIOError: epochs that cannot be counted.
    """
    from gptsovits_jax.infer import check_compatible
    from gptsovits_jax.train.checkpoint import read_checkpoint_config

    gpt_config, gpt_stage, _ = read_checkpoint_config(gpt_ckpt)
    sovits_config, sovits_stage, _ = read_checkpoint_config(sovits_ckpt)
    for path, stage, expected in ((gpt_ckpt, gpt_stage, "gpt"), (sovits_ckpt, sovits_stage, "sovits")):
        if stage != expected:
            raise UpstreamIOError(f"{path} holds a {stage!r} checkpoint, expected {expected!r}")
    if require_v2:
        check_config_holds_v2(gpt_config, ("gpt",))
        check_config_holds_v2(sovits_config, ("generator",))
    check_compatible(gpt_config, sovits_config, str(gpt_ckpt), str(sovits_ckpt))
    name = name or gpt_config.name
    gpt = restore_variables(gpt_ckpt, "gpt", INFERENCE_FIELDS["gpt"])
    sovits = restore_variables(sovits_ckpt, "sovits", INFERENCE_FIELDS["sovits"])
    gpt_step, gpt_data, sovits_step, sovits_data = gpt.step, gpt.data_state, sovits.step, sovits.data_state
    e_gpt = Epochs(gpt_epochs, "given") if gpt_epochs is not None else completed_epochs("gpt", gpt_config, gpt_step, gpt_data, cache_dir)
    e_sovits = (
        Epochs(sovits_epochs, "given")
        if sovits_epochs is not None
        else completed_epochs("sovits", sovits_config, sovits_step, sovits_data, cache_dir)
    )

    generator = {"params": sovits.variables["params_g"], "quantizer": sovits.variables["quantizer"]}
    gpt_path, sovits_path = write_upstream_files(
        out,
        name,
        gpt.variables["params"],
        gpt_config,
        e_gpt.epochs,
        generator,
        sovits_config,
        e_sovits.epochs,
        sovits_step,
        version_tag=version_tag,
    )
    tag = SOVITS_VERSION_TAG if version_tag else None
    return ExportResult(gpt_path, sovits_path, e_gpt, e_sovits, sovits_step, tag)
