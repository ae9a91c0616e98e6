"""Format recognition by content."""

from __future__ import annotations

import pickle

import pytest

from modelshield.formats.sniff import Format, looks_like_text, runs_as_pickle, sniff_magic
from modelshield.pickle import analyse


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"", Format.EMPTY),
        (b"\x80\x02}q\x00.", Format.PICKLE),
        (b"\x80\x05\x95", Format.PICKLE),
        (b"PK\x03\x04rest", Format.ZIP),
        (b"\x93NUMPY\x01\x00", Format.NUMPY),
        (b"\x1f\x8b\x08", Format.GZIP),
        (b"BZh91AY", Format.BZIP2),
        (b"\xfd7zXZ\x00\x00", Format.XZ),
        (b"\x28\xb5\x2f\xfd", Format.ZSTD),
        (b"\x89HDF\r\n\x1a\n", Format.HDF5),
        (b"GGUF\x03\x00", Format.GGUF),
        (bytes(257) + b"ustar\x0000", Format.TAR),
        (b"\x80\x09", None),
        (b"hello", None),
    ],
)
def test_magic(head: bytes, fmt: Format | None) -> None:
    assert sniff_magic(head) is fmt


def test_text_detection() -> None:
    assert looks_like_text("héllo wörld".encode())
    assert looks_like_text("ab€".encode()[:-1])  # cut in the middle of a character
    assert not looks_like_text(b"a\x00b")
    assert not looks_like_text(b"\xff\xfe\xfd")


def test_runs_as_pickle() -> None:
    assert runs_as_pickle(analyse(pickle.dumps([1, 2], protocol=0)))
    assert runs_as_pickle(analyse(b"cos\nsystem\n(garbage"))
    assert not runs_as_pickle(analyse(b"cos\nsystem\n(garbage"), text=True)
    assert runs_as_pickle(analyse(b"cos\nsystem\n(S'id'\ntR"), text=True)
    assert not runs_as_pickle(analyse(b"\xff\xfe"))
