"""Read and write PyTorch checkpoint files without torch: numpy and the standard library only.

A PyTorch (>= 1.6) checkpoint is a zip archive of records under one folder: ``<name>/data.pkl``, a
protocol-2 pickle of the saved object in which every tensor is a call to
``torch._utils._rebuild_tensor_v2`` on a storage named by a persistent id; ``<name>/data/<key>``, each
storage's raw bytes; ``<name>/version`` and ``<name>/byteorder``.

Reading (:func:`read_torch_checkpoint`) never executes code from the file. The pickle is read by an
unpickler that resolves only these globals, each to a local replacement:

- tensors (``torch._utils._rebuild_tensor_v2``; ``nn.Parameter`` through ``_rebuild_parameter`` and
  ``_rebuild_parameter_with_state`` is read as its tensor) over ``torch.{Half,Float,Double,BFloat16,
  Char,Short,Int,Long,Byte,Bool}Storage``: numpy arrays of float16, float32, float64, bfloat16, int8,
  int16, int32, int64, uint8 or bool with the tensor's shape (0-dim included), its strides and storage
  offset honoured. bfloat16 arrays have dtype ``ml_dtypes.bfloat16`` (a jax dependency) when
  ml_dtypes is importable, otherwise they are upcast (exactly) to float32;
- ``collections.OrderedDict``; ``torch.Size`` (read as a tuple); bytes (``_codecs.encode``);
  dicts, lists, tuples, str, int, float, bool and None need no global;
- upstream GPT-SoVITS's ``utils.HParams`` config object, which its fine-tuned SoVITS exports hold
  under ``"config"``: read as a plain dict of its attributes, nested HParams included.

Any other global (``os.system``, ``builtins.eval``, a TorchScript class...) raises
:class:`CheckpointFormatError` naming it, before anything is called.

Upstream GPT-SoVITS overwrites the zip's leading ``PK`` of some SoVITS files with a two-byte version
tag, :data:`UPSTREAM_VERSION_TAGS` (``GPT_SoVITS/process_ckpt.py``: ``head2version``, read by
``get_sovits_version_from_path_fast``; ``load_sovits_new`` restores ``PK`` before ``torch.load``).
Its ``my_save2`` writes the LoRA, v2Pro and v2ProPlus tags; v1 and v2 exports are plain ``torch.save``
files (``my_save``), but the v1 and v2 tags are still recognised. Files tagged v1 or v2 are read; the
others are refused, naming the version.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

try:
    from ml_dtypes import bfloat16 as _BFLOAT16
except ImportError:
    _BFLOAT16 = None


class CheckpointFormatError(ValueError):
    """A file this module cannot (or will not) read; the message names the file and the problem."""


UPSTREAM_VERSION_TAGS = {
    b"00": "v1",
    b"01": "v2",
    b"02": "v3",
    b"03": "v3 LoRA",
    b"04": "v4 LoRA",
    b"05": "v2Pro",
    b"06": "v2ProPlus",
}
"""Upstream's two-byte tags in place of a SoVITS file's leading ``PK``, and the version each names."""

READABLE_VERSION_TAGS = (b"00", b"01")
"""The tags of versions this module reads (and may write): v1 and v2."""

_STORAGE_DTYPES = {
    "HalfStorage": "float16",
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "BFloat16Storage": "bfloat16",
    "CharStorage": "int8",
    "ShortStorage": "int16",
    "IntStorage": "int32",
    "LongStorage": "int64",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
_DTYPE_STORAGES = {dtype: storage for storage, dtype in _STORAGE_DTYPES.items()}

_ALIGNMENT = 64  # torch's writer starts every record's data at a multiple of 64 bytes (mmap-able)
_READ_CHUNK = 1 << 24
# What a damaged archive or a pickle calling an allowed global with bad arguments raises.
_MALFORMED = (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, TypeError, ValueError, AttributeError, KeyError, IndexError)


# ---------------------------------------------------------------------------------------------------
# Reading


def read_torch_checkpoint(path: str | os.PathLike) -> Any:
    """The object saved by ``torch.save`` in the zip checkpoint at ``path``, with tensors as numpy arrays.

    See the module docstring for what is read and what is refused. Arrays are C-contiguous and
    writable; tensors that are contiguous in their storage are views of one buffer per storage (so
    tensors that shared a storage in the file share memory, as after ``torch.load``), the others are
    copies. Raises :class:`CheckpointFormatError` (a ``ValueError``) for an empty, truncated, non-zip
    or legacy (torch < 1.6) file, an unsupported upstream version tag or a refused global, and
    ``FileNotFoundError`` for a missing file; every message names the path.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint file") from None
    with f:
        head = f.read(2)
        if head == b"PK":
            source = f
        elif head in READABLE_VERSION_TAGS:
            source = _PatchedHead(f)
        else:
            raise CheckpointFormatError(f"{path}: {_describe_bad_head(head)}")
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointFormatError(f"{path}: truncated or corrupt zip archive ({e})") from None
        with archive:
            try:
                return _ArchiveReader(path, archive).load()
            except CheckpointFormatError:
                raise
            except RecursionError:
                raise CheckpointFormatError(f"{path}: the checkpoint's objects are nested too deeply") from None
            except _MALFORMED as e:
                raise CheckpointFormatError(f"{path}: malformed checkpoint: {type(e).__name__}: {e}") from None


