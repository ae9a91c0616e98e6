"""Polyglots: one file, several loadable readings. Each is a finding and every reading is analysed.

* a pickle from byte 0 that is also a zip archive found from its end (MS200);
* a zip archive with data prepended to it (MS201 prepended-data);
* a name whose extension promises a safe format while the content is a pickle (MS205).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import sys
import zipfile
from pathlib import Path

import pytest

from modelshield import CoverageStatus, ScanResult, Severity, scan
from modelshield.findings import Finding

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pickle"))
from pickle_recipes import (  # type: ignore[import-not-found, unused-ignore]
    Reduce,
    describe,
    shell_touch,
)

BENIGN = pickle.dumps({"epoch": 3, "weights": [0.5, -1.25]}, protocol=2)


def zip_bytes(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def payload(tmp_path: Path) -> tuple[bytes, Path]:
    """A malicious pickle (``os.system('touch marker')``), proven to run with pickle.loads."""
    marker = tmp_path / "pwned"
    data = pickle.dumps(Reduce(os.system, shell_touch(marker)), protocol=2)
    pickle.loads(data)
    assert marker.exists(), "the payload did not run: the sample proves nothing"
    marker.unlink()
    return data, marker


def by_rule(result: ScanResult, rule_id: str) -> list[Finding]:
    return [f for f in result.findings if f.rule_id == rule_id]


def code_execution(result: ScanResult) -> list[Finding]:
    return [f for f in result.at_or_above(Severity.HIGH) if f.rule_id == "MS101"]


# ---------------------------------------------------------------------------------- pickle + zip


def test_malicious_pickle_with_benign_zip_appended(
    tmp_path: Path, payload: tuple[bytes, Path]
) -> None:
    data, marker = payload
    blob = data + zip_bytes([("readme.txt", b"just a model card")])
    path = tmp_path / "model.bin"
    path.write_bytes(blob)
    # Both readings work: zip tools list a harmless member; pickle.loads runs the payload.
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["readme.txt"]
    pickle.loads(blob)
    assert marker.exists()

    result = scan(path)

    poly = by_rule(result, "MS200")
    assert len(poly) == 1 and poly[0].severity >= Severity.HIGH
    hits = code_execution(result)
    assert hits, describe(result)
    assert hits[0].location.member is None  # the pickle reading, from byte 0
    assert hits[0].location.offset is not None and hits[0].location.offset < len(data)
    # The zip reading was analysed too: its member has a coverage entry.
    assert any(c.member == "readme.txt" and c.format == "text" for c in result.coverage)
    assert not result.is_clean()


def test_benign_pickle_with_malicious_zip_appended(
    tmp_path: Path, payload: tuple[bytes, Path]
) -> None:
    data, marker = payload
    blob = BENIGN + zip_bytes([("archive/data.pkl", data), ("archive/version", b"3\n")])
    path = tmp_path / "model.pt"
    path.write_bytes(blob)
    # pickle.loads sees a harmless dict; a zip reader finds a PyTorch record that runs the payload.
    assert pickle.loads(blob) == {"epoch": 3, "weights": [0.5, -1.25]}
    assert not marker.exists()
    with zipfile.ZipFile(path) as zf:
        pickle.loads(zf.read("archive/data.pkl"))
    assert marker.exists()

    result = scan(path)

    assert by_rule(result, "MS200"), describe(result)
    hits = code_execution(result)
    assert [f.location.member for f in hits] == ["archive/data.pkl"]
    assert {c.member for c in result.coverage} >= {None, "archive/data.pkl"}
    assert not result.is_clean()


def test_benign_pickle_without_zip_is_not_a_polyglot(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(BENIGN)
    result = scan(path)
    assert not result.findings
    assert result.is_clean()


@pytest.mark.parametrize("wrapper", ["zip", "gzip"])
def test_polyglot_inside_a_container_is_analysed_both_ways(
    tmp_path: Path, payload: tuple[bytes, Path], wrapper: str
) -> None:
    poly = BENIGN + zip_bytes([("archive/data.pkl", payload[0])])
    if wrapper == "zip":
        path = tmp_path / "release.zip"
        path.write_bytes(zip_bytes([("model.pt", poly)]))  # extract, then torch.load(model.pt)
    else:
        path = tmp_path / "model.pt.gz"
        path.write_bytes(gzip.compress(poly))

    result = scan(path)

    assert code_execution(result), describe(result)
    assert by_rule(result, "MS200")


# ---------------------------------------------------------------------------------- prepended


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_with_prepended_junk(tmp_path: Path, payload: tuple[bytes, Path], method: int) -> None:
    junk = b"#!/bin/sh\necho self-extracting\nexit 0\n" + bytes(range(256)) * 2
    path = tmp_path / "model.zip"
    path.write_bytes(junk + zip_bytes([("model.pkl", payload[0]), ("notes.txt", b"hi")], method))
    with zipfile.ZipFile(path) as zf:  # Python's zipfile copes with the shifted offsets
        assert zf.read("model.pkl") == payload[0]

    result = scan(path)

    inconsistent = by_rule(result, "MS201")
    assert any("prepended-data" in f.message and str(len(junk)) in f.message for f in inconsistent)
    hits = code_execution(result)
    assert [f.location.member for f in hits] == ["model.pkl"]
    members = {c.member: c for c in result.coverage}
    assert members["model.pkl"].format == "pickle"
    assert members["notes.txt"].format == "text"
    assert all(c.status is CoverageStatus.SCANNED for c in result.coverage)


def test_zip_with_prepended_benign_data_is_reported_not_flagged_high(tmp_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"\x00" * 64 + zip_bytes([("config.json", b'{"a": 1}')]))
    result = scan(path)
    assert [f.rule_id for f in result.findings] == ["MS201"]
    assert result.findings[0].severity == Severity.MEDIUM
    assert result.is_clean()  # medium is below the default threshold


# ---------------------------------------------------------------------------------- disguised


@pytest.mark.parametrize("ext", [".safetensors", ".json", ".npy", ".onnx", ".txt", ".png"])
def test_pickle_named_like_a_safe_format_is_disguised(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"weights{ext}"
    path.write_bytes(BENIGN)

    result = scan(path)

    disguised = by_rule(result, "MS205")
    assert len(disguised) == 1
    assert disguised[0].severity == Severity.MEDIUM
    assert ext in disguised[0].message
    assert disguised[0].evidence == path.name
    assert [c.format for c in result.coverage] == ["pickle"]


def test_malicious_pickle_named_safetensors_is_disguised_and_flagged(
    tmp_path: Path, payload: tuple[bytes, Path]
) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(payload[0])
    result = scan(path)
    assert by_rule(result, "MS205")
    assert code_execution(result)


def test_pytorch_zip_named_safetensors_is_disguised(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(zip_bytes([("archive/data.pkl", BENIGN), ("archive/data/0", bytes(16))]))
    result = scan(path)
    assert [f.rule_id for f in result.findings] == ["MS205"]
    assert "PyTorch" in result.findings[0].message


@pytest.mark.parametrize("name", ["model.pkl", "model.pickle", "pytorch_model.bin", "model.pt"])
def test_pickle_with_a_pickle_name_is_not_disguised(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BENIGN)
    result = scan(path)
    assert not by_rule(result, "MS205")
    assert result.is_clean(Severity.INFO)


def test_disguise_is_judged_on_the_file_name_only(tmp_path: Path) -> None:
    # A member named .json inside a .zip is not reported as disguised: people see the archive.
    path = tmp_path / "bundle.zip"
    path.write_bytes(zip_bytes([("config.json", BENIGN)]))
    result = scan(path)
    assert not by_rule(result, "MS205")
