"""Configuration: frozen dataclasses for every section, loaded from YAML.

A config file names every hyperparameter (see ``configs/tiny.yaml`` and
``configs/v2.yaml``). ``load_config(path, overrides)`` reads the file, applies
``"section.key=value"`` overrides, checks every key and type, and validates the
values that would otherwise fail far from their cause (warmup longer than the
run, negative learning rates, unknown schedule names, mismatched vocabularies).
Errors are :class:`ConfigError` and always name the offending key.

``yaml`` is imported lazily so that ``gptsovits_jax.optim`` can type against
these dataclasses without pulling a YAML parser into users' programs.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEDULE_NAMES = ("constant", "linear", "warmup_cosine", "warmup_exponential", "warmup_step")
OPTIMIZER_NAMES = ("adamw", "lamb")
PRECISIONS = ("float32", "bfloat16")


_FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or holds an impossible value."""


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class AudioConfig:
    """Waveform and spectrogram parameters (upstream v2: 32 kHz, 2048/640, 128 mels)."""

    sample_rate: int = 32000
    n_fft: int = 2048
    win_length: int = 2048
    hop_length: int = 640
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    ssl_sample_rate: int = 16000

    @property
    def spec_channels(self) -> int:
        """Linear-spectrogram bins, ``n_fft // 2 + 1`` (1025 in v2)."""
        return self.n_fft // 2 + 1

    @property
    def frame_rate(self) -> float:
        """Spectrogram frames per second (50 Hz in v2)."""
        return self.sample_rate / self.hop_length


@dataclass(frozen=True)
class TextConfig:
    """Text frontend: which languages the manifest may use, and where the BERT model for Chinese text lives.

    ``bert_path`` is a local Hugging Face copy of chinese-roberta-wwm-ext-large (``config.json``, weights,
    ``tokenizer.json`` or ``vocab.txt``); preprocessing caches its features for the GPT and synthesis
    computes them. ``None`` feeds the GPT zeros for every language (no BERT model). The directory is
    checked when work starts (preprocessing, synthesis), not here: a config stored with a checkpoint is
    loaded again on machines without it.
    """

    languages: tuple[str, ...] = ("en", "zh", "ja", "ko", "yue", "all_zh", "all_ja", "all_ko", "all_yue", "auto", "auto_yue")
    phoneme_vocab_size: int = 732
    bert_path: str | None = None


@dataclass(frozen=True)
class SSLConfig:
    """Self-supervised content features at 50 Hz (16 kHz input, hop 320)."""

    extractor: str = "spectral"
    dim: int = 768
    hubert_path: str | None = None


@dataclass(frozen=True)
class DataConfig:
    """Manifest, preprocessing cache and batching."""

    list_path: str = "data/demo/demo.list"
    cache_dir: str = "cache/demo"
    min_seconds: float = 0.6
    max_seconds: float = 54.0
    max_phonemes: int = 540
    eval_utterances: int = 4
    num_workers: int = 2
    bucket_boundaries: tuple[int, ...] = (32, 300, 500, 800, 1200, 1900)
    split_seed: int = 1234


@dataclass(frozen=True)
class GPTConfig:
    """Stage-1 text-to-semantic decoder (upstream ``s1longer-v2.yaml``)."""

    vocab_size: int = 1025
    phoneme_vocab_size: int = 732
    hidden_dim: int = 512
    num_heads: int = 16
    num_layers: int = 24
    ffn_dim: int = 2048
    bert_dim: int = 1024
    dropout: float = 0.1
    embedding_dropout: float = 0.0
    loss_reduction: str = "sum"

    @property
    def eos(self) -> int:
        """End-of-sequence id: the last vocabulary entry (1024 in v2)."""
        return self.vocab_size - 1


