"""A minimal, bounds-checked FlatBuffer reader for TensorFlow Lite models (``schema.fbs``).

Reads what matters for security and container validation: the ``TFL3`` identifier, the root
``Model`` table, its schema version, operator codes (builtin and custom, with the custom
operator's name), subgraphs (their operators' opcode indices and tensors' buffer indices are
checked), buffers (their data vectors and, for models over 2 GB, their out-of-flatbuffer
offset and size are checked against the file) and metadata names. Buffer contents (weights)
are never read. Every offset is checked before it is followed; any violation raises
:class:`TFLiteError`, as the TFLite flatbuffer verifier would refuse the model.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from modelshield.pickle.opcodes import Buffer

IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
CUSTOM = 32
"""``BuiltinOperator.CUSTOM``."""
PLACEHOLDER_FOR_GREATER_OP_CODES = 127

# Model table fields
_MODEL_VERSION = 0
_MODEL_OPERATOR_CODES = 1
_MODEL_SUBGRAPHS = 2
_MODEL_DESCRIPTION = 3
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
# OperatorCode
_OC_DEPRECATED_BUILTIN = 0
_OC_CUSTOM_CODE = 1
_OC_VERSION = 2
_OC_BUILTIN = 3
# SubGraph
_SG_TENSORS = 0
_SG_OPERATORS = 3
# Tensor / Operator
_T_BUFFER = 2
_OP_OPCODE_INDEX = 0
# Buffer
_B_DATA = 0
_B_OFFSET = 1
_B_SIZE = 2
# Metadata
_MD_NAME = 0

_STRING_LIMIT = 1024
MAX_ELEMENTS = 10_000_000
"""Most operators plus tensors plus buffers validated (a bound on work, not on the format)."""


class TFLiteError(Exception):
    """The bytes are not a valid TFLite flatbuffer."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset
        """Offset relative to the start of the model."""


@dataclass(frozen=True, slots=True)
class OperatorCode:
    index: int
    builtin_code: int
    custom_code: str | None
    version: int

    @property
    def is_custom(self) -> bool:
        return self.builtin_code == CUSTOM


@dataclass
class TFLiteModel:
    version: int = 0
    operator_codes: list[OperatorCode] = field(default_factory=list)
    subgraphs: int = 0
    operators: int = 0
    tensors: int = 0
    buffers: int = 0
    description: str = ""
    metadata: list[str] = field(default_factory=list)
    end: int = 0
    """Offset just past the last byte the flatbuffer's tables, vectors and strings use (data
    appended after it, such as TFLite metadata's zip of associated files, is not part of it;
    buffers stored past the flatbuffer in models over 2 GB are not counted)."""
    bytes_read: int = 0
    """Bytes of tables, offsets and strings read (weights are only bounds-checked)."""

    @property
    def custom_ops(self) -> list[OperatorCode]:
        return [c for c in self.operator_codes if c.is_custom]


_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from


class _Reader:
    def __init__(self, view: memoryview, base: int, size: int) -> None:
        self.view = view
        self.base = base
        self.size = size
        self.end = 0
        self.elements = 0
        self.read = 0

    def _need(self, pos: int, n: int, what: str, *, read: bool = True) -> int:
        if pos < 0 or pos + n > self.size:
            raise TFLiteError(f"{what} at {pos} lies outside the file ({self.size} bytes)", pos)
        if pos + n > self.end:
            self.end = pos + n
        if read:
            self.read += n
        return self.base + pos

    def u8(self, pos: int, what: str) -> int:
        return self.view[self._need(pos, 1, what)]

    def i8(self, pos: int, what: str) -> int:
        v = self.u8(pos, what)
        return v - 256 if v > 127 else v

    def u16(self, pos: int, what: str) -> int:
        return int(_U16(self.view, self._need(pos, 2, what))[0])

    def u32(self, pos: int, what: str) -> int:
        return int(_U32(self.view, self._need(pos, 4, what))[0])

    def i32(self, pos: int, what: str) -> int:
        return int(_I32(self.view, self._need(pos, 4, what))[0])

    def u64(self, pos: int, what: str) -> int:
        at = self._need(pos, 8, what)
        return int(struct.unpack_from("<Q", self.view, at)[0])

    def deref(self, pos: int, what: str) -> int:
        """Follow a ``uoffset_t`` stored at ``pos``."""
        target = pos + self.u32(pos, what)
        if target >= self.size:
            raise TFLiteError(f"{what}: offset at {pos} points past the end", pos)
        return target

    def count(self, n: int, pos: int) -> None:
        self.elements += n
        if self.elements > MAX_ELEMENTS:
            raise TFLiteError(f"more than {MAX_ELEMENTS} elements", pos)


