"""Upstream GPT-SoVITS v2 weights in this project's parameter trees, and back: a strict, torch-free mapping.

Three parts, each one of upstream's files:

* ``"gpt"``: the s1 checkpoint's ``weight`` dict, 295 ``model.*`` keys of ``Text2SemanticDecoder``
  (``s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt``, ``*-e{E}.ckpt`` exports);
* ``"generator"``: the s2 generator's state dict (``weight`` of ``s2G2333k.pth`` and of exports, which
  leave out ``enc_q``; ``model`` of the training files ``G_*.pth``), the quantizer's codebook included;
* ``"discriminator"``: the s2 discriminator's state dict (``weight`` of ``s2D2333k.pth``, ``model`` of
  ``D_*.pth``).

Every upstream key names exactly one project leaf (names by the rules of
:mod:`gptsovits_jax.convert` and :mod:`gptsovits_jax.models.layers`), with these layout changes:

* ``Linear.weight [O, I]`` -> ``kernel [I, O]`` (GPT, reference encoder); the GPT's packed
  ``self_attn.in_proj_weight [3E, E]`` (q | k | v) -> ``self_attn/in_proj/kernel [E, 3E]``;
* ``Conv1d.weight`` and ``weight_v [O, I/groups, K]`` -> ``[K, I/groups, O]``; the decoder's
  ``ConvTranspose1d`` ``ups.*.weight_v [I, O, K]`` -> ``[K, I, O]``; the period discriminators'
  ``Conv2d`` ``weight_v [O, I, kh, kw]`` -> ``[kh, kw, I, O]``;
* ``weight_g [C, 1, 1]`` (``[C, 1, 1, 1]`` for Conv2d) -> ``weight_g [C]``;
* the GPT's ``norm1``/``norm2`` ``weight`` -> ``scale``; ``word_embeddings.weight`` -> ``embedding``;
* the codebook ``quantizer.vq.layers.{i}._codebook.{embed,embed_avg,cluster_size,inited}`` -> the
  ``quantizer`` collection's ``quantizer/layers_{i}/...``, ``inited`` from a float ``[1]`` to a bool ``[]``.

Embeddings, biases, ``gamma``/``beta``, ``alpha [1]``, the relative-position embeddings and the
codebook's ``embed``/``embed_avg``/``cluster_size`` keep their layout. Imported values are float32
(float16 and bfloat16 files are upcast exactly); an imported codebook is marked ``inited`` so that
the quantizer's k-means never overwrites it.

Unknown upstream keys, project leaves the file does not fill and shape mismatches are collected and
raised together as one :class:`WeightMappingError` naming every key and both shapes. A part that
upstream's files may leave out, the generator's posterior encoder ``enc_q``, is not an error when
all of its keys are absent: the report says it is initialised fresh and the returned tree keeps the
target's values there.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util
from flax.core import unfreeze

from gptsovits_jax.config import Config

PARTS = ("gpt", "generator", "discriminator")

OPTIONAL_GROUPS = {"generator": {"enc_q": "enc_q (the posterior encoder; upstream's inference exports leave it out)"}}
"""Top-level groups of a part that a file may lack as a whole: name -> description."""

V2_SIZES: dict[str, dict[str, Any]] = {
    "gpt": {
        "gpt.vocab_size": 1025,
        "gpt.phoneme_vocab_size": 732,
        "gpt.hidden_dim": 512,
        "gpt.num_heads": 16,
        "gpt.num_layers": 24,
        "gpt.ffn_dim": 2048,
        "gpt.bert_dim": 1024,
    },
    "generator": {
        "audio.spec_channels": 1025,
        "audio.hop_length": 640,
        "ssl.dim": 768,
        "text.phoneme_vocab_size": 732,
        "sovits.inter_channels": 192,
        "sovits.hidden_channels": 192,
        "sovits.filter_channels": 768,
        "sovits.n_heads": 2,
        "sovits.n_layers": 6,
        "sovits.kernel_size": 3,
        "sovits.window_size": 4,
        "sovits.gin_channels": 512,
        "sovits.ref_spec_bins": 704,
        "sovits.ref_hidden": 128,
        "sovits.mrte_hidden": 512,
        "sovits.mrte_heads": 4,
        "sovits.codebook_size": 1024,
        "sovits.n_q": 1,
        "sovits.posterior_layers": 16,
        "sovits.posterior_kernel": 5,
        "sovits.flow_layers": 4,
        "sovits.n_flows": 4,
        "sovits.flow_kernel": 5,
        "sovits.upsample_rates": (10, 8, 2, 2, 2),
        "sovits.upsample_kernel_sizes": (16, 16, 8, 2, 2),
        "sovits.upsample_initial_channel": 512,
        "sovits.resblock_kernel_sizes": (3, 7, 11),
        "sovits.resblock_dilation_sizes": ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
    },
    "discriminator": {
        "discriminator.periods": (2, 3, 5, 7, 11),
        "discriminator.period_channels": (32, 128, 512, 1024, 1024),
        "discriminator.scale_channels": (16, 64, 256, 1024, 1024, 1024),
        "discriminator.scale_groups": (1, 4, 16, 64, 256, 1),
        "discriminator.use_spectral_norm": False,
    },
}
"""The config values that fix the shapes (and, for head counts, the meaning) of upstream's v2 weights
(``s1longer-v2.yaml``, ``s2.json`` and the sizes upstream's constructors hard-code), per part."""

_LIST_NAMES = frozenset(
    {
        "ups",
        "resblocks",
        "convs1",
        "convs2",
        "convs",
        "discriminators",
        "in_layers",
        "res_skip_layers",
        "attn_layers",
        "norm_layers_1",
        "ffn_layers",
        "norm_layers_2",
        "flows",
        "spectral",
        "temporal",
        "layers",
    }
)
"""Upstream ``ModuleList``/``Sequential`` attributes: the project's ``name_{i}`` is upstream's ``name.{i}``."""

_MAX_LISTED = 40


class WeightMappingError(ValueError):
    """Upstream weights that do not fit the project's tree, or a config that cannot hold them; the message lists every problem."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    key: str  # upstream key
    path: tuple[str, ...]  # project path in the (flattened) tree
    upstream_shape: tuple[int, ...]
    project_shape: tuple[int, ...]
    to_project: Callable[[np.ndarray], np.ndarray]
    to_upstream: Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What :func:`upstream_to_project` did.

    Attributes:
      part: ``"gpt"``, ``"generator"`` or ``"discriminator"``.
      tensors: upstream tensors imported.
      values: scalar values imported.
      source_dtypes: the dtypes of the file's tensors (all imported as float32).
      fresh: descriptions of the groups the file lacks, left at the target's values.
      fresh_leaves: the project paths (``/``-joined) of those leaves.
    """

    part: str
    tensors: int
    values: int
    source_dtypes: tuple[str, ...]
    fresh: tuple[str, ...] = ()
    fresh_leaves: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"{self.part}: imported {self.tensors} tensors ({self.values:,} values, {'/'.join(self.source_dtypes)} -> float32)"]
        lines += [f"{self.part}: {what}: not in the file, initialised fresh ({len(self.fresh_leaves)} leaves)" for what in self.fresh]
        return "\n".join(lines)