@dataclass(frozen=True)
class SoVITSConfig:
    """Stage-2 synthesizer (upstream ``s2.json``, version v2)."""

    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    dropout: float = 0.1
    window_size: int = 4
    gin_channels: int = 512
    ref_spec_bins: int = 704
    ref_hidden: int = 128
    mrte_hidden: int = 512
    mrte_heads: int = 4
    codebook_size: int = 1024
    n_q: int = 1
    codebook_decay: float = 0.99
    kmeans_iters: int = 50
    dead_code_threshold: float = 2.0
    freeze_quantizer: bool = True
    posterior_layers: int = 16
    posterior_kernel: int = 5
    flow_layers: int = 4
    n_flows: int = 4
    flow_kernel: int = 5
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 2, 2)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    segment_frames: int = 32


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Multi-period + scale discriminator (upstream v2 ``MultiPeriodDiscriminator``)."""

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
    scale_channels: tuple[int, ...] = (16, 64, 256, 1024, 1024, 1024)
    scale_groups: tuple[int, ...] = (1, 4, 16, 64, 256, 1)
    use_spectral_norm: bool = False


@dataclass(frozen=True)
class ScheduleConfig:
    """One learning-rate schedule; see :mod:`gptsovits_jax.schedules` for the closed forms.

    Steps are optimizer updates (a training step with ``grad_accum_steps: k`` is 1/k of
    one). ``total_steps`` of ``None`` means the stage's ``steps / grad_accum_steps``
    (rounded up), the updates of the whole run. ``decay_rate`` is
    per ``decay_every`` steps (exponential); ``boundaries``/``drop_factor`` define
    the piecewise-constant drops (step).
    """

    name: str = "warmup_cosine"
    peak_lr: float = 1e-4
    init_lr: float = 0.0
    end_lr: float = 0.0
    warmup_steps: int = 0
    total_steps: int | None = None
    decay_rate: float = 1.0
    decay_every: int = 1
    boundaries: tuple[int, ...] = ()
    drop_factor: float = 0.1


@dataclass(frozen=True)
class GroupConfig:
    """A parameter group: the parameters whose path matches ``pattern`` (``re.search``).

    Groups are tried in order and a parameter joins the first that matches.
    ``frozen`` groups get exactly zero updates and no weight decay. A group with
    ``unfreeze_step`` K has learning rate 0 before optimizer step K and follows
    its schedule, counted from K, afterwards.
    """

    name: str
    pattern: str
    lr_mult: float = 1.0
    frozen: bool = False
    schedule: ScheduleConfig | None = None
    unfreeze_step: int | None = None


@dataclass(frozen=True)
class PlateauConfig:
    """Reduce-on-plateau scaling driven by the validation loss (``optax.contrib``)."""

    factor: float = 0.5
    patience: int = 5
    rtol: float = 1e-4
    cooldown: int = 0
    min_scale: float = 0.01


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (or LAMB) with per-group schedules (upstream: AdamW, betas 0.8/0.99, eps 1e-9, wd 0.01).

    ``stack_layers`` runs AdamW on the parameters that repeat across layers stacked into
    ``[n_layers, ...]`` arrays (:class:`gptsovits_jax.optim.LayerStacking`): the same updates, a
    much smaller program to compile; its optimizer state is laid out by stack.
    """

    name: str = "adamw"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    groups: tuple[GroupConfig, ...] = (GroupConfig(name="all", pattern=""),)
    b1: float = 0.8
    b2: float = 0.99
    eps: float = 1e-9
    weight_decay: float = 0.01
    weight_decay_pattern: str = r"(kernel|weight_v)$"
    clip_norm: float | None = None
    grad_accum_steps: int = 1
    skip_nonfinite: bool = True
    plateau: PlateauConfig | None = None
    stack_layers: bool = True


