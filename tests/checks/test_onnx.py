"""ONNX rules (MS400-MS403): malicious samples proven against the real loader, benign models
from ``onnx.helper`` scanning clean and complete, damaged protobuf, memory on large models.

The scanner never imports ``onnx``; these tests use it to build models and, for the proofs, to
load them. onnx 1.16+ refuses '..' and absolute locations and 1.21+ refuses symbolic links, so
the proof that a loader reads the outside file runs on the installed onnx when it is vulnerable
and, with ``MODELSHIELD_LEGACY_ONNX_PYTHON`` set to a Python with an older onnx (e.g. 1.15.0),
on that loader; on a patched onnx the test checks that it refuses exactly these models.
"""

from __future__ import annotations

import collections
import csv
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import onnx
import onnx_recipes as recipes
import pytest
from onnx import numpy_helper

import modelshield
from modelshield import CoverageStatus, ScanResult, Severity
from modelshield.checks import onnx as onnx_check
from modelshield.checks.context import Probe
from modelshield.formats.onnx_model import looks_like_model, parse_model

SECRET = b"TOP-SECRET-BYTES"


def _rules(result: ScanResult) -> list[str]:
    return [f.rule_id for f in result.findings]


def _top(result: ScanResult) -> tuple[str, CoverageStatus]:
    cov = next(c for c in result.coverage if c.member is None)
    return cov.format, cov.status


def _clean(result: ScanResult) -> None:
    assert not result.findings, [(f.rule_id, f.message) for f in result.findings]
    assert _top(result) == ("onnx", CoverageStatus.SCANNED)
    assert result.complete


# ---------------------------------------------------------------------- proof on the loader
def _onnx_reads(model: Path, python: str | None = None) -> bytes | str:
    """Load ``model`` with onnx (external data included): the initializer's bytes, or the
    loader's error message when it refuses."""
    script = textwrap.dedent(
        """
        import sys, onnx
        from onnx import numpy_helper
        try:
            m = onnx.load(sys.argv[1])
        except Exception as exc:
            sys.stdout.write("REFUSED " + type(exc).__name__ + ": " + str(exc))
        else:
            sys.stdout.buffer.write(numpy_helper.to_array(m.graph.initializer[0]).tobytes())
        """
    )
    if python is None:
        try:
            m = onnx.load(str(model))
        except Exception as exc:  # onnx raises ValidationError / ValueError / OSError
            return f"REFUSED {type(exc).__name__}: {exc}"
        return bytes(numpy_helper.to_array(m.graph.initializer[0]).tobytes())
    out = subprocess.run(
        [python, "-c", script, str(model)], capture_output=True, check=True, timeout=60
    ).stdout
    return out.decode() if out.startswith(b"REFUSED") else out


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp/models/`` (the model's directory) and ``tmp/secret.bin`` outside it."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)
    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    return models, secret


def _malicious(models: Path, secret: Path, kind: str) -> Path:
    model = models / f"{kind}.onnx"
    if kind == "dotdot":
        return recipes.external_ref(model, "../secret.bin")
    if kind == "nested-dotdot":  # CVE-2024-27318: bypasses the leading-'..' check of 1.13
        return recipes.external_ref(model, "sub/../../secret.bin")
    if kind == "absolute":
        return recipes.external_ref(model, str(secret))
    if kind == "symlink":  # CVE-2026-27489
        (models / "weights.bin").symlink_to(secret)
        return recipes.external_ref(model, "weights.bin")
    raise AssertionError(kind)


MALICIOUS = ["dotdot", "nested-dotdot", "absolute", "symlink"]


@pytest.mark.parametrize("kind", MALICIOUS)
def test_traversal_flagged(layout: tuple[Path, Path], kind: str) -> None:
    model = _malicious(*layout, kind)
    result = modelshield.scan(model)
    hits = [f for f in result.findings if f.rule_id == "MS400"]
    assert hits and all(f.severity is Severity.HIGH for f in hits), result.findings
    assert hits[0].cwe == 22
    assert hits[0].location.offset is not None


@pytest.mark.parametrize("kind", MALICIOUS)
def test_installed_onnx_reads_or_refuses(layout: tuple[Path, Path], kind: str) -> None:
    """The installed loader either reads the outside file (the finding is the exploit) or, if
    patched, refuses this very model; it never loads it as something else."""
    got = _onnx_reads(_malicious(*layout, kind))
    if isinstance(got, bytes):
        assert got == SECRET
    else:
        assert got.startswith("REFUSED")
        assert any(w in got for w in ("outside", "absolute", "symbolic link", "relative")), got


_LEGACY = os.environ.get("MODELSHIELD_LEGACY_ONNX_PYTHON")


@pytest.mark.skipif(
    not _LEGACY, reason="set MODELSHIELD_LEGACY_ONNX_PYTHON to a python with onnx<1.16"
)
@pytest.mark.parametrize("kind", ["nested-dotdot", "symlink"])
def test_legacy_onnx_reads_outside_file(layout: tuple[Path, Path], kind: str) -> None:
    """onnx 1.15 (CVE-2024-27318, CVE-2026-27489) reads the secret into the tensor."""
    assert _onnx_reads(_malicious(*layout, kind), _LEGACY) == SECRET


def test_escape_inside_constant_of_subgraph(tmp_path: Path) -> None:
    """Tensors in attributes of nodes in nested graphs are external-data tensors too."""
    model = recipes.external_in_constant(tmp_path / "m.onnx", "/etc/hostname")
    result = modelshield.scan(model)
    hits = [f for f in result.findings if f.rule_id == "MS400"]
    assert hits and "then" in (hits[0].evidence or "")


def test_shadowed_location_still_reported(tmp_path: Path) -> None:
    """Two 'location' entries: onnx uses the last; the first is still an escape attempt."""
    t = recipes.external_tensor("/etc/passwd", 16)
    extra = t.external_data.add()
    extra.key, extra.value = "location", "weights.bin"
    (tmp_path / "weights.bin").write_bytes(bytes(16))
    graph = onnx.helper.make_graph([], "g", [], [], [t])
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx.helper.make_model(graph, opset_imports=recipes.OPSET).SerializeToString())
    assert "MS400" in _rules(modelshield.scan(path))


