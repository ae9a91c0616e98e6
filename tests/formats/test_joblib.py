"""joblib files: every compression joblib writes, inline NumPy arrays, the old ``ZF`` format.

joblib pickles each NumPy array as a ``joblib.numpy_pickle.NumpyArrayWrapper`` and writes the
array's raw bytes straight into the stream after the wrapper's BUILD (after a padding-length byte
and padding when ``numpy_array_alignment_bytes`` is set); arrays of Python objects are written
there as a nested pickle instead. Those raw bytes are data to ``joblib.load`` and must not cause
false positives; the nested pickles run and must be analysed. ``pickle.load`` of the same file
reads the raw bytes as opcodes: a payload hidden there is reported as such.

Malicious samples are PROVEN first (``joblib.load`` or ``pickle.load`` creates the marker file),
then must be flagged at HIGH or above naming ``os.system``.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pickle"))

from pickle_recipes import (
    Reduce,
    asm,
    assert_clean,
    assert_flagged,
    describe,
    shell_touch,
)

import modelshield
from modelshield import ScanResult, Severity

joblib = pytest.importorskip("joblib")

# (joblib ``compress`` argument, format the scanner must report for the outer stream or None)
COMPRESSIONS: list[tuple[Any, str | None]] = [
    (0, None),
    (3, "zlib"),
    (("zlib", 3), "zlib"),
    (("gzip", 3), "gzip"),
    (("bz2", 3), "bzip2"),
    (("lzma", 3), "lzma"),
    (("xz", 3), "xz"),
    (("lz4", 3), "lz4"),
]


def _compress_id(compress: Any) -> str:
    return compress[0] if isinstance(compress, tuple) else f"level{compress}"


COMPRESSION_PARAMS = [pytest.param(c, f, id=_compress_id(c)) for c, f in COMPRESSIONS]


def _formats(result: ScanResult) -> list[str]:
    return [c.format for c in result.coverage]


def _assert_chain(result: ScanResult, fmt: str | None) -> None:
    """Coverage shows the compressed stream and the pickle inside it."""
    if fmt is None:
        assert _formats(result) == ["pickle"], result.coverage
    else:
        assert _formats(result) == [fmt, "pickle"], result.coverage
        inner = [c for c in result.coverage if c.format == "pickle"]
        assert inner[0].member == f"<{fmt} content>"


# ------------------------------------------------------------------------------ benign samples


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    sklearn = pytest.importorskip("sklearn")
    del sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    y = (x[:, 0] > 0).astype(int)
    table = np.array([["red", 1.0], ["blue", 2.0], ["green", 3.0], ["red", 4.0]], dtype=object)
    return {
        "scaler-pca-logreg": Pipeline(
            [
                ("scale", StandardScaler()),
                ("pca", PCA(n_components=2)),
                ("clf", LogisticRegression()),
            ]
        ).fit(x, y),
        "random-forest": RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(
            x, y
        ),
        "column-transformer-onehot": ColumnTransformer(
            [("onehot", OneHotEncoder(handle_unknown="ignore"), [0]), ("num", "passthrough", [1])]
        ).fit(table),
        "arrays": {
            "float64": np.linspace(0.0, 1.0, 7),
            "float16": np.arange(5, dtype=np.float16),
            "int8": np.arange(-3, 3, dtype=np.int8),
            "bool": np.array([True, False]),
            "complex": np.array([1 + 2j, 3 - 4j]),
            "unicode": np.array(["a", "bcd", "é€"]),
            "bytes": np.array([b"x", b"yz"]),
            "object-strings": np.array(["spam", "eggs", None, 3], dtype=object),
            "structured": np.zeros(3, dtype=[("a", "<i4"), ("b", ">f8"), ("c", "U3", (2,))]),
            "zero-d": np.array(2.5),
            "zero-d-object": np.array("scalar", dtype=object),
            "empty": np.empty((0, 3)),
            "empty-object": np.empty((0,), dtype=object),
            "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
            "big-endian": np.arange(6, dtype=">i8").reshape(2, 3),
            "datetime": np.array(["2024-01-01", "2024-06-30"], dtype="datetime64[D]"),
            "non-contiguous": np.arange(20)[::3],
        },
    }


BENIGN = ["scaler-pca-logreg", "random-forest", "column-transformer-onehot", "arrays"]


@pytest.mark.parametrize("name", BENIGN)
@pytest.mark.parametrize(("compress", "fmt"), COMPRESSION_PARAMS)
def test_benign_joblib_is_clean(
    models: dict[str, Any], name: str, compress: Any, fmt: str | None, tmp_path: Path
) -> None:
    path = tmp_path / f"{name}.joblib"
    joblib.dump(models[name], path, compress=compress)
    joblib.load(path)
    result = modelshield.scan(path)
    assert_clean(result)
    assert not [f for f in result.at_or_above(Severity.MEDIUM) if f.rule_id != "MS113"]
    assert result.complete
    _assert_chain(result, fmt)


class _NoTell(io.RawIOBase):
    """A write-only stream without ``tell``: joblib then writes arrays without alignment."""

    def __init__(self) -> None:
        self.data = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return self.data.write(b)

    def tell(self) -> int:
        raise io.UnsupportedOperation("not seekable")

    def seekable(self) -> bool:
        return False


def _dump_unaligned(value: Any) -> bytes:
    stream = _NoTell()
    joblib.dump(value, stream)
    return stream.data.getvalue()


@pytest.mark.parametrize("aligned", [True, False], ids=["aligned16", "unaligned"])
def test_alignment_padding_is_stepped_over(aligned: bool, tmp_path: Path) -> None:
    # Raw bytes that are, one by one, *not* benign opcodes: every kind of byte value.
    value: dict[str, Any] = {
        "all-bytes": np.arange(256, dtype=np.uint8),
        "floats": np.linspace(-1.0, 1.0, 33),
        "odd": np.arange(7, dtype=np.int16),
    }
    path = tmp_path / "arrays.joblib"
    if aligned:
        joblib.dump(value, path)
        data = path.read_bytes()
        assert b"\xff" in data  # padding bytes are written
    else:
        data = _dump_unaligned(value)
        path.write_bytes(data)
    assert (b"numpy_array_alignment_bytes\x94K\x10" in data) is aligned
    loaded = joblib.load(path)
    assert np.array_equal(loaded["all-bytes"], value["all-bytes"])
    result = modelshield.scan(path)
    assert_clean(result)
    assert not result.findings, describe(result)


# ------------------------------------------------------------------------------ malicious samples


def _payload_after(marker: Path) -> Any:
    return [np.arange(10), np.ones((2, 3)), Reduce(os.system, shell_touch(marker))]


def _payload_before(marker: Path) -> Any:
    return [Reduce(os.system, shell_touch(marker)), np.arange(10), np.ones((2, 3))]


def _payload_in_object_array(marker: Path) -> Any:
    return [np.arange(10), np.array([Reduce(os.system, shell_touch(marker))], dtype=object)]


def _payload_between_arrays(marker: Path) -> Any:
    return {
        "w": np.arange(1000, dtype=np.float32),
        "cfg": Reduce(os.system, shell_touch(marker)),
        "b": np.array(["x", "y"], dtype=object),
    }


PAYLOADS: dict[str, Callable[[Path], Any]] = {
    "after-arrays": _payload_after,
    "before-arrays": _payload_before,
    "in-object-array": _payload_in_object_array,
    "between-arrays": _payload_between_arrays,
}


@pytest.mark.parametrize("variant", sorted(PAYLOADS))
@pytest.mark.parametrize(("compress", "fmt"), COMPRESSION_PARAMS)
def test_malicious_joblib_is_flagged(
    variant: str, compress: Any, fmt: str | None, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "model.joblib"
    joblib.dump(PAYLOADS[variant](marker), path, compress=compress)
    assert not marker.exists()
    joblib.load(path)
    assert marker.exists(), "joblib.load did not run the payload: the sample is broken"

    result = modelshield.scan(path)
    hits = assert_flagged(result, "os.system")
    assert result.max_severity() is Severity.CRITICAL
    assert result.complete, describe(result)
    _assert_chain(result, fmt)
    if fmt is not None:
        assert all(h.location.member == f"<{fmt} content>" for h in hits)


def test_payload_in_object_array_reports_the_nested_offset(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "model.joblib"
    joblib.dump(_payload_in_object_array(marker), path)
    data = path.read_bytes()
    joblib.load(path)
    assert marker.exists()
    hits = assert_flagged(modelshield.scan(path), "os.system")
    # The nested pickle starts after the outer one's wrapper BUILD; the call lies inside it.
    inner_start = data.index(b"\x80\x05", 2)
    offset = hits[0].location.offset
    assert offset is not None and offset > inner_start


# ------------------------------------------------------------------------------ old ZF format


def _zf(raw: bytes) -> bytes:
    """joblib < 0.10's ``ZF`` file: b'ZF' + hex length padded to 19 characters + zlib data."""
    return b"ZF" + hex(len(raw)).encode().ljust(19) + zlib.compress(raw)