@dataclass(frozen=True)
class SoVITSTrainConfig:
    """Stage-2 loop: steps, batches, loss weights, generator and discriminator optimizers.

    ``init_from`` starts training from other weights instead of a random initialisation (parameters and
    codebook only; fresh optimizer state, step 0): upstream's generator file (``s2G2333k.pth`` or a
    ``*_e*_s*.pth`` export) or a project run/checkpoint directory (generator, codebook and discriminator).
    ``init_from_discriminator`` is upstream's discriminator file (``s2D2333k.pth``) beside an upstream
    generator file; without it the discriminator starts fresh.

    ``scan_layers`` runs the layers of the text encoder's transformer stacks and of the WaveNet stacks
    (posterior encoder, flow couplings) under ``lax.scan`` (one compiled layer body per stack instead of
    one per layer; same parameters, same results); ``remat`` (``none``, ``dots``: keep the matmul outputs
    and recompute the rest per layer, ``full``: keep only each layer's input) trades recomputation for
    activation memory in those stacks and needs ``scan_layers``.
    """

    steps: int = 1000
    batch_size: int = 4
    seed: int = 1234
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    max_nonfinite_steps: int = 20
    precision: str = "float32"
    c_mel: float = 45.0
    c_kl: float = 1.0
    c_fm: float = 2.0
    c_commit: float = 1.0
    scan_layers: bool = True
    remat: str = "none"
    optim_g: OptimConfig = field(default_factory=OptimConfig)
    optim_d: OptimConfig = field(default_factory=OptimConfig)
    init_from: str | None = None
    init_from_discriminator: str | None = None


@dataclass(frozen=True)
class GPTTrainConfig:
    """Stage-1 loop: steps, batches and the optimizer.

    ``init_from`` starts training from other weights instead of a random initialisation (parameters only;
    fresh optimizer state, step 0): upstream's GPT file (``s1bert25hz-*.ckpt`` or a ``*-e*.ckpt`` export)
    or a project run/checkpoint directory.

    ``scan_layers`` runs the decoder layers under ``lax.scan`` in the train and eval steps (one layer
    compiled instead of ``gpt.num_layers``; same parameters, same results); ``remat`` (``none``, ``dots``:
    keep the dense matmul outputs and recompute the rest per layer, ``full``: keep only each layer's
    input) trades recomputation for activation memory and needs ``scan_layers``.
    """

    steps: int = 1000
    batch_size: int = 8
    seed: int = 1234
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    max_nonfinite_steps: int = 20
    precision: str = "float32"
    max_semantic_tokens: int = 1350
    scan_layers: bool = True
    remat: str = "none"
    optim: OptimConfig = field(default_factory=OptimConfig)
    init_from: str | None = None


@dataclass(frozen=True)
class ParallelConfig:
    """Device mesh and multi-host settings. ``num_devices`` of ``None`` uses all devices."""

    num_devices: int | None = None
    data_axis: str = "data"
    distributed: bool = False
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


