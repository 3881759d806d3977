"""Reading a local Hugging Face model directory without torch: its ``config.json`` and its weights.

BERT (:mod:`gptsovits_jax.models.bert`) and HuBERT (:mod:`gptsovits_jax.models.hubert`) read the
same directory layout: ``config.json`` next to ``model.safetensors`` (preferred) or
``pytorch_model.bin`` (a torch pickle, read by :mod:`gptsovits_jax.torch_checkpoint`). Each model
says where every checkpoint tensor goes as a :class:`Slot`; :func:`params_from_slots` fills them
strictly, listing every unexpected key, missing key and shape mismatch in one error.

Checkpoint tensors keep PyTorch's layouts (dense weights ``[out, in]``, convolution weights
``[out, in / groups, K]``); a slot's ``convert`` turns one into the Flax leaf (``kernel [in, out]``,
``[K, in / groups, out]``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_NAME = "config.json"
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
"""Weight files looked for in a Hugging Face directory, in this order."""


@dataclass(frozen=True)
class Slot:
    """Where one checkpoint tensor goes: the Flax path, the checkpoint (PyTorch) shape and the layout change."""

    path: tuple[str, ...]
    shape: tuple[int, ...]
    convert: Callable[[np.ndarray], np.ndarray]


def transpose(x: np.ndarray) -> np.ndarray:
    """All axes reversed: PyTorch's ``[out, in]`` / ``[out, in / groups, K]`` to Flax's ``[in, out]`` / ``[K, in / groups, out]``."""
    return np.transpose(x, tuple(reversed(range(x.ndim))))


def unchanged(x: np.ndarray) -> np.ndarray:
    """The tensor as it is (biases, norm scales, embeddings ``[n, hidden]``)."""
    return x


def flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """``{path: leaf}`` of a nested parameter mapping, paths as tuples of names."""
    out = {}
    for name, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, (*prefix, name)))
        else:
            out[(*prefix, name)] = value
    return out


def read_config_object(path: str | os.PathLike, model: str, holds: str, error: type[Exception]) -> dict[str, Any]:
    """The parsed JSON object of a ``config.json`` file (its fields are the model's to check).

    Raises ``FileNotFoundError`` for a missing file (saying a ``model`` directory ``holds`` what) and
    ``error`` for a file that is not a JSON object; both name the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a Hugging Face {model} directory holds {holds}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as problem:
        raise error(f"{path}: not valid JSON ({problem})") from problem
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a JSON object")
    return raw


def config_values(
    raw: Mapping[str, Any],
    *,
    required: Sequence[str],
    defaults: Mapping[str, Any],
    choices: Sequence[tuple[str, Any, Any]],
    source: str,
    model: str,
    error: type[Exception],
) -> dict[str, Any]:
    """The ``required`` fields of a parsed ``config.json`` and the ``defaults`` ones (absent: the default).

    ``choices`` are ``(field, value the port needs, default when absent)`` for fields that select
    code paths the port does not have. Raises ``error`` naming ``source`` and the field for another
    choice (``this {model} port supports only ...``) or missing required fields.
    """
    for field, wanted, default in choices:
        value = raw.get(field, default)
        if value != wanted:
            raise error(f"{source}: {field} is {value!r}; this {model} port supports only {field}: {json.dumps(wanted)}")
    missing = [field for field in required if field not in raw]
    if missing:
        raise error(f"{source}: missing field(s) {', '.join(missing)}")
    return {field: raw[field] for field in required} | {field: raw.get(field, default) for field, default in defaults.items()}


def find_weights(directory: str | os.PathLike, model: str, hint: str = "") -> Path:
    """The weight file of a Hugging Face directory: ``model.safetensors``, else ``pytorch_model.bin``.

    Raises ``FileNotFoundError`` naming the directory, ``model`` and both file names, then ``hint``.
    """
    for name in WEIGHT_NAMES:
        path = Path(directory) / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"{directory}: no {model} weights ({' or '.join(WEIGHT_NAMES)}) in this directory{hint}")


def read_state_dict(path: str | os.PathLike, error: type[Exception]) -> dict[str, np.ndarray]:
    """``{key: array}`` of a ``.safetensors`` file (safetensors' numpy API) or a ``.bin`` torch pickle (torch-free reader).

    Raises ``error`` when the pickle holds anything but a mapping of tensors.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    from gptsovits_jax.torch_checkpoint import read_torch_checkpoint

    state = read_torch_checkpoint(path)
    if not isinstance(state, Mapping) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise error(f"{path}: expected a state dict of tensors")
    return dict(state)


def fingerprint(config: Path, weights: Path) -> str:
    """sha256 (16 hex digits) of the config's and the weight file's names and bytes: which weights made a feature."""
    digest = hashlib.sha256()
    for path in (config, weights):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def params_from_slots(
    tensors: Mapping[str, np.ndarray],
    slots: Mapping[str, Slot],
    *,
    ignore: Callable[[str], bool],
    error: type[Exception],
    source: str,
    model: str,
) -> dict[str, Any]:
    """Nested float32 Flax parameters from checkpoint ``tensors``, each put into its slot and converted.

    Strict: keys of no slot (other than those ``ignore`` accepts), slots no tensor fills and shape
    mismatches are all listed in one ``error`` that names ``source`` and ``model``.
    """
    tensors = {key: value for key, value in tensors.items() if not ignore(key)}
    unexpected = sorted(set(tensors) - set(slots))
    missing = sorted(set(slots) - set(tensors))
    mismatched = sorted(
        f"{key}: checkpoint {tuple(np.shape(tensors[key]))}, model {slots[key].shape}"
        for key in set(slots) & set(tensors)
        if tuple(np.shape(tensors[key])) != slots[key].shape
    )
    problems = []
    for title, lines in (("unexpected keys", unexpected), ("missing keys", missing), ("shape mismatches", mismatched)):
        if lines:
            problems.append(f"{len(lines)} {title}:\n  " + "\n  ".join(lines))
    if problems:
        raise error(f"{source}: weights do not fit the {model} config\n" + "\n".join(problems))
    params: dict[str, Any] = {}
    for key, slot in slots.items():
        node = params
        for part in slot.path[:-1]:
            node = node.setdefault(part, {})
        node[slot.path[-1]] = slot.convert(np.asarray(tensors[key], dtype=np.float32))
    return params
