"""ONNX models: external-data references that escape the model's directory, operators from
non-standard domains (native code a runtime must load), damaged protobuf.

The model is walked over the protobuf wire format (:mod:`modelshield.formats.onnx_model`);
tensor payloads are stepped over, never read, so memory stays flat as models grow. Nothing is
loaded with ``onnx`` or ``onnxruntime``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from modelshield.checks.context import Context, Probe
from modelshield.findings import Confidence, CoverageStatus, Severity
from modelshield.formats.onnx_model import ExternalRef, OnnxError, OnnxModel, looks_like_model
from modelshield.formats.onnx_model import parse_model as parse_onnx
from modelshield.rules import checks as rule_tables

RULES = rule_tables.ONNX

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"})
RUNTIME_DOMAINS = ("com.microsoft", "com.ms.internal.")
"""Domains of onnxruntime's built-in contrib operators (``com.microsoft``, ``.nchwc``...)."""

_MAX_OPS_LISTED = 12


def matches(probe: Probe) -> bool:
    return looks_like_model(probe.head, probe.size, probe.name.lower().endswith(".onnx"))


def check(ctx: Context) -> None:
    view = memoryview(ctx.buf)
    model, error = _parse(view, ctx.start, ctx.end)
    del view
    _external_data(ctx, model)
    _domains(ctx, model)
    ctx.add_bytes_read(max(0, ctx.size - model.payload_bytes - min(ctx.size, 512)))
    if error is not None:
        ctx.finding(
            "MS402",
            f"ONNX model cannot be read to the end: {error.message} (in {error.where})",
            offset=error.offset - ctx.start,
        )
        ctx.cover(CoverageStatus.INCONCLUSIVE, "onnx", f"damaged protobuf: {error.message}")
        return
    if not model.has_graph:
        ctx.finding("MS402", "ONNX model without a graph: loaders reject it", severity=Severity.LOW)
    ctx.cover(CoverageStatus.SCANNED, "onnx", _summary(model))


@dataclass(frozen=True)
class _Failure:
    message: str
    offset: int
    where: str


def _parse(view: memoryview, start: int, end: int) -> tuple[OnnxModel, _Failure | None]:
    """The model as far as it could be read, and why it stopped (no traceback is kept: it
    would hold views on the mapped file)."""
    try:
        return parse_onnx(view, start, end), None
    except OnnxError as exc:
        return exc.partial or OnnxModel(), _Failure(str(exc), exc.offset, exc.where)


def _summary(model: OnnxModel) -> str:
    domains = sorted({d or "ai.onnx" for d, _ in model.ops})
    parts = [
        f"IR {model.ir_version}",
        f"{model.nodes} nodes in {model.graphs} graphs",
        f"{model.tensors} tensors",
        f"domains {', '.join(domains) if domains else 'none'}",
    ]
    if model.functions:
        parts.append(f"{len(model.functions)} local functions")
    if model.external:
        parts.append(f"{len(model.external)} tensors with external data")
    if model.producer_name:
        parts.append(f"producer {model.producer_name} {model.producer_version}".rstrip())
    return "; ".join(parts)


# ---------------------------------------------------------------------- custom domains
def _domains(ctx: Context, model: OnnxModel) -> None:
    by_domain: dict[str, list[str]] = {}
    first: dict[str, tuple[str, int]] = {}
    for (domain, op_type), use in model.ops.items():
        if domain in STANDARD_DOMAINS or (domain, op_type) in model.functions:
            continue  # model-local functions are expanded from the model itself
        by_domain.setdefault(domain, []).append(f"{op_type} x{use.count}")
        if domain not in first or use.offset < first[domain][1]:
            first[domain] = (use.where, use.offset)
    versions = {o.domain: o.version for o in model.opset_imports}
    for domain in sorted(by_domain):
        ops = sorted(by_domain[domain])
        shown = ", ".join(ops[:_MAX_OPS_LISTED])
        if len(ops) > _MAX_OPS_LISTED:
            shown += f", ... ({len(ops)} operators)"
        builtin = domain.startswith(RUNTIME_DOMAINS)
        declared = f" (opset {versions[domain]})" if domain in versions else ""
        why = (
            "onnxruntime contrib operators, built into the runtime"
            if builtin
            else "a runtime needs a custom-operator library (native code) to run them"
        )
        where, offset = first[domain]
        ctx.finding(
            "MS401",
            f"operators from domain {domain!r}{declared}: {shown}; {why}",
            offset=offset - ctx.start,
            severity=Severity.LOW if builtin else None,
            evidence=where,
        )


