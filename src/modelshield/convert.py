"""Convert checkpoints to safetensors without executing the pickle and without torch.

The input is scanned first; a file with findings at or above the threshold is refused unless
the caller passes ``allow_unsafe=True`` (``--unsafe-convert-flagged`` on the command line). Tensors
are read through :mod:`modelshield.tensors` (a restricted unpickler that imports nothing), written
one at a time to a temporary file beside the output (memory: the largest tensor plus a small
constant), verified by reading the output back, and moved into place atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from modelshield.errors import ModelShieldError, UnsafeInputError
from modelshield.findings import ScanResult, Severity
from modelshield.scanner import scan
from modelshield.tensors import (
    ALIAS_KEY,
    ConversionError,
    Tensor,
    TensorSet,
    iter_unique,
    read_tensors,
)


class RefusedConversionError(UnsafeInputError):
    """The input has findings at or above the threshold; conversion was refused."""

    def __init__(self, path: str, result: ScanResult, threshold: Severity) -> None:
        self.path = path
        self.result = result
        hits = result.at_or_above(threshold)
        lines = [f"  {f.rule_id} {f.severity.label}: {f.message}" for f in hits[:10]]
        super().__init__(
            f"{path}: refused to convert: {len(hits)} finding(s) at or above {threshold.label}\n"
            + "\n".join(lines)
            + "\nRe-run with --unsafe-convert-flagged to convert anyway (nothing is executed, "
            "but you are trusting a file the scanner flagged)."
        )


@dataclass
class ConversionReport:
    source: str
    output: str
    tensors: int = 0
    bytes_written: int = 0
    aliases: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    """Non-tensor entries left out (reported, never silently dropped)."""
    verified: bool = False


def default_output(path: str) -> str:
    p = Path(path)
    return str(p.with_suffix(".safetensors") if p.suffix else p.with_name(p.name + ".safetensors"))


def convert(
    source: str,
    output: str | None = None,
    *,
    threshold: Severity = Severity.HIGH,
    allow_unsafe: bool = False,
    allow_skipped: bool = True,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert ``source`` to safetensors at ``output`` (default: same name, ``.safetensors``)."""
    out_path = output or default_output(source)
    if os.path.abspath(out_path) == os.path.abspath(source):
        raise ModelShieldError("the output would overwrite the input")
    if os.path.exists(out_path) and not overwrite:
        raise ModelShieldError(f"{out_path} exists (use --overwrite to replace it)")
    result = scan(source)
    if result.at_or_above(threshold) and not allow_unsafe:
        raise RefusedConversionError(source, result, threshold)
    report = ConversionReport(source, out_path)
    with read_tensors(source) as tensors:
        report.skipped = list(tensors.skipped)
        if report.skipped and not allow_skipped:
            raise ConversionError(
                f"{source}: {len(report.skipped)} non-tensor entries would be left out: "
                + "; ".join(report.skipped[:5])
            )
        if not tensors.tensors:
            raise ConversionError(f"{source}: no tensors found")
        _write(tensors, out_path, report)
    return report


def _write(tensors: TensorSet, out_path: str, report: ConversionReport) -> None:
    groups = list(iter_unique(tensors.tensors))
    names = [t.name for t, _ in groups]
    if len(set(names)) != len(names):
        raise ConversionError("duplicate tensor names")
    header: dict[str, object] = {}
    offset = 0
    for t, aliases in groups:
        header[t.name] = {
            "dtype": t.dtype,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
        for a in aliases:
            report.aliases[a] = t.name
    metadata = {"format": "pt", **tensors.metadata}
    if report.aliases:
        metadata[ALIAS_KEY] = json.dumps(report.aliases, sort_keys=True)
    if report.skipped:
        metadata["modelshield.skipped"] = json.dumps(report.skipped)
    header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # align the data section to 8 bytes
    directory = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(prefix=".modelshield-", suffix=".safetensors.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(len(raw).to_bytes(8, "little"))
            fh.write(raw)
            for t, _ in groups:
                data = t.read()
                if len(data) != t.nbytes:
                    raise ConversionError(
                        f"{t.name}: storage holds {len(data)} bytes, expected {t.nbytes}"
                    )
                fh.write(data)
                del data
                tensors.release()  # drop the input pages just written from this process
            fh.flush()
            os.fsync(fh.fileno())
        _verify(tmp, groups, tensors)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    report.tensors = len(groups)
    report.bytes_written = 8 + len(raw) + offset
    report.verified = True


def _verify(path: str, groups: list[tuple[Tensor, list[str]]], source: TensorSet) -> None:
    """Read the written file back and compare every tensor with the source, byte for byte.

    The output is read with plain file reads into one reusable buffer (its pages stay in the
    page cache, not in this process), and the source's pages are released after each tensor:
    resident memory stays near the largest tensor.
    """
    chunk = 1 << 24
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        base = 8 + n
        meta = header.get("__metadata__", {})
        aliases_written = json.loads(meta.get(ALIAS_KEY, "{}"))
        buf = bytearray(chunk)
        view = memoryview(buf)
        for t, aliases in groups:
            info = header.get(t.name)
            if info is None or info["dtype"] != t.dtype or tuple(info["shape"]) != t.shape:
                raise ConversionError(f"verification failed for {t.name}: header mismatch")
            begin, end = info["data_offsets"]
            src = memoryview(t.read()).cast("B")
            if end - begin != len(src):
                raise ConversionError(f"verification failed for {t.name}: size mismatch")
            fh.seek(base + begin)
            for i in range(0, len(src), chunk):
                k = fh.readinto(view[: min(chunk, len(src) - i)])
                if not _same_bytes(view[:k], src[i : i + k]) or k == 0:
                    raise ConversionError(f"verification failed for {t.name}: data mismatch")
            del src
            source.release()
            for a in aliases:
                if aliases_written.get(a) != t.name:
                    raise ConversionError(f"verification failed: alias {a} missing")


def _same_bytes(a: bytes | memoryview, b: bytes | memoryview) -> bool:
    """Compare two buffers (memoryview equality is element-wise and slow)."""
    if len(a) != len(b):
        return False
    va, vb = memoryview(a).cast("B"), memoryview(b).cast("B")
    try:
        import numpy as np
    except ImportError:
        return bytes(va) == bytes(vb)
    return bool(np.array_equal(np.frombuffer(va, np.uint8), np.frombuffer(vb, np.uint8)))
