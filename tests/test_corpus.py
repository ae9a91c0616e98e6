"""Opt-in false-positive and coverage test over the corpus of real model files.

Build the corpus with ``shared/corpus/build_real_corpus.sh [DIR]`` (default ``/tmp/real_models``),
then run::

    MODELSHIELD_CORPUS=/tmp/real_models pytest -m corpus tests/test_corpus.py -s

Every file in the corpus is benign. For every file of the manifest (one test each, named by the
file's path):

* no finding at or above HIGH, no analyser crash (MS112), no scan error;
* for every format whose containers this version analyses (pickles, PyTorch zip and legacy
  checkpoints, TorchScript, joblib plain and compressed -- gzip, bz2, xz, raw LZMA, zlib, LZ4,
  joblib's ``ZF`` format --, ``.npy``/``.npz`` including object arrays, zip, tar, and the plain
  data files beside them): full coverage, i.e. every coverage entry of the file, archive members
  included, is ``scanned`` or ``skipped``; and the file is recognised as what its loader reads
  (e.g. a zlib-compressed joblib pickle is a ``zlib`` stream whose content is a ``pickle``, not
  opaque binary data).

GGUF, HDF5/Keras, ONNX, TFLite and TF SavedModel/protobuf files are analysed by a later version:
for them only the first point applies (they may be ``inconclusive`` or plain binary data).
"""

from __future__ import annotations

import collections
import csv
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import modelshield
from modelshield import Coverage, CoverageStatus, Finding, ScanResult, Severity

pytestmark = pytest.mark.corpus

_ENV = "MODELSHIELD_CORPUS"

_DEFERRED_MAGICS = frozenset({"gguf", "hdf5", "tflite", "protobuf"})
"""Manifest ``magic`` (format sniffed from content) of formats analysed by a later issue."""

_DEFERRED_KINDS = frozenset(
    {"gguf", "hdf5", "keras", "onnx", "tflite", "tf-protobuf", "tf-variables", "coreml"}
)
"""Manifest ``kind`` (from the extension / location) of the same formats: TF SavedModel
``variables.*`` files have no magic of their own."""

_COMPRESSION = {"gzip": "gzip", "bz2": "bzip2", "xz": "xz", "lzma": "lzma", "zlib": "zlib"}
"""Manifest prefix (``gzip>pickle-p3``) -> modelshield's coverage format for the stream."""

_FULL = (CoverageStatus.SCANNED, CoverageStatus.SKIPPED)


@dataclass(frozen=True)
class Entry:
    path: str
    """Relative to the corpus directory."""
    size: int
    kind: str
    source: str
    magic: str

    @property
    def deferred(self) -> bool:
        """A format of the later issue (GGUF, HDF5/Keras, ONNX, TFLite, TF SavedModel)."""
        return self.magic in _DEFERRED_MAGICS or self.kind in _DEFERRED_KINDS

    def expected(self) -> tuple[str | None, str | None]:
        """(top-level coverage format, format some member must have), None where not pinned."""
        m = self.magic
        if m.startswith("pickle-") or m == "pytorch-legacy-pickle":
            return "pickle", None
        if ">" in m:
            outer, inner = m.split(">", 1)
            return _COMPRESSION.get(outer), "pickle" if inner.startswith("pickle-") else None
        if m == "joblib-zfile" and self.kind == "numpy-npy+zlib":
            # joblib < 0.10 stores the bytes of non-object arrays in ``*.npy.z`` ZF files:
            # np.frombuffer reads them, nothing unpickles them.
            return "joblib-zf", None
        return {
            "pytorch-zip": ("pytorch", "pickle"),
            "torchscript-zip": ("torchscript", "pickle"),
            "npy": ("numpy", None),
            "npy-object": ("numpy-object", None),
            "npz": ("zip", "numpy"),
            "npz-object": ("zip", "numpy-object"),
            "joblib-zfile": ("joblib-zf", "pickle"),
            "lz4": ("lz4", "pickle"),
            "safetensors": ("safetensors", None),
        }.get(m, (None, None))


def _corpus_dir() -> Path | None:
    raw = os.environ.get(_ENV)
    if not raw:
        return None
    root = Path(raw)
    return root if (root / "MANIFEST.tsv").is_file() else None


def _manifest(root: Path) -> list[Entry]:
    with (root / "MANIFEST.tsv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [
        Entry(r["path"], int(r["size"]), r["kind"], r["source"], r["magic"])
        for r in rows
        if r.get("path")
    ]


def _entries() -> list[Entry]:
    root = _corpus_dir()
    return _manifest(root) if root is not None else []


_SKIP_REASON = f"set {_ENV} to a corpus built by shared/corpus/build_real_corpus.sh"


@pytest.fixture(scope="session")
def corpus_root() -> Path:
    root = _corpus_dir()
    if root is None:
        pytest.skip(_SKIP_REASON)
    return root