# ---------------------------------------------------------------------- external data
def _escape_reason(location: str) -> str | None:
    """Why ``location`` names a file outside the model's directory on any platform."""
    norm = location.replace("\\", "/")
    if norm.startswith("/"):
        return "an absolute path"
    if len(norm) > 1 and norm[1] == ":":
        return "an absolute Windows path"
    if ".." in norm.split("/"):
        return "a path with '..'"
    if "\x00" in norm:
        return "a path with a NUL byte"
    return None


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def _external_data(ctx: Context, model: OnnxModel) -> None:
    on_disk = ctx.is_top_level and ctx.fs_path is not None
    checked: dict[str, tuple[str, int, int] | None] = {}
    for ref in model.external:
        offset = ref.offset - ctx.start
        dormant = "" if ref.external else " (data_location is not EXTERNAL: loaders ignore it)"
        severity = None if ref.external else Severity.LOW
        escaped = False
        for location in dict.fromkeys(ref.all_locations):
            reason = _escape_reason(location)
            if reason is not None:
                escaped = True
                ctx.finding(
                    "MS400",
                    f"tensor {ref.tensor!r} reads its values from {reason}: {location!r}{dormant}",
                    offset=offset,
                    severity=severity,
                    evidence=ref.where,
                )
        if not ref.external or escaped:
            continue
        if not ref.location:
            ctx.finding(
                "MS403",
                f"tensor {ref.tensor!r} is stored externally but names no file",
                offset=offset,
                evidence=ref.where,
            )
            continue
        problem = _numbers(ref)
        if problem is not None:
            ctx.finding("MS403", f"tensor {ref.tensor!r}: {problem}", offset=offset)
            continue
        if on_disk:
            assert ctx.fs_path is not None
            if ref.location not in checked:
                checked[ref.location] = _resolve(ctx, ctx.fs_path, ref)
            _report_file(ctx, ref, checked[ref.location], offset)


def _numbers(ref: ExternalRef) -> str | None:
    for label, raw in (("offset", ref.file_offset), ("length", ref.length)):
        if raw is None:
            continue
        try:
            value = int(raw)
        except ValueError:
            return f"external data {label} {raw[:40]!r} is not a number"
        if value < 0:
            return f"external data {label} {value} is negative"
    return None


def _resolve(ctx: Context, fs_path: str, ref: ExternalRef) -> tuple[str, int, int] | None:
    """``(real path, size, links)`` of the external file, after reporting an escape; None
    when it escapes or does not exist as a regular file (reported here)."""
    assert ref.location is not None
    model_path = os.path.abspath(fs_path)
    base = os.path.dirname(model_path)
    target = os.path.join(base, ref.location)
    real = os.path.realpath(target)
    # The directory the model is listed in, and (for a model that is itself a link, as in the
    # Hugging Face cache) the directory its content lives in.
    roots = {os.path.realpath(base), os.path.dirname(os.path.realpath(model_path))}
    if not any(_inside(real, root) for root in roots):
        ctx.finding(
            "MS400",
            f"tensor {ref.tensor!r} reads its values from {ref.location!r}, which resolves "
            f"through a symbolic link to {real!r}, outside the model's directory",
            offset=ref.offset - ctx.start,
            evidence=ref.where,
        )
        return None
    try:
        st = os.stat(real)
    except OSError:
        ctx.finding(
            "MS403",
            f"tensor {ref.tensor!r}: external data file {ref.location!r} does not exist "
            "beside the model",
            offset=ref.offset - ctx.start,
            evidence=ref.where,
        )
        return None
    if not stat.S_ISREG(st.st_mode):
        ctx.finding(
            "MS403",
            f"tensor {ref.tensor!r}: external data {ref.location!r} is not a regular file",
            offset=ref.offset - ctx.start,
            evidence=ref.where,
        )
        return None
    return real, st.st_size, st.st_nlink


def _report_file(
    ctx: Context, ref: ExternalRef, resolved: tuple[str, int, int] | None, offset: int
) -> None:
    if resolved is None:
        return
    _, size, links = resolved
    if links > 1:
        ctx.finding(
            "MS400",
            f"tensor {ref.tensor!r}: external data file {ref.location!r} has {links} hard "
            "links; it may be a file from elsewhere on the machine (onnx 1.21+ refuses it)",
            offset=offset,
            severity=Severity.MEDIUM,
            confidence=Confidence.LOW,
            evidence=ref.where,
        )
    start = int(ref.file_offset) if ref.file_offset is not None else 0
    length = int(ref.length) if ref.length is not None else None
    if start > size or (length is not None and start + length > size):
        span = f"offset {start}" + (f", length {length}" if length is not None else "")
        ctx.finding(
            "MS403",
            f"tensor {ref.tensor!r}: {span} lies beyond the end of {ref.location!r} ({size} bytes)",
            offset=offset,
            evidence=ref.where,
        )
