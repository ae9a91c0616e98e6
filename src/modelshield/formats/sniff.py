"""Recognise a file's format from its content, never from its name."""

from __future__ import annotations

import enum

from modelshield.pickle.names import is_identifier_path
from modelshield.pickle.trace import EventKind, PickleAnalysis


class Format(enum.Enum):
    PICKLE = "pickle"
    ZIP = "zip"
    NUMPY = "numpy"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"
    SEVEN_ZIP = "7z"
    TAR = "tar"
    HDF5 = "hdf5"
    GGUF = "gguf"
    EMPTY = "empty"
    TEXT = "text"
    DATA = "binary-data"


_MAGICS: tuple[tuple[bytes, Format], ...] = (
    (b"PK\x03\x04", Format.ZIP),
    (b"PK\x05\x06", Format.ZIP),
    (b"\x93NUMPY", Format.NUMPY),
    (b"\x1f\x8b", Format.GZIP),
    (b"BZh", Format.BZIP2),
    (b"\xfd7zXZ\x00", Format.XZ),
    (b"\x28\xb5\x2f\xfd", Format.ZSTD),
    (b"7z\xbc\xaf\x27\x1c", Format.SEVEN_ZIP),
    (b"\x89HDF\r\n\x1a\n", Format.HDF5),
    (b"GGUF", Format.GGUF),
)

CONTAINERS = frozenset(
    {
        Format.ZIP,
        Format.NUMPY,
        Format.GZIP,
        Format.BZIP2,
        Format.XZ,
        Format.ZSTD,
        Format.SEVEN_ZIP,
        Format.TAR,
        Format.HDF5,
        Format.GGUF,
    }
)
"""Formats recognised but not analysed by this version: reported as inconclusive."""


def sniff_magic(head: bytes) -> Format | None:
    """The format announced by the first bytes, if any. ``head`` should hold 4 KiB."""
    if not head:
        return Format.EMPTY
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return Format.PICKLE
    for magic, fmt in _MAGICS:
        if head.startswith(magic):
            return fmt
    # HDF5 allows a user block of 512, 1024, 2048... bytes before its signature.
    for at in (512, 1024, 2048):
        if head[at : at + 8] == b"\x89HDF\r\n\x1a\n":
            return Format.HDF5
    if len(head) >= 262 and head[257:262] == b"ustar":
        return Format.TAR
    return None


def looks_like_text(head: bytes) -> bool:
    """UTF-8 text without NUL bytes (JSON, YAML, README, tokenizer vocabularies...)."""
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def runs_as_pickle(analysis: PickleAnalysis, *, text: bool = False) -> bool:
    """Whether a pickle loader would do anything with this buffer before rejecting it.

    A buffer is treated as a pickle when its first stream completes (reaches STOP) or when the
    loader would import (for text: call) something before the point where the stream breaks.
    Bytes that a pickle loader rejects before that are plain data to it. Text that merely
    starts like a GLOBAL opcode ("c" + two lines) is still text unless something is called.
    """
    if not analysis.streams:
        return False
    first = analysis.streams[0]
    if first.error is None:
        return True
    kinds = (EventKind.CALL,) if text else (EventKind.IMPORT, EventKind.CALL)
    for ev in first.events:
        if ev.kind in kinds and ev.name and is_identifier_path(ev.name):
            return True
        # EXT opcodes are not evidence: with copyreg's empty registry the loader rejects them.
        if ev.kind is EventKind.DYNAMIC_IMPORT:
            return True
    return False
