"""SARIF 2.1.0 report, shaped for GitHub code scanning.

Choices worth knowing:

* Every rule of the catalogue is listed in ``tool.driver.rules`` (with CWE tags, a GitHub
  ``security-severity`` score and a ``precision``), so ``ruleIndex`` is stable across runs.
* Only findings at or above the threshold become ``results`` unless ``include_below_threshold``
  is set: GitHub turns every result into an alert. Suppressed findings are never emitted as
  results, because GitHub ignores SARIF ``suppressions`` and would open alerts for them; their
  count is in ``run.properties``.
* Model files are binary, but GitHub code scanning only understands line/column (or character)
  regions and requires ``region.startLine``; it does not display byte-offset-only regions. Each
  result therefore points at ``startLine: 1`` of the file, and the byte offset, archive member
  and opcode go into the message and ``result.properties``.
* Coverage gaps and errors are reported as ``invocations[0].toolExecutionNotifications`` so that
  an incomplete scan is visible in SARIF too; ``executionSuccessful`` is false when an error
  stopped the analysis of an input.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import quote

from modelshield.findings import Confidence, Coverage, Finding, ScanResult, Severity
from modelshield.report._common import (
    INFORMATION_URI,
    TOOL_NAME,
    files,
    incomplete_coverage,
    ordered,
    ordered_coverage,
    skipped_coverage,
    tool_version,
    truncate,
    verdict,
)
from modelshield.rules.catalog import RULES
from modelshield.rules.rule import Rule

SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
SRCROOT = "%SRCROOT%"
FINGERPRINT_KEY = "modelshield/v1"
MAX_MESSAGE_EVIDENCE = 1000
"""Characters of evidence quoted in a result message (the full evidence is in properties)."""

_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
# GitHub maps security-severity scores to alert severities: >= 9.0 critical, 7.0-8.9 high,
# 4.0-6.9 medium, 0.1-3.9 low. INFO rules get no score, so GitHub shows them as notes.
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.8",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.0",
    Severity.LOW: "2.0",
}
_PRECISION = {Confidence.HIGH: "high", Confidence.MEDIUM: "medium", Confidence.LOW: "low"}
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def _quote(text: str) -> str:
    # Paths decoded with surrogateescape keep their original bytes in the URI.
    return quote(text, safe="/", errors="surrogateescape")


def level(severity: Severity) -> str:
    """The SARIF ``level`` for a severity: error, warning or note."""
    return _LEVEL[severity]


def artifact_location(path: str) -> dict[str, Any]:
    """A SARIF ``artifactLocation`` for ``path`` as given.

    Relative paths stay relative (URI-escaped, ``uriBaseId`` ``%SRCROOT%``), which is what
    GitHub needs to match them to files in the repository. Absolute paths become ``file:`` URIs.
    """
    if _WINDOWS_DRIVE.match(path):
        posix = path.replace("\\", "/")
        return {"uri": "file:///" + posix[:2] + _quote(posix[2:])}
    if path.startswith("\\\\"):  # UNC path \\host\share\file
        return {"uri": "file:" + _quote(path.replace("\\", "/"))}
    if path.startswith("/"):
        return {"uri": "file://" + _quote(path)}
    relative = path
    while relative.startswith("./"):
        relative = relative[2:]
    return {"uri": _quote(relative), "uriBaseId": SRCROOT}


def fingerprint(finding: Finding) -> str:
    """Stable identity of a finding across runs: rule, path, member, offset, evidence."""
    loc = finding.location
    parts = [
        finding.rule_id,
        loc.path,
        loc.member or "",
        "" if loc.offset is None else str(loc.offset),
        finding.evidence or "",
    ]
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _help_text(rule: Rule) -> str:
    text = (
        f"{rule.description}\n\nDefault severity: {rule.severity.label}; "
        f"confidence: {rule.confidence.label}."
    )
    if rule.cwe is not None:
        text += f"\nCWE-{rule.cwe}: https://cwe.mitre.org/data/definitions/{rule.cwe}.html"
    return text


def _rule_descriptor(rule: Rule) -> dict[str, Any]:
    tags = ["security"]
    if rule.cwe is not None:
        tags.append(f"external/cwe/cwe-{rule.cwe}")
    properties: dict[str, Any] = {"tags": tags, "precision": _PRECISION[rule.confidence]}
    if rule.severity in _SECURITY_SEVERITY:
        properties["security-severity"] = _SECURITY_SEVERITY[rule.severity]
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.description},
        "help": {"text": _help_text(rule)},
        "defaultConfiguration": {"level": level(rule.severity)},
        "properties": properties,
    }


def _unknown_rule_descriptor(rule_id: str) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": "unknown-rule",
        "shortDescription": {"text": f"Rule {rule_id}"},
        "fullDescription": {"text": f"Rule {rule_id} is not in this version's catalogue."},
        "help": {"text": f"Rule {rule_id} is not in this version's catalogue."},
        "defaultConfiguration": {"level": "warning"},
        "properties": {"tags": ["security"]},
    }


def _position(finding: Finding) -> str:
    loc = finding.location
    parts = []
    if loc.member:
        parts.append(f"in member {loc.member}")
    if loc.offset is not None:
        parts.append(f"at byte offset {loc.offset}")
    if loc.opcode_index is not None:
        opcode = f" {loc.opcode}" if loc.opcode else ""
        parts.append(f"(opcode #{loc.opcode_index}{opcode})")
    elif loc.opcode:
        parts.append(f"({loc.opcode})")
    return " ".join(parts)


def _message(finding: Finding) -> str:
    text = finding.message.rstrip()
    if text and text[-1] not in ".!?":
        text += "."
    if finding.evidence is not None:
        shown, cut = truncate(finding.evidence, MAX_MESSAGE_EVIDENCE)
        suffix = f" ... [truncated, {len(finding.evidence)} characters in all]" if cut else ""
        text += f" Evidence: {shown}{suffix}"
    position = _position(finding)
    if position:
        text += f" Location: {position}."
    if finding.reason:
        text += f" Reason: {finding.reason}"
    return text


def _result(
    finding: Finding, rule_index: dict[str, int], file_index: dict[str, int]
) -> dict[str, Any]:
    loc = finding.location
    location = artifact_location(loc.path)
    location["index"] = file_index[loc.path]
    properties: dict[str, Any] = {
        "severity": finding.severity.label,
        "confidence": finding.confidence.label,
    }
    optional = {
        "member": loc.member,
        "byteOffset": loc.offset,
        "opcodeIndex": loc.opcode_index,
        "opcode": loc.opcode,
        "evidence": finding.evidence,
        "reason": finding.reason,
        "cwe": finding.cwe,
    }
    properties.update({k: v for k, v in optional.items() if v is not None})
    return {
        "ruleId": finding.rule_id,
        "ruleIndex": rule_index[finding.rule_id],
        "level": level(finding.severity),
        "message": {"text": _message(finding)},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": location,
                    "region": {"startLine": 1},
                }
            }
        ],
        "partialFingerprints": {FINGERPRINT_KEY: fingerprint(finding)},
        "properties": properties,
    }


def _artifacts(result: ScanResult) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Top-level files first (sorted), then archive members pointing at their parent."""
    paths = files(result)
    file_index = {path: i for i, path in enumerate(paths)}
    own: dict[str, Coverage] = {}
    for entry in ordered_coverage(result.coverage):
        if entry.member is None:
            own.setdefault(entry.path, entry)
    artifacts: list[dict[str, Any]] = []
    for path in paths:
        artifact: dict[str, Any] = {
            "location": artifact_location(path),
            "roles": ["analysisTarget"],
        }
        if path in own:
            _describe_artifact(artifact, own[path])
        artifacts.append(artifact)
    for entry in ordered_coverage(result.coverage):
        if entry.member is None:
            continue
        artifact = {
            "location": {"uri": _quote(entry.member)},
            "parentIndex": file_index[entry.path],
            "roles": ["analysisTarget"],
        }
        _describe_artifact(artifact, entry)
        artifacts.append(artifact)
    return artifacts, file_index