class _Table:
    def __init__(self, r: _Reader, pos: int, what: str) -> None:
        self.r = r
        self.pos = pos
        self.what = what
        vtable = pos - r.i32(pos, f"{what} table")
        if vtable % 2:
            raise TFLiteError(f"{what}: misaligned vtable at {vtable}", pos)
        self.vsize = r.u16(vtable, f"{what} vtable")
        self.tsize = r.u16(vtable + 2, f"{what} vtable")
        if self.vsize < 4 or self.vsize % 2:
            raise TFLiteError(f"{what}: bad vtable size {self.vsize}", vtable)
        if self.tsize < 4:
            raise TFLiteError(f"{what}: bad table size {self.tsize}", pos)
        r._need(vtable, self.vsize, f"{what} vtable")
        r._need(pos, self.tsize, f"{what} table")
        self.vtable = vtable

    def field(self, index: int, width: int) -> int | None:
        """Absolute position of field ``index`` (``width`` bytes), or None when absent."""
        slot = 4 + 2 * index
        if slot + 2 > self.vsize:
            return None
        off = self.r.u16(self.vtable + slot, f"{self.what} vtable")
        if off == 0:
            return None
        if off + width > self.tsize:
            raise TFLiteError(f"{self.what}: field {index} lies outside its table", self.pos)
        return self.pos + off

    def scalar_u32(self, index: int, default: int = 0) -> int:
        at = self.field(index, 4)
        return default if at is None else self.r.u32(at, self.what)

    def scalar_i32(self, index: int, default: int = 0) -> int:
        at = self.field(index, 4)
        return default if at is None else self.r.i32(at, self.what)

    def scalar_u64(self, index: int, default: int = 0) -> int:
        at = self.field(index, 8)
        return default if at is None else self.r.u64(at, self.what)

    def vector(self, index: int, elem: int, name: str) -> tuple[int, int] | None:
        """``(first element position, length)`` of a vector field, bounds-checked."""
        at = self.field(index, 4)
        if at is None:
            return None
        what = f"{self.what}.{name}"
        vec = self.r.deref(at, what)
        n = self.r.u32(vec, what)
        if n * elem > self.r.size:
            raise TFLiteError(f"{what}: {n} elements run past the end of the file", vec)
        self.r._need(vec + 4, n * elem, what, read=elem != 1)
        return vec + 4, n

    def table(self, pos: int, name: str) -> _Table:
        return _Table(self.r, self.r.deref(pos, name), name)

    def string(self, index: int, name: str) -> str | None:
        at = self.field(index, 4)
        if at is None:
            return None
        what = f"{self.what}.{name}"
        s = self.r.deref(at, what)
        n = self.r.u32(s, what)
        if n > self.r.size:
            raise TFLiteError(f"{what}: string of {n} bytes runs past the end", s)
        if self.r.u8(s + 4 + n, what) != 0:
            raise TFLiteError(f"{what}: string is not NUL-terminated", s)
        at0 = self.r.base + s + 4
        self.r.read += min(n, _STRING_LIMIT)
        return bytes(self.r.view[at0 : at0 + min(n, _STRING_LIMIT)]).decode("utf-8", "replace")


def has_identifier(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] == IDENTIFIER


