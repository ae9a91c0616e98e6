"""TFLite rules (MS410, MS411): custom operators listed, damaged containers inconclusive, real
models clean. Models are built by a tiny FlatBuffer writer below (no TensorFlow needed)."""

from __future__ import annotations

import csv
import io
import os
import pickle
import struct
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import modelshield
from modelshield import CoverageStatus, ScanResult, Severity
from modelshield.analysis import Analyzer, Blob, FileOutcome
from modelshield.checks import tflite
from modelshield.checks.context import Context
from modelshield.config import Config
from modelshield.formats.tflite_model import CUSTOM, TFLiteError, parse_tflite
from modelshield.pickle.machine import Limits


# ---------------------------------------------------------------------- a FlatBuffer writer
@dataclass
class Table:
    """Fields by index: ('u8'|'i8'|'i32'|'u32'|'u64', value), a Table, a Vec or a str."""

    fields: dict[int, object] = field(default_factory=dict)


@dataclass
class Vec:
    items: list[Table] | bytes


_SCALARS = {"u8": "<B", "i8": "<b", "i32": "<i", "u32": "<I", "u64": "<Q"}


def serialise(root: Table, ident: bytes = b"TFL3") -> bytes:
    """Lay out ``root`` and its children front to back (uoffsets only point forward)."""
    out = bytearray(8)
    out[4:8] = ident
    pending: list[tuple[int, object]] = [(0, root)]

    def align(n: int) -> None:
        out.extend(bytes(-len(out) % n))

    def emit(obj: object) -> int:
        if isinstance(obj, Table):
            layout: list[tuple[int, bytes, object | None]] = []
            pos = 4
            for index in sorted(obj.fields):
                value = obj.fields[index]
                if isinstance(value, tuple):
                    raw = struct.pack(_SCALARS[value[0]], value[1])
                    layout.append((index, raw, None))
                else:
                    layout.append((index, bytes(4), value))
            nfields = max(obj.fields, default=-1) + 1
            offsets = [0] * nfields
            inline = bytearray()
            refs: list[tuple[int, object]] = []
            for index, raw, ref in layout:
                offsets[index] = pos + len(inline)
                if ref is not None:
                    refs.append((pos + len(inline), ref))
                inline.extend(raw)
            align(2)
            vt = len(out)
            out.extend(struct.pack("<HH", 4 + 2 * nfields, 4 + len(inline)))
            out.extend(struct.pack(f"<{nfields}H", *offsets))
            align(4)
            tpos = len(out)
            out.extend(struct.pack("<i", tpos - vt))
            out.extend(inline)
            pending.extend((tpos + at, ref) for at, ref in refs)
            return tpos
        align(4)
        pos = len(out)
        if isinstance(obj, str):
            raw = obj.encode()
            out.extend(struct.pack("<I", len(raw)) + raw + b"\x00")
        elif isinstance(obj, Vec) and isinstance(obj.items, bytes):
            out.extend(struct.pack("<I", len(obj.items)) + obj.items)
        elif isinstance(obj, Vec):
            out.extend(struct.pack("<I", len(obj.items)))
            for item in obj.items:
                pending.append((len(out), item))
                out.extend(bytes(4))
        else:
            raise TypeError(obj)
        return pos

    while pending:
        slot, obj = pending.pop(0)
        target = emit(obj)
        struct.pack_into("<I", out, slot, target - slot)
    return bytes(out)


def opcode(builtin: int, custom: str | None = None) -> Table:
    t = Table({0: ("i8", min(builtin, 127)), 2: ("i32", 1), 3: ("i32", builtin)})
    if custom is not None:
        t.fields[1] = custom
    return t


def model(
    codes: list[Table],
    op_indices: list[int] | None = None,
    buffers: int = 2,
    version: int = 3,
) -> Table:
    ops = [Table({0: ("u32", i)}) for i in (op_indices or list(range(len(codes))))]
    tensors = [Table({2: ("u32", 1)}), Table({2: ("u32", 0)})]
    subgraph = Table({0: Vec(tensors), 3: Vec(ops), 4: "main"})
    bufs = [Table()] + [Table({0: Vec(bytes(16))}) for _ in range(buffers - 1)]
    meta = Table({0: "min_runtime_version", 1: ("u32", 0)})
    return Table(
        {
            0: ("u32", version),
            1: Vec(codes),
            2: Vec([subgraph]),
            3: "modelshield test",
            4: Vec(bufs),
            6: Vec([meta]),
        }
    )