def _describe_bad_head(head: bytes) -> str:
    if not head:
        return "empty file, not a PyTorch checkpoint"
    if head in UPSTREAM_VERSION_TAGS:
        version = UPSTREAM_VERSION_TAGS[head]
        return (
            f"an upstream GPT-SoVITS {version} SoVITS file (version tag {head!r} in place of the zip's 'PK'); "
            f"{version} models are not supported, only v1 and v2"
        )
    if head[:1] == b"\x80":
        return (
            "a legacy (pre-zip, torch < 1.6) pickle checkpoint, not supported: "
            "load it in torch and torch.save it again (the default zip format)"
        )
    return f"not a PyTorch checkpoint (a zip archive starts with b'PK', this file with {head!r})"


class _PatchedHead(io.RawIOBase):
    """A seekable binary file whose first two bytes read as ``PK`` (upstream's tags replace them on disk)."""

    def __init__(self, f: io.BufferedReader):
        self._f = f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, buffer) -> int:
        start = self._f.tell()
        n = self._f.readinto(buffer)
        if start < 2 and n:
            patch = b"PK"[start : start + n]
            memoryview(buffer)[: len(patch)] = patch
        return n


class _StorageType(NamedTuple):
    """What a ``torch.<X>Storage`` global resolves to: only its element dtype (never called).

    Immutable because these objects are shared by every load and a pickle's BUILD opcode can set
    attributes on anything it holds; the functions and classes it may name keep no state a later
    load reads.
    """

    dtype_name: str


class _Storage:
    """One storage record of the archive as a 1-D array of its elements."""

    def __init__(self, dtype_name: str, elements: np.ndarray):
        self.dtype_name = dtype_name
        self.elements = elements


