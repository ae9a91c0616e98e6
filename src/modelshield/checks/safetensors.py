"""safetensors files: strict header validation, reading the header only.

A safetensors file is an 8-byte header length, a JSON header and raw tensor bytes. No loader
executes anything from it, so the only question is whether the file is what it claims: a header
that breaks the format is reported precisely (MS510). The tensor bytes are never read, so the
cost is proportional to the header, not to the weights.

Coverage is ``scanned`` for valid and invalid files alike: the safetensors loader rejects an
invalid file before touching its data, and content that a code-executing loader would interpret
(a pickle, a zip checkpoint) is recognised by content before this check is offered the file.
"""

from __future__ import annotations

from modelshield.checks.context import Context, Probe
from modelshield.findings import CoverageStatus
from modelshield.formats import safetensors_file as st
from modelshield.rules import checks as rule_tables

RULES = rule_tables.SAFETENSORS

_SUFFIX = ".safetensors"


def matches(probe: Probe) -> bool:
    """An 8-byte length then a JSON object; a length past the file only for ``.safetensors``."""
    n = st.header_length(probe.head)
    if n is None or probe.size < 10 or not st.starts_like_header(probe.head):
        return False
    if 2 <= n <= probe.size - 8:
        return True
    return probe.name.lower().endswith(_SUFFIX)


def check(ctx: Context) -> None:
    n = st.header_length(ctx.bytes(0, 8)) or 0
    want = 8 + min(n, st.MAX_HEADER_SIZE)
    head = ctx.bytes(0, want) if n <= st.MAX_HEADER_SIZE else ctx.bytes(0, 8)
    ctx.add_bytes_read(len(head))
    header = st.parse_header(head, ctx.size)
    for problem in header.problems:
        ctx.finding("MS510", f"invalid safetensors header: {problem}", offset=8)
    if header.problems:
        ctx.cover(
            CoverageStatus.SCANNED,
            "safetensors",
            f"invalid header ({len(header.problems)} problem(s)); no loader runs code from it",
        )
        return
    ctx.cover(
        CoverageStatus.SCANNED,
        "safetensors",
        f"{len(header.tensors)} tensors; header of {header.length} bytes validated, "
        "tensor data not read",
    )
