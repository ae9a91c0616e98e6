"""GGUF header and metadata, parsed with bounds and without reading tensor data.

Layout (ggml ``docs/gguf.md``): magic ``GGUF``, u32 version (1, 2 or 3), tensor count and
metadata key/value count (u32 in version 1, u64 after), the key/value pairs, then the tensor
infos, padding and the tensor data. A string is a length (u32 in v1, u64 after) and UTF-8
bytes; an array is an item type, a count and the items (arrays may nest). Files written on
big-endian hosts store every number big-endian; that is recognised from the version field.

Values are kept zero-copy: strings and arrays are recorded as offsets into the buffer and
decoded only on request, so a 150 000-token vocabulary costs one pass over its length fields.
"""

from __future__ import annotations

import enum
import functools
import re
import struct
from dataclasses import dataclass, field

from modelshield.pickle.opcodes import Buffer

MAGIC = b"GGUF"


class ValueType(enum.IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR: dict[ValueType, str] = {
    ValueType.UINT8: "B",
    ValueType.INT8: "b",
    ValueType.UINT16: "H",
    ValueType.INT16: "h",
    ValueType.UINT32: "I",
    ValueType.INT32: "i",
    ValueType.FLOAT32: "f",
    ValueType.BOOL: "?",
    ValueType.UINT64: "Q",
    ValueType.INT64: "q",
    ValueType.FLOAT64: "d",
}


@dataclass(frozen=True)
class Limits:
    max_kv: int = 1 << 20
    max_tensors: int = 1 << 24
    max_key: int = 1 << 16
    """Longest key, in bytes (real keys are tens of bytes)."""
    max_string: int = 1 << 30
    max_array: int = 1 << 30
    """Most items in one array (the largest vocabularies hold a few hundred thousand)."""
    max_depth: int = 8
    """Deepest nesting of arrays inside arrays."""
    max_dims: int = 8


class GGUFError(Exception):
    """The header or metadata breaks the format or a limit; ``offset`` is where."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class StringRef:
    offset: int
    """Offset of the first byte of the string (after its length), relative to the blob."""
    length: int


@dataclass(frozen=True)
class ArrayRef:
    item_type: ValueType
    count: int
    offset: int
    """Offset of the first item, relative to the blob."""
    strings: tuple[StringRef, ...] | None = None
    """The items of a string array, when the parser was asked to keep them."""


Value = int | float | bool | StringRef | ArrayRef


@dataclass(frozen=True)
class KV:
    key: str
    type: ValueType
    value: Value
    offset: int
    """Offset of the key's length field, relative to the blob."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]
    type: int
    offset: int


@dataclass
class GGUFFile:
    version: int
    big_endian: bool
    tensor_count: int
    kv: list[KV] = field(default_factory=list)
    tensors: list[TensorInfo] = field(default_factory=list)
    header_end: int = 0
    """Offset just past the tensor infos (where alignment padding begins)."""
    error: GGUFError | None = None
    """Set when parsing stopped early: what was read before it is kept."""


class Reader:
    def __init__(self, buf: Buffer, start: int, end: int, limits: Limits) -> None:
        self.mv = memoryview(buf)
        self.base = start
        self.end = end
        self.pos = start
        self.limits = limits
        self.bo = "<"
        self.wide = True

    @property
    def rel(self) -> int:
        return self.pos - self.base

    def close(self) -> None:
        """Release the view of the buffer (an mmap cannot close while a view is exported)."""
        self.mv.release()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise GGUFError(
                f"truncated: {what} needs {n} bytes at offset {self.rel}, "
                f"{self.end - self.pos} remain",
                self.rel,
            )

    def scalar(self, code: str, what: str) -> int | float | bool:
        size = struct.calcsize(code)
        self.need(size, what)
        (v,) = struct.unpack_from(self.bo + code, self.mv, self.pos)
        self.pos += size
        return v  # type: ignore[no-any-return]

    def u32(self, what: str) -> int:
        return int(self.scalar("I", what))

    def count(self, what: str) -> int:
        return int(self.scalar("Q" if self.wide else "I", what))

    def string(self, what: str, limit: int) -> StringRef:
        n = self.count(f"{what} length")
        if n > limit:
            raise GGUFError(f"{what} is {n} bytes, over the limit of {limit}", self.rel)
        self.need(n, what)
        ref = StringRef(self.pos - self.base, n)
        self.pos += n
        return ref

    def text(self, ref: StringRef) -> str:
        start = self.base + ref.offset
        return bytes(self.mv[start : start + ref.length]).decode("utf-8", "replace")

    def vtype(self, what: str) -> ValueType:
        at = self.rel
        t = self.u32(what)
        try:
            return ValueType(t)
        except ValueError:
            raise GGUFError(f"{what}: unknown value type {t}", at) from None

    def value(self, t: ValueType, depth: int, keep_strings: bool) -> Value:
        code = _SCALAR.get(t)
        if code is not None:
            return self.scalar(code, t.name.lower())
        if t is ValueType.STRING:
            return self.string("string value", self.limits.max_string)
        return self.array(depth, keep_strings)

    def array(self, depth: int, keep_strings: bool) -> ArrayRef:
        if depth >= self.limits.max_depth:
            raise GGUFError(f"arrays nested deeper than {self.limits.max_depth}", self.rel)
        item = self.vtype("array item type")
        n = self.count("array length")
        if n > self.limits.max_array:
            raise GGUFError(
                f"array of {n} items, over the limit of {self.limits.max_array}", self.rel
            )
        first = self.rel
        code = _SCALAR.get(item)
        if code is not None:
            size = struct.calcsize(code) * n
            self.need(size, f"array of {n} {item.name.lower()}")
            self.pos += size
            return ArrayRef(item, n, first)
        # Every string or nested array takes at least one length field: bound n by the bytes.
        if n * (8 if self.wide else 4) > self.end - self.pos:
            raise GGUFError(f"truncated: array of {n} {item.name.lower()} items", self.rel)
        if item is ValueType.STRING:
            return self.strings(n, first, keep_strings)
        for _ in range(n):
            self.array(depth + 1, False)
        return ArrayRef(item, n, first)

    def strings(self, n: int, first: int, keep: bool) -> ArrayRef:
        """Walk ``n`` strings (the hot loop of vocabularies: kept tight, bounds on each)."""
        width = 8 if self.wide else 4
        unpack = struct.Struct(self.bo + ("Q" if self.wide else "I")).unpack_from
        mv, pos, end, limit = self.mv, self.pos, self.end, self.limits.max_string
        refs: list[StringRef] = []
        base = self.base
        i = 0  # strings walked
        if not keep and self.bo == "<" and limit >= 255:
            # Vocabularies are hundreds of thousands of short strings: a regular expression
            # steps over _RUN of them at a time in C when each is under 256 bytes. Any other
            # run is walked one string at a time below, bounds and errors included.
            run = _short_strings(width)
            while n - i >= _RUN:
                m = run.match(mv, pos, end)
                if m is not None:
                    pos, i = m.end(), i + _RUN
                    continue
                # A long string in this run, or a broken array: walk the run one string at a
                # time; a break is left to the checked loop below, which reports it.
                for _ in range(_RUN):
                    length = unpack(mv, pos)[0] if pos + width <= end else -1
                    if length < 0 or length > limit or pos + width + length > end:
                        break
                    pos += width + length
                    i += 1
                else:
                    continue
                break
        for i in range(i, n):  # noqa: B020  # continues from the strings already walked
            if pos + width > end:
                self.pos = pos
                raise GGUFError(f"truncated: length of array string {i} of {n}", pos - base)
            (length,) = unpack(mv, pos)
            start = pos + width
            pos = start + length
            if pos > end or length > limit:
                self.pos = start
                why = f"over the limit of {limit}" if length > limit else "truncated"
                raise GGUFError(
                    f"{why}: array string {i} of {n} is {length} bytes, {end - start} remain",
                    start - base,
                )
            if keep:
                refs.append(StringRef(start - base, length))
        self.pos = pos
        return ArrayRef(ValueType.STRING, n, first, tuple(refs) if keep else None)


_RUN = 1024
"""Strings stepped over per regular-expression match."""


@functools.cache
def _short_strings(width: int) -> re.Pattern[bytes]:
    """Matches _RUN consecutive strings under 256 bytes with little-endian ``width``-byte
    lengths: one alternative per length, told apart by the first byte of the length field and
    tried in turn, the lengths of most tokens (about 8 bytes) first."""
    alternatives = [
        re.escape(bytes([n]) + bytes(width - 1)) + (b".{%d}" % n if n else b"")
        for n in sorted(range(256), key=lambda n: abs(n - 8))
    ]
    return re.compile(b"(?:" + b"|".join(alternatives) + b"){%d}+" % _RUN, re.DOTALL)


def parse(
    buf: Buffer,
    start: int = 0,
    end: int | None = None,
    *,
    limits: Limits | None = None,
    keep_string_arrays: frozenset[str] = frozenset(),
) -> tuple[GGUFFile, Reader]:
    """Parse the header, the metadata and the tensor infos of the GGUF file at ``buf[start:]``.

    Returns what was read and the reader (for :func:`string`; close it when done, it holds a
    view of ``buf``); a format break or a limit stops parsing and is recorded in ``error`` (what
    came before it is kept). Tensor data is not read. String arrays are kept (as references)
    only for the keys in ``keep_string_arrays``. Raises :class:`GGUFError` when not even the
    magic and version can be read.
    """
    lim = limits or Limits()
    with memoryview(buf) as whole:
        stop = len(whole) if end is None else end
    r = Reader(buf, start, stop, lim)
    try:
        return _parse(r, start, lim, keep_string_arrays), r
    except BaseException:
        r.close()
        raise


def _parse(r: Reader, start: int, lim: Limits, keep_string_arrays: frozenset[str]) -> GGUFFile:
    r.need(8, "magic and version")
    if bytes(r.mv[start : start + 4]) != MAGIC:
        raise GGUFError("no GGUF magic", 0)
    r.pos += 4
    raw = bytes(r.mv[r.pos : r.pos + 4])
    version = int.from_bytes(raw, "little")
    big = False
    if version not in (1, 2, 3) and int.from_bytes(raw, "big") in (1, 2, 3):
        version, big = int.from_bytes(raw, "big"), True
        r.bo = ">"
    if version not in (1, 2, 3):
        raise GGUFError(f"unsupported GGUF version {version}", 4)
    r.pos += 4
    r.wide = version >= 2
    out = GGUFFile(version, big, 0)
    try:
        out.tensor_count = r.count("tensor count")
        kv_count = r.count("metadata count")
        if out.tensor_count > lim.max_tensors:
            raise GGUFError(f"{out.tensor_count} tensors, over the limit of {lim.max_tensors}", 8)
        if kv_count > lim.max_kv:
            raise GGUFError(f"{kv_count} metadata entries, over the limit of {lim.max_kv}", 8)
        for _ in range(kv_count):
            at = r.rel
            key = r.text(r.string("key", lim.max_key))
            t = r.vtype(f"type of {key!r}")
            v = r.value(t, 0, key in keep_string_arrays)
            out.kv.append(KV(key, t, v, at))
        for _ in range(out.tensor_count):
            name = r.text(r.string("tensor name", lim.max_key))
            at = r.rel
            nd = r.u32("tensor dimensions")
            if nd > lim.max_dims:
                raise GGUFError(f"tensor {name!r} has {nd} dimensions", at)
            dims = tuple(r.count("tensor dimension") for _ in range(nd))
            ttype = r.u32("tensor type")
            toff = int(r.scalar("Q", "tensor offset"))
            out.tensors.append(TensorInfo(name, dims, ttype, toff))
        out.header_end = r.rel
    except GGUFError as exc:
        out.error = exc.with_traceback(None)  # no frames (and no buffer views) kept alive
    return out


def string(reader: Reader, ref: StringRef) -> str:
    """Decode a string value (invalid UTF-8 replaced, as an analysis must still see it)."""
    return reader.text(ref)
