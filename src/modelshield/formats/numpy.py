"""NumPy ``.npy`` headers: where the data starts and whether it is a pickle (object arrays).

The header is a Python dict literal; it is parsed with :func:`ast.literal_eval`, which builds
literals only and never calls or imports anything (NumPy itself parses it the same way).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from modelshield.pickle.opcodes import Buffer

MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 20
_PY2_LONG = re.compile(r"\b(\d+)L\b")
_SIMPLE = re.compile(r"^[<>|=]?([a-zA-Z])(\d*)$")


class NpyError(Exception):
    """Not a valid .npy header."""


@dataclass(frozen=True)
class NpyHeader:
    version: tuple[int, int]
    descr: object
    fortran_order: bool
    shape: tuple[int, ...]
    data_offset: int
    """Offset of the array data (or the pickle, for object arrays) from the start."""
    has_object: bool
    """True when the dtype holds Python objects: the data is then a pickle."""
    itemsize: int | None
    """Bytes per element for plain dtypes (None when it cannot be computed here)."""

    @property
    def count(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def data_size(self) -> int | None:
        return None if self.itemsize is None else self.itemsize * self.count


def _descr_layout(descr: object) -> tuple[bool, int | None]:
    """(has_object, itemsize) for a dtype description as written by numpy.lib.format."""
    if isinstance(descr, str):
        m = _SIMPLE.match(descr)
        if m is None:
            return False, None
        kind, digits = m.group(1), m.group(2)
        size = int(digits) if digits else None
        if kind == "O":
            return True, size
        if kind == "U" and size is not None:
            size *= 4
        return False, size
    if isinstance(descr, list):
        has_obj = False
        total: int | None = 0
        for field in descr:
            if not isinstance(field, tuple) or len(field) < 2:
                return True, None  # unknown layout: be conservative
            sub_obj, sub_size = _descr_layout(field[1])
            has_obj = has_obj or sub_obj
            if len(field) > 2 and isinstance(field[2], tuple) and sub_size is not None:
                for d in field[2]:
                    sub_size *= d if isinstance(d, int) else 1
            total = None if total is None or sub_size is None else total + sub_size
        return has_obj, total
    if isinstance(descr, tuple) and len(descr) == 2:
        has_obj, size = _descr_layout(descr[0])
        if isinstance(descr[1], tuple) and size is not None:
            for d in descr[1]:
                size *= d if isinstance(d, int) else 1
        return has_obj, size
    return True, None


def parse_npy(buf: Buffer, start: int = 0, end: int | None = None) -> NpyHeader:
    view = memoryview(buf)
    stop = len(view) if end is None else end
    if bytes(view[start : start + 6]) != MAGIC or start + 10 > stop:
        raise NpyError("missing .npy magic")
    major, minor = view[start + 6], view[start + 7]
    if major == 1:
        hlen = int.from_bytes(view[start + 8 : start + 10], "little")
        hstart = start + 10
    elif major in (2, 3):
        if start + 12 > stop:
            raise NpyError("truncated header")
        hlen = int.from_bytes(view[start + 8 : start + 12], "little")
        hstart = start + 12
    else:
        raise NpyError(f"unknown .npy version {major}.{minor}")
    if hlen > MAX_HEADER or hstart + hlen > stop:
        raise NpyError("header length out of bounds")
    encoding = "utf-8" if major == 3 else "latin-1"
    try:
        text = bytes(view[hstart : hstart + hlen]).decode(encoding)
        if major == 1:
            # Python 2 wrote long integers with an L suffix, e.g. (3L, 4L); numpy drops it.
            text = _PY2_LONG.sub(r"\1", text)
        header = ast.literal_eval(text)
    except (UnicodeDecodeError, ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise NpyError(f"header is not a dict literal: {exc}") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise NpyError("header must have exactly descr, fortran_order and shape")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise NpyError(f"invalid shape {shape!r}")
    if not isinstance(header["fortran_order"], bool):
        raise NpyError("fortran_order must be a bool")
    has_object, itemsize = _descr_layout(header["descr"])
    return NpyHeader(
        version=(major, minor),
        descr=header["descr"],
        fortran_order=header["fortran_order"],
        shape=shape,
        data_offset=hstart + hlen - start,
        has_object=has_object,
        itemsize=itemsize,
    )
