"""Unit tests of :func:`modelshield.tensors.read_tensors` edge cases.

The restricted unpickler must refuse every global outside its table *without importing it*
(a module whose import writes a marker file proves it), and damaged inputs must fail as
:class:`ConversionError` rather than produce wrong tensors.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelshield.tensors import (
    ALIAS_KEY,
    DTYPE_SIZES,
    ConversionError,
    Tensor,
    TensorSet,
    _byteswap,
    iter_unique,
    read_tensors,
)

torch = pytest.importorskip("torch")

# ---------------------------------------------------------------------------------- helpers


def read_all(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    with read_tensors(str(path)) as ts:
        return {t.name: (t.dtype, t.shape, bytes(t.read())) for t in ts.tensors}


def le_bytes(t: Any) -> bytes:
    return bytes(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def rezip(
    src: Path,
    dst: Path,
    change: Callable[[str, bytes], bytes | None],
    method: int = zipfile.ZIP_STORED,
) -> Path:
    """Copy a zip member by member; ``change`` returns new bytes or None to drop a member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", method) as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def checkpoint(tmp_path: Path, **kw: Any) -> Path:
    path = tmp_path / "ck.pt"
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "n": torch.arange(4)}, path, **kw)
    return path


def side_effect_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """An importable module whose import creates a marker file."""
    marker = tmp_path / f"{name}.imported"
    (tmp_path / f"{name}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\ndef rebuild(*a):\n    return a\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


def global_call_pickle(module: str, name: str) -> bytes:
    """``{'w': module.name('x')}`` at protocol 2, written by hand (imports nothing)."""
    return (
        b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01c"
        + module.encode()
        + b"\n"
        + name.encode()
        + b"\nq\x02X\x01\x00\x00\x00xq\x03\x85q\x04Rq\x05s."
    )


# ---------------------------------------------------------------------------------- unpickler


@pytest.mark.parametrize("container", ["plain", "torch_zip", "torch_legacy"])
def test_unknown_global_refused_without_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, container: str
) -> None:
    name = f"ms_tensors_evil_{container}"
    marker = side_effect_module(tmp_path, monkeypatch, name)
    payload = global_call_pickle(name, "rebuild")
    if container == "plain":
        path = tmp_path / "evil.pkl"
        path.write_bytes(payload)
    elif container == "torch_zip":
        path = rezip(
            checkpoint(tmp_path),
            tmp_path / "evil.pt",
            lambda n, b: payload if n.endswith("/data.pkl") else b,
        )
    else:
        legacy = checkpoint(tmp_path, _use_new_zipfile_serialization=False).read_bytes()
        # magic, protocol, sys_info pickles, then the object pickle replaced by the payload
        path = tmp_path / "evil_legacy.pt"
        parts: tuple[object, ...] = (0x1950A86A20F9469CFC6C, 1001, {})
        head = b"".join(pickle.dumps(x, protocol=2) for x in parts)
        path.write_bytes(head + payload + legacy[len(head) :])
    with pytest.raises(ConversionError, match=f"{name}.rebuild"):
        read_tensors(str(path))
    assert not marker.exists()
    assert name not in sys.modules


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_qtensor"),
        ("numpy", "load"),
        ("collections", "defaultdict"),
    ],
)
def test_dangerous_and_unknown_globals_refused(tmp_path: Path, module: str, name: str) -> None:
    path = tmp_path / "g.pkl"
    path.write_bytes(global_call_pickle(module, name))
    with pytest.raises(ConversionError, match="not a tensor or container type"):
        read_tensors(str(path))


def test_allowed_constructor_with_bad_arguments(tmp_path: Path) -> None:
    """_rebuild_tensor_v2 called on something that is not a storage."""
    path = tmp_path / "bad.pkl"
    path.write_bytes(global_call_pickle("torch._utils", "_rebuild_tensor_v2"))
    with pytest.raises((ConversionError, TypeError)):
        read_tensors(str(path))


def test_codecs_encode_only_latin1(tmp_path: Path) -> None:
    path = tmp_path / "enc.pkl"
    # _codecs.encode('x', 'rot13')
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(ConversionError, match="encoding"):
        read_tensors(str(path))


