"""NumPy ``.npy`` and ``.npz`` files: headers, plain arrays, object arrays (pickles).

Plain arrays are data: they scan clean with coverage format ``numpy``. The data of an object
array is a pickle that ``numpy.load(allow_pickle=True)`` runs: it is analysed (coverage
``numpy-object``) and payloads in it are PROVEN with the real loader, then flagged. ``.npz``
files are zip archives of ``.npy`` members; findings name the member.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pickle"))

from pickle_recipes import Reduce, assert_clean, assert_flagged, describe, shell_touch

import modelshield
from modelshield import CoverageStatus, ScanResult, Severity
from modelshield.formats.numpy import NpyError, parse_npy


def _npy(arr: Any, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), version=version, allow_pickle=True)
    return buf.getvalue()


def _formats(result: ScanResult) -> list[str]:
    return [c.format for c in result.coverage]


def _raw_npy(header: str, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy file with a header written by hand (padded so the data is 64-byte aligned)."""
    size = 2 if version[0] == 1 else 4
    pre = 8 + size
    text = header + " " * (-(pre + len(header) + 1) % 64) + "\n"
    raw = text.encode("utf-8" if version[0] == 3 else "latin-1")
    return b"\x93NUMPY" + bytes(version) + len(raw).to_bytes(size, "little") + raw + data


# ------------------------------------------------------------------------------ plain arrays

PLAIN: dict[str, Callable[[], Any]] = {
    "float64": lambda: np.linspace(0, 1, 11),
    "float32-2d": lambda: np.arange(12, dtype=np.float32).reshape(3, 4),
    "float16": lambda: np.arange(8, dtype=np.float16),
    "int8": lambda: np.arange(-5, 5, dtype=np.int8),
    "uint64": lambda: np.arange(4, dtype=np.uint64),
    "bool": lambda: np.array([True, False, True]),
    "complex128": lambda: np.array([1 + 2j, -3j]),
    "big-endian": lambda: np.arange(6, dtype=">i4").reshape(2, 3),
    "unicode": lambda: np.array(["a", "bcd", "é€😀"]),
    "bytes": lambda: np.array([b"x", b"\x00\xff"]),
    "void": lambda: np.zeros(3, dtype="V5"),
    "datetime64": lambda: np.array(["2024-01-01", "2025-12-31"], dtype="datetime64[D]"),
    "timedelta64": lambda: np.array([1, 2], dtype="timedelta64[s]"),
    "structured": lambda: np.zeros(4, dtype=[("x", "<f4"), ("y", ">i2"), ("name", "U5")]),
    "structured-subarray": lambda: np.zeros(2, dtype=[("m", "<f8", (2, 3)), ("k", "u1")]),
    "nested-structured": lambda: np.zeros(2, dtype=[("p", [("a", "i4"), ("b", "f8")])]),
    "fortran": lambda: np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)),
    "zero-d": lambda: np.array(3.5),
    "empty": lambda: np.empty((0, 5)),
    "empty-3d": lambda: np.zeros((2, 0, 3), dtype=np.int16),
    "large": lambda: np.ones((256, 256)),
    # Data whose bytes look like pickle opcodes is still data to numpy.load.
    "pickle-like-bytes": lambda: np.frombuffer(b"cos\nsystem\n(S'id'\ntR.", dtype=np.uint8),
}


@pytest.mark.parametrize("version", [None, (1, 0), (2, 0), (3, 0)], ids=str)
@pytest.mark.parametrize("case", sorted(PLAIN))
def test_plain_npy_is_clean(case: str, version: tuple[int, int] | None) -> None:
    arr = PLAIN[case]()
    data = _npy(arr, version)
    if version is not None:
        assert data[6:8] == bytes(version)
    assert np.array_equal(np.load(io.BytesIO(data), allow_pickle=False), arr)
    result = modelshield.scan_bytes(data, f"{case}.npy")
    assert_clean(result)
    assert not result.findings, describe(result)
    assert _formats(result) == ["numpy"]


def test_plain_npy_file_from_np_save(tmp_path: Path) -> None:
    path = tmp_path / "weights.npy"
    np.save(path, np.arange(100, dtype=np.float32))
    result = modelshield.scan(path)
    assert_clean(result)
    assert _formats(result) == ["numpy"]
    assert result.coverage[0].status is CoverageStatus.SCANNED


def test_parse_npy_header_fields() -> None:
    data = _npy(np.asfortranarray(np.zeros((2, 3), dtype=">f4")), (2, 0))
    h = parse_npy(data)
    assert h.version == (2, 0)
    assert h.descr == ">f4"
    assert h.fortran_order is True
    assert h.shape == (2, 3)
    assert h.itemsize == 4 and h.data_size == 24
    assert not h.has_object
    assert h.data_offset == len(data) - 24
    assert h.data_offset % 64 == 0


