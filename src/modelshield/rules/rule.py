"""The rule record (kept apart from the catalogue so format checks can declare rules)."""

from __future__ import annotations

from dataclasses import dataclass

from modelshield.findings import Confidence, Finding, Location, Severity


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    """Short kebab-case name, used as the SARIF rule name."""
    severity: Severity
    """Default severity; a finding may carry a different one (e.g. from the policy entry)."""
    confidence: Confidence
    cwe: int | None
    summary: str
    description: str

    def finding(
        self,
        message: str,
        location: Location,
        *,
        severity: Severity | None = None,
        confidence: Confidence | None = None,
        evidence: str | None = None,
        cwe: int | None = None,
        reason: str | None = None,
    ) -> Finding:
        """A finding of this rule: its severity, confidence and CWE unless given."""
        return Finding(
            rule_id=self.id,
            severity=self.severity if severity is None else severity,
            confidence=self.confidence if confidence is None else confidence,
            message=message,
            location=location,
            evidence=evidence,
            cwe=self.cwe if cwe is None else cwe,
            reason=reason,
        )
