"""A minimal, bounded protocol-buffers wire-format reader (no generated code, no dependency).

ONNX models, TensorFlow SavedModels and frozen graphs are protobuf messages. This reader walks
fields lazily over a buffer and returns offsets for length-delimited fields, so that large
payloads (tensor bytes) are stepped over without being copied.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from modelshield.pickle.opcodes import Buffer

VARINT = 0
FIXED64 = 1
LEN = 2
START_GROUP = 3
END_GROUP = 4
FIXED32 = 5


class ProtobufError(Exception):
    """The bytes are not a well-formed protobuf message."""


class Field(NamedTuple):
    number: int
    wire_type: int
    value: int
    """The integer for VARINT/FIXED32/FIXED64; for LEN, the payload's start offset."""
    end: int
    """For LEN fields, the payload's end offset; otherwise the offset after the field."""

    @property
    def start(self) -> int:
        return self.value


def read_varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint longer than 10 bytes")


def iter_fields(
    buf: Buffer | memoryview, start: int = 0, end: int | None = None
) -> Iterator[Field]:
    """Yield the fields of one message in ``buf[start:end]``. Raises :class:`ProtobufError`.

    One-byte keys, lengths and varints (nearly all of them) are decoded inline."""
    data = buf if isinstance(buf, memoryview) else memoryview(buf)
    stop = len(data) if end is None else end
    pos = start
    new = tuple.__new__  # Field._make without its Python-level call and length check
    while pos < stop:
        key = data[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(data, pos, stop)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire in (LEN, VARINT):
            # A length or a value: a varint either way.
            if pos < stop and data[pos] < 0x80:
                value = data[pos]
                pos += 1
            else:
                value, pos = read_varint(data, pos, stop)
            if wire == VARINT:
                yield new(Field, (number, wire, value, pos))
                continue
            if pos + value > stop:
                raise ProtobufError("length-delimited field runs past the message")
            yield new(Field, (number, wire, pos, pos + value))
            pos += value
        elif wire == FIXED64:
            if pos + 8 > stop:
                raise ProtobufError("truncated fixed64")
            yield new(Field, (number, wire, int.from_bytes(data[pos : pos + 8], "little"), pos + 8))
            pos += 8
        elif wire == FIXED32:
            if pos + 4 > stop:
                raise ProtobufError("truncated fixed32")
            yield new(Field, (number, wire, int.from_bytes(data[pos : pos + 4], "little"), pos + 4))
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")


def text(buf: Buffer | memoryview, f: Field, limit: int = 1 << 20) -> str:
    """A LEN field decoded as UTF-8 text (truncated at ``limit`` bytes)."""
    data = buf if isinstance(buf, memoryview) else memoryview(buf)
    return bytes(data[f.start : min(f.end, f.start + limit)]).decode("utf-8", "replace")
