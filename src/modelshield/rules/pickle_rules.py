"""Pickle rules (MS1xx): turn a pickle trace and the policy into findings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from modelshield.findings import Confidence, Finding, Location, Severity
from modelshield.pickle.trace import Event, EventKind, PickleAnalysis, Stream
from modelshield.policy import Policy, Verdict
from modelshield.rules.catalog import RULES

_MAX_FINDINGS_PER_RULE = 100
"""Per input and rule; beyond it one summary finding says how many more there were."""


@dataclass(frozen=True)
class Where:
    """Where a pickle buffer sits: the file, member, and the buffer's offset in it."""

    path: str
    member: str | None = None
    base: int = 0


def _finding(
    rule_id: str,
    message: str,
    where: Where,
    ev: Event | None = None,
    *,
    severity: Severity | None = None,
    evidence: str | None = None,
    reason: str | None = None,
    cwe: int | None = None,
    offset: int | None = None,
    confidence: Confidence | None = None,
) -> Finding:
    if ev is not None:
        loc = Location(where.path, where.member, where.base + ev.pos, ev.index, ev.opcode)
    else:
        loc = Location(where.path, where.member, None if offset is None else where.base + offset)
    return RULES[rule_id].finding(
        message,
        loc,
        severity=severity,
        confidence=confidence,
        evidence=evidence if evidence is not None else (ev.evidence if ev else None),
        cwe=cwe,
        reason=reason,
    )


def _call_finding(ev: Event, policy: Policy, where: Where, context: str) -> Finding | None:
    if ev.name is None:
        how = f" (reached via {ev.via})" if ev.via else ""
        return _finding(
            "MS103",
            f"{context}calls an object computed at load time{how}",
            where,
            ev,
        )
    cls = policy.classify(ev.name)
    if cls.verdict is Verdict.ALLOWED:
        return None
    verb = "instantiates" if ev.new_only else "calls"
    how = f" via {ev.via}" if ev.via and verb == "calls" else ""
    if cls.verdict is Verdict.DANGEROUS:
        entry = cls.entry
        assert entry is not None
        return _finding(
            "MS101",
            f"{context}{verb} {ev.name}{how} ({entry.category})",
            where,
            ev,
            severity=entry.severity,
            reason=entry.reason + (f" [{entry.source}]" if entry.source else ""),
            cwe=entry.cwe,
        )
    if verb == "instantiates":
        return _finding(
            "MS113",
            f"{context}restores an object of class {ev.name} (via {ev.via}), which is not on "
            "the allowlist",
            where,
            ev,
        )
    return _finding(
        "MS102",
        f"{context}{verb} {ev.name}{how}, which is not on the allowlist",
        where,
        ev,
    )


def pickle_findings(
    analysis: PickleAnalysis, policy: Policy, where: Where, *, context: str = ""
) -> list[Finding]:
    """All findings for one analysed buffer, nested payloads included."""
    out: list[Finding] = []
    for idx, stream in enumerate(analysis.streams):
        ctx = context if len(analysis.streams) == 1 else f"{context}pickle #{idx + 1} "
        out.extend(_stream_findings(stream, policy, where, ctx, first=idx == 0))
    if analysis.alternate is not None and analysis.data_regions:
        first_data = analysis.data_regions[0][0]
        ctx = f"{context}if read with pickle.load instead of joblib.load, the file "
        for stream in analysis.alternate.streams:
            for ev in stream.events:
                # Only resolved targets: in this reading joblib's own bytes leave computed
                # values on the stack that CPython would reject, not run.
                if ev.pos < first_data or ev.name is None or ev.kind is EventKind.IMPORT:
                    continue
                f = _event_finding(ev, policy, where, ctx)
                if f is not None:
                    out.append(f)
    if analysis.trailing_start is not None:
        size = analysis.size - analysis.trailing_start
        out.append(
            _finding(
                "MS110",
                f"{size} bytes after the last pickle do not form a complete pickle",
                where,
                offset=analysis.trailing_start,
            )
        )
        for ev in analysis.trailing_events:
            f = _event_finding(ev, policy, where, f"{context}trailing data ")
            if f is not None:
                out.append(f)
    return _cap(out)