def test_dormant_location_is_low(tmp_path: Path) -> None:
    """external_data without data_location=EXTERNAL is ignored by loaders: reported low."""
    t = recipes.external_tensor("../x", 16)
    t.data_location = onnx.TensorProto.DEFAULT
    graph = onnx.helper.make_graph([], "g", [], [], [t])
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx.helper.make_model(graph, opset_imports=recipes.OPSET).SerializeToString())
    hits = [f for f in modelshield.scan(path).findings if f.rule_id == "MS400"]
    assert [f.severity for f in hits] == [Severity.LOW]


def test_windows_paths_flagged(tmp_path: Path) -> None:
    for loc in ("..\\..\\secret", "C:\\Windows\\win.ini"):
        path = recipes.external_ref(tmp_path / "m.onnx", loc)
        assert "MS400" in _rules(modelshield.scan(path)), loc


def test_inside_archive_checked_syntactically(tmp_path: Path) -> None:
    import zipfile

    model = recipes.external_ref(tmp_path / "m.onnx", "../../secret.bin")
    arc = tmp_path / "bundle.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.write(model, "models/m.onnx")
    result = modelshield.scan(arc)
    hits = [f for f in result.findings if f.rule_id == "MS400"]
    assert hits and hits[0].location.member == "models/m.onnx"


# ---------------------------------------------------------------------- unresolved data
def test_missing_external_file(tmp_path: Path) -> None:
    result = modelshield.scan(recipes.external_ref(tmp_path / "m.onnx", "weights.bin"))
    assert _rules(result) == ["MS403"]
    assert "does not exist" in result.findings[0].message