def _describe_artifact(artifact: dict[str, Any], entry: Coverage) -> None:
    if entry.size is not None:
        artifact["length"] = entry.size
    if entry.sha256:
        artifact["hashes"] = {"sha-256": entry.sha256}
    properties: dict[str, Any] = {"format": entry.format, "coverage": entry.status.value}
    if entry.reason:
        properties["reason"] = entry.reason
    artifact["properties"] = properties


def _coverage_notification(entry: Coverage, note_level: str) -> dict[str, Any]:
    where = entry.path + (f"[{entry.member}]" if entry.member else "")
    text = f"{where}: {entry.status.value} ({entry.format})"
    text += f": {entry.reason}" if entry.reason else "."
    properties: dict[str, Any] = {"status": entry.status.value, "format": entry.format}
    if entry.member is not None:
        properties["member"] = entry.member
    return {
        "descriptor": {"id": f"coverage/{entry.status.value}"},
        "level": note_level,
        "message": {"text": text},
        "locations": [{"physicalLocation": {"artifactLocation": artifact_location(entry.path)}}],
        "properties": properties,
    }


def _notifications(result: ScanResult) -> list[dict[str, Any]]:
    notes = [_coverage_notification(c, "warning") for c in incomplete_coverage(result)]
    notes.extend(_coverage_notification(c, "note") for c in skipped_coverage(result))
    for error in sorted(result.errors, key=lambda e: (e.path, e.message)):
        notes.append(
            {
                "descriptor": {"id": "scan-error"},
                "level": "error",
                "message": {"text": f"{error.path}: {error.message}"},
                "locations": [
                    {"physicalLocation": {"artifactLocation": artifact_location(error.path)}}
                ],
            }
        )
    return notes


