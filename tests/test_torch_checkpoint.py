"""The torch-free checkpoint reader and writer, against files written and read by real torch (no torch here).

The fixtures and the JSON of what torch read from them come from ``tools/make_torch_checkpoint_fixtures.py``.
"""

import collections
import importlib.util
import io
import json
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from gptsovits_jax import torch_checkpoint
from gptsovits_jax.torch_checkpoint import CheckpointFormatError, read_torch_checkpoint, write_torch_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "torch_checkpoint"
MARKER = "marker_created_by_os_system_fixture"  # what os_system.pth's command would create in the working directory
DTYPES = ["float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool"]


def numpy_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16 if name == "bfloat16" else name)


def from_torch_json(node: dict):
    """The object a JSON tree written by the fixture tool (``{kind: body}`` nodes) stands for, tensors as numpy arrays."""
    ((kind, body),) = node.items()
    if kind == "tensor":
        return np.array(body["values"], dtype=numpy_dtype(body["dtype"])).reshape(body["shape"])
    if kind in ("ordered_dict", "dict"):
        pairs = [(key, from_torch_json(value)) for key, value in body]
        return collections.OrderedDict(pairs) if kind == "ordered_dict" else dict(pairs)
    if kind == "list":
        return [from_torch_json(value) for value in body]
    if kind == "tuple":
        return tuple(from_torch_json(value) for value in body)
    return body


def torch_read(name: str):
    return from_torch_json(json.loads((FIXTURES / name).read_text())["read_by_torch"])


def assert_same(actual, expected, where: str = "obj") -> None:
    """Same container types and keys, arrays of the same dtype and shape and the same bits (NaN, -0.0 included)."""
    assert type(actual) is type(expected), (where, type(actual), type(expected))
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, (where, actual.dtype, actual.shape)
        assert actual.tobytes() == np.ascontiguousarray(expected).tobytes(), where
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, (where, actual, expected)


def string_op(text: str) -> bytes:
    encoded = text.encode()
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def torch_like_zip(path: Path, pickled: bytes, storages: dict[str, bytes] | None = None, byteorder: bytes = b"little") -> Path:
    records = {"archive/data.pkl": pickled, "archive/byteorder": byteorder, "archive/version": b"3\n"}
    records.update({f"archive/data/{key}": data for key, data in (storages or {}).items()})
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    return path


def local_data_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """Each record's data offset and compression method, from its local header."""
    raw = path.read_bytes()
    out = {}
    with zipfile.ZipFile(io.BytesIO(b"PK" + raw[2:])) as archive:
        for info in archive.infolist():
            signature, method = struct.unpack("<I4xH", raw[info.header_offset : info.header_offset + 10])
            name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
            assert signature == 0x04034B50 or info.header_offset == 0
            out[info.filename] = (info.header_offset + 30 + name_length + extra_length, method)
    return out


def test_the_package_under_test_is_this_checkout():
    import gptsovits_jax

    assert Path(gptsovits_jax.__file__).resolve().parents[1] == Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# Reading what torch wrote


def test_state_dict_values_dtypes_and_shapes_match_what_torch_read():
    assert_same(read_torch_checkpoint(FIXTURES / "state_dict.pth"), torch_read("state_dict.json"))


def test_strided_offset_and_broadcast_tensors_are_read_in_logical_order():
    state = read_torch_checkpoint(FIXTURES / "state_dict.pth")
    expected = torch_read("state_dict.json")
    for name in ("transposed", "sliced", "broadcast", "shared_column"):
        assert state[name].flags.c_contiguous and state[name].flags.writeable, name
        np.testing.assert_array_equal(state[name], expected[name])
    np.testing.assert_array_equal(state["broadcast"][0], state["broadcast"][1])


def test_tensors_sharing_a_storage_share_memory_like_after_torch_load():
    shared = json.loads((FIXTURES / "state_dict.json").read_text())["shared_storages"]
    assert shared == [["shared_whole", "shared_row", "shared_column"]]
    state = read_torch_checkpoint(FIXTURES / "state_dict.pth")
    assert np.shares_memory(state["shared_whole"], state["shared_row"])
    np.testing.assert_array_equal(state["shared_row"], state["shared_whole"][1])
    np.testing.assert_array_equal(state["shared_column"], state["shared_whole"][:, 2])