ADD, CONV_2D = 0, 3


def _scan(tmp_path: Path, data: bytes, name: str = "m.tflite") -> ScanResult:
    path = tmp_path / name
    path.write_bytes(data)
    return modelshield.scan(path)


def _top(result: ScanResult) -> tuple[str, CoverageStatus]:
    cov = next(c for c in result.coverage if c.member is None)
    return cov.format, cov.status


# ---------------------------------------------------------------------- the reader
def test_reader_roundtrip() -> None:
    data = serialise(model([opcode(CONV_2D), opcode(CUSTOM, "MyOp")], [0, 1, 0]))
    m = parse_tflite(data)
    assert m.version == 3 and m.subgraphs == 1 and m.operators == 3 and m.buffers == 2
    assert [(c.builtin_code, c.custom_code) for c in m.operator_codes] == [
        (CONV_2D, None),
        (CUSTOM, "MyOp"),
    ]
    assert m.description == "modelshield test" and m.metadata == ["min_runtime_version"]


def test_builtin_code_over_127() -> None:
    """Operators past 127 keep 127 (PLACEHOLDER) in deprecated_builtin_code."""
    m = parse_tflite(serialise(model([opcode(150)])))
    assert m.operator_codes[0].builtin_code == 150 and not m.custom_ops


# ---------------------------------------------------------------------- MS410
def test_custom_ops_listed(tmp_path: Path) -> None:
    codes = [
        opcode(ADD),
        opcode(CUSTOM, "TFLite_Detection_PostProcess"),
        opcode(CUSTOM, "FlexRFFT"),
    ]
    result = _scan(tmp_path, serialise(model(codes)))
    hits = [f for f in result.findings if f.rule_id == "MS410"]
    assert len(hits) == 1 and hits[0].severity is Severity.INFO
    assert "TFLite_Detection_PostProcess" in hits[0].message and "FlexRFFT" in hits[0].message
    assert "Flex" in hits[0].message
    assert _top(result) == ("tflite", CoverageStatus.SCANNED)
    assert result.is_clean()


def test_builtin_only_clean(tmp_path: Path) -> None:
    result = _scan(tmp_path, serialise(model([opcode(CONV_2D), opcode(ADD)])), "model.bin")
    assert not result.findings
    assert _top(result) == ("tflite", CoverageStatus.SCANNED)


# ---------------------------------------------------------------------- MS411
def _invalid(tmp_path: Path, data: bytes) -> ScanResult:
    result = _scan(tmp_path, data)
    assert [f.rule_id for f in result.findings] == ["MS411"], result.findings
    assert _top(result) == ("tflite", CoverageStatus.INCONCLUSIVE)
    assert not result.is_clean()
    return result


def test_root_offset_out_of_bounds(tmp_path: Path) -> None:
    data = bytearray(serialise(model([opcode(ADD)])))
    struct.pack_into("<I", data, 0, len(data) + 100)
    _invalid(tmp_path, bytes(data))