def test_unexpected_persistent_id(tmp_path: Path) -> None:
    path = rezip(
        checkpoint(tmp_path),
        tmp_path / "pid.pt",
        lambda n, b: (
            b"\x80\x02}X\x01\x00\x00\x00wX\x03\x00\x00\x00abcQs." if n.endswith("/data.pkl") else b
        ),
    )
    with pytest.raises(ConversionError, match="persistent id"):
        read_tensors(str(path))


def test_storage_type_is_not_callable_as_code(tmp_path: Path) -> None:
    """Names in the table map to modelshield's own records, never to the real objects."""
    path = tmp_path / "ok.pt"
    torch.save({"w": torch.ones(2)}, path)
    with read_tensors(str(path)) as ts:
        (t,) = ts.tensors
        assert t.identity is not None and "torch" not in {type(x).__module__ for x in t.identity}


# ---------------------------------------------------------------------------------- torch zip


def test_zip_reads_every_layout(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.int32).reshape(3, 4)
    src = {"t": base.t(), "s": base[:, 1::2], "e": torch.empty(0), "x": torch.tensor(7)}
    path = tmp_path / "v.pt"
    torch.save(src, path)
    got = read_all(path)
    names = {torch.int32: "I32", torch.int64: "I64", torch.float32: "F32"}
    for k, v in src.items():
        assert got[k] == (names[v.dtype], tuple(v.shape), le_bytes(v))


def test_deflated_members(tmp_path: Path) -> None:
    """PyTorch writes STORED members; a DEFLATED re-pack must read the same."""
    path = rezip(checkpoint(tmp_path), tmp_path / "d.pt", lambda n, b: b, zipfile.ZIP_DEFLATED)
    assert read_all(path) == read_all(checkpoint(tmp_path))


def test_big_endian_checkpoint(tmp_path: Path) -> None:
    """A checkpoint saved on a big-endian machine: the byteorder record says so."""
    src = checkpoint(tmp_path)
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
    sizes = {"0": 4, "1": 8}  # w: float32, n: int64 (storage keys in save order)

    def swap(name: str, data: bytes) -> bytes:
        if name.endswith("/byteorder"):
            return b"big"
        key = name.rsplit("/", 1)[-1]
        if "/data/" in name and key in sizes:
            return _byteswap(data, sizes[key])
        return data

    assert any(n.endswith("/byteorder") for n in names)
    big = rezip(src, tmp_path / "big.pt", swap)
    assert torch.load(big, weights_only=True)["n"].tolist() == [0, 1, 2, 3]
    assert read_all(big) == read_all(src)


def test_missing_storage_record(tmp_path: Path) -> None:
    path = rezip(
        checkpoint(tmp_path), tmp_path / "m.pt", lambda n, b: None if n.endswith("/data/0") else b
    )
    with read_tensors(str(path)) as ts:
        by_name = {t.name: t for t in ts.tensors}
        assert by_name["n"].read()  # the other tensor is fine
        with pytest.raises(ConversionError, match="missing"):
            by_name["w"].read()


def test_short_storage_record(tmp_path: Path) -> None:
    path = rezip(
        checkpoint(tmp_path), tmp_path / "s.pt", lambda n, b: b[:8] if n.endswith("/data/0") else b
    )
    with read_tensors(str(path)) as ts, pytest.raises(ConversionError, match="past its storage"):
        next(t for t in ts.tensors if t.name == "w").read()


def test_short_storage_non_contiguous(tmp_path: Path) -> None:
    """A strided view must not read past a truncated storage either."""
    src = tmp_path / "t.pt"
    torch.save({"t": torch.arange(20.0).reshape(4, 5).t()}, src)
    path = rezip(src, tmp_path / "s.pt", lambda n, b: b[:40] if n.endswith("/data/0") else b)
    with read_tensors(str(path)) as ts:
        (t,) = ts.tensors
        with pytest.raises(ConversionError):
            t.read()


@pytest.mark.parametrize("cut", ["half", "end", "first50"])
def test_truncated_zip(tmp_path: Path, cut: str) -> None:
    raw = checkpoint(tmp_path).read_bytes()
    keep = {"half": len(raw) // 2, "end": len(raw) - 10, "first50": 50}[cut]
    path = tmp_path / "t.pt"
    path.write_bytes(raw[:keep])
    with pytest.raises(ConversionError):
        read_tensors(str(path))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated_pickle"),
        pytest.param(lambda b: b"\x80\x02garbage", id="garbage_pickle"),
        pytest.param(lambda b: b"", id="empty_pickle"),
    ],
)
def test_damaged_data_pkl(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    path = rezip(
        checkpoint(tmp_path),
        tmp_path / "d.pt",
        lambda n, b: damage(b) if n.endswith("/data.pkl") else b,
    )
    with pytest.raises(ConversionError):
        read_tensors(str(path))


def test_zip_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ConversionError, match="neither"):
        read_tensors(str(path))


