"""TensorFlow Lite models: custom operators (native code the app must register), container
validation, and the zip of associated files that TFLite metadata may append to the model.

The flatbuffer is read with bounds checks (:mod:`modelshield.formats.tflite_model`); weights
are never read. Nothing is loaded with TensorFlow.
"""

from __future__ import annotations

from modelshield.checks.context import Context, Probe
from modelshield.findings import CoverageStatus, Severity
from modelshield.formats import zip as zipf
from modelshield.formats.tflite_model import (
    SCHEMA_VERSION,
    TFLiteError,
    TFLiteModel,
    has_identifier,
    parse_tflite,
)
from modelshield.pickle.opcodes import Buffer
from modelshield.rules import checks as rule_tables

RULES = rule_tables.TFLITE

_MEMBER_LIMIT = 256 << 20
"""Largest compressed member of an appended zip that is decompressed for analysis."""
_MAX_NAMES = 20


def matches(probe: Probe) -> bool:
    return has_identifier(probe.head)


def check(ctx: Context) -> None:
    view = memoryview(ctx.buf)
    model: TFLiteModel | None
    try:
        model = parse_tflite(view, ctx.start, ctx.end)
        error: tuple[str, int] | None = None
    except TFLiteError as exc:
        model, error = None, (str(exc), exc.offset)
    del view
    appended = _appended_zip(ctx)
    if model is None:
        assert error is not None
        ctx.finding("MS411", f"TFLite flatbuffer is invalid: {error[0]}", offset=error[1])
        ctx.cover(CoverageStatus.INCONCLUSIVE, "tflite", f"invalid flatbuffer: {error[0]}")
        return
    ctx.add_bytes_read(model.bytes_read)
    custom = model.custom_ops
    if custom:
        names = sorted({c.custom_code or "" for c in custom})
        flex = [n for n in names if n.startswith("Flex")]
        shown = ", ".join(names[:_MAX_NAMES]) + (" ..." if len(names) > _MAX_NAMES else "")
        note = (
            f"; {len(flex)} run TensorFlow kernels through the Select-ops (Flex) delegate"
            if flex
            else ""
        )
        ctx.finding(
            "MS410",
            f"{len(names)} custom operator(s): {shown}{note}",
            evidence=shown,
        )
    if model.version != SCHEMA_VERSION:
        ctx.finding(
            "MS411",
            f"schema version {model.version}, not {SCHEMA_VERSION}: the interpreter refuses it",
            severity=Severity.LOW,
        )
    parts = [
        f"schema {model.version}",
        f"{model.subgraphs} subgraphs",
        f"{model.operators} operators",
        f"{len(model.operator_codes)} operator codes ({len(custom)} custom)",
        f"{model.buffers} buffers",
    ]
    if model.metadata:
        parts.append(f"metadata {', '.join(model.metadata[:_MAX_NAMES])}")
    if appended:
        parts.append(f"appended zip of {appended} members (analysed)")
    ctx.cover(CoverageStatus.SCANNED, "tflite", "; ".join(parts))


def _appended_zip(ctx: Context) -> int:
    """Hand the members of a zip appended to the model (TFLite metadata's associated files)
    to the analyser; the number of members, or 0 when there is none."""
    size = ctx.size
    if zipf.find_eocd(ctx.buf, ctx.end) is None or ctx.end - ctx.start < 22:
        return 0
    data: Buffer = ctx.buf if ctx.start == 0 else ctx.bytes()
    try:
        arc = zipf.read_zip(data, size)
    except zipf.ZipError:
        return 0  # an EOCD signature inside the weights, not an archive
    for entry in arc.entries:
        if zipf.unsafe_name(entry.name):
            ctx.finding(
                "MS202",
                "member of the appended zip escapes the extraction directory",
                member=entry.name,
                evidence=entry.name,
            )
        if entry.is_dir:
            continue
        if entry.method == zipf.STORED:
            span = zipf.member_span(entry, size)
            if span is not None:
                ctx.scan_child(entry.name, data, span[0], span[1])
                continue
        try:
            content = zipf.read_member(data, size, entry, max_size=_MEMBER_LIMIT)
        except (zipf.ZipError, zipf.MemberTooLarge) as exc:
            ctx.finding("MS206", f"appended zip member cannot be read: {exc}", member=entry.name)
            ctx.cover(CoverageStatus.INCONCLUSIVE, "unknown", str(exc), member=entry.name)
            continue
        ctx.scan_child(entry.name, content)
    return len(arc.entries)
