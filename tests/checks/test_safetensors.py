"""safetensors: strict header validation, differential against the real library, header-only reads.

Valid files come from ``safetensors.torch.save_file`` / ``safetensors.numpy.save_file``. Every
hand-made header is also given to the library (``safetensors.deserialize``): for the rules
implemented here, modelshield flags a file exactly when the library rejects it, with one
documented exception (duplicate tensor names: the format forbids them, the library keeps one).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import safetensors.torch
import torch

import modelshield
from modelshield import CoverageStatus, ScanResult
from modelshield.formats import safetensors_file as st


def _rules(r: ScanResult) -> list[str]:
    return [f.rule_id for f in r.findings]


def _file(header: bytes | dict[str, Any], data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


_deserialize: Any = safetensors.deserialize


def _library_accepts(blob: bytes) -> bool:
    try:
        _deserialize(blob)
    except Exception:
        return False
    return True


def _scan(tmp_path: Path, blob: bytes, name: str = "m.safetensors") -> ScanResult:
    p = tmp_path / name
    p.write_bytes(blob)
    return modelshield.scan(str(p))


# ---------------------------------------------------------------- valid files
def test_torch_many_dtypes_with_metadata(tmp_path: Path) -> None:
    tensors = {
        "f32": torch.randn(3, 4),
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 2).bfloat16(),
        "f64": torch.randn(1, dtype=torch.float64),
        "i8": torch.tensor([1, -2], dtype=torch.int8),
        "u8": torch.tensor([1, 2, 3], dtype=torch.uint8),
        "i16": torch.tensor([1], dtype=torch.int16),
        "i32": torch.tensor([1, 2], dtype=torch.int32),
        "i64": torch.tensor([7], dtype=torch.int64),
        "bool": torch.tensor([True, False, True]),
        "f8e4m3": torch.zeros(4).to(torch.float8_e4m3fn),
        "f8e5m2": torch.zeros(4).to(torch.float8_e5m2),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(3.5),
    }
    p = tmp_path / "t.safetensors"
    safetensors.torch.save_file(tensors, str(p), metadata={"format": "pt", "note": "x"})
    r = modelshield.scan(str(p))
    assert not r.findings
    assert [(c.status, c.format) for c in r.coverage] == [(CoverageStatus.SCANNED, "safetensors")]
    assert "14 tensors" in (r.coverage[0].reason or "")


def test_numpy_writer(tmp_path: Path) -> None:
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "a": np.arange(10, dtype=np.float32),
        "b": np.zeros((0,), dtype=np.int64),
        "c": np.array(1, dtype=np.uint16),
        "d": np.ones((2, 3), dtype=np.complex64),
    }
    p = tmp_path / "n.safetensors"
    safetensors.numpy.save_file(arrays, str(p))
    assert not modelshield.scan(str(p)).findings


def test_empty_file_of_tensors(tmp_path: Path) -> None:
    blob = safetensors.torch.save({})
    assert not _scan(tmp_path, blob).findings


def test_real_corpus_files_are_valid() -> None:
    for p in (
        Path("/tmp/real_models").rglob("*.safetensors") if Path("/tmp/real_models").is_dir() else []
    ):
        assert not modelshield.scan(str(p)).findings, p


# ---------------------------------------------------------------- differential
_U8 = {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}
_CASES: list[tuple[str, bytes, str | None]] = [
    ("valid", _file({"a": _U8}, b"\0"), None),
    ("leading whitespace", _file(b' \n{"a":' + json.dumps(_U8).encode() + b"}", b"\0"), None),
    ("padding", _file(b'{"a":' + json.dumps(_U8).encode() + b"}   \t", b"\0"), None),
    ("extra field", _file({"a": {**_U8, "x": 1}}, b"\0"), None),
    ("null metadata", _file({"__metadata__": None, "a": _U8}, b"\0"), None),
    (
        "zero-length tensors anywhere",
        _file(
            {
                "e": {"dtype": "F32", "shape": [0, 4], "data_offsets": [1, 1]},
                "a": _U8,
                "s": {"dtype": "U8", "shape": [], "data_offsets": [1, 2]},
            },
            b"\0\0",
        ),
        None,
    ),
    (
        "sub-byte dtype",
        _file({"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, b"\0\0"),
        None,
    ),
    (
        "sub-byte partial",
        _file({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"\0\0"),
        "whole number of bytes",
    ),
    (
        "F8_E8M0",
        _file({"a": {"dtype": "F8_E8M0", "shape": [2], "data_offsets": [0, 2]}}, b"\0\0"),
        None,
    ),
    ("unknown dtype", _file({"a": {**_U8, "dtype": "Q4"}}, b"\0"), "unknown dtype 'Q4'"),
    ("lowercase dtype", _file({"a": {**_U8, "dtype": "f32"}}, b"\0"), "unknown dtype"),
    ("negative dim", _file({"a": {**_U8, "shape": [-1]}}, b"\0"), "shape [-1]"),
    (
        "float dim",
        _file(b'{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}', b"\0"),
        "shape",
    ),
    ("bool dim", _file({"a": {**_U8, "shape": [True]}}, b"\0"), "shape"),
    ("shape not list", _file({"a": {**_U8, "shape": 1}}, b"\0"), "shape"),
    ("three offsets", _file({"a": {**_U8, "data_offsets": [0, 1, 2]}}, b"\0"), "not [BEGIN, END]"),
    ("string offset", _file({"a": {**_U8, "data_offsets": ["0", 1]}}, b"\0"), "[BEGIN, END]"),
    ("end before begin", _file({"a": {**_U8, "data_offsets": [1, 0]}}, b"\0"), "end before"),
    ("size mismatch", _file({"a": {**_U8, "shape": [2]}}, b"\0"), "needs 2 bytes"),
    ("gap", _file({"a": {**_U8, "data_offsets": [1, 2]}}, b"\0\0"), "gap of 1 bytes"),
    (
        "overlap",
        _file({"a": _U8, "b": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"\0\0"),
        "overlap",
    ),
    ("trailing bytes", _file({"a": _U8}, b"\0\0"), "not described"),
    (
        "data past end",
        _file({"a": {**_U8, "shape": [4], "data_offsets": [0, 4]}}, b"\0"),
        "only 1 bytes",
    ),
    (
        "missing field",
        _file({"a": {"dtype": "U8", "data_offsets": [0, 1]}}, b"\0"),
        "missing field 'shape'",
    ),
    ("entry not object", _file({"a": 5}), "not an object"),
    (
        "metadata int value",
        _file({"__metadata__": {"k": 1}, "a": _U8}, b"\0"),
        "strings to strings",
    ),
    ("metadata list", _file({"__metadata__": ["x"]}), "__metadata__ is list"),
    ("not json", _file(b"{not json}"), "not valid JSON"),
    (
        "NaN",
        _file(b'{"__metadata__":{},"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":NaN}}'),
        "not valid JSON",
    ),
    (
        "lone surrogate",
        _file(b'{"\\ud800":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'),
        "surrogate",
    ),
    ("invalid utf-8", _file(b'{"\xff":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'), "UTF-8"),
    ("NUL padding", _file(b'{"a":' + json.dumps(_U8).encode() + b"}\0", b"\0"), "not valid JSON"),
    (
        "duplicate field",
        _file(b'{"a":{"dtype":"U8","shape":[1],"shape":[1],"data_offsets":[0,1]}}', b"\0"),
        "duplicate key 'shape'",
    ),
    (
        "overflow",
        _file({"a": {"dtype": "U8", "shape": [1 << 32, 1 << 32], "data_offsets": [0, 0]}}),
        "overflows",
    ),
    ("header past end", struct.pack("<Q", 1000) + b'{"a":1}', "runs past the end"),
]


@pytest.mark.parametrize(("label", "blob", "problem"), _CASES, ids=[c[0] for c in _CASES])
def test_differential_against_library(
    tmp_path: Path, label: str, blob: bytes, problem: str | None
) -> None:
    r = _scan(tmp_path, blob)
    assert _library_accepts(blob) == (problem is None), label
    if problem is None:
        assert not r.findings, [f.message for f in r.findings]
    else:
        assert _rules(r) and set(_rules(r)) == {"MS510"}, (label, r.findings)
        assert any(problem in f.message for f in r.findings), [f.message for f in r.findings]
    assert [(c.status, c.format) for c in r.coverage] == [(CoverageStatus.SCANNED, "safetensors")]


def test_duplicate_tensor_names_flagged_though_library_accepts(tmp_path: Path) -> None:
    """The format disallows duplicate keys; the library keeps the last: parsers may disagree."""
    blob = _file(
        b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}',
        b"\0\0",
    )
    assert _library_accepts(blob)
    r = _scan(tmp_path, blob)
    assert _rules(r) == ["MS510"] and "duplicate key 'a'" in r.findings[0].message


def test_parse_header_directly() -> None:
    """Headers that matches() does not claim (no '{') are still judged precisely."""
    blob = _file(b"[]  ")
    assert not _library_accepts(blob)
    h = st.parse_header(blob, len(blob))
    assert h.problems == ["header is a JSON list, not an object"]
    assert st.parse_header(b"\0" * 4, 4).problems[0].startswith("file is 4 bytes")


def test_header_too_large(tmp_path: Path) -> None:
    blob = struct.pack("<Q", st.MAX_HEADER_SIZE + 1) + b"{" + b" " * 16
    r = _scan(tmp_path, blob)
    assert not _library_accepts(blob)
    assert _rules(r) == ["MS510"] and "100 MB" in r.findings[0].message


def test_unrecognised_without_the_name(tmp_path: Path) -> None:
    """A length past the end is only claimed as safetensors when the file is named so."""
    blob = struct.pack("<Q", 1000) + b'{"a":1}'
    r = _scan(tmp_path, blob, name="blob.bin")
    assert "MS510" not in _rules(r)


# ---------------------------------------------------------------- speed: header only
def test_reads_only_the_header_of_a_large_file(tmp_path: Path) -> None:
    n = 500 << 20
    header = {"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}
    raw = json.dumps(header).encode()
    p = tmp_path / "big.safetensors"
    with open(p, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + n)  # sparse: the weights are a hole never read
    r = modelshield.scan(str(p))
    assert not r.findings
    assert r.bytes_read < 64 << 10, r.bytes_read