@dataclass(frozen=True)
class Config:
    """The whole run: every section of a ``configs/*.yaml`` file."""

    name: str = "run"
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    data: DataConfig = field(default_factory=DataConfig)
    gpt: GPTConfig = field(default_factory=GPTConfig)
    sovits: SoVITSConfig = field(default_factory=SoVITSConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    sovits_train: SoVITSTrainConfig = field(default_factory=SoVITSTrainConfig)
    gpt_train: GPTTrainConfig = field(default_factory=GPTTrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


# --------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (lists to tuples, ints to floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {_type_name(tp)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        item_type = args[0]
        return tuple(_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if value is None:
        raise ConfigError(f"{key}: must not be null")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        # PyYAML (YAML 1.1) reads exponents without a dot, like 1e-4, as strings.
        if isinstance(value, str) and _FLOAT_LITERAL.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


REMAT_CHOICES = ("none", "dots", "full")  # gptsovits_jax.models.layers.REMAT_POLICIES

REMOVED_KEYS = {
    "max_consecutive_nonfinite": "the stage's max_nonfinite_steps (sovits_train / gpt_train) is the one setting for how many "
    "non-finite steps in a row stop a run; the optimizer never applies a non-finite update",
}


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        if unknown[0] in REMOVED_KEYS:
            raise ConfigError(f"{where}{unknown[0]} was removed: {REMOVED_KEYS[unknown[0]]}")
        raise ConfigError(f"unknown key {where}{unknown[0]} (known in {prefix or 'the top level'}: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{prefix or 'config'}: {err}") from None


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested mapping (as read from YAML)."""
    config = _build(Config, data or {})
    config = _resolve(config)
    validate(config)
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain nested dicts and lists (for YAML, JSON and checkpoints)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(config)


def _parse_override(text: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. sovits_train.batch_size=4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(f"override {text!r}: {key!r} is not a dotted key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {err}") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``"a.b.c=value"`` applied (values parsed as YAML)."""
    import copy

    data = copy.deepcopy(data or {})
    for text in overrides:
        path, value = _parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {'.'.join(path)}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(path: str | Path, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a YAML config, apply ``overrides`` (``["sovits_train.batch_size=4", ...]``) and validate.

    Raises:
      FileNotFoundError: the file does not exist.
      ConfigError: a key is unknown, a type is wrong or a value is impossible; the
        message names the key (and the file).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        return config_from_dict(apply_overrides(data, overrides))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


# --------------------------------------------------------------------------- validation


def optimizer_steps(steps: int, optim: OptimConfig) -> int:
    """Optimizer updates in a run of ``steps`` training steps: one per ``grad_accum_steps`` micro-batches."""
    return -(-steps // optim.grad_accum_steps)


def _resolve_optim(optim: OptimConfig, steps: int) -> OptimConfig:
    # Schedules are evaluated at the optimizer's update count, so their default length is in updates.
    steps = optimizer_steps(steps, optim)

    def fill(schedule: ScheduleConfig | None) -> ScheduleConfig | None:
        if schedule is None or schedule.total_steps is not None:
            return schedule
        return dataclasses.replace(schedule, total_steps=steps)

    groups = tuple(dataclasses.replace(g, schedule=fill(g.schedule)) for g in optim.groups)
    return dataclasses.replace(optim, schedule=fill(optim.schedule), groups=groups)


def _resolve(config: Config) -> Config:
    """Fill values that default to other values (schedule lengths default to the stage's steps)."""
    st, gt = config.sovits_train, config.gpt_train
    st = dataclasses.replace(st, optim_g=_resolve_optim(st.optim_g, st.steps), optim_d=_resolve_optim(st.optim_d, st.steps))
    gt = dataclasses.replace(gt, optim=_resolve_optim(gt.optim, gt.steps))
    return dataclasses.replace(config, sovits_train=st, gpt_train=gt)


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def validate_schedule(schedule: ScheduleConfig, key: str) -> None:
    """Raise :class:`ConfigError` if ``schedule`` cannot define a learning rate at every step."""
    _check(schedule.name in SCHEDULE_NAMES, f"{key}.name", f"unknown schedule {schedule.name!r}; choose one of {', '.join(SCHEDULE_NAMES)}")
    for name in ("peak_lr", "init_lr", "end_lr"):
        value = getattr(schedule, name)
        _check(math.isfinite(value) and value >= 0, f"{key}.{name}", f"learning rate must be finite and >= 0, got {value}")
    _check(schedule.warmup_steps >= 0, f"{key}.warmup_steps", f"must be >= 0, got {schedule.warmup_steps}")
    total = schedule.total_steps
    if total is not None:
        _check(total > 0, f"{key}.total_steps", f"must be > 0, got {total}")
        if schedule.name in ("warmup_cosine", "linear"):
            _check(
                schedule.warmup_steps < total,
                f"{key}.warmup_steps",
                f"warmup ({schedule.warmup_steps} steps) must be shorter than total_steps ({total})",
            )
        else:
            _check(
                schedule.warmup_steps <= total,
                f"{key}.warmup_steps",
                f"warmup ({schedule.warmup_steps} steps) is longer than total_steps ({total})",
            )
    if schedule.name in ("warmup_cosine", "warmup_exponential"):
        _check(schedule.end_lr <= schedule.peak_lr, f"{key}.end_lr", f"floor {schedule.end_lr} is above peak_lr {schedule.peak_lr}")
    if schedule.name == "warmup_exponential":
        _check(0 < schedule.decay_rate <= 1, f"{key}.decay_rate", f"must be in (0, 1], got {schedule.decay_rate}")
        _check(schedule.decay_every >= 1, f"{key}.decay_every", f"must be >= 1, got {schedule.decay_every}")
    if schedule.name == "warmup_step":
        b = schedule.boundaries
        _check(
            all(x > 0 for x in b) and list(b) == sorted(set(b)),
            f"{key}.boundaries",
            f"must be strictly increasing positive steps, got {list(b)}",
        )
        _check(0 < schedule.drop_factor <= 1, f"{key}.drop_factor", f"must be in (0, 1], got {schedule.drop_factor}")


def validate_optim(optim: OptimConfig, key: str) -> None:
    """Raise :class:`ConfigError` for an optimizer config that cannot be built."""
    _check(optim.name in OPTIMIZER_NAMES, f"{key}.name", f"unknown optimizer {optim.name!r}; choose one of {', '.join(OPTIMIZER_NAMES)}")
    validate_schedule(optim.schedule, f"{key}.schedule")
    _check(len(optim.groups) > 0, f"{key}.groups", "at least one parameter group is required")
    names = [g.name for g in optim.groups]
    _check(len(names) == len(set(names)), f"{key}.groups", f"group names must be unique, got {names}")
    for i, group in enumerate(optim.groups):
        gkey = f"{key}.groups[{i}]"
        _check(re.fullmatch(r"[A-Za-z0-9_]+", group.name) is not None, f"{gkey}.name", f"{group.name!r} must be letters, digits or _")
        try:
            re.compile(group.pattern)
        except re.error as err:
            raise ConfigError(f"{gkey}.pattern: invalid regex {group.pattern!r}: {err}") from None
        _check(group.lr_mult >= 0 and math.isfinite(group.lr_mult), f"{gkey}.lr_mult", f"must be finite and >= 0, got {group.lr_mult}")
        if group.schedule is not None:
            validate_schedule(group.schedule, f"{gkey}.schedule")
        if group.unfreeze_step is not None:
            _check(group.unfreeze_step >= 0, f"{gkey}.unfreeze_step", f"must be >= 0, got {group.unfreeze_step}")
            _check(not group.frozen, f"{gkey}.unfreeze_step", "a frozen group never unfreezes; drop one of frozen/unfreeze_step")
    try:
        re.compile(optim.weight_decay_pattern)
    except re.error as err:
        raise ConfigError(f"{key}.weight_decay_pattern: invalid regex: {err}") from None
    _check(0 < optim.b1 < 1, f"{key}.b1", f"must be in (0, 1), got {optim.b1}")
    _check(0 < optim.b2 < 1, f"{key}.b2", f"must be in (0, 1), got {optim.b2}")
    _check(optim.eps > 0, f"{key}.eps", f"must be > 0, got {optim.eps}")
    _check(optim.weight_decay >= 0, f"{key}.weight_decay", f"must be >= 0, got {optim.weight_decay}")
    _check(optim.clip_norm is None or optim.clip_norm > 0, f"{key}.clip_norm", f"must be > 0 or null, got {optim.clip_norm}")
    _check(optim.grad_accum_steps >= 1, f"{key}.grad_accum_steps", f"must be >= 1, got {optim.grad_accum_steps}")
    if optim.plateau is not None:
        p = optim.plateau
        _check(0 < p.factor < 1, f"{key}.plateau.factor", f"must be in (0, 1), got {p.factor}")
        _check(p.patience >= 0, f"{key}.plateau.patience", "must be >= 0")
        _check(0 <= p.min_scale <= 1, f"{key}.plateau.min_scale", "must be in [0, 1]")


UPSTREAM_SUFFIXES = (".ckpt", ".pth")
"""File suffixes of upstream's checkpoints; an ``init_from`` without one names a project run or checkpoint directory."""


def _validate_init_from(config: Config) -> None:
    # Only the form is checked here: a config stored with a checkpoint is validated again on other machines.
    for key, value in (
        ("gpt_train.init_from", config.gpt_train.init_from),
        ("sovits_train.init_from", config.sovits_train.init_from),
        ("sovits_train.init_from_discriminator", config.sovits_train.init_from_discriminator),
    ):
        _check(value is None or value.strip() != "", key, "must be a path or null, not an empty string")
    st = config.sovits_train
    if st.init_from_discriminator is not None:
        _check(
            st.init_from is not None and st.init_from.endswith(UPSTREAM_SUFFIXES),
            "sovits_train.init_from_discriminator",
            "goes with an upstream generator file in sovits_train.init_from (.pth); a project checkpoint holds its own discriminator",
        )
        _check(
            st.init_from_discriminator.endswith(UPSTREAM_SUFFIXES),
            "sovits_train.init_from_discriminator",
            f"must be an upstream discriminator file ({', '.join(UPSTREAM_SUFFIXES)}), got {st.init_from_discriminator!r}",
        )


def _positive(section: Any, prefix: str, names: typing.Iterable[str]) -> None:
    for name in names:
        value = getattr(section, name)
        _check(value > 0, f"{prefix}.{name}", f"must be > 0, got {value}")


def validate(config: Config) -> None:
    """Raise :class:`ConfigError` naming the first impossible value in ``config``."""
    a = config.audio
    _positive(a, "audio", ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "ssl_sample_rate"))
    _check(a.win_length <= a.n_fft, "audio.win_length", f"must be <= n_fft ({a.n_fft})")
    _check(
        a.n_fft > a.hop_length and (a.n_fft - a.hop_length) % 2 == 0,
        "audio.hop_length",
        "n_fft - hop_length must be positive and even (reflect padding)",
    )
    _check(a.fmax is None or a.fmin < a.fmax <= a.sample_rate / 2, "audio.fmax", "must lie in (fmin, sample_rate / 2]")
    _check(
        a.sample_rate * 320 == a.ssl_sample_rate * a.hop_length,
        "audio.hop_length",
        "spectrogram frames must align with 50 Hz SSL frames (hop / sample_rate == 320 / ssl_sample_rate)",
    )

    d = config.data
    _check(0 < d.min_seconds < d.max_seconds, "data.min_seconds", f"must be > 0 and < max_seconds ({d.max_seconds})")
    _positive(d, "data", ("max_phonemes", "num_workers"))
    _check(d.eval_utterances >= 0, "data.eval_utterances", "must be >= 0")
    _check(
        list(d.bucket_boundaries) == sorted(set(d.bucket_boundaries)) and len(d.bucket_boundaries) >= 2,
        "data.bucket_boundaries",
        "must be at least two strictly increasing frame counts",
    )
    _check(
        config.ssl.extractor in ("spectral", "hubert"),
        "ssl.extractor",
        f"unknown extractor {config.ssl.extractor!r}; choose spectral or hubert",
    )
    _positive(config.ssl, "ssl", ("dim",))
    _check(
        config.ssl.extractor != "hubert" or bool(config.ssl.hubert_path),
        "ssl.hubert_path",
        "must name a local Hugging Face copy of chinese-hubert-base (config.json and model.safetensors or pytorch_model.bin) "
        "when ssl.extractor is hubert",
    )

    _check(
        config.text.bert_path is None or config.text.bert_path.strip() != "",
        "text.bert_path",
        "must name a local Hugging Face copy of chinese-roberta-wwm-ext-large, or be null for no BERT features (zeros)",
    )

    g = config.gpt
    _positive(g, "gpt", ("vocab_size", "phoneme_vocab_size", "hidden_dim", "num_heads", "num_layers", "ffn_dim", "bert_dim"))
    _check(g.hidden_dim % g.num_heads == 0, "gpt.num_heads", f"hidden_dim {g.hidden_dim} is not divisible by {g.num_heads} heads")
    _check(0 <= g.dropout < 1 and 0 <= g.embedding_dropout < 1, "gpt.dropout", "must be in [0, 1)")
    _check(g.loss_reduction in ("sum", "mean"), "gpt.loss_reduction", f"must be sum or mean, got {g.loss_reduction!r}")
    _check(
        g.phoneme_vocab_size == config.text.phoneme_vocab_size,
        "gpt.phoneme_vocab_size",
        f"must equal text.phoneme_vocab_size ({config.text.phoneme_vocab_size})",
    )

    s = config.sovits
    _positive(
        s,
        "sovits",
        (
            "inter_channels",
            "hidden_channels",
            "filter_channels",
            "n_heads",
            "n_layers",
            "gin_channels",
            "codebook_size",
            "n_q",
            "segment_frames",
            "upsample_initial_channel",
        ),
    )
    _check(
        s.hidden_channels % s.n_heads == 0, "sovits.n_heads", f"hidden_channels {s.hidden_channels} is not divisible by {s.n_heads} heads"
    )
    _check(s.mrte_hidden % s.mrte_heads == 0, "sovits.mrte_heads", "mrte_hidden must be divisible by mrte_heads")
    _check(s.inter_channels % 2 == 0, "sovits.inter_channels", "must be even (coupling layers split it in half)")
    _check(s.ref_spec_bins <= a.spec_channels, "sovits.ref_spec_bins", f"must be <= spectrogram bins ({a.spec_channels})")
    _check(
        math.prod(s.upsample_rates) == a.hop_length,
        "sovits.upsample_rates",
        f"product {math.prod(s.upsample_rates)} must equal audio.hop_length {a.hop_length}",
    )
    _check(len(s.upsample_rates) == len(s.upsample_kernel_sizes), "sovits.upsample_kernel_sizes", "needs one kernel per upsample rate")
    _check(
        s.upsample_initial_channel % 2 ** len(s.upsample_rates) == 0,
        "sovits.upsample_initial_channel",
        f"must be divisible by 2**{len(s.upsample_rates)}",
    )
    for i, (u, k) in enumerate(zip(s.upsample_rates, s.upsample_kernel_sizes)):
        _check(k >= u and (k - u) % 2 == 0, f"sovits.upsample_kernel_sizes[{i}]", f"kernel {k} must be >= rate {u} with even difference")
    _check(
        len(s.resblock_kernel_sizes) == len(s.resblock_dilation_sizes),
        "sovits.resblock_dilation_sizes",
        "needs one dilation list per resblock kernel",
    )
    _check(0 < s.codebook_decay < 1, "sovits.codebook_decay", "must be in (0, 1)")
    _check(
        config.gpt.vocab_size == s.codebook_size + 1,
        "gpt.vocab_size",
        f"must be sovits.codebook_size + 1 = {s.codebook_size + 1} (semantic codes + EOS)",
    )

    disc = config.discriminator
    _check(len(disc.periods) > 0 and all(p > 1 for p in disc.periods), "discriminator.periods", "must be periods > 1")
    _check(len(disc.period_channels) >= 2, "discriminator.period_channels", "needs at least two layers")
    _check(len(disc.scale_channels) == len(disc.scale_groups), "discriminator.scale_groups", "needs one group count per scale layer")
    prev = 1
    for i, (c, grp) in enumerate(zip(disc.scale_channels, disc.scale_groups)):
        _check(prev % grp == 0 and c % grp == 0, f"discriminator.scale_groups[{i}]", f"{grp} groups must divide channels {prev} -> {c}")
        prev = c

    for name in ("sovits_train", "gpt_train"):
        t = getattr(config, name)
        _positive(
            t, name, ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "max_nonfinite_steps")
        )
        _check(t.precision in PRECISIONS, f"{name}.precision", f"must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
        _check(t.remat in REMAT_CHOICES, f"{name}.remat", f"must be one of {', '.join(REMAT_CHOICES)}, got {t.remat!r}")
        _check(t.remat == "none" or t.scan_layers, f"{name}.remat", f"{t.remat!r} needs {name}.scan_layers: true")
    _validate_init_from(config)
    validate_optim(config.sovits_train.optim_g, "sovits_train.optim_g")
    validate_optim(config.sovits_train.optim_d, "sovits_train.optim_d")
    validate_optim(config.gpt_train.optim, "gpt_train.optim")
    for name in ("c_mel", "c_kl", "c_fm", "c_commit"):
        _check(getattr(config.sovits_train, name) >= 0, f"sovits_train.{name}", "loss weights must be >= 0")

    p = config.parallel
    _check(p.num_devices is None or p.num_devices >= 1, "parallel.num_devices", "must be >= 1 or null")
    if p.distributed:
        _check(p.coordinator_address is not None, "parallel.coordinator_address", "is required when parallel.distributed is true")
