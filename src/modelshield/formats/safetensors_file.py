"""Strict validation of a safetensors header (the tensor bytes are never read).

Layout (huggingface/safetensors ``README.md``, "Format"): 8 bytes ``N`` (little-endian u64),
``N`` bytes of UTF-8 JSON, then the byte buffer. The JSON is an object mapping tensor names to
``{"dtype", "shape", "data_offsets": [BEGIN, END]}`` (offsets relative to the byte buffer),
plus an optional ``__metadata__`` text-to-text map. Duplicate keys are disallowed.

The rules follow what the reference implementation (the Rust crate behind the Python package)
accepts: header at most 100 MB, valid UTF-8, JSON per ``serde_json`` (leading and trailing
whitespace allowed; NaN, lone surrogates and control characters are not), known dtypes (sub-byte
dtypes must fill whole bytes), shapes and offsets of unsigned 64-bit integers, tensors sorted by
offset tiling the byte buffer exactly from 0 to its end. Unknown fields in a tensor entry are
ignored, as the library ignores them. One deliberate difference: duplicate tensor names are
reported (the format forbids them; the library silently keeps one, another parser may keep the
other).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_HEADER_SIZE = 100_000_000
"""The reference implementation rejects larger headers."""

_U64_MAX = (1 << 64) - 1
_MAX_DEPTH = 128
"""serde_json's recursion limit."""

DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
"""Every dtype of safetensors 0.8 and its size in bits."""

_JSON_WS = b" \t\n\r"


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass
class Header:
    """What the header says, and every way it breaks the format."""

    length: int
    """``N``: the declared size of the JSON header."""
    data_start: int
    """Offset of the byte buffer from the start of the file (``8 + N``)."""
    tensors: list[Tensor] = field(default_factory=list)
    metadata: dict[str, str] | None = None
    problems: list[str] = field(default_factory=list)


def header_length(head: bytes) -> int | None:
    return int.from_bytes(head[:8], "little") if len(head) >= 8 else None


def starts_like_header(head: bytes) -> bool:
    """Whether the JSON after the length field begins (after JSON whitespace) with ``{``."""
    rest = head[8:].lstrip(_JSON_WS)
    return rest[:1] == b"{"


class _Duplicates:
    def __init__(self) -> None:
        self.found: list[str] = []

    def hook(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                self.found.append(k)
            out[k] = v
        return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bad_strings(value: Any, depth: int = 0) -> str | None:
    """The first reason serde_json would reject a value Python's json accepted."""
    if depth > _MAX_DEPTH:
        return f"JSON nested deeper than {_MAX_DEPTH} levels"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"string {value!r} contains a lone UTF-16 surrogate escape"
        return None
    if isinstance(value, float):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(1 << 63) <= value <= _U64_MAX:
            return f"integer {value} does not fit in 64 bits"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            why = _bad_strings(k, depth + 1) or _bad_strings(v, depth + 1)
            if why:
                return why
    elif isinstance(value, list):
        for v in value:
            why = _bad_strings(v, depth + 1)
            if why:
                return why
    return None


def _u64(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= _U64_MAX


def _tensor(name: str, info: object, problems: list[str]) -> Tensor | None:
    if not isinstance(info, dict):
        problems.append(f"tensor {name!r}: entry is {type(info).__name__}, not an object")
        return None
    bad = False
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            problems.append(f"tensor {name!r}: missing field {key!r}")
            bad = True
    if bad:
        return None
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        problems.append(f"tensor {name!r}: unknown dtype {dtype!r}")
        bad = True
    if not isinstance(shape, list) or not all(_u64(d) for d in shape):
        problems.append(
            f"tensor {name!r}: shape {shape!r} is not a list of non-negative 64-bit integers"
        )
        bad = True
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_u64(o) for o in offsets)):
        problems.append(
            f"tensor {name!r}: data_offsets {offsets!r} is not [BEGIN, END] "
            "(two non-negative 64-bit integers)"
        )
        bad = True
    if bad:
        return None
    begin, end = offsets
    if end < begin:
        problems.append(f"tensor {name!r}: data_offsets [{begin}, {end}] end before they begin")
        return None
    numel = 1
    for d in shape:
        numel *= d
    bits = numel * DTYPE_BITS[dtype]
    if numel > _U64_MAX or bits // 8 > _U64_MAX:
        problems.append(f"tensor {name!r}: shape {shape} overflows 64 bits")
        return None
    if bits % 8:
        problems.append(
            f"tensor {name!r}: {numel} elements of {dtype} do not fill a whole number of bytes"
        )
        return None
    if end - begin != bits // 8:
        problems.append(
            f"tensor {name!r}: {dtype}{shape} needs {bits // 8} bytes but data_offsets "
            f"[{begin}, {end}] span {end - begin}"
        )
    return Tensor(name, dtype, tuple(shape), begin, end)


