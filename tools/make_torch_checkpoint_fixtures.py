"""Write the ``tests/fixtures/torch_checkpoint/`` fixtures with real torch, and check that torch reads our writer's files.

Run by hand in a separate Python with torch (never by CI or users; the package and its tests never
import torch):

    python3.11 -m venv /work/torchenv && /work/torchenv/bin/pip install torch==2.13.0 numpy ml_dtypes==0.7.0
    /work/torchenv/bin/python tools/make_torch_checkpoint_fixtures.py [--upstream /path/to/GPT-SoVITS]

It writes, with ``torch.save``: a state dict of every supported dtype with strided, offset, broadcast
and storage-sharing tensors; an upstream-style fine-tuned SoVITS export holding a genuine
``utils.HParams`` instance, plain and with upstream's version tags; a legacy (pre-zip) file; a
truncated copy; and by hand a torch-like zip whose pickle calls ``os.system``. What torch itself reads
back from each readable file is recorded in JSON next to it, so the tests compare our reader with
torch, not with itself.

Then it checks the other direction: files written by ``gptsovits_jax.torch_checkpoint`` load with
``torch.load(weights_only=True)`` (and ``mmap=True``) to the values that were written, and every record's
data starts at a multiple of 64 bytes. One of them is kept as a fixture with what torch read from it.
With ``--upstream`` (a GPT-SoVITS checkout), upstream's own ``process_ckpt.load_sovits_new`` and
``get_sovits_version_from_path_fast`` are run on a v2-tagged writer file too.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import pickle
import struct
import sys
import tempfile
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gptsovits_jax.torch_checkpoint import write_torch_checkpoint  # noqa: E402

OUT = REPO / "tests" / "fixtures" / "torch_checkpoint"
MARKER = "marker_created_by_os_system_fixture"

TORCH_DTYPES = {
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


def describe(obj) -> dict:
    """A JSON tree of what torch holds: every node is ``{kind: body}``, tensors with their values flattened."""
    if isinstance(obj, torch.Tensor):
        return {
            "tensor": {
                "dtype": str(obj.dtype).removeprefix("torch."),
                "shape": list(obj.shape),
                "stride": list(obj.stride()),
                "storage_offset": obj.storage_offset(),
                "values": obj.reshape(-1).tolist(),
            }
        }
    if isinstance(obj, collections.OrderedDict):
        return {"ordered_dict": [[key, describe(value)] for key, value in obj.items()]}
    if isinstance(obj, dict):
        return {"dict": [[key, describe(value)] for key, value in obj.items()]}
    if isinstance(obj, list):
        return {"list": [describe(value) for value in obj]}
    if isinstance(obj, tuple):  # torch.Size included: the reader returns a tuple
        return {"tuple": [describe(value) for value in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    if hasattr(obj, "__dict__"):  # upstream's HParams, which the reader returns as a plain dict
        return {"dict": [[key, describe(value)] for key, value in vars(obj).items()]}
    raise TypeError(type(obj))


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def state_dict() -> collections.OrderedDict:
    torch.manual_seed(0)
    shared = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    return collections.OrderedDict(
        float16=torch.randn(3, 4).half(),
        float32=torch.randn(2, 3),
        float64=torch.randn(3, dtype=torch.float64),
        bfloat16=torch.randn(2, 5).bfloat16(),
        int8=torch.tensor([-128, -1, 0, 127], dtype=torch.int8),
        int16=torch.tensor([-32768, 5, 32767], dtype=torch.int16),
        int32=torch.tensor([[-(2**31), 0], [7, 2**31 - 1]], dtype=torch.int32),
        int64=torch.arange(-3, 3, dtype=torch.int64) * 2**40,
        uint8=torch.tensor([0, 1, 255], dtype=torch.uint8),
        bool=torch.tensor([True, False, True]),
        scalar=torch.tensor(2.5),
        scalar_int=torch.tensor(7),
        empty=torch.zeros(0, 3),
        transposed=torch.randn(3, 4).t(),  # stride (1, 4)
        sliced=torch.randn(4, 6)[1:, ::2],  # storage offset 6, stride (6, 2)
        broadcast=torch.randn(3).expand(2, 3),  # stride (0, 1)
        shared_whole=shared,
        shared_row=shared[1],  # contiguous, offset 4 in the same storage
        shared_column=shared[:, 2],  # strided, same storage
        nested=collections.OrderedDict(
            list=[torch.tensor([1.0, -2.0]).half(), 1, "two", None],
            tuple=(3.5, True, torch.ones(2, 2, dtype=torch.bfloat16)),
            dict={"k": torch.tensor([[1, 2], [3, 4]])},
            size=torch.Size([2, 3]),
            meta={"int": 5, "float": 0.25, "str": "héllo", "none": None, "bool": False, "big": 2**40, "negative": -7},
        ),
    )


def shared_storage_groups(obj: collections.OrderedDict) -> list[list[str]]:
    by_storage: dict[int, list[str]] = collections.defaultdict(list)
    for name, value in obj.items():
        if isinstance(value, torch.Tensor) and value.numel():
            by_storage[value.untyped_storage().data_ptr()].append(name)
    return [names for names in by_storage.values() if len(names) > 1]


def make_hparams_module(directory: Path):
    """A module named ``utils`` with a class ``HParams`` shaped like upstream's, so pickles name ``utils.HParams``."""
    (directory / "utils.py").write_text(
        "class HParams:\n"
        "    def __init__(self, **kwargs):\n"
        "        for key, value in kwargs.items():\n"
        "            setattr(self, key, HParams(**value) if type(value) is dict else value)\n"
    )
    sys.path.insert(0, str(directory))
    import utils

    return utils


