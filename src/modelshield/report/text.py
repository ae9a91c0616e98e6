"""Human-readable report for a terminal.

Layout: a header line, the findings grouped by file (the file with the most severe finding
first), errors, a coverage section, and a one-line verdict. Findings at or above the threshold
are shown in full with their evidence; findings below it get one dimmed line each so they stay
visible without drowning the ones that decide the verdict.

Paths, member names, messages and evidence come from untrusted files: every such string is
passed through :func:`printable` so that control characters and bidi overrides cannot drive or
spoof the terminal.
"""

from __future__ import annotations

from collections.abc import Iterable

from modelshield.findings import Coverage, CoverageStatus, Finding, ScanResult, Severity
from modelshield.report._common import (
    TOOL_NAME,
    Verdict,
    files,
    format_counts,
    incomplete_coverage,
    ordered,
    printable,
    skipped_coverage,
    tool_version,
    truncate,
    verdict,
)
from modelshield.rules.catalog import RULES

MAX_EVIDENCE = 240
"""Characters of evidence shown before it is truncated."""
MAX_BELOW_THRESHOLD_PER_FILE = 10
"""Below-threshold findings listed per file before the rest are only counted."""

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_DIM = "\x1b[2m"
_SEVERITY_STYLE = {
    Severity.CRITICAL: "\x1b[1;97;41m",  # bold white on red
    Severity.HIGH: "\x1b[1;31m",  # bold red
    Severity.MEDIUM: "\x1b[33m",  # yellow
    Severity.LOW: "\x1b[36m",  # cyan
    Severity.INFO: "\x1b[2m",  # dim
}
_VERDICT_STYLE = {
    Verdict.UNSAFE: "\x1b[1;31m",
    Verdict.INCOMPLETE: "\x1b[1;33m",
    Verdict.CLEAN: "\x1b[1;32m",
}
_LABEL_WIDTH = max(len(s.name) for s in Severity)


class _Painter:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, style: str, text: str) -> str:
        if not self.color or not text:
            return text
        return f"{style}{text}{_RESET}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{num_bytes} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _rule_name(rule_id: str) -> str:
    rule = RULES.get(rule_id)
    return rule.name if rule else "unknown-rule"


def _where(finding: Finding) -> str:
    """The location inside the file: member and position (the path is the group heading)."""
    loc = finding.location
    parts = []
    if loc.member:
        parts.append(f"member {printable(loc.member)}")
    if loc.offset is not None:
        parts.append(f"offset {loc.offset}")
    if loc.opcode_index is not None:
        parts.append(f"opcode #{loc.opcode_index}")
    if loc.opcode:
        parts.append(printable(loc.opcode))
    return ", ".join(parts)


def _full_finding(finding: Finding, paint: _Painter) -> list[str]:
    sev = finding.severity
    label = paint(_SEVERITY_STYLE[sev], sev.name.ljust(_LABEL_WIDTH))
    title = f"{finding.rule_id} {_rule_name(finding.rule_id)}"
    lines = [f"  {label}  {paint(_BOLD, title)}  {printable(finding.message)}"]
    indent = " " * (4 + _LABEL_WIDTH)
    lines.append(f"{indent}at {printable(finding.location.describe())}")
    if finding.evidence is not None:
        shown, cut = truncate(printable(finding.evidence), MAX_EVIDENCE)
        if cut:
            shown += f" ... [truncated, {len(finding.evidence)} characters in all]"
        lines.append(f"{indent}    {shown}")
    if finding.reason:
        lines.append(f"{indent}why: {printable(finding.reason)}")
    meta = f"confidence {finding.confidence.label}"
    if finding.cwe is not None:
        meta += f", CWE-{finding.cwe}"
    lines.append(f"{indent}{paint(_DIM, meta)}")
    return lines


def _brief_finding(finding: Finding, paint: _Painter) -> str:
    where = _where(finding)
    text = (
        f"{finding.severity.label:<{_LABEL_WIDTH}}  {finding.rule_id} "
        f"{_rule_name(finding.rule_id)}  {printable(finding.message)}"
    )
    if where:
        text += f" ({where})"
    return "  " + paint(_DIM, text)


def _group_by_file(findings: Iterable[Finding]) -> list[tuple[str, list[Finding]]]:
    groups: dict[str, list[Finding]] = {}
    for finding in ordered(findings):  # most severe first, so dict order = file order
        groups.setdefault(finding.location.path, []).append(finding)
    return list(groups.items())