# ---------------------------------------------------------------------------------- legacy


def test_legacy_reads_like_zip(tmp_path: Path) -> None:
    legacy = checkpoint(tmp_path, _use_new_zipfile_serialization=False)
    data = read_all(legacy)
    assert data == read_all(checkpoint(tmp_path))


def test_legacy_truncated_storage(tmp_path: Path) -> None:
    raw = checkpoint(tmp_path, _use_new_zipfile_serialization=False).read_bytes()
    path = tmp_path / "t.pt"
    path.write_bytes(raw[:-5])
    with pytest.raises(ConversionError, match="truncated"):
        read_tensors(str(path))


def test_legacy_truncated_anywhere_in_storages(tmp_path: Path) -> None:
    raw = checkpoint(tmp_path, _use_new_zipfile_serialization=False).read_bytes()
    path = tmp_path / "t.pt"
    # Two storages: 24 + 32 bytes of data, each after an 8-byte size: every cut in that tail.
    unexpected = []
    for cut in range(1, 24 + 32 + 16 + 1):
        path.write_bytes(raw[:-cut])
        try:
            read_tensors(str(path)).close()
        except ConversionError:
            continue
        except Exception as exc:
            unexpected.append(f"cut {cut}: {type(exc).__name__}")
        else:
            unexpected.append(f"cut {cut}: no error")
    assert unexpected == []


def test_legacy_cut_inside_the_pickles(tmp_path: Path) -> None:
    raw = checkpoint(tmp_path, _use_new_zipfile_serialization=False).read_bytes()
    path = tmp_path / "t.pt"
    path.write_bytes(raw[:100])
    with pytest.raises((ConversionError, pickle.UnpicklingError, EOFError)):
        read_tensors(str(path))


def test_legacy_shared_storage(tmp_path: Path) -> None:
    base = torch.arange(10.0)
    path = tmp_path / "l.pt"
    torch.save({"a": base, "b": base[2:7], "c": base}, path, _use_new_zipfile_serialization=False)
    with read_tensors(str(path)) as ts:
        groups = list(iter_unique(ts.tensors))
        assert [(t.name, aliases) for t, aliases in groups] == [("a", ["c"]), ("b", [])]
        assert bytes(groups[1][0].read()) == le_bytes(base[2:7])


# ---------------------------------------------------------------------------------- NumPy / pickles


def test_npy_big_endian_and_fortran(tmp_path: Path) -> None:
    arr = np.asfortranarray(np.arange(12, dtype=">f4").reshape(3, 4))
    np.save(tmp_path / "a.npy", arr)
    (name, (dtype, shape, data)) = next(iter(read_all(tmp_path / "a.npy").items()))
    assert (name, dtype, shape) == ("a", "F32", (3, 4))
    assert data == np.ascontiguousarray(arr).astype("<f4").tobytes()


def test_npy_object_array_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConversionError, match="object"):
        read_tensors(str(tmp_path / "o.npy"))


def test_npy_unsupported_dtype(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.array(["2024-01-01"], dtype="datetime64[D]"))
    with pytest.raises(ConversionError, match="dtype"):
        read_tensors(str(tmp_path / "d.npy"))


def test_pickled_numpy_arrays(tmp_path: Path) -> None:
    arrays = {
        "le": np.arange(6, dtype=np.int16).reshape(2, 3),
        "be": np.arange(4, dtype=">f8"),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(3, 2)),
        "scalar": np.array(2.0, dtype=np.float32),
    }
    path = tmp_path / "a.pkl"
    path.write_bytes(pickle.dumps({"arrays": arrays, "epoch": 2}, protocol=4))
    with read_tensors(str(path)) as ts:
        got = {t.name: (t.dtype, t.shape, bytes(t.read())) for t in ts.tensors}
        assert ts.skipped and ts.skipped[0].startswith("epoch")
    for k, v in arrays.items():
        native = v.astype(v.dtype.newbyteorder("<"), order="C")
        assert got[f"arrays.{k}"][1:] == (v.shape, native.tobytes()), k