def test_zero_dim_and_empty_tensors_keep_their_shapes():
    state = read_torch_checkpoint(FIXTURES / "state_dict.pth")
    assert state["scalar"].shape == () and state["scalar"].dtype == np.float32 and state["scalar"] == 2.5
    assert state["scalar_int"].shape == () and state["scalar_int"].dtype == np.int64 and state["scalar_int"] == 7
    assert state["empty"].shape == (0, 3)


def test_bfloat16_tensors_are_ml_dtypes_bfloat16_arrays():
    state = read_torch_checkpoint(FIXTURES / "state_dict.pth")
    assert state["bfloat16"].dtype == ml_dtypes.bfloat16
    assert state["nested"]["tuple"][2].dtype == ml_dtypes.bfloat16


def test_torch_size_is_read_as_a_tuple():
    assert read_torch_checkpoint(FIXTURES / "state_dict.pth")["nested"]["size"] == (2, 3)


def test_upstream_sovits_export_hparams_config_is_read_as_a_plain_dict():
    export = read_torch_checkpoint(FIXTURES / "sovits_v2_export.pth")
    assert_same(export, torch_read("sovits_v2_export.json"))
    config = export["config"]
    assert type(config) is dict and type(config["data"]) is dict and type(config["model"]) is dict
    assert config["data"]["hop_length"] == 640 and config["model"]["upsample_rates"] == [10, 8, 2, 2, 2]
    assert export["info"] == "8epoch_96iteration"
    assert all(w.dtype == np.float16 for w in export["weight"].values())


@pytest.mark.parametrize("tag", [b"00", b"01"])
def test_v1_and_v2_version_tags_are_read_as_the_zip_they_replace(tag, tmp_path):
    tagged = tmp_path / "tagged.pth"
    tagged.write_bytes(tag + (FIXTURES / "sovits_v2_export.pth").read_bytes()[2:])
    assert_same(read_torch_checkpoint(tagged), torch_read("sovits_v2_export.json"))


def test_upstream_v2_tagged_fixture_is_read():
    assert (FIXTURES / "sovits_v2_export_tag01.pth").read_bytes()[:2] == b"01"
    assert_same(read_torch_checkpoint(FIXTURES / "sovits_v2_export_tag01.pth"), torch_read("sovits_v2_export.json"))


def test_upstream_v2pro_file_is_refused_naming_the_version():
    with pytest.raises(CheckpointFormatError, match=r"sovits_v2pro_tag05\.pth.*v2Pro models are not supported"):
        read_torch_checkpoint(FIXTURES / "sovits_v2pro_tag05.pth")


@pytest.mark.parametrize(("tag", "version"), [(b"02", "v3"), (b"03", "v3 LoRA"), (b"04", "v4 LoRA"), (b"06", "v2ProPlus")])
def test_other_upstream_version_tags_are_refused_naming_the_version(tag, version, tmp_path):
    tagged = tmp_path / "tagged.pth"
    tagged.write_bytes(tag + (FIXTURES / "sovits_v2_export.pth").read_bytes()[2:])
    with pytest.raises(CheckpointFormatError, match=rf"tagged\.pth: an upstream GPT-SoVITS {version} SoVITS file .*not supported"):
        read_torch_checkpoint(tagged)


# ------------------------------------------------------------------------------------------------
# Refusing code and bad files


def test_os_system_in_the_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointFormatError, match=r"os_system\.pth: refusing global 'os\.system'.*nothing was executed"):
        read_torch_checkpoint(FIXTURES / "os_system.pth")
    assert not (tmp_path / MARKER).exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("module", "name"), [("builtins", "eval"), ("posix", "system"), ("subprocess", "Popen"), ("torch", "load")])