def sovits_export(utils) -> collections.OrderedDict:
    """An upstream-style fine-tuned SoVITS export (``process_ckpt.savee``): fp16 weights, HParams config, info."""
    torch.manual_seed(1)
    config = {
        "train": {"segment_size": 20480, "learning_rate": 0.0001, "betas": [0.8, 0.99], "fp16_run": True},
        "data": {"sampling_rate": 32000, "filter_length": 2048, "hop_length": 640, "win_length": 2048, "n_speakers": 300},
        "model": {"inter_channels": 192, "upsample_rates": [10, 8, 2, 2, 2], "semantic_frame_rate": "25hz", "freeze_quantizer": True},
        "s2_ckpt_dir": "logs/voice",
        "save_weight_dir": "SoVITS_weights_v2",
        "name": "voice",
        "version": "v2",
    }
    weight = collections.OrderedDict(
        (key, torch.randn(*shape).half())
        for key, shape in [
            ("enc_p.text_embedding.weight", (6, 4)),
            ("enc_p.ssl_proj.weight", (4, 3, 1)),
            ("enc_p.ssl_proj.bias", (4,)),
            ("dec.conv_pre.weight", (5, 4, 7)),
        ]
    )
    return collections.OrderedDict(weight=weight, config=utils.HParams(**config), info="8epoch_96iteration")


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def os_system_pickle() -> bytes:
    """``{'weight': os.system('touch <MARKER>')}`` in pickle opcodes: unsafe loading runs the command."""
    command = f"touch {MARKER}".encode()
    return b"\x80\x02}(X\x06\x00\x00\x00weight" + b"cos\nsystem\n(X" + struct.pack("<I", len(command)) + command + b"tRu."