@pytest.mark.filterwarnings("ignore:The file .* joblib version less than 0.10")
@pytest.mark.parametrize("protocol", [2, 4])
def test_old_zf_format_payload_runs_and_is_flagged(protocol: int, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "old.pkl"
    path.write_bytes(_zf(pickle.dumps(Reduce(os.system, shell_touch(marker)), protocol=protocol)))
    # joblib 1.x still detects the ZF prefix and reads it with numpy_pickle_compat.
    joblib.load(path)
    assert marker.exists()

    result = modelshield.scan(path)
    hits = assert_flagged(result, "os.system")
    assert _formats(result) == ["joblib-zf", "pickle"]
    assert hits[0].location.member == "<joblib-zf content>"


@pytest.mark.filterwarnings("ignore:The file .* joblib version less than 0.10")
def test_old_zf_format_benign_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "old.pkl"
    path.write_bytes(_zf(pickle.dumps({"coef": [0.5, 1.5], "classes": ("a", "b")}, protocol=2)))
    assert joblib.load(path) == {"coef": [0.5, 1.5], "classes": ("a", "b")}
    result = modelshield.scan(path)
    assert_clean(result)
    assert _formats(result) == ["joblib-zf", "pickle"]


# ------------------------------------------------ a payload only pickle.load sees (array bytes)

_PLAIN_NOTE = "if read with pickle.load instead of joblib.load"


def _hidden_in_array_bytes(marker: Path) -> bytes:
    """An uncompressed, unaligned joblib file whose uint8 array bytes are pickle opcodes:
    ``os.system(...)`` then POP, so that plain pickle.load carries on with joblib's stream."""
    opcodes = asm(0).call("os", "system", shell_touch(marker)).pop().bytes()
    return _dump_unaligned([np.frombuffer(opcodes, dtype=np.uint8), "tail"])


def _hidden_in_alignment_padding(marker: Path) -> bytes:
    """An aligned joblib file whose padding-length byte is EMPTY_DICT (``}``: 125 bytes of
    padding) and whose padding is POP + ``os.system(...)`` + POP; the array bytes are NONE/POP
    pairs."""
    filler = b"N0" * 8
    buf = io.BytesIO()
    joblib.dump([np.frombuffer(filler, dtype=np.uint8), "tail"], buf)
    data = buf.getvalue()
    at = data.index(filler)
    pad_len = len(data[:at]) - len(data[:at].rstrip(b"\xff"))  # b"\xff" padding, then the array
    pad_at = at - pad_len - 1
    assert data[pad_at] == pad_len  # the padding-length byte
    cmd = shell_touch(marker)
    body = b"0" + asm(0).call("os", "system", cmd).pop().bytes()
    assert len(body) <= ord("}")
    cmd += " " * (ord("}") - len(body))  # the shell ignores trailing blanks
    body = b"0" + asm(0).call("os", "system", cmd).pop().bytes()
    assert len(body) == ord("}")
    return data[:pad_at] + b"}" + body + data[at:]


HIDDEN: dict[str, Callable[[Path], bytes]] = {
    "array-bytes": _hidden_in_array_bytes,
    "alignment-padding": _hidden_in_alignment_padding,
}


@pytest.mark.parametrize("where", sorted(HIDDEN))
def test_payload_only_plain_pickle_load_runs(where: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "model.joblib"
    data = HIDDEN[where](marker)
    path.write_bytes(data)

    loaded = joblib.load(path)  # joblib reads the opcodes as array data: nothing runs
    assert loaded[1] == "tail"
    assert not marker.exists()
    pickle.loads(data)  # the same file read with pickle.load runs the payload
    assert marker.exists(), "pickle.load did not run the hidden payload: the sample is broken"

    result = modelshield.scan(path)
    hits = assert_flagged(result, "os.system")
    assert all(_PLAIN_NOTE in h.message for h in hits), describe(result)
    assert result.complete


def test_clean_joblib_has_no_plain_pickle_findings(models: dict[str, Any], tmp_path: Path) -> None:
    """Array bytes that are garbage as opcodes must not produce 'pickle.load' findings."""
    path = tmp_path / "m.joblib"
    joblib.dump(models["arrays"], path)
    result = modelshield.scan(path)
    assert not [f for f in result.findings if _PLAIN_NOTE in f.message], describe(result)