class _ObjectState(dict):
    """A ``utils.HParams`` instance while unpickling: a dict of its ``__dict__``, made plain afterwards."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise ValueError(f"an HParams state must be a dict, not {type(state).__name__}")
        self.update(state)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2``: the tensor of ``size`` and ``stride`` (in elements) at ``storage_offset``."""
    if not isinstance(storage, _Storage):
        raise ValueError(f"a tensor's storage must be a storage record, not {type(storage).__name__}")
    size, stride = tuple(size), tuple(stride)
    numbers = (storage_offset, *size, *stride)
    if len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in numbers):
        raise ValueError(f"bad tensor geometry: offset {storage_offset!r}, size {size!r}, stride {stride!r}")
    elements = storage.elements
    numel = math.prod(size)
    if numel == 0:
        array = np.empty(size, elements.dtype)
    else:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= elements.size:
            raise ValueError(
                f"a tensor of size {size} and stride {stride} at offset {storage_offset} reaches past its storage of {elements.size} elements"
            )
        if _is_contiguous(size, stride):
            array = elements[storage_offset : storage_offset + numel].reshape(size)
        else:
            strides = tuple(s * elements.itemsize for s in stride)
            array = np.lib.stride_tricks.as_strided(elements[storage_offset:], size, strides, writeable=False).copy()
    if storage.dtype_name == "bfloat16" and _BFLOAT16 is None:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _is_contiguous(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for n, s in zip(reversed(size), reversed(stride)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """``torch._utils._rebuild_parameter[_with_state]``: an ``nn.Parameter`` is read as its tensor."""
    return data


def _encode_bytes(text, encoding="utf-8"):
    """``_codecs.encode`` as protocol 2 pickles ``bytes``: only str to latin-1 (no other codec is looked up)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"_codecs.encode is only allowed on a str to latin1, not {type(text).__name__} to {encoding!r}")
    return text.encode("latin1")


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): _encode_bytes,
    ("utils", "HParams"): _ObjectState,
    **{("torch", storage): _StorageType(dtype) for storage, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, reader: _ArchiveReader):
        super().__init__(file)
        self._reader = reader

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointFormatError(
                f"{self._reader.path}: refusing global '{module}.{name}' in the checkpoint's pickle "
                "(only tensors, containers, scalars and upstream's HParams config are read; nothing was executed)"
            ) from None

    def persistent_load(self, pid):
        return self._reader.storage(pid)


class _ArchiveReader:
    def __init__(self, path: Path, archive: zipfile.ZipFile):
        self.path = path
        self._archive = archive
        self._storages: dict[str, _Storage] = {}
        names = archive.namelist()
        self._prefix = names[0].split("/", 1)[0] if names else ""
        if f"{self._prefix}/data.pkl" not in names:
            raise CheckpointFormatError(f"{path}: a zip archive without <name>/data.pkl, not a PyTorch checkpoint")
        self._big_endian = False
        if f"{self._prefix}/byteorder" in names:
            byteorder = archive.read(f"{self._prefix}/byteorder")
            if byteorder not in (b"little", b"big"):
                raise CheckpointFormatError(f"{path}: unknown byteorder record {byteorder[:20]!r}")
            self._big_endian = byteorder == b"big"

    def load(self) -> Any:
        pickled = self._archive.read(f"{self._prefix}/data.pkl")
        return _plain(_RestrictedUnpickler(io.BytesIO(pickled), self).load(), {})

    def storage(self, pid) -> _Storage:
        """The storage named by a persistent id ``('storage', torch.<X>Storage, key, location, numel)``."""
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and type(pid[4]) is int
        ):
            raise CheckpointFormatError(f"{self.path}: unexpected persistent id {pid!r:.200}")
        _, storage_type, key, _location, numel = pid
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = self._read_storage(key, storage_type.dtype_name, numel)
        elif storage.dtype_name != storage_type.dtype_name:
            raise CheckpointFormatError(f"{self.path}: storage {key} is read as both {storage.dtype_name} and {storage_type.dtype_name}")
        return storage

    def _read_storage(self, key: str, dtype_name: str, numel: int) -> _Storage:
        name = f"{self._prefix}/data/{key}"
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise CheckpointFormatError(f"{self.path}: the pickle names storage {key!r} but the archive has no record {name}") from None
        dtype = _element_dtype(dtype_name)
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointFormatError(f"{self.path}: storage record {name} is compressed (torch writes storages uncompressed)")
        if info.file_size != numel * dtype.itemsize:
            raise CheckpointFormatError(
                f"{self.path}: storage record {name} holds {info.file_size} bytes, not {numel} {dtype_name} elements"
            )
        raw = np.empty(info.file_size, np.uint8)
        view = memoryview(raw)
        with self._archive.open(info) as record:
            done = 0
            while done < info.file_size:
                n = record.readinto(view[done : done + _READ_CHUNK])
                if not n:
                    raise CheckpointFormatError(f"{self.path}: storage record {name} ends early (truncated file)")
                done += n
        if self._big_endian and dtype.itemsize > 1:
            raw.view(f"u{dtype.itemsize}").byteswap(inplace=True)
        return _Storage(dtype_name, raw.view(dtype))


def _element_dtype(dtype_name: str) -> np.dtype:
    """How a storage's elements are held: bfloat16 as its bit pattern (uint16) when ml_dtypes is missing."""
    if dtype_name == "bfloat16":
        return np.dtype(np.uint16 if _BFLOAT16 is None else _BFLOAT16)
    return np.dtype(dtype_name)


def _plain(obj: Any, memo: dict[int, Any]) -> Any:
    """``obj`` with every HParams state turned into a plain dict (containers rebuilt, arrays and scalars kept)."""
    if not isinstance(obj, (dict, list, tuple)):
        return obj
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, dict):
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        memo[id(obj)] = out
        for key, value in obj.items():
            out[_plain(key, memo)] = _plain(value, memo)
    elif isinstance(obj, list):
        out = memo[id(obj)] = []
        out.extend(_plain(value, memo) for value in obj)
    else:
        out = memo[id(obj)] = tuple(_plain(value, memo) for value in obj)
    return out


# ---------------------------------------------------------------------------------------------------
# Writing


def write_torch_checkpoint(obj: Any, path: str | os.PathLike, *, version_tag: bytes | None = None) -> None:
    """Write ``obj`` as a zip checkpoint that ``torch.load(path, weights_only=True)`` reads.

    ``obj`` may nest dicts (``OrderedDict`` stays one; other dict subclasses become plain dicts, so an
    upstream-style ``config`` is written as the plain dict upstream's inference reads), lists, tuples,
    str, int, float, bool, None, numpy scalars (written as Python scalars) and numpy arrays of float16,
    float32, float64, bfloat16 (``ml_dtypes``), int8, int16, int32, int64, uint8 or bool, each written
    as a contiguous tensor with its own storage. Anything else raises ``TypeError`` naming where it is.

    The archive is torch's: folder ``archive/`` (what ``torch.save`` to a buffer writes, as upstream's
    ``my_save2`` does), ``data.pkl`` at pickle protocol 2, one uncompressed record per storage with
    its data at a multiple of 64 bytes in the file (padded through the local header's extra field, as
    torch does, so ``torch.load(..., mmap=True)`` works), ``byteorder`` ``little`` and ``version`` ``3``.

    ``version_tag`` (``b"00"`` v1 or ``b"01"`` v2) replaces the leading ``PK`` as upstream does: its
    ``get_sovits_version_from_path_fast`` then reads the version from the tag instead of guessing it
    from the file size, and its ``load_sovits_new`` restores ``PK`` before ``torch.load`` (plain
    ``torch.load`` cannot read a tagged file). The file is written to ``<path>.partial`` and renamed.
    """
    if version_tag is not None and version_tag not in READABLE_VERSION_TAGS:
        raise ValueError(f"version_tag must be one of {READABLE_VERSION_TAGS} (v1, v2), not {version_tag!r}")
    path = Path(path)
    writer = _PickleWriter()
    pickled = writer.dumps(obj)
    partial = path.with_name(path.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
            _write_record(archive, "archive/data.pkl", pickled)
            _write_record(archive, "archive/.format_version", b"1")
            _write_record(archive, "archive/.storage_alignment", str(_ALIGNMENT).encode())
            _write_record(archive, "archive/byteorder", b"little")
            for key, array in enumerate(writer.storages):
                _write_record(archive, f"archive/data/{key}", array)
            _write_record(archive, "archive/version", b"3\n")
        if version_tag is not None:
            with open(partial, "r+b") as f:
                f.write(version_tag)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _write_record(archive: zipfile.ZipFile, name: str, data: bytes | np.ndarray) -> None:
    """One uncompressed record whose data starts at a multiple of 64 bytes in the file."""
    payload = memoryview(data if isinstance(data, bytes) else data.reshape(-1).view(np.uint8))
    info = zipfile.ZipInfo(name)
    info.file_size = payload.nbytes
    # zipfile appends a 20-byte zip64 field to the local header past this size (its own rule).
    zip64_extra = 20 if info.file_size * 1.05 > zipfile.ZIP64_LIMIT else 0
    header_end = archive.fp.tell() + 30 + len(name.encode()) + 4 + zip64_extra
    padding = -header_end % _ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", padding) + b"Z" * padding
    with archive.open(info, "w") as record:
        assert archive.fp.tell() % _ALIGNMENT == 0, f"{name}: data not {_ALIGNMENT}-byte aligned"
        record.write(payload)


class _PickleWriter:
    """Protocol-2 pickle opcodes for the supported types, naming torch's globals without importing torch."""

    def __init__(self):
        self.storages: list[np.ndarray] = []
        self._parts: list[bytes] = []
        self._open: set[int] = set()

    def dumps(self, obj: Any) -> bytes:
        self._parts = [b"\x80\x02"]  # PROTO 2
        self._save(obj, "obj")
        self._parts.append(b".")  # STOP
        return b"".join(self._parts)

    def _save(self, obj: Any, where: str) -> None:
        put = self._parts.append
        if obj is None:
            put(b"N")
        elif isinstance(obj, (bool, np.bool_)):
            put(b"\x88" if obj else b"\x89")
        elif isinstance(obj, (int, np.integer)):
            self._int(int(obj))
        elif isinstance(obj, (float, np.floating)):
            put(b"G" + struct.pack(">d", float(obj)))
        elif isinstance(obj, str):
            encoded = obj.encode("utf-8", "surrogatepass")
            put(b"X" + struct.pack("<I", len(encoded)) + encoded)
        elif isinstance(obj, np.ndarray):
            self._tensor(obj, where)
        elif isinstance(obj, (dict, list, tuple)):
            if id(obj) in self._open:
                raise ValueError(f"write_torch_checkpoint: {where} contains itself")
            self._open.add(id(obj))
            self._container(obj, where)
            self._open.discard(id(obj))
        else:
            raise TypeError(
                f"write_torch_checkpoint: {where} is a {type(obj).__module__}.{type(obj).__qualname__}; "
                "supported: dict, list, tuple, str, int, float, bool, None and numpy arrays"
            )

    def _int(self, value: int) -> None:
        put = self._parts.append
        if 0 <= value < 1 << 8:
            put(b"K" + struct.pack("<B", value))
        elif 0 <= value < 1 << 16:
            put(b"M" + struct.pack("<H", value))
        elif -(1 << 31) <= value < 1 << 31:
            put(b"J" + struct.pack("<i", value))
        else:
            encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            if len(encoded) < 256:
                put(b"\x8a" + struct.pack("<B", len(encoded)) + encoded)  # LONG1
            else:
                put(b"\x8b" + struct.pack("<i", len(encoded)) + encoded)  # LONG4

    def _container(self, obj: dict | list | tuple, where: str) -> None:
        put = self._parts.append
        if isinstance(obj, dict):
            put(b"ccollections\nOrderedDict\n)R" if isinstance(obj, collections.OrderedDict) else b"}")
            if obj:
                put(b"(")
                for key, value in obj.items():
                    self._save(key, f"a key of {where}")
                    self._save(value, f"{where}[{key!r}]")
                put(b"u")  # SETITEMS
        elif isinstance(obj, list):
            put(b"]")
            if obj:
                put(b"(")
                for i, value in enumerate(obj):
                    self._save(value, f"{where}[{i}]")
                put(b"e")  # APPENDS
        elif not obj:
            put(b")")
        else:
            put(b"(")
            for i, value in enumerate(obj):
                self._save(value, f"{where}[{i}]")
            put(b"t")  # TUPLE

    def _tensor(self, array: np.ndarray, where: str) -> None:
        storage = _DTYPE_STORAGES.get(array.dtype.name)
        if storage is None:
            raise TypeError(f"write_torch_checkpoint: {where} has dtype {array.dtype}; supported: {', '.join(_DTYPE_STORAGES)}")
        if not array.flags.c_contiguous:
            array = np.array(array, order="C")
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        key = str(len(self.storages))
        self.storages.append(array)
        stride, step = [], 1
        for n in reversed(array.shape):
            stride.insert(0, step)
            step *= max(n, 1)
        put = self._parts.append
        put(b"ctorch._utils\n_rebuild_tensor_v2\n(")
        put(b"(")  # the persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)
        self._save("storage", where)
        put(b"ctorch\n" + storage.encode() + b"\n")
        self._save(key, where)
        self._save("cpu", where)
        self._int(array.size)
        put(b"tQ")  # TUPLE, BINPERSID
        self._int(0)
        self._save(tuple(array.shape), where)
        self._save(tuple(stride), where)
        put(b"\x89ccollections\nOrderedDict\n)R")  # requires_grad False, empty backward hooks
        put(b"tR")