@cache
def _scan_file(path: str) -> ScanResult:
    return modelshield.scan(path)


def _describe(findings: list[Finding]) -> str:
    return "\n".join(
        f"  {f.rule_id} {f.severity.label}: {f.message}"
        f" [member {f.location.member!r}, offset {f.location.offset},"
        f" opcode {f.location.opcode}] evidence={f.evidence!r}"
        for f in findings
    )


def _describe_cov(entries: list[Coverage]) -> str:
    return "\n".join(
        f"  {c.format}: {c.status.value} [member {c.member!r}] {c.reason or ''}" for c in entries
    )


_KNOWN_GAPS: dict[str, str] = {}
"""Files a known analyser gap makes fail (strict xfail: the test says when it is fixed)."""


def _param(entry: Entry) -> object:
    gap = _KNOWN_GAPS.get(entry.path)
    marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
    return pytest.param(entry, id=entry.path, marks=marks)


_ENTRIES = _entries()
_PARAMS = [_param(e) for e in _ENTRIES] or [
    pytest.param(None, id="no-corpus", marks=pytest.mark.skip(reason=_SKIP_REASON))
]


@pytest.mark.parametrize("entry", _PARAMS)
def test_corpus_file(corpus_root: Path, entry: Entry) -> None:
    """Benign: nothing at/above HIGH. Container formats of this version: fully covered."""
    path = corpus_root / entry.path
    result = _scan_file(str(path))
    what = f"{entry.path} ({entry.magic}, {entry.kind}, from {entry.source})"
    assert not result.errors, f"{what}: scan errors {result.errors}"
    internal = [f for f in result.findings if f.rule_id == "MS112"]
    assert not internal, f"{what}: analyser crashed:\n{_describe(internal)}"
    high = list(result.at_or_above(Severity.HIGH))
    assert not high, f"{what}: benign file flagged:\n{_describe(high)}"
    if entry.deferred:
        return
    incomplete = [c for c in result.coverage if c.status not in _FULL]
    assert not incomplete, f"{what}: incomplete coverage:\n{_describe_cov(incomplete)}"
    top_fmt, member_fmt = entry.expected()
    top = [c for c in result.coverage if c.member is None]
    if top_fmt is not None:
        assert [c.format for c in top] == [top_fmt], (
            f"{what}: expected to be read as {top_fmt}:\n{_describe_cov(list(result.coverage))}"
        )
    if member_fmt is not None:
        formats = {c.format for c in result.coverage if c.member is not None}
        assert member_fmt in formats, (
            f"{what}: no member analysed as {member_fmt}:\n{_describe_cov(list(result.coverage))}"
        )


def test_corpus_summary(corpus_root: Path) -> None:
    """Scan the whole corpus directory at once (as a user would) and print the numbers."""
    entries = {e.path: e for e in _manifest(corpus_root)}
    result = modelshield.scan(corpus_root, jobs=0)
    root = str(corpus_root).rstrip("/") + "/"

    def rel(path: str) -> str:
        return path[len(root) :] if path.startswith(root) else path

    files = {rel(c.path) for c in result.coverage}
    top = collections.Counter(
        f"{c.format}:{c.status.value}" for c in result.coverage if c.member is None
    )
    members = collections.Counter(
        f"{c.format}:{c.status.value}" for c in result.coverage if c.member is not None
    )
    by_rule = collections.Counter(f"{f.rule_id}/{f.severity.label}" for f in result.findings)
    print(f"\ncorpus: {len(entries)} manifest files, {len(files)} files scanned in the directory")
    print(f"coverage by format/status (files): {dict(sorted(top.items()))}")
    print(f"coverage by format/status (members): {dict(sorted(members.items()))}")
    print(f"findings by rule/severity: {dict(sorted(by_rule.items()))}")
    assert not result.errors, result.errors
    assert not any(f.rule_id == "MS112" for f in result.findings)
    high = list(result.at_or_above(Severity.HIGH))
    assert not high, "benign files flagged at/above HIGH:\n" + "\n".join(
        f"{rel(f.location.path)}:\n{_describe([f])}" for f in high
    )
    incomplete = [
        c
        for c in result.coverage
        if c.status not in _FULL and not (rel(c.path) in entries and entries[rel(c.path)].deferred)
    ]
    unrecognised = [
        e.path
        for e in entries.values()
        if e.expected()[0] is not None
        and e.path not in _KNOWN_GAPS
        and [c.format for c in result.coverage if rel(c.path) == e.path and c.member is None]
        != [e.expected()[0]]
    ]
    print(f"files read as another format than their loader reads: {unrecognised}")
    assert not unrecognised
    assert not incomplete, "incomplete coverage outside the deferred formats:\n" + "\n".join(
        f"{rel(c.path)}: {_describe_cov([c])}" for c in incomplete
    )
