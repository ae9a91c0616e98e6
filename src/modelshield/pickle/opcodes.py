"""Decoding of pickle opcodes (protocols 0-5) from a byte buffer, without executing anything.

The decoder reads arguments exactly the way CPython's ``_pickle`` unpickler does (line-based
protocol-0 forms, little-endian length prefixes, base-0 integers) and reports the byte offset of
every opcode. Large byte and string arguments are returned as zero-copy ``memoryview`` slices so
that multi-gigabyte inline arrays cost nothing to step over.
"""

from __future__ import annotations

import codecs
import enum
import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass


class ArgKind(enum.Enum):
    NONE = enum.auto()
    U1 = enum.auto()
    U2 = enum.auto()
    U4 = enum.auto()
    I4 = enum.auto()
    LONG1 = enum.auto()
    LONG4 = enum.auto()
    FLOAT8 = enum.auto()
    LINE = enum.auto()  # one line (decimal int, float, persistent id)
    TWO_LINES = enum.auto()  # module and name (GLOBAL, INST)
    STRINGNL = enum.auto()  # quoted, escaped protocol-0 string
    UNICODENL = enum.auto()  # raw-unicode-escape protocol-0 string
    BYTES1 = enum.auto()  # 1-byte length prefix
    BYTES4 = enum.auto()  # 4-byte unsigned length prefix
    SBYTES4 = enum.auto()  # 4-byte signed length prefix (BINSTRING)
    BYTES8 = enum.auto()  # 8-byte length prefix


@dataclass(frozen=True)
class OpSpec:
    code: int
    name: str
    arg: ArgKind
    proto: int