def test_any_other_global_is_refused_by_name_before_it_is_called(module, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    call = f"c{module}\n{name}\n(".encode() + string_op(f"open('{MARKER}', 'w')") + b"tR."
    path = torch_like_zip(tmp_path / "evil.pth", b"\x80\x02" + call)
    with pytest.raises(CheckpointFormatError, match=rf"evil\.pth: refusing global '{module}\.{name}'"):
        read_torch_checkpoint(path)
    assert not (tmp_path / MARKER).exists()


def tensor_pickle(offset: int, size: tuple[int, ...], stride: tuple[int, ...], numel: int) -> bytes:
    """``_rebuild_tensor_v2`` over storage ``0`` of ``numel`` float32 elements, as torch pickles it."""

    def ints(values):
        return b"(" + b"".join(b"K" + bytes([v]) for v in values) + b"t"

    storage = b"(" + string_op("storage") + b"ctorch\nFloatStorage\n" + string_op("0") + string_op("cpu") + b"K" + bytes([numel]) + b"tQ"
    return b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"K" + bytes([offset]) + ints(size) + ints(stride) + b"\x89}tR."


def test_a_hand_written_tensor_pickle_is_read_with_its_strides(tmp_path):
    path = torch_like_zip(tmp_path / "t.pth", tensor_pickle(1, (2, 2), (3, 1), 6), {"0": np.arange(6, dtype=np.float32).tobytes()})
    np.testing.assert_array_equal(read_torch_checkpoint(path), [[1, 2], [4, 5]])


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path):
    path = torch_like_zip(tmp_path / "oob.pth", tensor_pickle(2, (2, 3), (3, 1), 6), {"0": np.zeros(6, np.float32).tobytes()})
    with pytest.raises(CheckpointFormatError, match=r"oob\.pth: malformed checkpoint: .*reaches past its storage of 6 elements"):
        read_torch_checkpoint(path)


def test_a_storage_record_of_the_wrong_size_is_refused(tmp_path):
    path = torch_like_zip(tmp_path / "short.pth", tensor_pickle(0, (6,), (1,), 6), {"0": np.zeros(5, np.float32).tobytes()})
    with pytest.raises(CheckpointFormatError, match=r"short\.pth: storage record archive/data/0 holds 20 bytes, not 6 float32"):
        read_torch_checkpoint(path)


def test_calling_an_allowed_global_with_bad_arguments_is_a_format_error(tmp_path):
    path = torch_like_zip(tmp_path / "bad.pth", b"\x80\x02ctorch\nHalfStorage\n)R.")
    with pytest.raises(CheckpointFormatError, match=r"bad\.pth: malformed checkpoint: TypeError"):
        read_torch_checkpoint(path)


def test_big_endian_checkpoints_are_byteswapped(tmp_path):
    values = np.array([1.5, -2.0, 3.25], np.float32)
    path = torch_like_zip(tmp_path / "big.pth", tensor_pickle(0, (3,), (1,), 3), {"0": values.astype(">f4").tobytes()}, byteorder=b"big")
    assert_same(read_torch_checkpoint(path), values)


def test_legacy_pre_zip_file_is_refused_with_the_fix():
    with pytest.raises(CheckpointFormatError, match=r"legacy\.pth: a legacy \(pre-zip, torch < 1\.6\) pickle checkpoint"):
        read_torch_checkpoint(FIXTURES / "legacy.pth")


def test_truncated_file_is_refused():
    with pytest.raises(CheckpointFormatError, match=r"truncated\.pth: truncated or corrupt zip archive"):
        read_torch_checkpoint(FIXTURES / "truncated.pth")


def test_corrupted_storage_bytes_are_refused_by_their_crc(tmp_path):
    raw = (FIXTURES / "state_dict.pth").read_bytes()
    data_start = min(offset for name, (offset, _) in local_data_offsets(FIXTURES / "state_dict.pth").items() if "/data/" in name)
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(raw[:data_start] + b"\xff" * 8 + raw[data_start + 8 :])  # the central directory survives
    with pytest.raises(CheckpointFormatError, match=r"damaged\.pth: malformed checkpoint: BadZipFile: Bad CRC-32"):
        read_torch_checkpoint(damaged)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"empty file, not a PyTorch checkpoint"),
        (b"hello, world", r"not a PyTorch checkpoint \(a zip archive starts with b'PK', this file with b'he'\)"),
        (b"P", r"not a PyTorch checkpoint"),
    ],
)
def test_empty_and_non_zip_files_are_refused(content, message, tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match=r"model\.pth: " + message):
        read_torch_checkpoint(path)