def _stream_findings(
    stream: Stream, policy: Policy, where: Where, ctx: str, *, first: bool
) -> Iterator[Finding]:
    called: set[str] = set()
    imported: dict[str, Event] = {}
    persids = 0
    # An event like one before it gives the same finding, which _cap drops: skip it early
    # (a big pickle restores thousands of objects of the same class).
    seen: set[tuple[object, ...]] = set()
    for ev in stream.events:
        if ev.kind is EventKind.IMPORT:
            if ev.name is not None and ev.name not in imported:
                imported[ev.name] = ev
            continue
        if ev.kind is EventKind.CALL and ev.name is not None:
            called.add(ev.name)
            if ev.origin is not None:
                called.add(ev.origin)
        if ev.kind is EventKind.PERSID:
            persids += 1
            if persids > 1:
                continue
        if ev.nested is None:
            key = (ev.kind, ev.name, ev.evidence, ev.via, ev.new_only, ev.payload_kind)
            if key in seen:
                continue
            seen.add(key)
        f = _event_finding(ev, policy, where, ctx)
        if f is not None:
            yield f
        if ev.kind is EventKind.NESTED and ev.nested is not None:
            inner = Where(
                where.path,
                f"{where.member + ' > ' if where.member else ''}"
                f"nested pickle at offset {where.base + ev.pos}",
                0,
            )
            yield from pickle_findings(ev.nested, policy, inner, context=ctx)
    for name, ev in imported.items():
        if name in called:
            continue
        cls = policy.classify(name)
        if cls.verdict is Verdict.DANGEROUS:
            entry = cls.entry
            assert entry is not None
            yield _finding(
                "MS104",
                f"{ctx}references {name} ({entry.category}) without calling it on load; "
                "the loaded object may call it later",
                where,
                ev,
                severity=min(entry.severity, Severity.HIGH),
                evidence=name,
                reason=entry.reason + (f" [{entry.source}]" if entry.source else ""),
            )
        elif cls.verdict is Verdict.UNKNOWN:
            yield _finding(
                "MS105",
                f"{ctx}imports {name}, which is not on the allowlist (not called on load)",
                where,
                ev,
                evidence=name,
            )
    if persids:
        yield _finding(
            "MS108",
            f"{ctx}uses {persids} persistent ID{'s' if persids > 1 else ''}, resolved by the "
            "loader (a plain pickle.load refuses them)",
            where,
            offset=stream.start,
            evidence=None,
        )
    if stream.error is not None:
        what = "truncated" if stream.truncated else "malformed"
        note = (
            "; every opcode before it was analysed"
            if first
            else "; this pickle follows a complete one"
        )
        yield _finding(
            "MS100",
            f"{ctx}pickle is {what}: {stream.error}{note}",
            where,
            offset=stream.error_pos,
            evidence=None,
        )
    if stream.limit is not None:
        yield _finding(
            "MS111",
            f"{ctx}analysis stopped at the {stream.limit.value} limit after {stream.opcodes} "
            "opcodes; the rest of this pickle was not analysed",
            where,
            offset=stream.end,
        )


def _event_finding(ev: Event, policy: Policy, where: Where, ctx: str) -> Finding | None:
    kind = ev.kind
    if kind is EventKind.CALL:
        return _call_finding(ev, policy, where, ctx)
    if kind is EventKind.MUTATION:
        target = ev.name or "an object"
        cls = policy.classify(ev.name) if ev.name else None
        severe = cls is not None and cls.verdict is Verdict.DANGEROUS
        return _finding(
            "MS106",
            f"{ctx}writes attributes or items of {target}" + (f" ({ev.via})" if ev.via else ""),
            where,
            ev,
            severity=Severity.CRITICAL if severe else None,
        )
    if kind is EventKind.NESTED:
        if ev.payload_kind == "marshal":
            msg = f"{ctx}hands marshalled bytes to {ev.name}: a code object built at load time"
            return _finding("MS107", msg, where, ev, severity=Severity.CRITICAL)
        if ev.payload_kind == "pickle":
            msg = f"{ctx}hands an embedded pickle to {ev.name}; its content is analysed below"
        else:
            msg = f"{ctx}hands data to {ev.name} that could not be analysed here"
        return _finding("MS107", msg, where, ev)
    if kind is EventKind.DYNAMIC_IMPORT:
        return _finding(
            "MS103", f"{ctx}imports a global whose name is computed at load time", where, ev
        )
    if kind is EventKind.EXT:
        return _finding(
            "MS109", f"{ctx}imports a global through the copyreg extension registry", where, ev
        )
    if kind is EventKind.PERSID:
        return None
    return None


def _cap(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str | None, str | None, str | None]] = set()
    counts: dict[str, int] = {}
    out: list[Finding] = []
    extra: dict[str, tuple[Finding, int]] = {}
    for f in findings:
        key = (f.rule_id, f.location.member, f.message, f.evidence)
        if key in seen:
            continue
        seen.add(key)
        counts[f.rule_id] = counts.get(f.rule_id, 0) + 1
        if counts[f.rule_id] <= _MAX_FINDINGS_PER_RULE:
            out.append(f)
        else:
            first, n = extra.get(f.rule_id, (f, 0))
            extra[f.rule_id] = (first, n + 1)
    for rule_id, (first, n) in extra.items():
        out.append(
            Finding(
                rule_id=rule_id,
                severity=first.severity,
                confidence=first.confidence,
                message=f"{n} more {RULES[rule_id].name} findings in this input not listed",
                location=Location(first.location.path, first.location.member),
                cwe=first.cwe,
            )
        )
    return out