@pytest.mark.parametrize(
    ("descr", "has_object", "itemsize"),
    [
        ("<f8", False, 8),
        ("|b1", False, 1),
        ("<U3", False, 12),
        ("|O", True, None),
        ("|O8", True, 8),
        ([("a", "<i4"), ("b", "|O")], True, None),
        ([("a", "<i4"), ("b", [("c", "|O")])], True, None),
        ([("a", "<f8", (2, 3)), ("b", "|u1")], False, 49),
        ("<M8[D]", False, None),
    ],
)
def test_parse_npy_descr_layout(descr: Any, has_object: bool, itemsize: int | None) -> None:
    h = parse_npy(_raw_npy(f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': (2,), }}", b""))
    assert h.has_object is has_object
    if not has_object:
        assert h.itemsize == itemsize


# ------------------------------------------------------------------------------ object arrays

OBJECT: dict[str, Callable[[], Any]] = {
    "strings": lambda: np.array(["spam", "eggs", "ham"], dtype=object),
    "mixed": lambda: np.array([1, 2.5, None, "x", b"y", (1, 2)], dtype=object),
    "nested-lists": lambda: np.array([[1, 2], [3]], dtype=object),
    "dicts": lambda: np.array([{"a": 1}, {"b": [2, 3]}], dtype=object),
    "arrays-of-arrays": lambda: np.array([np.arange(3), np.ones(2)], dtype=object),
    "zero-d": lambda: np.array({"config": True}, dtype=object),
    "empty": lambda: np.empty((0,), dtype=object),
    "structured-with-object": lambda: np.array(
        [(1, "a"), (2, None)], dtype=[("i", "<i4"), ("o", "O")]
    ),
}


@pytest.mark.parametrize("version", [None, (2, 0), (3, 0)], ids=str)
@pytest.mark.parametrize("case", sorted(OBJECT))
def test_benign_object_npy_is_analysed_and_clean(
    case: str, version: tuple[int, int] | None
) -> None:
    data = _npy(OBJECT[case](), version)
    np.load(io.BytesIO(data), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(io.BytesIO(data), allow_pickle=False)
    result = modelshield.scan_bytes(data, f"{case}.npy")
    assert_clean(result)
    assert _formats(result) == ["numpy-object"]
    assert "pickle" in (result.coverage[0].reason or "")


def _evil(marker: Path) -> Any:
    return Reduce(os.system, shell_touch(marker))


MALICIOUS: dict[str, Callable[[Path], Any]] = {
    "object-1d": lambda m: np.array([_evil(m)], dtype=object),
    "object-among-data": lambda m: np.array([1, "x", _evil(m), None], dtype=object),
    "object-0d": lambda m: np.array(_evil(m), dtype=object),
    "object-2d-fortran": lambda m: np.asfortranarray(
        np.array([[1, _evil(m)], [2, 3]], dtype=object)
    ),
    "structured-object-field": lambda m: np.array(
        [(1, _evil(m))], dtype=[("a", "<i4"), ("o", "O")]
    ),
    "nested-structured-object-field": lambda m: np.array(
        [(1, (_evil(m),))], dtype=[("a", "<i4"), ("o", [("inner", "O")])]
    ),
}


@pytest.mark.parametrize("version", [None, (2, 0), (3, 0)], ids=str)
@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_object_npy_is_flagged(
    case: str, version: tuple[int, int] | None, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    data = _npy(MALICIOUS[case](marker), version)
    path = tmp_path / "evil.npy"
    path.write_bytes(data)
    assert not marker.exists()
    np.load(path, allow_pickle=True)
    assert marker.exists(), "np.load did not run the payload: the sample is broken"

    result = modelshield.scan(path)
    hits = assert_flagged(result, "os.system")
    assert result.max_severity() is Severity.CRITICAL
    assert _formats(result) == ["numpy-object"]
    header = parse_npy(data)
    for h in hits:
        assert h.location.member is None
        assert h.location.offset is not None and h.location.offset >= header.data_offset


def test_np_save_object_array_file_is_proven_and_flagged(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.npy"
    np.save(path, np.array([_evil(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        np.load(path)  # the default refuses pickles
    assert not marker.exists()
    np.load(path, allow_pickle=True)
    assert marker.exists()
    assert_flagged(modelshield.scan(path), "os.system")


# ------------------------------------------------------------------------------ .npz archives


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_benign_npz_is_clean(compressed: bool, tmp_path: Path) -> None:
    path = tmp_path / "bundle.npz"
    save = np.savez_compressed if compressed else np.savez
    save(
        path,
        weights=np.arange(50, dtype=np.float32),
        labels=np.array(["cat", "dog"], dtype=object),
        table=np.zeros(3, dtype=[("a", "<i4"), ("b", "U2")]),
        scalar=np.array(1.5),
    )
    with np.load(path, allow_pickle=True) as z:
        assert sorted(z.files) == ["labels", "scalar", "table", "weights"]
        z["labels"]
    result = modelshield.scan(path)
    assert_clean(result)
    by_member = {c.member: c.format for c in result.coverage}
    assert by_member == {
        None: "zip",
        "weights.npy": "numpy",
        "labels.npy": "numpy-object",
        "table.npy": "numpy",
        "scalar.npy": "numpy",
    }


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_malicious_npz_member_is_flagged(compressed: bool, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "bundle.npz"
    save = np.savez_compressed if compressed else np.savez
    save(path, weights=np.arange(10.0), evil=np.array([_evil(marker)], dtype=object))
    with np.load(path, allow_pickle=True) as z:
        z["weights"]
        assert not marker.exists()  # members are loaded lazily
        z["evil"]
    assert marker.exists()

    result = modelshield.scan(path)
    hits = assert_flagged(result, "os.system")
    assert {h.location.member for h in hits} == {"evil.npy"}
    assert result.complete


# ------------------------------------------------------------------------------ header edge cases


def test_python2_long_suffix_in_shape() -> None:
    data = _raw_npy(
        "{'descr': '<i8', 'fortran_order': False, 'shape': (2L, 3L), }",
        np.arange(6, dtype="<i8").tobytes(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "created on Python 2"
        assert np.load(io.BytesIO(data)).shape == (2, 3)
    assert parse_npy(data).shape == (2, 3)
    result = modelshield.scan_bytes(data, "py2.npy")
    assert_clean(result)
    assert not result.findings, describe(result)


def test_python2_long_suffix_object_array_is_analysed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    pickled = _npy(np.array([_evil(marker)], dtype=object))
    payload = pickled[parse_npy(pickled).data_offset :]
    data = _raw_npy("{'descr': '|O', 'fortran_order': False, 'shape': (1L,), }", payload)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        np.load(io.BytesIO(data), allow_pickle=True)
    assert marker.exists()
    assert_flagged(modelshield.scan_bytes(data, "py2.npy"), "os.system")


@pytest.mark.parametrize("delta", [-8, -1, 1, 100], ids=lambda d: f"{d:+d}-bytes")
def test_wrong_data_size_is_low_finding(delta: int) -> None:
    good = _npy(np.arange(10, dtype="<i8"))
    data = good[:delta] if delta < 0 else good + b"\x00" * delta
    if delta < 0:
        with pytest.raises(ValueError):
            np.load(io.BytesIO(data))
    result = modelshield.scan_bytes(data, "a.npy")
    ms206 = [f for f in result.findings if f.rule_id == "MS206"]
    assert len(ms206) == 1, describe(result)
    assert ms206[0].severity is Severity.LOW
    assert str(80) in ms206[0].message and str(80 + delta) in ms206[0].message
    assert _formats(result) == ["numpy"]
    assert result.is_clean()


INVALID: dict[str, bytes] = {
    "not-a-dict": _raw_npy("[1, 2, 3]", b""),
    "code-not-literal": _raw_npy(
        "{'descr': __import__('os').system('id'), 'fortran_order': False, 'shape': (1,)}", b""
    ),
    "missing-key": _raw_npy("{'descr': '<f8', 'shape': (1,), }", b"\x00" * 8),
    "extra-key": _raw_npy(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}", b"\x00" * 8
    ),
    "negative-shape": _raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", b""),
    "shape-not-tuple": _raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': [1], }", b""),
    "fortran-not-bool": _raw_npy("{'descr': '<f8', 'fortran_order': 0, 'shape': (1,), }", b""),
    "unknown-version": b"\x93NUMPY\x04\x00" + b"\x10\x00" + b"{}".ljust(16) + b"\n",
    "header-past-end": b"\x93NUMPY\x01\x00\xff\xff{'descr': '<f8'",
    "truncated-v2-length": b"\x93NUMPY\x02\x00\x10\x00",
    "bad-utf8-v3": b"\x93NUMPY\x03\x00\x04\x00\x00\x00\xff\xfe\xfd\n",
    "deep-nesting": _raw_npy("{'descr': " + "[" * 200 + "]" * 200 + "}", b""),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_header_is_inconclusive(case: str) -> None:
    data = INVALID[case]
    with pytest.raises((ValueError, SyntaxError, TypeError, OSError, EOFError)):
        np.load(io.BytesIO(data), allow_pickle=True)
    with pytest.raises(NpyError):
        parse_npy(data)
    result = modelshield.scan_bytes(data, "bad.npy")
    assert any(f.rule_id == "MS206" and "npy" in f.message for f in result.findings), describe(
        result
    )
    assert [(c.format, c.status) for c in result.coverage] == [
        ("numpy", CoverageStatus.INCONCLUSIVE)
    ]
    assert not result.complete
    assert not result.is_clean()


# ------------------------------------------------------------------------------ disguise (MS205)


def test_plain_npy_named_safetensors_is_not_disguised() -> None:
    result = modelshield.scan_bytes(_npy(np.arange(3)), "model.safetensors")
    assert_clean(result)
    assert not result.findings, describe(result)


def test_object_npy_named_safetensors_is_disguised(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = _npy(np.array([_evil(marker)], dtype=object))
    result = modelshield.scan_bytes(data, "model.safetensors")
    assert_flagged(result, "os.system")  # the payload itself is found either way
    assert_flagged(result, "model.safetensors", ("MS205",), threshold=Severity.MEDIUM)