def test_a_zip_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointFormatError, match=r"other\.zip: a zip archive without <name>/data\.pkl"):
        read_torch_checkpoint(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth: no such checkpoint file"):
        read_torch_checkpoint(tmp_path / "nowhere.pth")


def test_format_errors_are_value_errors():
    assert issubclass(CheckpointFormatError, ValueError)


# ------------------------------------------------------------------------------------------------
# Writing


def special_values(dtype_name: str) -> np.ndarray:
    if dtype_name == "bool":
        return np.array([[True, False, True], [False, False, True]])
    dtype = numpy_dtype(dtype_name)
    if dtype_name.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return np.array([[info.min, -1 if info.min else 1, 0], [1, 2, info.max]], dtype)
    tiny = float(ml_dtypes.finfo(dtype).smallest_subnormal)
    values = np.array([[np.nan, np.inf, -np.inf], [-0.0, tiny, 1.0 / 3.0]]).astype(dtype)
    assert values[1, 1] != 0
    return values


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_write_then_read_is_bit_exact_for_every_dtype(dtype_name, tmp_path):
    values = special_values(dtype_name)
    obj = collections.OrderedDict(matrix=values, transposed=values.T, scalar=values[1:, 2:].reshape(()), empty=values[:0])
    write_torch_checkpoint(obj, tmp_path / "roundtrip.pth")
    back = read_torch_checkpoint(tmp_path / "roundtrip.pth")
    assert_same(back, obj)
    assert back["transposed"].flags.c_contiguous


def test_write_then_read_keeps_containers_and_scalars(tmp_path):
    obj = {
        "ordered": collections.OrderedDict(b=1, a=2),
        "list": [None, True, False, 0, 255, 256, 65536, -1, 2**31, -(2**31) - 1, 2**100, -(2**2100)],
        "tuple": (1.5, float("inf"), "héllo ✓", ()),
        "nested": {"empty_dict": {}, "empty_list": [], 3: "int key"},
        "numpy_scalars": [np.float32(0.5), np.int64(-3), np.bool_(True)],
    }
    write_torch_checkpoint(obj, tmp_path / "containers.pth")
    expected = dict(obj, numpy_scalars=[0.5, -3, True])
    assert_same(read_torch_checkpoint(tmp_path / "containers.pth"), expected)


def test_dict_subclasses_are_written_as_plain_dicts(tmp_path):
    class AttrDict(dict):
        pass

    write_torch_checkpoint({"config": AttrDict(data=AttrDict(hop_length=640))}, tmp_path / "config.pth")
    assert_same(read_torch_checkpoint(tmp_path / "config.pth"), {"config": {"data": {"hop_length": 640}}})


def test_written_records_are_stored_and_their_data_64_byte_aligned(tmp_path):
    rng = np.random.default_rng(0)
    obj = {f"w{i}" + "_" * i: rng.standard_normal(i + 1).astype(np.float16) for i in range(70)}
    write_torch_checkpoint(obj, tmp_path / "aligned.pth")
    offsets = local_data_offsets(tmp_path / "aligned.pth")
    assert len(offsets) == 70 + 5
    assert {name.split("/", 1)[0] for name in offsets} == {"archive"}
    assert {"archive/data.pkl", "archive/version", "archive/byteorder", "archive/data/69"} <= set(offsets)
    for name, (offset, method) in offsets.items():
        assert method == zipfile.ZIP_STORED, name
        assert offset % 64 == 0, (name, offset)
    with zipfile.ZipFile(tmp_path / "aligned.pth") as archive:
        assert archive.read("archive/version") == b"3\n" and archive.read("archive/byteorder") == b"little"
        assert archive.read("archive/data.pkl")[:2] == b"\x80\x02"  # pickle protocol 2, as torch writes


def test_writer_fixture_is_what_torch_read_and_what_the_writer_still_writes(tmp_path):
    read_by_torch = torch_read("written_by_gptsovits_jax.json")
    assert_same(read_torch_checkpoint(FIXTURES / "written_by_gptsovits_jax.pth"), read_by_torch)
    write_torch_checkpoint(read_by_torch, tmp_path / "again.pth")
    assert (tmp_path / "again.pth").read_bytes() == (FIXTURES / "written_by_gptsovits_jax.pth").read_bytes()


def test_version_tag_replaces_pk_and_is_read_back(tmp_path):
    obj = {"weight": collections.OrderedDict(w=np.ones(3, np.float16)), "config": {"version": "v2"}}
    write_torch_checkpoint(obj, tmp_path / "tagged.pth", version_tag=b"01")
    assert (tmp_path / "tagged.pth").read_bytes()[:2] == b"01"
    assert all(offset % 64 == 0 for offset, _ in local_data_offsets(tmp_path / "tagged.pth").values())
    assert_same(read_torch_checkpoint(tmp_path / "tagged.pth"), obj)


@pytest.mark.parametrize("tag", [b"05", b"PK", b"1", "01"])
def test_only_v1_and_v2_tags_can_be_written(tag, tmp_path):
    with pytest.raises(ValueError, match="version_tag must be one of"):
        write_torch_checkpoint({}, tmp_path / "x.pth", version_tag=tag)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"config": {"fn": print}}, r"obj\['config'\]\['fn'\] is a builtins\.builtin_function_or_method"),
        ({"w": [np.zeros(2, np.complex64)]}, r"obj\['w'\]\[0\] has dtype complex64"),
        ({"s": {1, 2}}, r"obj\['s'\] is a builtins\.set"),
    ],
)
def test_unsupported_values_are_refused_naming_where_they_are(obj, message, tmp_path):
    with pytest.raises(TypeError, match=message):
        write_torch_checkpoint(obj, tmp_path / "x.pth")
    assert list(tmp_path.iterdir()) == []