def test_truncated(tmp_path: Path) -> None:
    data = serialise(model([opcode(ADD), opcode(CUSTOM, "X")]))
    _invalid(tmp_path, data[: len(data) // 2])


def test_vector_past_end(tmp_path: Path) -> None:
    data = bytearray(serialise(model([opcode(ADD)])))
    m = parse_tflite(bytes(data))
    assert m.buffers == 2
    # Find the buffers vector's length (2, followed by two offsets) and inflate it.
    for pos in range(8, len(data) - 4, 4):
        if struct.unpack_from("<I", data, pos)[0] == 2 and pos > len(data) // 3:
            struct.pack_into("<I", data, pos, 0x0FFFFFFF)
            try:
                parse_tflite(bytes(data))
            except TFLiteError:
                break
            struct.pack_into("<I", data, pos, 2)
    else:
        pytest.fail("no vector length found to corrupt")
    _invalid(tmp_path, bytes(data))


def test_opcode_index_out_of_range(tmp_path: Path) -> None:
    _invalid(tmp_path, serialise(model([opcode(ADD)], op_indices=[0, 5])))


def test_custom_without_name(tmp_path: Path) -> None:
    _invalid(tmp_path, serialise(model([opcode(CUSTOM)])))


def test_unterminated_string(tmp_path: Path) -> None:
    data = bytearray(serialise(model([opcode(CUSTOM, "AAAA")])))
    at = data.index(b"AAAA\x00")
    data[at + 4] = 0x41
    _invalid(tmp_path, bytes(data))


def test_large_buffer_outside_file(tmp_path: Path) -> None:
    m = model([opcode(ADD)])
    bufs = m.fields[4]
    assert isinstance(bufs, Vec) and isinstance(bufs.items, list)
    bufs.items.append(Table({1: ("u64", 1 << 40), 2: ("u64", 64)}))
    _invalid(tmp_path, serialise(m))


def test_wrong_schema_version_low(tmp_path: Path) -> None:
    result = _scan(tmp_path, serialise(model([opcode(ADD)], version=2)))
    assert [(f.rule_id, f.severity) for f in result.findings] == [("MS411", Severity.LOW)]


def test_fuzzed_never_crash(tmp_path: Path) -> None:
    import random

    data = serialise(model([opcode(CONV_2D), opcode(CUSTOM, "Op")], [0, 1]))
    rng = random.Random(7)  # noqa: S311 (reproducible fuzzing)
    for i in range(300):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            mutated[rng.randrange(8, len(mutated))] = rng.randrange(256)
        result = _scan(tmp_path, bytes(mutated), f"f{i}.tflite")
        assert not any(f.rule_id == "MS112" for f in result.findings)
        assert not result.errors


# ---------------------------------------------------------------------- appended zip
def _with_zip(members: dict[str, bytes]) -> bytes:
    base = serialise(model([opcode(ADD)]))
    raw = io.BytesIO()
    raw.write(base)
    with zipfile.ZipFile(raw, "a") as zf:  # what the TFLite metadata writer does
        for name, content in members.items():
            zf.writestr(name, content)
    return raw.getvalue()


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def _check_directly(data: bytes) -> FileOutcome:
    """Run the TFLite check on a file (the analyser may take an appended zip first)."""
    out = FileOutcome()
    analyzer = Analyzer(Config(), Limits())
    blob = Blob("m.tflite", None, data, 0, len(data), 0, "m.tflite", None)
    tflite.check(Context(analyzer, blob, out))
    return out


def test_appended_zip_members_analysed() -> None:
    data = _with_zip({"labels.txt": b"a\nb\n", "evil.pkl": pickle.dumps(_Evil())})
    assert parse_tflite(data).operators == 1  # the flatbuffer still reads
    out = _check_directly(data)
    assert any(f.rule_id == "MS101" and f.location.member == "evil.pkl" for f in out.findings)
    top = [c for c in out.coverage if c.member is None]
    assert top and top[0].format == "tflite" and "appended zip" in (top[0].reason or "")


def test_appended_zip_pickle_found_by_scan(tmp_path: Path) -> None:
    """Whichever reading the analyser takes first, the pickle in the zip is found."""
    data = _with_zip({"evil.pkl": pickle.dumps(_Evil())})
    result = _scan(tmp_path, data)
    assert any(f.rule_id == "MS101" for f in result.findings)


# ---------------------------------------------------------------------- real corpus
_CORPUS = os.environ.get("MODELSHIELD_CORPUS")


@pytest.mark.corpus
@pytest.mark.skipif(not _CORPUS, reason="set MODELSHIELD_CORPUS to the real-model corpus")
def test_corpus_tflite_clean() -> None:
    assert _CORPUS is not None
    root = Path(_CORPUS)
    with (root / "MANIFEST.tsv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["kind"] == "tflite"]
    assert rows
    custom: dict[str, str] = {}
    for row in rows:
        path = root / row["path"]
        result = modelshield.scan(path)
        assert not result.at_or_above(Severity.LOW), (row["path"], result.findings)
        assert result.complete, (row["path"], result.coverage)
        # Every flatbuffer validates, including those the analyser reads as a zip first.
        parse_tflite(path.read_bytes())
        out = _check_directly(path.read_bytes())
        assert all(f.rule_id == "MS410" for f in out.findings), (row["path"], out.findings)
        assert [c.status for c in out.coverage if c.member is None] == [CoverageStatus.SCANNED]
        for f in out.findings:
            custom[row["path"]] = f.evidence or ""
    print(f"\nTFLite corpus: {len(rows)} files; custom operators: {custom}", file=sys.stderr)