def parse_header(head: bytes, file_size: int) -> Header:
    """Validate a safetensors header.

    ``head`` must hold the first ``min(file_size, 8 + N)`` bytes of the file (use
    :func:`header_length` to learn ``N``); nothing past the header is needed.
    """
    if file_size < 8 or len(head) < 8:
        h = Header(0, 8)
        h.problems.append(f"file is {file_size} bytes, shorter than the 8-byte length field")
        return h
    n = int.from_bytes(head[:8], "little")
    h = Header(n, 8 + n)
    if n > MAX_HEADER_SIZE:
        h.problems.append(f"header length {n} exceeds the 100 MB ({MAX_HEADER_SIZE}) limit")
        return h
    if 8 + n > file_size:
        h.problems.append(
            f"header length {n} runs past the end of the file ({file_size} bytes, "
            f"{file_size - 8} after the length field)"
        )
        return h
    raw = head[8 : 8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        h.problems.append(f"header is not valid UTF-8 (byte {exc.start} of the header)")
        return h
    dups = _Duplicates()
    try:
        doc = json.loads(text, object_pairs_hook=dups.hook, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        h.problems.append(f"header is not valid JSON: {exc}")
        return h
    if not isinstance(doc, dict):
        h.problems.append(f"header is a JSON {type(doc).__name__}, not an object")
        return h
    why = _bad_strings(doc)
    if why:
        h.problems.append(f"header is not valid JSON for the safetensors parser: {why}")
        return h
    for k in dict.fromkeys(dups.found):
        h.problems.append(f"duplicate key {k!r} (the format disallows duplicate keys)")
    if "__metadata__" in doc:
        meta = doc.pop("__metadata__")
        if meta is not None:
            if not isinstance(meta, dict):
                h.problems.append(f"__metadata__ is {type(meta).__name__}, not an object")
            else:
                bad = [k for k, v in meta.items() if not isinstance(v, str)]
                if bad:
                    h.problems.append(
                        f"__metadata__ must map strings to strings; {bad[0]!r} maps to "
                        f"{type(meta[bad[0]]).__name__}"
                    )
                else:
                    h.metadata = meta
    for name, info in doc.items():
        t = _tensor(name, info, h.problems)
        if t is not None:
            h.tensors.append(t)
    if h.problems:
        return h
    _check_layout(h, file_size)
    return h


def _check_layout(h: Header, file_size: int) -> None:
    """Offsets must tile ``[0, data size)`` exactly: no gap, no overlap, nothing left over."""
    data_size = file_size - h.data_start
    pos = 0
    for t in sorted(h.tensors, key=lambda t: (t.begin, t.end)):
        if t.begin < pos:
            h.problems.append(
                f"tensor {t.name!r}: data_offsets [{t.begin}, {t.end}] overlap the previous "
                f"tensor (which ends at {pos})"
            )
            return
        if t.begin > pos:
            h.problems.append(
                f"tensor {t.name!r}: data_offsets [{t.begin}, {t.end}] leave a gap of "
                f"{t.begin - pos} bytes after offset {pos}"
            )
            return
        pos = t.end
    if pos > data_size:
        h.problems.append(
            f"tensors end at data offset {pos} but the file has only {data_size} bytes of data"
        )
    elif pos < data_size:
        h.problems.append(
            f"{data_size - pos} bytes after the last tensor (data offset {pos}) are not "
            "described by the header"
        )