def _findings_section(result: ScanResult, threshold: Severity, paint: _Painter) -> list[str]:
    if not result.findings:
        return ["No findings."]
    lines: list[str] = []
    gaps = {c.path for c in incomplete_coverage(result)}
    for path, group in _group_by_file(result.findings):
        if lines:
            lines.append("")
        heading = paint(_BOLD, printable(path))
        if path in gaps:
            heading += " " + paint(_VERDICT_STYLE[Verdict.INCOMPLETE], "(not fully analysed)")
        lines.append(heading)
        above = [f for f in group if f.severity >= threshold]
        below = [f for f in group if f.severity < threshold]
        for finding in above:
            lines.extend(_full_finding(finding, paint))
        if below:
            lines.append(
                "  " + paint(_DIM, f"below the {threshold.label} threshold ({len(below)}):")
            )
            for finding in below[:MAX_BELOW_THRESHOLD_PER_FILE]:
                lines.append(_brief_finding(finding, paint))
            rest = len(below) - MAX_BELOW_THRESHOLD_PER_FILE
            if rest > 0:
                lines.append("  " + paint(_DIM, f"... and {rest} more below the threshold"))
    return lines


def _coverage_line(entry: Coverage) -> str:
    where = printable(entry.path)
    if entry.member:
        where += f"[{printable(entry.member)}]"
    text = f"  {entry.status.value.upper():<12} {where} ({printable(entry.format)})"
    if entry.reason:
        text += f": {printable(entry.reason)}"
    return text


def _coverage_section(result: ScanResult, paint: _Painter) -> list[str]:
    counts = format_counts(result)
    summary = ", ".join(f"{n} {printable(fmt)}" for fmt, n in counts) or "nothing"
    lines = [paint(_BOLD, "Coverage") + f": {summary}"]
    gaps = incomplete_coverage(result)
    if gaps:
        lines.append(f"Not fully analysed ({len(gaps)}):")
        lines.extend(_coverage_line(c) for c in gaps)
    skipped = skipped_coverage(result)
    if skipped:
        lines.append(f"Skipped ({len(skipped)}):")
        lines.extend(_coverage_line(c) for c in skipped)
    # Scanned inputs reached through a symlink that leaves the tree: said, never silent.
    followed = [
        c
        for c in result.coverage
        if c.status is CoverageStatus.SCANNED and c.reason and "symlink" in c.reason
    ]
    if followed:
        lines.append(f"Followed symlinks ({len(followed)}):")
        lines.extend(_coverage_line(c) for c in followed)
    return lines


def _errors_section(result: ScanResult, paint: _Painter) -> list[str]:
    if not result.errors:
        return []
    lines = [paint(_BOLD, f"Errors ({len(result.errors)}):")]
    for error in sorted(result.errors, key=lambda e: (e.path, e.message)):
        lines.append(f"  {printable(error.path)}: {printable(error.message)}")
    return lines


def _incompleteness(result: ScanResult) -> list[str]:
    problems = []
    gaps = len(incomplete_coverage(result))
    if gaps:
        problems.append(f"{_plural(gaps, 'input')} could not be fully analysed")
    if result.errors:
        problems.append(f"{_plural(len(result.errors), 'error')} occurred")
    return problems


def verdict_line(result: ScanResult, threshold: Severity) -> str:
    """The one-line verdict, without color."""
    outcome = verdict(result, threshold)
    all_files = files(result)
    at = threshold.label
    if outcome is Verdict.UNSAFE:
        hits = result.at_or_above(threshold)
        hit_files = {f.location.path for f in hits}
        line = (
            f"UNSAFE: {_plural(len(hits), 'finding')} at or above {at} "
            f"in {len(hit_files)} of {_plural(len(all_files), 'file')}"
        )
        extra = _incompleteness(result)
        return f"{line} (also {' and '.join(extra)})" if extra else line
    if outcome is Verdict.INCOMPLETE:
        return (
            f"INCOMPLETE: no findings at or above {at}, but "
            f"{' and '.join(_incompleteness(result))} — not a clean result"
        )
    return f"CLEAN: {_plural(len(all_files), 'file')} fully analysed, no findings at or above {at}"


def render_text(result: ScanResult, *, threshold: Severity, color: bool = False) -> str:
    """Render ``result`` for a terminal; ``color`` adds ANSI styles."""
    paint = _Painter(color)
    n_files = len(files(result))
    header = (
        f"{TOOL_NAME} {tool_version()}: {_plural(n_files, 'file')}, "
        f"{_size(result.bytes_read)} read in {result.duration_s:.2f} s, "
        f"threshold {threshold.label}"
    )
    lines = [paint(_DIM, header), ""]
    lines.extend(_findings_section(result, threshold, paint))
    if result.suppressed:
        lines.append("")
        lines.append(
            paint(_DIM, f"{_plural(len(result.suppressed), 'finding')} suppressed by configuration")
        )
    errors = _errors_section(result, paint)
    if errors:
        lines.append("")
        lines.extend(errors)
    lines.append("")
    lines.extend(_coverage_section(result, paint))
    lines.append("")
    outcome = verdict(result, threshold)
    lines.append(paint(_VERDICT_STYLE[outcome], verdict_line(result, threshold)))
    return "\n".join(lines) + "\n"