def write_zip(path: Path, records: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records.items():
            archive.writestr(name, data)


def data_offsets(path: Path, head: bytes = b"PK") -> dict[str, int]:
    """Every record's data offset in the file, from its local header (the extra field may differ from the central one)."""
    raw = head + path.read_bytes()[2:]
    offsets = {}
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for info in archive.infolist():
            name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
            offsets[info.filename] = info.header_offset + 30 + name_length + extra_length
    return offsets


def assert_torch_equal(loaded, written, where: str = "obj") -> None:
    """What torch loaded equals what our writer was given: same containers, same dtypes, shapes and bits."""
    if isinstance(written, np.ndarray):
        assert isinstance(loaded, torch.Tensor), where
        assert str(loaded.dtype).removeprefix("torch.") == written.dtype.name, (where, loaded.dtype, written.dtype)
        assert tuple(loaded.shape) == written.shape, where
        assert loaded.is_contiguous(), where
        as_bits = loaded.view(torch.int16) if loaded.dtype == torch.bfloat16 else loaded
        expected = written.view(np.int16) if written.dtype == ml_dtypes.bfloat16 else written
        assert as_bits.numpy().tobytes() == np.ascontiguousarray(expected).tobytes(), where
    elif isinstance(written, dict):
        assert type(loaded) is (collections.OrderedDict if isinstance(written, collections.OrderedDict) else dict), where
        assert list(loaded) == list(written), where
        for key in written:
            assert_torch_equal(loaded[key], written[key], f"{where}[{key!r}]")
    elif isinstance(written, (list, tuple)):
        assert type(loaded) is type(written) and len(loaded) == len(written), where
        for i, (a, b) in enumerate(zip(loaded, written)):
            assert_torch_equal(a, b, f"{where}[{i}]")
    else:
        assert type(loaded) is type(written) and loaded == written, (where, loaded, written)


def writer_input() -> collections.OrderedDict:
    """What the committed writer fixture holds: every dtype, a 0-dim and an empty array, an upstream-style config."""
    rng = np.random.default_rng(0)
    return collections.OrderedDict(
        weight=collections.OrderedDict(
            [
                ("enc_p.text_embedding.weight", rng.standard_normal((4, 3)).astype(np.float16)),
                ("bfloat16", rng.standard_normal((2, 2)).astype(ml_dtypes.bfloat16)),
                ("float32", rng.standard_normal(3).astype(np.float32)),
                ("float64", rng.standard_normal(2)),
                ("int64", np.array([-(2**62), 0, 2**62], np.int64)),
                ("int32", np.array([-(2**31), 2**31 - 1], np.int32)),
                ("int16", np.array([-5, 5], np.int16)),
                ("int8", np.array([-128, 127], np.int8)),
                ("uint8", np.array([0, 255], np.uint8)),
                ("bool", np.array([[True, False], [False, True]])),
                ("scalar", np.array(1.5, np.float32)),
                ("empty", np.zeros((0, 2), np.float32)),
                ("transposed", np.arange(6, dtype=np.float16).reshape(2, 3).T),  # written contiguous
            ]
        ),
        config={
            "data": {"sampling_rate": 32000, "hop_length": 640, "n_speakers": 300},
            "model": {"upsample_rates": [10, 8, 2, 2, 2], "semantic_frame_rate": "25hz"},
            "train": {"segment_size": 20480},
        },
        info="1epoch_2iteration",
        extra=(1, 2.5, None, True, "x", -(2**70)),
    )


def check_writer(tmp: Path, upstream: Path | None) -> list[str]:
    """Write files with our writer, load them with torch (and upstream's loader), return what was checked."""
    rng = np.random.default_rng(1)
    cases = {
        "writer_input.pth": writer_input(),
        "empty_dict.pth": {},
        # odd sizes and long names move every record's header, so the padding takes many values
        "many_shapes.pth": collections.OrderedDict(
            (
                f"layer{i}." + "x" * i + ".weight",
                np.asarray(rng.standard_normal(tuple(rng.integers(1, 5, size=i % 4).tolist())), np.float16),
            )
            for i in range(40)
        ),
    }
    checked = []
    for name, obj in cases.items():
        path = tmp / name
        write_torch_checkpoint(obj, path)
        offsets = data_offsets(path)
        assert all(offset % 64 == 0 for offset in offsets.values()), offsets
        assert_torch_equal(torch.load(path, weights_only=True), obj)
        assert_torch_equal(torch.load(path, weights_only=True, mmap=True), obj)
        checked.append(
            f"{name}: {len(offsets)} records 64-byte aligned; torch.load(weights_only=True) and mmap=True read every value bit-exact"
        )
    tagged = tmp / "writer_input_tag01.pth"
    write_torch_checkpoint(writer_input(), tagged, version_tag=b"01")
    assert tagged.read_bytes()[:2] == b"01"
    assert all(offset % 64 == 0 for offset in data_offsets(tagged).values())
    assert_torch_equal(torch.load(io.BytesIO(b"PK" + tagged.read_bytes()[2:]), weights_only=True), writer_input())
    checked.append("writer_input_tag01.pth: tag b'01' in place of PK; torch.load after restoring PK reads every value")
    if upstream is not None:
        checked += check_upstream_loader(upstream, tagged, tmp / "writer_input.pth")
    return checked


def check_upstream_loader(upstream: Path, tagged: Path, plain: Path) -> list[str]:
    """Upstream's own ``process_ckpt`` (imported from its checkout) on our tagged and untagged files."""
    cwd = os.getcwd()
    os.chdir(upstream)  # its i18n reads locale files relative to the working directory
    try:
        sys.path.insert(0, str(upstream))
        sys.path.insert(0, str(upstream / "GPT_SoVITS"))
        import process_ckpt
    finally:
        os.chdir(cwd)
    version = process_ckpt.get_sovits_version_from_path_fast(str(tagged))
    assert list(version) == ["v2", "v2", False], version
    loaded = process_ckpt.load_sovits_new(str(tagged))
    assert_torch_equal(loaded, writer_input())
    assert loaded["config"]["data"]["hop_length"] == 640
    plain_version = process_ckpt.get_sovits_version_from_path_fast(str(plain))
    return [
        f"upstream process_ckpt.get_sovits_version_from_path_fast(tagged b'01') = {tuple(version)}; load_sovits_new reads every value",
        f"upstream get_sovits_version_from_path_fast(untagged, {plain.stat().st_size} bytes) = {tuple(plain_version)} (by file size)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, help="a GPT-SoVITS checkout (the folder holding GPT_SoVITS/ and tools/)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)

        sd = state_dict()
        torch.save(sd, out / "state_dict.pth")
        loaded = torch.load(out / "state_dict.pth", weights_only=True)
        groups = shared_storage_groups(loaded)
        assert groups == [["shared_whole", "shared_row", "shared_column"]], groups
        write_json(out / "state_dict.json", {"torch": torch.__version__, "read_by_torch": describe(loaded), "shared_storages": groups})

        utils = make_hparams_module(tmp)
        export = sovits_export(utils)
        torch.save(export, out / "sovits_v2_export.pth")  # upstream's my_save: plain torch.save for v1/v2
        data = (out / "sovits_v2_export.pth").read_bytes()
        assert b"utils\nHParams" in data
        (out / "sovits_v2_export_tag01.pth").write_bytes(b"01" + data[2:])
        (out / "sovits_v2pro_tag05.pth").write_bytes(b"05" + torch_bytes(export)[2:])  # upstream's my_save2 for v2Pro
        reread = torch.load(out / "sovits_v2_export.pth", weights_only=False)
        assert isinstance(reread["config"], utils.HParams)
        write_json(out / "sovits_v2_export.json", {"torch": torch.__version__, "read_by_torch": describe(reread)})

        torch.save({"w": torch.ones(2)}, out / "legacy.pth", _use_new_zipfile_serialization=False)
        state_bytes = (out / "state_dict.pth").read_bytes()
        (out / "truncated.pth").write_bytes(state_bytes[: len(state_bytes) // 2])

        os_system = out / "os_system.pth"
        write_zip(os_system, {"archive/data.pkl": os_system_pickle(), "archive/byteorder": b"little", "archive/version": b"3\n"})
        try:
            torch.load(os_system, weights_only=True)
            raise AssertionError("torch's weights_only loader accepted os.system")
        except pickle.UnpicklingError:
            pass
        live = tmp / "live"
        live.mkdir()
        os.chdir(live)  # prove the fixture is live: torch's unsafe loader runs the command here
        try:
            torch.load(os_system, weights_only=False)
        finally:
            os.chdir(REPO)
        assert (live / MARKER).exists()

        checked = check_writer(tmp, args.upstream)
        write_torch_checkpoint(writer_input(), out / "written_by_gptsovits_jax.pth")
        write_json(
            out / "written_by_gptsovits_jax.json",
            {"torch": torch.__version__, "read_by_torch": describe(torch.load(out / "written_by_gptsovits_jax.pth", weights_only=True))},
        )

    print(f"torch {torch.__version__}: fixtures written to {out}")
    for line in checked:
        print("  ok:", line)


if __name__ == "__main__":
    main()