def test_offset_beyond_file(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(bytes(16))
    path = recipes.external_ref(tmp_path / "m.onnx", "weights.bin", offset="4096", length="16")
    result = modelshield.scan(path)
    assert _rules(result) == ["MS403"]
    assert "beyond the end" in result.findings[0].message


def test_bad_number(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(bytes(16))
    path = recipes.external_ref(tmp_path / "m.onnx", "weights.bin", length="-1")
    assert _rules(modelshield.scan(path)) == ["MS403"]


def test_hard_link_reported_medium(tmp_path: Path) -> None:
    """GHSA-cmw6-hcpp-c6jp: a hard link looks like a plain file inside the directory."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(bytes(16))
    models = tmp_path / "models"
    models.mkdir()
    os.link(outside, models / "weights.bin")
    result = modelshield.scan(recipes.external_ref(models / "m.onnx", "weights.bin"))
    hits = [f for f in result.findings if f.rule_id == "MS400"]
    assert [f.severity for f in hits] == [Severity.MEDIUM]


# ---------------------------------------------------------------------- custom domains
def test_custom_domain_medium(tmp_path: Path) -> None:
    result = modelshield.scan(recipes.custom_domain(tmp_path / "m.onnx", "ai.onnx.contrib"))
    hits = [f for f in result.findings if f.rule_id == "MS401"]
    assert [f.severity for f in hits] == [Severity.MEDIUM]
    assert "ai.onnx.contrib" in hits[0].message and "EvilOp" in hits[0].message
    assert _top(result) == ("onnx", CoverageStatus.SCANNED)


def test_custom_domain_in_loop_body(tmp_path: Path) -> None:
    path = recipes.custom_domain(tmp_path / "m.onnx", "evil.ops", nested=True)
    hits = [f for f in modelshield.scan(path).findings if f.rule_id == "MS401"]
    assert hits and "body" in (hits[0].evidence or "")


def test_onnxruntime_contrib_domain_low(tmp_path: Path) -> None:
    path = recipes.custom_domain(tmp_path / "m.onnx", "com.microsoft", "FusedGemm")
    hits = [f for f in modelshield.scan(path).findings if f.rule_id == "MS401"]
    assert [f.severity for f in hits] == [Severity.LOW]


def test_local_function_domain_not_reported(tmp_path: Path) -> None:
    _clean(modelshield.scan(recipes.with_local_function(tmp_path / "m.onnx")))


# ---------------------------------------------------------------------- benign
def test_benign_conv_relu(tmp_path: Path) -> None:
    _clean(modelshield.scan(recipes.conv_relu(tmp_path / "m.onnx")))


def test_benign_if_subgraphs(tmp_path: Path) -> None:
    path = recipes.matmul_if(tmp_path / "m.onnx")
    result = modelshield.scan(path)
    _clean(result)
    model = parse_model(path.read_bytes())
    assert model.graphs == 3 and model.tensors == 3
    assert set(model.ops) == {("", "MatMul"), ("", "If"), ("", "Add")}


def test_benign_external_data_beside_model(tmp_path: Path) -> None:
    path = recipes.saved_with_external_data(tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx.data").exists()
    assert onnx.load(str(path)).graph.initializer[0].raw_data  # the loader accepts it
    _clean(modelshield.scan(path))


def test_benign_external_data_through_model_link(tmp_path: Path) -> None:
    """Hugging Face cache layout: the model and its data are links into a blobs directory."""
    blobs = tmp_path / "blobs"
    real = recipes.saved_with_external_data(blobs / "m.onnx")
    snap = tmp_path / "snapshots" / "rev"
    snap.mkdir(parents=True)
    (snap / "m.onnx").symlink_to(real)
    (snap / "m.onnx.data").symlink_to(blobs / "m.onnx.data")
    _clean(modelshield.scan(snap / "m.onnx"))


# ---------------------------------------------------------------------- sniffing, damage
def test_sniffed_without_extension(tmp_path: Path) -> None:
    path = recipes.conv_relu(tmp_path / "model.bin")
    _clean(modelshield.scan(path))


def test_not_claimed_random_or_graphdef(tmp_path: Path) -> None:
    # TF GraphDef starts with node (field 1, LEN); SavedModel with a version varint then a
    # huge MetaGraphDef (field 2, LEN), which a ModelProto would take for producer_name.
    graphdef = b"\x0a\x10\x0a\x01x\x12\x0bPlaceholder" + bytes(200)
    saved_model = b"\x08\x01\x12\xff\xff\x03" + bytes(300)
    for head in (graphdef, saved_model, os.urandom(512), b"\x08\x07" + bytes(100)):
        probe = Probe(head[:512], len(head) + 70000, "model.pb", None)
        assert not onnx_check.matches(probe)


def test_truncated_model_inconclusive(tmp_path: Path) -> None:
    data = recipes.conv_relu(tmp_path / "m.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) - 200])
    result = modelshield.scan(cut)
    assert "MS402" in _rules(result)
    assert _top(result) == ("onnx", CoverageStatus.INCONCLUSIVE)


def test_findings_before_damage_kept(tmp_path: Path) -> None:
    data = recipes.external_ref(tmp_path / "m.onnx", "/etc/passwd").read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data + b"\x42\xff\xff\xff\x0f")  # a field that runs past the end
    rules = _rules(modelshield.scan(bad))
    assert "MS400" in rules and "MS402" in rules


def test_deep_nesting_bounded(tmp_path: Path) -> None:
    path = tmp_path / "deep.onnx"
    path.write_bytes(recipes.deeply_nested(5000))
    result = modelshield.scan(path)
    assert "MS402" in _rules(result)
    assert not any(f.rule_id == "MS112" for f in result.findings)
    assert _top(result) == ("onnx", CoverageStatus.INCONCLUSIVE)


def test_moderate_nesting_walked(tmp_path: Path) -> None:
    path = tmp_path / "nested.onnx"
    path.write_bytes(recipes.deeply_nested(20))
    _clean(modelshield.scan(path))


def test_fuzzed_mutations_never_crash(tmp_path: Path) -> None:
    import random

    data = bytearray(recipes.matmul_if(tmp_path / "m.onnx").read_bytes())
    rng = random.Random(4)  # noqa: S311 (reproducible fuzzing)
    for i in range(200):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        path = tmp_path / f"f{i}.onnx"
        path.write_bytes(bytes(mutated))
        result = modelshield.scan(path)
        assert not any(f.rule_id == "MS112" for f in result.findings), result.findings
        assert not result.errors


# ---------------------------------------------------------------------- large models
def test_large_model_writer_is_valid(tmp_path: Path) -> None:
    path = recipes.large_model(tmp_path / "small.onnx", 64, fill=b"\x00\x00\x80\x3f")
    model = onnx.load(str(path))
    assert list(numpy_helper.to_array(model.graph.initializer[0])) == [1.0] * 16
    assert looks_like_model(path.read_bytes()[:512], path.stat().st_size, False)


def test_large_model_flat_memory(tmp_path: Path) -> None:
    """A 1 GiB model (weights embedded in raw_data) is scanned reading a few kilobytes."""
    size = 1 << 30
    path = recipes.large_model(tmp_path / "large.onnx", size)
    assert path.stat().st_size > size
    tracemalloc.start()
    try:
        result = modelshield.scan(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _clean(result)
    assert result.bytes_read < 64 << 10, result.bytes_read
    assert peak < 16 << 20, peak


# ---------------------------------------------------------------------- real corpus
_CORPUS = os.environ.get("MODELSHIELD_CORPUS")


@pytest.mark.corpus
@pytest.mark.skipif(not _CORPUS, reason="set MODELSHIELD_CORPUS to the real-model corpus")
def test_corpus_onnx_clean() -> None:
    assert _CORPUS is not None
    root = Path(_CORPUS)
    with (root / "MANIFEST.tsv").open(newline="", encoding="utf-8") as fh:
        rows = [
            r
            for r in csv.DictReader(fh, delimiter="\t")
            if r["kind"] == "onnx" or r["path"].endswith(".onnx")
        ]
    assert rows
    stats: collections.Counter[str] = collections.Counter()
    for row in rows:
        result = modelshield.scan(root / row["path"])
        bad = result.at_or_above(Severity.MEDIUM)
        assert not bad, (row["path"], [(f.rule_id, f.message) for f in bad])
        assert _top(result) == ("onnx", CoverageStatus.SCANNED), row["path"]
        stats["files"] += 1
        stats["bytes"] += int(row["size"])
        stats["bytes_read"] += result.bytes_read
        stats.update(f.rule_id for f in result.findings)
    print(f"\nONNX corpus: {dict(stats)}", file=sys.stderr)