_SPECS = (
    (b"(", "MARK", ArgKind.NONE, 0),
    (b".", "STOP", ArgKind.NONE, 0),
    (b"0", "POP", ArgKind.NONE, 0),
    (b"1", "POP_MARK", ArgKind.NONE, 1),
    (b"2", "DUP", ArgKind.NONE, 0),
    (b"F", "FLOAT", ArgKind.LINE, 0),
    (b"I", "INT", ArgKind.LINE, 0),
    (b"J", "BININT", ArgKind.I4, 1),
    (b"K", "BININT1", ArgKind.U1, 1),
    (b"L", "LONG", ArgKind.LINE, 0),
    (b"M", "BININT2", ArgKind.U2, 1),
    (b"N", "NONE", ArgKind.NONE, 0),
    (b"P", "PERSID", ArgKind.LINE, 0),
    (b"Q", "BINPERSID", ArgKind.NONE, 1),
    (b"R", "REDUCE", ArgKind.NONE, 0),
    (b"S", "STRING", ArgKind.STRINGNL, 0),
    (b"T", "BINSTRING", ArgKind.SBYTES4, 1),
    (b"U", "SHORT_BINSTRING", ArgKind.BYTES1, 1),
    (b"V", "UNICODE", ArgKind.UNICODENL, 0),
    (b"X", "BINUNICODE", ArgKind.BYTES4, 1),
    (b"a", "APPEND", ArgKind.NONE, 0),
    (b"b", "BUILD", ArgKind.NONE, 0),
    (b"c", "GLOBAL", ArgKind.TWO_LINES, 0),
    (b"d", "DICT", ArgKind.NONE, 0),
    (b"}", "EMPTY_DICT", ArgKind.NONE, 1),
    (b"e", "APPENDS", ArgKind.NONE, 1),
    (b"g", "GET", ArgKind.LINE, 0),
    (b"h", "BINGET", ArgKind.U1, 1),
    (b"i", "INST", ArgKind.TWO_LINES, 0),
    (b"j", "LONG_BINGET", ArgKind.U4, 1),
    (b"l", "LIST", ArgKind.NONE, 0),
    (b"]", "EMPTY_LIST", ArgKind.NONE, 1),
    (b"o", "OBJ", ArgKind.NONE, 1),
    (b"p", "PUT", ArgKind.LINE, 0),
    (b"q", "BINPUT", ArgKind.U1, 1),
    (b"r", "LONG_BINPUT", ArgKind.U4, 1),
    (b"s", "SETITEM", ArgKind.NONE, 0),
    (b"t", "TUPLE", ArgKind.NONE, 0),
    (b")", "EMPTY_TUPLE", ArgKind.NONE, 1),
    (b"u", "SETITEMS", ArgKind.NONE, 1),
    (b"G", "BINFLOAT", ArgKind.FLOAT8, 1),
    (b"\x80", "PROTO", ArgKind.U1, 2),
    (b"\x81", "NEWOBJ", ArgKind.NONE, 2),
    (b"\x82", "EXT1", ArgKind.U1, 2),
    (b"\x83", "EXT2", ArgKind.U2, 2),
    (b"\x84", "EXT4", ArgKind.I4, 2),
    (b"\x85", "TUPLE1", ArgKind.NONE, 2),
    (b"\x86", "TUPLE2", ArgKind.NONE, 2),
    (b"\x87", "TUPLE3", ArgKind.NONE, 2),
    (b"\x88", "NEWTRUE", ArgKind.NONE, 2),
    (b"\x89", "NEWFALSE", ArgKind.NONE, 2),
    (b"\x8a", "LONG1", ArgKind.LONG1, 2),
    (b"\x8b", "LONG4", ArgKind.LONG4, 2),
    (b"B", "BINBYTES", ArgKind.BYTES4, 3),
    (b"C", "SHORT_BINBYTES", ArgKind.BYTES1, 3),
    (b"\x8c", "SHORT_BINUNICODE", ArgKind.BYTES1, 4),
    (b"\x8d", "BINUNICODE8", ArgKind.BYTES8, 4),
    (b"\x8e", "BINBYTES8", ArgKind.BYTES8, 4),
    (b"\x8f", "EMPTY_SET", ArgKind.NONE, 4),
    (b"\x90", "ADDITEMS", ArgKind.NONE, 4),
    (b"\x91", "FROZENSET", ArgKind.NONE, 4),
    (b"\x92", "NEWOBJ_EX", ArgKind.NONE, 4),
    (b"\x93", "STACK_GLOBAL", ArgKind.NONE, 4),
    (b"\x94", "MEMOIZE", ArgKind.NONE, 4),
    (b"\x95", "FRAME", ArgKind.BYTES8, 4),
    (b"\x96", "BYTEARRAY8", ArgKind.BYTES8, 5),
    (b"\x97", "NEXT_BUFFER", ArgKind.NONE, 5),
    (b"\x98", "READONLY_BUFFER", ArgKind.NONE, 5),
)

OPCODES: dict[int, OpSpec] = {c[0]: OpSpec(c[0], name, arg, p) for c, name, arg, p in _SPECS}
"""Every opcode CPython's unpickler understands, keyed by its byte."""

HIGHEST_PROTOCOL = 5
MAX_LINE = 1 << 20
"""Longest line argument (protocol-0 forms) the decoder accepts."""

Buffer = bytes | bytearray | mmap.mmap
"""Anything with ``find`` that a memoryview can be taken of."""


class PickleFormatError(Exception):
    """The stream breaks the pickle format at ``pos``; CPython's loader would raise here."""

    def __init__(self, pos: int, message: str, *, truncated: bool = False) -> None:
        super().__init__(f"{message} at byte {pos}")
        self.pos = pos
        self.message = message
        self.truncated = truncated


class Op:
    """One decoded opcode.

    ``arg`` is an int, float, str, ``memoryview`` (bytes arguments), ``bytes`` (line
    arguments) or ``(module, name)`` for GLOBAL/INST; ``pos`` is the byte offset of the opcode.
    A plain slotted class: it is created once per opcode on the hot path.
    """

    __slots__ = ("arg", "pos", "spec")

    def __init__(self, spec: OpSpec, arg: object, pos: int) -> None:
        self.spec = spec
        self.arg = arg
        self.pos = pos

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"Op({self.spec.name}, {self.arg!r}, pos={self.pos})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Op):
            return NotImplemented
        return (self.spec, self.arg, self.pos) == (other.spec, other.arg, other.pos)

    __hash__ = None  # type: ignore[assignment]


