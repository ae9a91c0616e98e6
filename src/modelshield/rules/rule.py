"""The rule record (kept apart from the catalogue so format checks can declare rules)."""

from __future__ import annotations

from dataclasses import dataclass

from modelshield.findings import Confidence, Severity


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
