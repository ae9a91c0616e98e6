"""Helpers shared by the reporters: verdict, ordering, tool identity, safe text.

Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable

from modelshield.findings import Coverage, CoverageStatus, Finding, ScanResult, Severity

TOOL_NAME = "modelshield"
INFORMATION_URI = "https://pypi.org/project/modelshield/"
"""Where a reader of a report finds out what the tool is (SARIF ``informationUri``)."""


class Verdict(enum.Enum):
    """The one-word answer of a scan, shared by every report format.

    ``UNSAFE``: at least one finding at or above the threshold (whatever the coverage).
    ``INCOMPLETE``: nothing at or above the threshold, but some input was not fully analysed
    (partial or inconclusive coverage) or an error occurred: *not* a clean result.
    ``CLEAN``: nothing at or above the threshold and every input fully analysed.
    """

    CLEAN = "clean"
    UNSAFE = "unsafe"
    INCOMPLETE = "incomplete"


def verdict(result: ScanResult, threshold: Severity) -> Verdict:
    if result.at_or_above(threshold):
        return Verdict.UNSAFE
    if not result.complete:
        return Verdict.INCOMPLETE
    return Verdict.CLEAN


def tool_version() -> str:
    """The installed version of modelshield, ``0.0.0`` when it cannot be determined."""
    try:
        import modelshield

        version = getattr(modelshield, "__version__", None)
    except ImportError:  # pragma: no cover - we are inside the package
        version = None
    if isinstance(version, str) and version:
        return version
    import importlib.metadata  # only when the package attribute is missing: slow to import

    try:
        return importlib.metadata.version(TOOL_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _total_key(finding: Finding) -> tuple[object, ...]:
    loc = finding.location
    return (
        finding.sort_key(),
        finding.rule_id,
        loc.opcode_index if loc.opcode_index is not None else -1,
        loc.opcode or "",
        finding.message,
        finding.evidence or "",
        finding.reason or "",
        int(finding.confidence),
    )


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Findings most severe first, then by path, member, offset, rule: a total, stable order."""
    return sorted(findings, key=_total_key)


def ordered_coverage(coverage: Iterable[Coverage]) -> list[Coverage]:
    return sorted(
        coverage,
        key=lambda c: (c.path, c.member or "", c.status.value, c.format, c.reason or ""),
    )


def incomplete_coverage(result: ScanResult) -> list[Coverage]:
    """Coverage entries that prevent a clean verdict (partial or inconclusive)."""
    return [c for c in ordered_coverage(result.coverage) if not c.status.complete]


def skipped_coverage(result: ScanResult) -> list[Coverage]:
    return [c for c in ordered_coverage(result.coverage) if c.status is CoverageStatus.SKIPPED]


def files(result: ScanResult) -> list[str]:
    """Every distinct file the result speaks about, sorted."""
    paths = {c.path for c in result.coverage}
    paths.update(f.location.path for f in result.findings)
    paths.update(e.path for e in result.errors)
    return sorted(paths)


def format_counts(result: ScanResult) -> list[tuple[str, int]]:
    """How many coverage entries were recognised per format, most frequent first."""
    counts = Counter(c.format for c in result.coverage)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    counts = Counter(f.severity for f in findings)
    return {s.label: counts.get(s, 0) for s in sorted(Severity, reverse=True)}


# C0/C1 controls, DEL, and the Unicode bidirectional overrides/isolates ("Trojan Source"):
# paths, member names and evidence come from hostile files and must not drive the terminal.
_UNSAFE_CHARS = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0 and C1 controls, DEL
    "\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, overrides, isolates
    "\ud800-\udfff]"  # lone surrogates (undecodable bytes kept by surrogateescape)
)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    special = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if char in special:
        return special[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with control characters and bidi overrides made visible as escapes."""
    return _UNSAFE_CHARS.sub(_escape_char, text)


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """At most ``limit`` characters of ``text``, and whether anything was cut."""
    if limit <= 0 or len(text) <= limit:
        return text, False
    return text[:limit], True