def test_pickled_array_of_unsupported_dtype(tmp_path: Path) -> None:
    path = tmp_path / "s.pkl"
    path.write_bytes(pickle.dumps({"s": np.array(["ab", "cd"])}, protocol=4))
    with pytest.raises(ConversionError), read_tensors(str(path)) as ts:
        for t in ts.tensors:
            t.read()


def test_pickle_protocol5_arrays_fail_cleanly(tmp_path: Path) -> None:
    """Protocol 5 pickles arrays through numpy's _frombuffer, which is not in the table."""
    path = tmp_path / "p5.pkl"
    path.write_bytes(pickle.dumps({"a": np.arange(3.0)}, protocol=5))
    try:
        got = read_all(path)
    except ConversionError:
        return
    assert got == {"a": ("F64", (3,), np.arange(3.0).tobytes())}


def test_torch_tensor_in_a_plain_pickle_is_skipped(tmp_path: Path) -> None:
    buf = io.BytesIO()
    pickle.dump({"a": np.ones(2)}, buf, protocol=4)
    path = tmp_path / "a.pkl"
    path.write_bytes(buf.getvalue())
    assert list(read_all(path)) == ["a"]


# ---------------------------------------------------------------------------------- safetensors


def test_safetensors_aliases_expanded(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "a.safetensors"
    save_file(
        {"w": np.arange(4, dtype=np.float32)},
        str(path),
        metadata={ALIAS_KEY: json.dumps({"tied": "w"}), "other": "x"},
    )
    with read_tensors(str(path)) as ts:
        assert ts.metadata["other"] == "x"
        assert [t.name for t in ts.tensors] == ["w", "tied"]
        assert ts.tensors[0].read() == ts.tensors[1].read()


def test_safetensors_unknown_dtype(tmp_path: Path) -> None:
    header = json.dumps({"x": {"dtype": "F4", "shape": [1], "data_offsets": [0, 1]}}).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00")
    with pytest.raises(ConversionError, match="dtype"):
        read_tensors(str(path))


# ---------------------------------------------------------------------------------- misc


def test_empty_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ConversionError, match="empty"):
        read_tensors(str(tmp_path / "empty"))
    (tmp_path / "text").write_bytes(b"hello world, not a model")
    with pytest.raises(ConversionError, match="not a PyTorch"):
        read_tensors(str(tmp_path / "text"))


def test_file_handle_closed_on_error(tmp_path: Path) -> None:
    (tmp_path / "text").write_bytes(b"hello world, not a model")
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    for _ in range(20):
        with pytest.raises(ConversionError):
            read_tensors(str(tmp_path / "text"))
    after = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    assert after <= before + 1


def test_byteswap() -> None:
    assert _byteswap(b"\x01\x02\x03\x04", 2) == b"\x02\x01\x04\x03"
    assert _byteswap(b"\x01\x02\x03\x04", 4) == b"\x04\x03\x02\x01"
    assert _byteswap(b"\x01\x02", 1) == b"\x01\x02"
    arr = np.arange(5, dtype=">i8")
    assert _byteswap(arr.tobytes(), 8) == arr.astype("<i8").tobytes()


def test_tensor_nbytes_and_iter_unique() -> None:
    def reader() -> bytes:
        return b""

    a = Tensor("a", "BF16", (3, 4), reader, ("k", 0))
    b = Tensor("b", "BF16", (3, 4), reader, ("k", 0))
    c = Tensor("c", "BF16", (3, 4), reader, None)
    d = Tensor("d", "BF16", (3, 4), reader, None)
    assert a.nbytes == 24 and Tensor("s", "F64", (), reader).nbytes == 8
    assert Tensor("e", "F32", (0, 9), reader).nbytes == 0
    assert [(t.name, al) for t, al in iter_unique([a, b, c, d])] == [
        ("a", ["b"]),
        ("c", []),
        ("d", []),
    ]
    assert set(DTYPE_SIZES) >= {"F8_E4M3", "F8_E5M2", "BF16", "C64", "BOOL"}


def test_tensorset_close_is_idempotent() -> None:
    calls: list[int] = []
    ts = TensorSet(closers=[lambda: calls.append(1)])
    with ts:
        pass
    ts.close()
    assert calls == [1]
