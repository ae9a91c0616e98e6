"""GGUF: bounded metadata parsing; chat templates parsed (never rendered) and judged.

Every malicious template is PROVEN first: rendered with a plain ``jinja2.Environment`` (what
llama-cpp-python < 0.2.72 did, CVE-2024-34359) it creates a marker file. It is then written into
a real GGUF file with ``gguf.GGUFWriter`` and modelshield must flag it MS500 CRITICAL. Real
chat templates of popular models must produce no finding.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gguf_recipes as R

import modelshield
from modelshield import CoverageStatus, ScanResult, Severity
from modelshield.formats import gguf_file as gg


def _rules(r: ScanResult) -> list[tuple[str, Severity]]:
    return [(f.rule_id, f.severity) for f in r.findings]


def _cover(r: ScanResult) -> list[tuple[CoverageStatus, str]]:
    return [(c.status, c.format) for c in r.coverage]


# ---------------------------------------------------------------- benign
@pytest.mark.parametrize("name", sorted(R.BENIGN))
def test_real_templates_are_clean(tmp_path: Path, name: str) -> None:
    tmpl = R.BENIGN[name]
    path = R.write_gguf(tmp_path / f"{name}.gguf", {"": tmpl})
    r = modelshield.scan(str(path))
    assert not r.findings, [f.message for f in r.findings]
    assert _cover(r) == [(CoverageStatus.SCANNED, "gguf")]
    assert "1 chat template(s)" in (r.coverage[0].reason or "")


def test_named_templates_are_all_scanned(tmp_path: Path) -> None:
    path = R.write_gguf(
        tmp_path / "named.gguf", {"": R.CHATML, "tool_use": R.QWEN25_TOOLS, "rag": R.MISTRAL}
    )
    r = modelshield.scan(str(path))
    assert not r.findings
    assert "3 chat template(s)" in (r.coverage[0].reason or "")


def test_no_template(tmp_path: Path) -> None:
    r = modelshield.scan(str(R.write_gguf(tmp_path / "plain.gguf")))
    assert not r.findings
    assert _cover(r) == [(CoverageStatus.SCANNED, "gguf")]


# ---------------------------------------------------------------- malicious, proven
@pytest.mark.parametrize("name", sorted(R.payloads(Path("/x"))))
def test_payload_executes_and_is_flagged(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "MARKER"
    tmpl = R.payloads(marker)[name]
    R.render_unsandboxed(tmpl)  # PROOF: the vulnerable loader runs it
    assert marker.exists(), f"{name}: payload did not execute"
    marker.unlink()

    path = R.write_gguf(tmp_path / "evil.gguf", {"": tmpl})
    r = modelshield.scan(str(path))
    assert ("MS500", Severity.CRITICAL) in _rules(r), [f.message for f in r.findings]
    assert not marker.exists()  # scanning rendered nothing
    f = next(f for f in r.findings if f.rule_id == "MS500")
    assert "tokenizer.chat_template" in f.message
    assert f.location.offset is not None and f.location.offset > 0


def test_payload_in_named_template(tmp_path: Path) -> None:
    tmpl = R.payloads(tmp_path / "M")["lipsum"]
    path = R.write_gguf(tmp_path / "n.gguf", {"": R.CHATML, "tool_use": tmpl})
    r = modelshield.scan(str(path))
    msgs = [f.message for f in r.findings if f.severity is Severity.CRITICAL]
    assert msgs and all("tokenizer.chat_template.tool_use" in m for m in msgs)


def test_payload_big_endian_and_v1(tmp_path: Path) -> None:
    """Hand-built v1 (32-bit lengths) and big-endian v3 files carry templates too."""
    tmpl = R.payloads(tmp_path / "M")["cycler"].encode()
    key = b"tokenizer.chat_template"

    def v1() -> bytes:
        def s(b: bytes) -> bytes:
            return struct.pack("<I", len(b)) + b

        return b"GGUF" + struct.pack("<III", 1, 0, 1) + s(key) + struct.pack("<I", 8) + s(tmpl)

    def be3() -> bytes:
        def s(b: bytes) -> bytes:
            return struct.pack(">Q", len(b)) + b

        return b"GGUF" + struct.pack(">IQQ", 3, 0, 1) + s(key) + struct.pack(">I", 8) + s(tmpl)

    for label, data in (("v1", v1()), ("be", be3())):
        p = tmp_path / f"{label}.gguf"
        p.write_bytes(data)
        r = modelshield.scan(str(p))
        assert ("MS500", Severity.CRITICAL) in _rules(r), label
        assert _cover(r) == [(CoverageStatus.SCANNED, "gguf")], label


# ---------------------------------------------------------------- unparseable, invalid
def test_unparseable_template(tmp_path: Path) -> None:
    path = R.write_gguf(tmp_path / "bad.gguf", {"": "{% for m in messages %}{{ m }"})
    r = modelshield.scan(str(path))
    assert _rules(r) == [("MS502", Severity.MEDIUM)]
    assert _cover(r) == [(CoverageStatus.PARTIAL, "gguf")]


def test_truncated_metadata_is_inconclusive(tmp_path: Path) -> None:
    path = R.write_gguf(tmp_path / "t.gguf", {"": R.CHATML}, tokens=64, tensor=False)
    data = path.read_bytes()
    cut = data.index(b"tok40")
    (tmp_path / "cut.gguf").write_bytes(data[:cut])
    r = modelshield.scan(str(tmp_path / "cut.gguf"))
    assert [x[0] for x in _rules(r)] == ["MS501"]
    assert "truncated" in r.findings[0].message
    assert _cover(r) == [(CoverageStatus.INCONCLUSIVE, "gguf")]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GGUF" + struct.pack("<I", 7) + b"\0" * 16, "version"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40), "metadata entries"),
        (
            b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40) + b"k",
            "key",
        ),
        (
            b"GGUF"
            + struct.pack("<IQQ", 3, 0, 1)
            + struct.pack("<Q", 1)
            + b"k"
            + struct.pack("<IIQ", 9, 8, 1 << 40),
            "array",
        ),
        (
            b"GGUF"
            + struct.pack("<IQQ", 3, 0, 1)
            + struct.pack("<Q", 1)
            + b"k"
            + struct.pack("<I", 99),
            "value type",
        ),
        (
            b"GGUF"
            + struct.pack("<IQQ", 3, 0, 1)
            + struct.pack("<Q", 1)
            + b"k"
            + struct.pack("<I", 9)
            + struct.pack("<IQ", 9, 1) * 20,
            "nested",
        ),
    ],
)
def test_hostile_headers_are_bounded(tmp_path: Path, data: bytes, why: str) -> None:
    p = tmp_path / "h.gguf"
    p.write_bytes(data)
    r = modelshield.scan(str(p))
    assert [x[0] for x in _rules(r)] == ["MS501"]
    assert why in r.findings[0].message
    assert _cover(r) == [(CoverageStatus.INCONCLUSIVE, "gguf")]


def test_duplicate_keys_reported(tmp_path: Path) -> None:
    def s(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b

    kv = s(b"general.name") + struct.pack("<I", 8) + s(b"x")
    p = tmp_path / "d.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + kv + kv)
    r = modelshield.scan(str(p))
    assert [x[0] for x in _rules(r)] == ["MS501"]
    assert "more than once" in r.findings[0].message


def test_parser_reads_header_only(tmp_path: Path) -> None:
    path = R.write_gguf(tmp_path / "p.gguf", {"": R.LLAMA3, "x": R.CHATML}, tokens=1000)
    data = path.read_bytes()
    parsed, reader = gg.parse(data, keep_string_arrays=frozenset({"tokenizer.chat_templates"}))
    assert parsed.error is None and parsed.version == 3 and not parsed.big_endian
    kv = {k.key: k for k in parsed.kv}
    tokens = kv["tokenizer.ggml.tokens"].value
    assert isinstance(tokens, gg.ArrayRef) and tokens.count == 1000 and tokens.strings is None
    names = kv["tokenizer.chat_templates"].value
    assert isinstance(names, gg.ArrayRef) and names.strings is not None
    assert [gg.string(reader, s) for s in names.strings] == ["x"]
    tmpl = kv["tokenizer.chat_template"].value
    assert isinstance(tmpl, gg.StringRef) and gg.string(reader, tmpl) == R.LLAMA3
    assert [t.name for t in parsed.tensors] == ["tok_embd"]
    assert parsed.tensors[0].dims == (8, 4)
    assert parsed.header_end <= len(data) - 4 * 8 * 4  # tensor data not read


def test_scan_never_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering entry points are booby-trapped: scanning must not reach them."""
    import jinja2

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("rendered or compiled a template")

    monkeypatch.setattr(jinja2.Environment, "from_string", boom)
    monkeypatch.setattr(jinja2.Environment, "compile", boom)
    monkeypatch.setattr(jinja2.Template, "render", boom)
    tmpl = R.payloads(tmp_path / "M")["self-init-globals"]
    r = modelshield.scan(str(R.write_gguf(tmp_path / "e.gguf", {"": tmpl})))
    assert ("MS500", Severity.CRITICAL) in _rules(r)


# ---------------------------------------------------------------- corpus
_CORPUS = os.environ.get("MODELSHIELD_CORPUS")


@pytest.mark.corpus
@pytest.mark.skipif(not _CORPUS, reason="set MODELSHIELD_CORPUS to the real-file corpus")
def test_corpus_gguf_templates_pass() -> None:
    files = sorted(Path(_CORPUS or ".").rglob("*.gguf"))
    assert files
    templates = 0
    for p in files:
        r = modelshield.scan(str(p))
        assert not r.findings, (p, [f.message for f in r.findings])
        assert _cover(r) == [(CoverageStatus.SCANNED, "gguf")], (p, r.coverage)
        reason = r.coverage[0].reason or ""
        templates += int(reason.split(" chat template")[0].rsplit(", ", 1)[-1])
    print(f"{len(files)} GGUF files, {templates} chat templates: no findings")
    assert templates >= 1
