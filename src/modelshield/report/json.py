"""Machine-readable JSON report, schema version 1.0.

The schema is ``modelshield/report/schemas/scan-result-v1.json`` (JSON Schema draft 2020-12).
Compatible additions (new optional fields) keep the major version; anything that removes or
changes the meaning of a field bumps it. The output is deterministic for a given
:class:`ScanResult`: findings, coverage and errors are sorted, and keys are sorted.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

from modelshield.findings import Coverage, Finding, ScanError, ScanResult, Severity
from modelshield.report._common import (
    TOOL_NAME,
    files,
    ordered,
    ordered_coverage,
    severity_counts,
    tool_version,
    verdict,
)
from modelshield.rules.catalog import RULES

SCHEMA_VERSION = "1.0"
SCHEMA_RESOURCE = "schemas/scan-result-v1.json"
"""Path of the JSON Schema inside the ``modelshield.report`` package."""


def _finding(finding: Finding, threshold: Severity) -> dict[str, Any]:
    loc = finding.location
    rule = RULES.get(finding.rule_id)
    return {
        "rule_id": finding.rule_id,
        "rule_name": rule.name if rule else None,
        "severity": finding.severity.label,
        "confidence": finding.confidence.label,
        "message": finding.message,
        "cwe": finding.cwe,
        "location": {
            "path": loc.path,
            "member": loc.member,
            "offset": loc.offset,
            "opcode_index": loc.opcode_index,
            "opcode": loc.opcode,
        },
        "evidence": finding.evidence,
        "reason": finding.reason,
        "at_or_above_threshold": finding.severity >= threshold,
    }


def _coverage(entry: Coverage) -> dict[str, Any]:
    return {
        "path": entry.path,
        "member": entry.member,
        "status": entry.status.value,
        "complete": entry.status.complete,
        "format": entry.format,
        "reason": entry.reason,
        "size": entry.size,
        "sha256": entry.sha256,
    }


def _error(error: ScanError) -> dict[str, Any]:
    return {"path": error.path, "message": error.message}


def schema() -> dict[str, Any]:
    """The JSON Schema that :func:`to_dict` output conforms to."""
    text = importlib.resources.files(__package__).joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def to_dict(result: ScanResult, *, threshold: Severity) -> dict[str, Any]:
    """The report as plain JSON-compatible data (see the module docstring for the schema)."""
    at_or_above = result.at_or_above(threshold)
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": TOOL_NAME, "version": tool_version()},
        "verdict": verdict(result, threshold).value,
        "threshold": threshold.label,
        "summary": {
            "findings": len(result.findings),
            "findings_at_or_above_threshold": len(at_or_above),
            "by_severity": severity_counts(result.findings),
            "suppressed": len(result.suppressed),
            "errors": len(result.errors),
            "inputs": list(result.inputs),
            "files": len(files(result)),
            "bytes_read": result.bytes_read,
            "duration_s": round(result.duration_s, 6),
            "complete": result.complete,
        },
        "findings": [_finding(f, threshold) for f in ordered(result.findings)],
        "coverage": [_coverage(c) for c in ordered_coverage(result.coverage)],
        "errors": [_error(e) for e in sorted(result.errors, key=lambda e: (e.path, e.message))],
        "suppressed": [_finding(f, threshold) for f in ordered(result.suppressed)],
    }


def render_json(result: ScanResult, *, threshold: Severity) -> str:
    """The report as a JSON document (ASCII-only, sorted keys, two-space indent)."""
    return json.dumps(to_dict(result, threshold=threshold), indent=2, sort_keys=True) + "\n"