def parse_tflite(buf: Buffer | memoryview, start: int = 0, end: int | None = None) -> TFLiteModel:
    """Read and validate the TFLite model in ``buf[start:end]``. Raises :class:`TFLiteError`."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    stop = len(view) if end is None else end
    r = _Reader(view, start, stop - start)
    if r.size < 8 or bytes(view[start + 4 : start + 8]) != IDENTIFIER:
        raise TFLiteError("no TFL3 file identifier at offset 4", 4)
    root = _Table(r, r.deref(0, "root offset"), "Model")
    m = TFLiteModel(version=root.scalar_u32(_MODEL_VERSION))
    m.description = root.string(_MODEL_DESCRIPTION, "description") or ""

    codes = root.vector(_MODEL_OPERATOR_CODES, 4, "operator_codes")
    if codes is not None:
        first, n = codes
        r.count(n, first)
        for i in range(n):
            oc = root.table(first + 4 * i, f"operator_codes[{i}]")
            dep_at = oc.field(_OC_DEPRECATED_BUILTIN, 1)
            deprecated = 0 if dep_at is None else r.i8(dep_at, oc.what)
            builtin = oc.scalar_i32(_OC_BUILTIN)
            # tflite::GetBuiltinCode: the larger of the two fields.
            code = max(builtin, deprecated)
            custom = oc.string(_OC_CUSTOM_CODE, "custom_code")
            if code == CUSTOM and custom is None:
                raise TFLiteError(f"operator_codes[{i}] is CUSTOM without a custom_code", oc.pos)
            m.operator_codes.append(OperatorCode(i, code, custom, oc.scalar_i32(_OC_VERSION, 1)))

    buffers = root.vector(_MODEL_BUFFERS, 4, "buffers")
    if buffers is not None:
        first, n = buffers
        r.count(n, first)
        m.buffers = n
        for i in range(n):
            b = root.table(first + 4 * i, f"buffers[{i}]")
            b.vector(_B_DATA, 1, "data")
            offset = b.scalar_u64(_B_OFFSET)
            size = b.scalar_u64(_B_SIZE)
            # offset 0/1 mean "no data" / "in the flatbuffer"; larger ones lie after it.
            if offset > 1 and offset + size > r.size:
                raise TFLiteError(
                    f"buffers[{i}]: data at {offset} (+{size} bytes) lies outside the file",
                    b.pos,
                )

    subgraphs = root.vector(_MODEL_SUBGRAPHS, 4, "subgraphs")
    if subgraphs is not None:
        first, n = subgraphs
        m.subgraphs = n
        r.count(n, first)
        for i in range(n):
            _subgraph(r, root.table(first + 4 * i, f"subgraphs[{i}]"), m)

    metadata = root.vector(_MODEL_METADATA, 4, "metadata")
    if metadata is not None:
        first, n = metadata
        r.count(n, first)
        for i in range(n):
            md = root.table(first + 4 * i, f"metadata[{i}]")
            m.metadata.append(md.string(_MD_NAME, "name") or "")
    m.end = r.end
    m.bytes_read = r.read
    return m


def _subgraph(r: _Reader, sg: _Table, m: TFLiteModel) -> None:
    tensors = sg.vector(_SG_TENSORS, 4, "tensors")
    if tensors is not None:
        first, n = tensors
        r.count(n, first)
        m.tensors += n
        for i in range(n):
            t = sg.table(first + 4 * i, f"{sg.what}.tensors[{i}]")
            index = t.scalar_u32(_T_BUFFER)
            if m.buffers and index >= m.buffers:
                raise TFLiteError(f"{t.what}: buffer index {index} out of range", t.pos)
    operators = sg.vector(_SG_OPERATORS, 4, "operators")
    if operators is not None:
        first, n = operators
        r.count(n, first)
        m.operators += n
        for i in range(n):
            op = sg.table(first + 4 * i, f"{sg.what}.operators[{i}]")
            index = op.scalar_u32(_OP_OPCODE_INDEX)
            if index >= len(m.operator_codes):
                raise TFLiteError(f"{op.what}: opcode index {index} out of range", op.pos)