def test_a_container_holding_itself_is_refused(tmp_path):
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match=r"obj\[0\] contains itself"):
        write_torch_checkpoint(loop, tmp_path / "x.pth")


def test_a_failed_write_leaves_the_previous_file_untouched(tmp_path):
    path = tmp_path / "model.pth"
    write_torch_checkpoint({"w": np.ones(2, np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_torch_checkpoint({"w": object()}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_an_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    write_record = torch_checkpoint._write_record

    def fail_on_storage(archive, name, data):
        if "/data/" in name:
            raise KeyboardInterrupt
        write_record(archive, name, data)

    monkeypatch.setattr(torch_checkpoint, "_write_record", fail_on_storage)
    with pytest.raises(KeyboardInterrupt):
        write_torch_checkpoint({"w": np.ones(2, np.float32)}, tmp_path / "model.pth")
    assert list(tmp_path.iterdir()) == []


def test_reading_a_copy_does_not_depend_on_the_file_name(tmp_path):
    shutil.copy(FIXTURES / "state_dict.pth", tmp_path / "renamed.bin")
    assert_same(read_torch_checkpoint(tmp_path / "renamed.bin"), torch_read("state_dict.json"))


def build_on_global(module: str, name: str, attribute: str, value: bytes) -> bytes:
    """A pickle whose BUILD opcode tries to set ``attribute`` (as slot state) on the global ``module.name`` itself."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"N}" + string_op(attribute) + value + b"s\x86b."


@pytest.mark.parametrize(
    ("module", "name", "attribute", "value"),
    [
        ("torch", "FloatStorage", "dtype_name", string_op("float64")),
        ("utils", "HParams", "__setstate__", b"ctorch\nSize\n"),
        ("collections", "OrderedDict", "__init__", b"ctorch\nSize\n"),
    ],
)
def test_a_pickle_cannot_change_what_later_loads_read(module, name, attribute, value, tmp_path):
    path = torch_like_zip(tmp_path / "poison.pth", build_on_global(module, name, attribute, value))
    with pytest.raises(CheckpointFormatError, match=r"poison\.pth: malformed checkpoint"):
        read_torch_checkpoint(path)
    assert_same(read_torch_checkpoint(FIXTURES / "state_dict.pth"), torch_read("state_dict.json"))
    assert_same(read_torch_checkpoint(FIXTURES / "sovits_v2_export.pth"), torch_read("sovits_v2_export.json"))


def test_without_ml_dtypes_bfloat16_is_upcast_exactly_to_float32(monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # makes `import ml_dtypes` fail
    spec = importlib.util.spec_from_file_location("torch_checkpoint_without_ml_dtypes", torch_checkpoint.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = module.read_torch_checkpoint(FIXTURES / "state_dict.pth")
    expected = torch_read("state_dict.json")
    assert state["bfloat16"].dtype == np.float32
    assert_same(state["bfloat16"], expected["bfloat16"].astype(np.float32))
    assert_same(state["nested"]["tuple"][2], expected["nested"]["tuple"][2].astype(np.float32))