def to_sarif(
    result: ScanResult, *, threshold: Severity, include_below_threshold: bool = False
) -> dict[str, Any]:
    """The report as a SARIF 2.1.0 log (a dict ready for ``json.dumps``)."""
    descriptors = [_rule_descriptor(RULES[rule_id]) for rule_id in sorted(RULES)]
    emitted = ordered(
        f for f in result.findings if include_below_threshold or f.severity >= threshold
    )
    for rule_id in sorted({f.rule_id for f in emitted} - RULES.keys()):
        descriptors.append(_unknown_rule_descriptor(rule_id))
    rule_index = {d["id"]: i for i, d in enumerate(descriptors)}
    artifacts, file_index = _artifacts(result)
    version = tool_version()
    outcome = verdict(result, threshold)
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": TOOL_NAME,
                "version": version,
                "semanticVersion": version,
                "informationUri": INFORMATION_URI,
                "rules": descriptors,
            }
        },
        "invocations": [
            {
                "executionSuccessful": not result.errors,
                "toolExecutionNotifications": _notifications(result),
                "properties": {
                    "verdict": outcome.value,
                    "threshold": threshold.label,
                    "complete": result.complete,
                    "bytesRead": result.bytes_read,
                    "durationS": round(result.duration_s, 6),
                },
            }
        ],
        "artifacts": artifacts,
        "results": [_result(f, rule_index, file_index) for f in emitted],
        "properties": {
            "verdict": outcome.value,
            "threshold": threshold.label,
            "findings": len(result.findings),
            "findingsNotEmitted": len(result.findings) - len(emitted),
            "suppressed": len(result.suppressed),
        },
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def render_sarif(
    result: ScanResult, *, threshold: Severity, include_below_threshold: bool = False
) -> str:
    """The report as a SARIF 2.1.0 JSON document."""
    log = to_sarif(result, threshold=threshold, include_below_threshold=include_below_threshold)
    return json.dumps(log, indent=2, sort_keys=False) + "\n"