_BY_CODE: list[OpSpec | None] = [OPCODES.get(i) for i in range(256)]


_I4 = struct.Struct("<i")
_U4 = struct.Struct("<I")
_U2 = struct.Struct("<H")
_U8 = struct.Struct("<Q")
_F8 = struct.Struct(">d")


def decode_stringnl(raw: bytes, pos: int) -> bytes:
    """Decode the argument of protocol-0 STRING: quoted and backslash-escaped."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in b"'\"":
        body = raw[1:-1]
    else:
        raise PickleFormatError(pos, "STRING argument is not quoted")
    try:
        return codecs.escape_decode(body)[0]
    except ValueError as exc:
        raise PickleFormatError(pos, f"invalid escape in STRING: {exc}") from None


class Decoder:
    """Reads opcodes from ``data`` starting at ``start``.

    ``max_arg`` bounds the size an argument may claim; larger claims that fit in the buffer are
    still stepped over (a memoryview slice costs nothing), claims beyond the buffer are
    truncation errors, exactly as CPython reports them.
    """

    def __init__(self, buf: Buffer, start: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.data = memoryview(buf)
        self.pos = start
        self.end = len(self.data) if end is None else end

    def _take(self, n: int, op_pos: int) -> memoryview:
        if n < 0:
            raise PickleFormatError(op_pos, "negative length")
        if self.pos + n > self.end:
            raise PickleFormatError(op_pos, "pickle data was truncated", truncated=True)
        view = self.data[self.pos : self.pos + n]
        self.pos += n
        return view

    def _line(self, op_pos: int) -> bytes:
        window_end = min(self.end, self.pos + MAX_LINE)
        nl = self.buf.find(b"\n", self.pos, window_end)
        if nl < 0:
            if window_end < self.end:
                raise PickleFormatError(op_pos, "line argument longer than the line limit")
            raise PickleFormatError(op_pos, "pickle data was truncated", truncated=True)
        line = bytes(self.data[self.pos : nl])
        self.pos = nl + 1
        return line

    def next_op(self) -> Op:
        op_pos = self.pos
        if op_pos >= self.end:
            raise PickleFormatError(op_pos, "pickle data was truncated", truncated=True)
        data = self.data
        code = data[op_pos]
        spec = _BY_CODE[code]
        if spec is None:
            raise PickleFormatError(op_pos, f"invalid load key {bytes([code])!r}")
        kind = spec.arg
        # Fast paths for the opcodes that make up most of real pickles.
        if kind is ArgKind.NONE:
            self.pos = op_pos + 1
            return Op(spec, None, op_pos)
        if kind is ArgKind.U1 and op_pos + 2 <= self.end:
            self.pos = op_pos + 2
            return Op(spec, data[op_pos + 1], op_pos)
        self.pos = op_pos + 1
        arg: object
        if kind is ArgKind.U1:
            arg = self._take(1, op_pos)[0]
        elif kind is ArgKind.U2:
            arg = _U2.unpack(self._take(2, op_pos))[0]
        elif kind is ArgKind.U4:
            arg = _U4.unpack(self._take(4, op_pos))[0]
        elif kind is ArgKind.I4:
            arg = _I4.unpack(self._take(4, op_pos))[0]
        elif kind is ArgKind.FLOAT8:
            arg = _F8.unpack(self._take(8, op_pos))[0]
        elif kind is ArgKind.LONG1:
            n = self._take(1, op_pos)[0]
            arg = int.from_bytes(self._take(n, op_pos), "little", signed=True)
        elif kind is ArgKind.LONG4:
            n = _I4.unpack(self._take(4, op_pos))[0]
            if n < 0:
                raise PickleFormatError(op_pos, "LONG pickle has negative byte count")
            if n > 1 << 20:
                # CPython would build it; we only need to know it is an int.
                self._take(n, op_pos)
                arg = 0
            else:
                arg = int.from_bytes(self._take(n, op_pos), "little", signed=True)
        elif kind is ArgKind.BYTES1:
            arg = self._take(self._take(1, op_pos)[0], op_pos)
        elif kind is ArgKind.BYTES4:
            arg = self._take(_U4.unpack(self._take(4, op_pos))[0], op_pos)
        elif kind is ArgKind.SBYTES4:
            n = _I4.unpack(self._take(4, op_pos))[0]
            if n < 0:
                raise PickleFormatError(op_pos, "BINSTRING pickle has negative byte count")
            arg = self._take(n, op_pos)
        elif kind is ArgKind.BYTES8:
            n = _U8.unpack(self._take(8, op_pos))[0]
            if spec.name == "FRAME":
                if self.pos + n > self.end:
                    raise PickleFormatError(op_pos, "pickle frame was truncated", truncated=True)
                arg = n
            else:
                arg = self._take(n, op_pos)
        elif kind is ArgKind.LINE:
            arg = self._line(op_pos)
        elif kind is ArgKind.TWO_LINES:
            first = self._line(op_pos)
            second = self._line(op_pos)
            try:
                arg = (first.decode("utf-8"), second.decode("utf-8"))
            except UnicodeDecodeError:
                raise PickleFormatError(op_pos, "GLOBAL name is not valid UTF-8") from None
        elif kind is ArgKind.STRINGNL:
            arg = decode_stringnl(self._line(op_pos), op_pos)
        elif kind is ArgKind.UNICODENL:
            try:
                arg = self._line(op_pos).decode("raw-unicode-escape")
            except UnicodeDecodeError as exc:
                raise PickleFormatError(op_pos, f"invalid UNICODE argument: {exc}") from None
        else:  # pragma: no cover - exhaustive
            raise AssertionError(kind)
        return Op(spec, arg, op_pos)


def iter_ops(data: Buffer, start: int = 0) -> Iterator[Op]:
    """Yield opcodes from ``start`` up to and including the first STOP.

    Raises :class:`PickleFormatError` where the stream breaks the format.
    """
    dec = Decoder(data, start)
    while True:
        op = dec.next_op()
        yield op
        if op.spec.name == "STOP":
            return


def parse_line_int(raw: bytes, pos: int, opcode: str = "LONG") -> int:
    """Parse the decimal argument of INT/LONG/GET/PUT exactly as CPython's ``_pickle`` does.

    INT uses C ``strtol`` with base 0 (``"010"`` is 8, ``"0x10"`` is 16), falling back to
    ``int(text, 0)`` on overflow; LONG drops a trailing ``L`` and uses base 0; GET/PUT use
    base 10 (``"010"`` is 10).
    """
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise PickleFormatError(pos, f"invalid integer literal {raw[:40]!r}") from None
    try:
        if opcode in ("GET", "PUT"):
            return int(text, 10)
        if opcode == "INT":
            c_value = _strtol0(text)
            if c_value is not None:
                return c_value
        elif text.endswith("L"):
            text = text[:-1]
        return int(text, 0)
    except ValueError:
        raise PickleFormatError(pos, f"invalid integer literal {raw[:40]!r}") from None


def _strtol0(text: str) -> int | None:
    """C ``strtol(text, &end, 0)`` that must consume the whole text; None when it would not."""
    if text.isdigit() and len(text) < 19 and (text[0] != "0" or len(text) == 1):
        return int(text)  # the common case: plain decimal (the text is ASCII), fits in 64 bits
    body = text.lstrip(" \t\r\f\v")
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body[:2].lower() == "0x":
        digits, base = body[2:], 16
    elif body[:1] == "0" and len(body) > 1:
        digits, base = body[1:], 8
    else:
        digits, base = body, 10
    if not digits or not all(
        c in "0123456789abcdefABCDEF"[: base + (base > 10) * 6] for c in digits
    ):
        return None
    value = sign * int(digits, base)
    return value if -(1 << 63) <= value < (1 << 63) else None
