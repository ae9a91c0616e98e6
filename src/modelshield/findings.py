"""Result types shared by every layer: severities, findings, coverage and scan results.

Everything here is a frozen dataclass or an enum so that reporters are pure functions of a
:class:`ScanResult` and results can be compared, hashed and serialised safely.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Severity(enum.IntEnum):
    """How bad a finding is. Ordered: ``Severity.CRITICAL > Severity.HIGH``."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            choices = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (choose from {choices})") from None


class Confidence(enum.IntEnum):
    """How sure the rule is that the finding is real."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class CoverageStatus(enum.Enum):
    """How completely one input (or archive member) was analysed.

    ``SCANNED``: everything a loader could interpret was analysed.
    ``PARTIAL``: some content was analysed, some could not be (limits hit, unsupported part).
    ``SKIPPED``: nothing was analysed, on purpose (excluded, not a model file); ``reason`` says why.
    ``INCONCLUSIVE``: the content may be interpreted by a code-executing loader but could not be
    analysed at all (unsupported format, unreadable, analyser error).
    """

    SCANNED = "scanned"
    PARTIAL = "partial"
    SKIPPED = "skipped"
    INCONCLUSIVE = "inconclusive"

    @property
    def complete(self) -> bool:
        """True when this status lets a clean verdict stand."""
        return self in (CoverageStatus.SCANNED, CoverageStatus.SKIPPED)


@dataclass(frozen=True)
class Location:
    """Where a finding is: the file, an optional member inside a container, and a position."""

    path: str
    member: str | None = None
    offset: int | None = None
    """Byte offset inside the pickle stream (or file when no member) of the opcode."""
    opcode_index: int | None = None
    """Index of the opcode in its pickle stream, counting from 0."""
    opcode: str | None = None
    """Name of the opcode, e.g. ``REDUCE``."""

    def describe(self) -> str:
        parts = [self.path]
        if self.member:
            parts.append(f"[{self.member}]")
        pos = []
        if self.offset is not None:
            pos.append(f"offset {self.offset}")
        if self.opcode_index is not None:
            pos.append(f"opcode #{self.opcode_index}")
        if self.opcode:
            pos.append(self.opcode)
        text = "".join(parts)
        if pos:
            text += " (" + ", ".join(pos) + ")"
        return text


@dataclass(frozen=True)
class Finding:
    """One problem found in one input."""

    rule_id: str
    """Stable identifier, e.g. ``MS101``. See ``modelshield.rules.catalog``."""
    severity: Severity
    confidence: Confidence
    message: str
    location: Location
    evidence: str | None = None
    """The reconstructed call or snippet, e.g. ``os.system('id')``."""
    cwe: int | None = None
    reason: str | None = None
    """Why the callable is dangerous or why it is not allowed (from the policy)."""

    def sort_key(self) -> tuple[int, str, str, int, int]:
        loc = self.location
        return (
            -int(self.severity),
            loc.path,
            loc.member or "",
            loc.offset if loc.offset is not None else -1,
            int(self.rule_id[2:]) if self.rule_id[2:].isdigit() else 0,
        )


@dataclass(frozen=True)
class Coverage:
    """How completely one input (file or archive member) was analysed."""

    path: str
    status: CoverageStatus
    format: str
    """The format recognised from the content, e.g. ``pickle``, ``text``, ``unknown``."""
    member: str | None = None
    reason: str | None = None
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class ScanError:
    """An error that stopped the analysis of one input (unreadable file, internal error)."""

    path: str
    message: str


@dataclass(frozen=True)
class ScanResult:
    """Everything one scan produced. Reporters are pure functions of this object."""

    findings: tuple[Finding, ...]
    coverage: tuple[Coverage, ...]
    errors: tuple[ScanError, ...] = ()
    suppressed: tuple[Finding, ...] = ()
    """Findings hidden by configuration (ignored rules, baselines), kept for the record."""
    duration_s: float = 0.0
    bytes_read: int = 0
    inputs: tuple[str, ...] = field(default=())

    @property
    def complete(self) -> bool:
        """True when every input was fully analysed and no error occurred."""
        return not self.errors and all(c.status.complete for c in self.coverage)

    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def at_or_above(self, threshold: Severity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity >= threshold)

    def is_clean(self, threshold: Severity = Severity.HIGH) -> bool:
        """No finding at or above ``threshold`` and complete coverage."""
        return self.complete and not self.at_or_above(threshold)
