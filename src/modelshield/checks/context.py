"""What a format check works with: the blob, and ways to report and to recurse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelshield.findings import Confidence, Coverage, CoverageStatus, Location, Severity
from modelshield.pickle.opcodes import Buffer

if TYPE_CHECKING:
    from modelshield.analysis import Analyzer, Blob, FileOutcome
    from modelshield.policy import Policy


@dataclass(frozen=True)
class Probe:
    """What ``matches`` sees: the first bytes, the size and the name of the blob."""

    head: bytes
    size: int
    name: str
    """File or member name (hint only)."""
    member: str | None


class Context:
    def __init__(self, analyzer: Analyzer, blob: Blob, out: FileOutcome) -> None:
        self._analyzer = analyzer
        self.blob = blob
        self._out = out

    # ---------------------------------------------------------------- the blob
    @property
    def buf(self) -> Buffer:
        return self.blob.buf

    @property
    def start(self) -> int:
        return self.blob.start

    @property
    def end(self) -> int:
        return self.blob.end

    @property
    def size(self) -> int:
        return self.blob.size

    @property
    def name(self) -> str:
        return self.blob.name

    @property
    def path(self) -> str:
        """The file on disk as displayed (the top-level input)."""
        return self.blob.path

    @property
    def fs_path(self) -> str | None:
        """The real file-system path of the top-level file, for checks that look beside it."""
        return self.blob.fs_path

    @property
    def is_top_level(self) -> bool:
        return self.blob.member is None

    @property
    def policy(self) -> Policy:
        return self._analyzer.policy

    def bytes(self, start: int = 0, end: int | None = None) -> bytes:
        """A copy of ``blob[start:end]`` (offsets relative to the blob)."""
        stop = self.size if end is None else min(end, self.size)
        return bytes(memoryview(self.blob.buf)[self.start + start : self.start + stop])

    # ---------------------------------------------------------------- reporting
    def finding(
        self,
        rule_id: str,
        message: str,
        *,
        member: str | None = None,
        offset: int | None = None,
        severity: Severity | None = None,
        evidence: str | None = None,
        confidence: Confidence | None = None,
        reason: str | None = None,
    ) -> None:
        """Report a finding; ``member`` is relative to this blob, ``offset`` to its start."""
        from modelshield.rules.catalog import RULES

        self._out.findings.append(
            RULES[rule_id].finding(
                message,
                Location(self.path, self._chain(member), offset),
                severity=severity,
                confidence=confidence,
                evidence=evidence,
                reason=reason,
            )
        )

    def cover(
        self,
        status: CoverageStatus,
        fmt: str,
        reason: str | None = None,
        *,
        member: str | None = None,
        size: int | None = None,
    ) -> None:
        """Record coverage for this blob (or for ``member`` inside it)."""
        self._out.coverage.append(
            Coverage(
                self.path,
                status,
                fmt,
                self._chain(member),
                reason,
                self.size if member is None and size is None else size,
            )
        )

    def add_bytes_read(self, n: int) -> None:
        self._out.bytes_read += n

    def _chain(self, member: str | None) -> str | None:
        if member is None:
            return self.blob.member
        return f"{self.blob.member} > {member}" if self.blob.member else member

    # ---------------------------------------------------------------- recursion
    def scan_child(self, member: str, data: Buffer, start: int = 0, end: int | None = None) -> None:
        """Analyse embedded content (found at ``member`` in this blob) like any other input."""
        stop = len(memoryview(data)) if end is None else end
        name = member.rsplit("/", 1)[-1]
        self._analyzer.scan_blob(self.blob.child(member, data, start, stop, name), self._out)