# --------------------------------------------------------------------------- names and layouts


def _same(x: np.ndarray) -> np.ndarray:
    return x


def _transposer(axes: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: np.ascontiguousarray(np.transpose(x, axes))


def _reshaper(shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: np.reshape(x, shape)


def _gpt_key(path: tuple[str, ...]) -> str:
    *mods, leaf = path
    mods = [re.sub(r"^layers_(\d+)$", r"layers.\1", m) for m in mods]
    if mods and mods[-1] == "in_proj":
        return "model." + ".".join([*mods[:-1], f"in_proj_{'weight' if leaf == 'kernel' else leaf}"])
    if leaf == "embedding":
        return "model." + ".".join([*mods, "word_embeddings", "weight"])
    leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
    return "model." + ".".join([*mods, leaf])


def _sovits_key(path: tuple[str, ...]) -> str:
    if path[0] == "quantizer":  # the generator's codebook collection: quantizer/layers_i/embed
        return f"quantizer.vq.layers.{path[2].removeprefix('layers_')}._codebook.{path[3]}"
    if path[0] == "params":
        path = path[1:]
    *mods, leaf = path
    names: list[str] = []
    for m in mods:
        match = re.fullmatch(r"(.+)_(\d+)", m)
        names.append(f"{match.group(1)}.{match.group(2)}" if match and match.group(1) in _LIST_NAMES else m)
    # The reference encoder's one-child wrappers (LinearNorm.fc, ConvNorm.conv) are flattened in the project.
    if names[:1] == ["ref_enc"] and (re.fullmatch(r"spectral\.\d+", names[1]) or names[1] == "fc"):
        names.append("fc")
    elif names[:1] == ["ref_enc"] and re.fullmatch(r"temporal\.\d+", names[1]) and names[2:] == ["conv1"]:
        names.append("conv")
    leaf = "weight" if leaf in ("kernel", "embedding") else leaf
    return ".".join([*names, leaf])


def _layout(part: str, path: tuple[str, ...], shape: tuple[int, ...], siblings: Mapping[str, tuple[int, ...]]):
    """``(upstream_shape, to_project, to_upstream)`` for the project leaf at ``path`` of ``shape``."""
    leaf = path[-1]
    if part == "generator" and path[0] == "quantizer":
        if leaf == "inited":
            return (1,), lambda x: np.asarray(x.reshape(()) != 0), lambda x: np.reshape(x, (1,))
        return shape, _same, _same
    if leaf == "weight_orig":
        raise WeightMappingError(f"{'/'.join(path)}: spectral-normed layers are not supported (upstream v2 uses weight norm)")
    if leaf in ("kernel", "weight_v"):
        if len(shape) == 2:  # linear: [I, O] <- [O, I]
            return shape[::-1], _transposer((1, 0)), _transposer((1, 0))
        if len(shape) == 3 and part == "generator" and re.fullmatch(r"ups_\d+", path[-2]) and "dec" in path:
            k, i, o = shape  # ConvTranspose1d: [K, I, O] <- [I, O, K]
            return (i, o, k), _transposer((2, 0, 1)), _transposer((1, 2, 0))
        if len(shape) == 3:  # Conv1d: [K, I, O] <- [O, I, K]
            return shape[::-1], _transposer((2, 1, 0)), _transposer((2, 1, 0))
        if len(shape) == 4:  # Conv2d: [kh, kw, I, O] <- [O, I, kh, kw]
            kh, kw, i, o = shape
            return (o, i, kh, kw), _transposer((2, 3, 1, 0)), _transposer((3, 2, 0, 1))
    if leaf == "weight_g":
        v_shape = siblings.get("weight_v")
        if v_shape is None or len(shape) != 1:
            raise WeightMappingError(f"{'/'.join(path)}: a weight_g of shape {list(shape)} without a weight_v beside it")
        upstream = (shape[0],) + (1,) * (len(v_shape) - 1)
        return upstream, _reshaper(shape), _reshaper(upstream)
    return shape, _same, _same


def _flat(tree: Any) -> dict[tuple[str, ...], Any]:
    return traverse_util.flatten_dict(unfreeze(tree))


def _entries(part: str, target: Any) -> dict[str, _Entry]:
    """Upstream key -> entry, for every leaf of ``target`` (a parameter tree, concrete or abstract)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    flat = _flat(target)
    if part == "generator" and not {"params", "quantizer"} <= {p[0] for p in flat}:
        raise ValueError("the generator's target is {'params': ..., 'quantizer': ...}: its parameters and its codebook collection")
    shapes = {path: tuple(np.shape(leaf)) for path, leaf in flat.items()}
    entries: dict[str, _Entry] = {}
    for path, shape in shapes.items():
        siblings = {p[-1]: s for p, s in shapes.items() if p[:-1] == path[:-1]}
        key = _gpt_key(path) if part == "gpt" else _sovits_key(path)
        upstream_shape, to_project, to_upstream = _layout(part, path, shape, siblings)
        if key in entries:
            raise AssertionError(f"two project leaves name upstream key {key}: {'/'.join(entries[key].path)} and {'/'.join(path)}")
        entries[key] = _Entry(key, path, tuple(upstream_shape), shape, to_project, to_upstream)
    return entries


def upstream_shapes(part: str, target: Any) -> dict[str, tuple[int, ...]]:
    """Every upstream key of ``part`` and its shape in upstream's files, for the project tree ``target``.

    ``target`` as in :func:`upstream_to_project`; abstract trees (``jax.eval_shape``) cost nothing.
    """
    return {key: e.upstream_shape for key, e in _entries(part, target).items()}


def _optional_group(part: str, key: str) -> str | None:
    head = key.split(".", 1)[0]
    return head if head in OPTIONAL_GROUPS.get(part, {}) else None


def _listing(title: str, lines: list[str]) -> list[str]:
    shown = [f"  {line}" for line in lines[:_MAX_LISTED]]
    if len(lines) > _MAX_LISTED:
        shown.append(f"  ... and {len(lines) - _MAX_LISTED} more")
    return [f"{title} ({len(lines)}):", *shown]


def _check(part: str, state_dict: Mapping[str, Any], entries: Mapping[str, _Entry]) -> set[str]:
    """Raise one :class:`WeightMappingError` for every problem; return the optional groups the file lacks."""
    present = set(state_dict)
    absent_groups = set()
    for group in OPTIONAL_GROUPS.get(part, {}):
        if not any(_optional_group(part, k) == group for k in present):
            absent_groups.add(group)
    unknown = [k for k in state_dict if k not in entries]
    missing = [k for k in entries if k not in present and _optional_group(part, k) not in absent_groups]
    mismatched, wrong_type = [], []
    for key, value in state_dict.items():
        entry = entries.get(key)
        if entry is None:
            continue
        shape = tuple(np.shape(value))
        if shape != entry.upstream_shape:
            mismatched.append(
                f"{key}: file {list(shape)}, expected {list(entry.upstream_shape)} (project {'/'.join(entry.path)} {list(entry.project_shape)})"
            )
        dtype = np.asarray(value).dtype if not hasattr(value, "dtype") else value.dtype
        if not (np.issubdtype(dtype, np.floating) or dtype == np.bool_ or str(dtype) == "bfloat16"):
            wrong_type.append(f"{key}: dtype {dtype}, expected a floating-point tensor")
    if not (unknown or missing or mismatched or wrong_type):
        return absent_groups
    if missing and len(missing) == len(entries) - sum(1 for k in entries if _optional_group(part, k) in absent_groups):
        sample = ", ".join(list(state_dict)[:5])
        raise WeightMappingError(
            f"not an upstream v2 {part} state dict: none of its {len(entries)} keys is there (the dict holds {len(state_dict)} keys: {sample}, ...)"
        )
    lines = [f"upstream {part} weights do not fit the project's {part} ({len(state_dict)} keys in the file, {len(entries)} expected):"]
    if mismatched:
        lines += _listing("shape mismatches", mismatched)
    if unknown:
        lines += _listing("keys in the file that no project leaf takes", [f"{k} {list(np.shape(state_dict[k]))}" for k in unknown])
    if missing:
        lines += _listing(
            "project leaves the file does not fill",
            [f"{k} {list(entries[k].upstream_shape)} (project {'/'.join(entries[k].path)})" for k in missing],
        )
    if wrong_type:
        lines += _listing("tensors of a non-float dtype", wrong_type)
    raise WeightMappingError("\n".join(lines))


# --------------------------------------------------------------------------- the two directions


def upstream_to_project(
    part: str, state_dict: Mapping[str, np.ndarray], target: Any, *, dtype: Any = np.float32, consume: bool = False
) -> tuple[Any, ImportReport]:
    """Upstream's state dict of ``part`` as a project tree shaped like ``target``.

    Args:
      part: ``"gpt"``, ``"generator"`` or ``"discriminator"``.
      state_dict: upstream key -> numpy array (e.g. ``read_torch_checkpoint(path)["weight"]``; see
        :func:`upstream_state_dict`), any float dtype.
      target: the project's tree for the config: the GPT's or the discriminator's parameters, or for
        the generator ``{"params": params_g, "quantizer": codebooks}`` (the ``params`` and
        ``quantizer`` collections); concrete or abstract (``jax.eval_shape``).
      dtype: the imported leaves' dtype; None keeps each tensor's own (float16 files stay float16,
        half the memory, for writers that upcast later: exact either way).
      consume: delete each key from ``state_dict`` (a mutable mapping) once it is mapped, so the
        file's tensors are released as their project copies are made (peak: one part plus one tensor).

    Returns:
      ``(tree, report)``: ``tree`` has ``target``'s structure with every imported leaf a numpy array
      of ``dtype`` (``inited`` a bool ``True``); leaves of a group the file lacks (only ``enc_q``) keep
      ``target``'s values, and the report names the group.

    Raises:
      WeightMappingError: unknown keys, unfilled leaves, shape mismatches or non-float tensors, all
        listed in one message with the upstream key, the file's and the expected shape.
    """
    entries = _entries(part, target)
    absent = _check(part, state_dict, entries)
    flat = _flat(target)
    dtypes: set[str] = set()
    values, tensors = 0, len(state_dict)
    consume = consume and isinstance(state_dict, MutableMapping)
    for key in list(state_dict):
        entry = entries[key]
        array = np.asarray(state_dict.pop(key) if consume else state_dict[key])
        dtypes.add(str(array.dtype))
        values += array.size
        converted = entry.to_project(array if dtype is None else array.astype(dtype, copy=False))
        del array
        flat[entry.path] = np.ones((), np.bool_) if entry.path[-1] == "inited" and part == "generator" else converted
    fresh_leaves = tuple(sorted("/".join(e.path) for k, e in entries.items() if _optional_group(part, k) in absent))
    report = ImportReport(
        part=part,
        tensors=tensors,
        values=values,
        source_dtypes=tuple(sorted(dtypes)),
        fresh=tuple(OPTIONAL_GROUPS[part][g] for g in sorted(absent)),
        fresh_leaves=fresh_leaves,
    )
    return traverse_util.unflatten_dict(flat), report


def project_to_upstream(part: str, tree: Any, *, include_enc_q: bool = True, dtype: Any = np.float16) -> OrderedDict[str, np.ndarray]:
    """The inverse of :func:`upstream_to_project`: a project tree as upstream's state dict of ``part``.

    Args:
      part: ``"gpt"``, ``"generator"`` or ``"discriminator"``.
      tree: as ``target`` of :func:`upstream_to_project`, with concrete values (numpy or jax arrays).
      include_enc_q: generator only; ``False`` leaves out ``enc_q.*`` as upstream's inference exports do.
      dtype: ``np.float16`` (upstream's exports and pretrained files) or ``np.float32``.

    Returns:
      upstream key -> C-contiguous numpy array of ``dtype`` in upstream's layout (``inited`` as 1.0/0.0).
      A float32 tree goes there and back bit-exactly at ``float32``; values already representable in
      float16 (anything imported from a float16 file) do at ``float16``.

    Raises:
      WeightMappingError: a value overflows ``dtype`` (finite in the tree, infinite after the cast).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float16 or float32, not {dtype}")
    flat = _flat(tree)
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    overflow = []
    for key, entry in _entries(part, tree).items():
        if not include_enc_q and _optional_group(part, key) == "enc_q":
            continue
        value = np.asarray(flat[entry.path])
        with np.errstate(over="ignore"):  # overflow is reported below, by key
            converted = np.ascontiguousarray(entry.to_upstream(value).astype(dtype))
        if dtype == np.float16 and np.issubdtype(value.dtype, np.floating):
            if np.count_nonzero(~np.isfinite(converted)) != np.count_nonzero(~np.isfinite(value)):
                overflow.append(f"{key} (max |value| {float(np.max(np.abs(value))):.4g})")
        out[key] = converted
    if overflow:
        raise WeightMappingError("\n".join(_listing(f"{part} values beyond the float16 range", overflow)))
    return out


# --------------------------------------------------------------------------- files and configs


def check_config_holds_v2(config: Config, parts: tuple[str, ...] = PARTS) -> None:
    """Raise :class:`WeightMappingError` unless ``config`` has upstream v2's sizes for every part in ``parts``.

    Cheap (no file is read, no model built): call it before reading an upstream file. The message
    lists every size that differs, as ``gpt.hidden_dim: 64 (v2: 512)``.
    """
    differences = []
    for part in parts:
        for name, expected in V2_SIZES[part].items():
            section, field = name.split(".")
            actual = _tuples(getattr(getattr(config, section), field))
            if actual != expected:
                differences.append(f"{name}: {_show(actual)} (v2: {_show(expected)})")
    if differences:
        raise WeightMappingError(
            f"config {config.name!r} cannot hold upstream v2 weights ({', '.join(parts)}); these sizes differ from v2's:\n  "
            + "\n  ".join(differences)
        )


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _lists(value: Any) -> Any:
    return [_lists(v) for v in value] if isinstance(value, tuple) else value


def _show(value: Any) -> str:
    return str(_lists(value)) if isinstance(value, tuple) else repr(value)


def upstream_state_dict(part: str, checkpoint: Any) -> Mapping[str, np.ndarray]:
    """The state dict of ``part`` inside a file read by :func:`~gptsovits_jax.torch_checkpoint.read_torch_checkpoint`.

    GPT: ``weight`` (s1 exports, pretrained) or ``state_dict`` (Lightning checkpoints). Generator
    and discriminator: ``weight`` (pretrained files, exports) or ``model`` (``s2_train.py``'s
    ``G_*.pth``/``D_*.pth``).
    """
    keys = ("weight", "state_dict") if part == "gpt" else ("weight", "model")
    if isinstance(checkpoint, Mapping):
        for key in keys:
            if isinstance(checkpoint.get(key), Mapping):
                return checkpoint[key]
        found = ", ".join(map(str, list(checkpoint)[:8])) or "none"
    else:
        found = type(checkpoint).__name__
    raise WeightMappingError(f"not an upstream {part} checkpoint: expected a dict with {' or '.join(map(repr, keys))}; found {found}")


def check_file_config(part: str, checkpoint: Any, config: Config) -> None:
    """Compare the head counts a file's own ``config`` records (which shapes do not show) with ``config``.

    Upstream's s1 checkpoints hold their YAML config (``model.head``), SoVITS exports their
    ``s2.json`` (``model.n_heads``); a file without one passes.
    """
    file_config = checkpoint.get("config") if isinstance(checkpoint, Mapping) else None
    model = file_config.get("model") if isinstance(file_config, Mapping) else None
    if not isinstance(model, Mapping):
        return
    checks = {"gpt": [("head", "gpt.num_heads", config.gpt.num_heads)], "generator": [("n_heads", "sovits.n_heads", config.sovits.n_heads)]}
    for key, name, ours in checks.get(part, []):
        if key in model and model[key] != ours:
            raise WeightMappingError(f"the file's config has model.{key} = {model[key]}, the project config {name} = {ours}")


def load_upstream_checkpoint(
    part: str, path: str | Path, config: Config, target: Any = None, *, require_v2: bool = True, dtype: Any = np.float32
) -> tuple[Any, ImportReport]:
    """Check ``config``, read upstream's file of ``part`` at ``path`` and map it with :func:`upstream_to_project`.

    The file's tensors are released as they are mapped (peak memory: the file plus one tensor).

    Args:
      target: the tree to fill (default: the abstract tree of ``config``; then leaves of a group the
        file lacks stay abstract, so pass a concrete initialised tree when that may happen).
      require_v2: check :func:`check_config_holds_v2` first (before the file is opened).
      dtype: the imported leaves' dtype (None: the file's own, e.g. float16).
    """
    from gptsovits_jax.torch_checkpoint import read_torch_checkpoint

    if require_v2:
        check_config_holds_v2(config, (part,))
    checkpoint = read_torch_checkpoint(path)
    check_file_config(part, checkpoint, config)
    if target is None:
        target = abstract_target(part, config)
    try:
        return upstream_to_project(part, upstream_state_dict(part, checkpoint), target, dtype=dtype, consume=True)
    except WeightMappingError as err:
        raise WeightMappingError(f"{path}: {err}") from None


def abstract_target(part: str, config: Config) -> Any:
    """The project's tree of ``part`` for ``config`` as shapes only (``jax.eval_shape``; nothing is initialised)."""
    import jax

    if part == "gpt":
        from gptsovits_jax.train.gpt_step import init_gpt_params

        return jax.eval_shape(lambda key: init_gpt_params(config, key), jax.random.PRNGKey(0))
    from gptsovits_jax.train.sovits_step import init_sovits_variables

    params_g, quantizer, params_d = jax.eval_shape(lambda key: init_sovits_variables(config, key), jax.random.PRNGKey(0))
    return {"params": params_g, "quantizer": quantizer} if part == "generator" else params_d
