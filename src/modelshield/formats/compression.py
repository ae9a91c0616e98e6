"""Single-stream compression: gzip, bzip2, xz, raw LZMA, zlib, LZ4 frames, zstd, joblib's ``ZF``.

Everything is decompressed incrementally with a hard cap on the output, so a compression bomb
costs at most the cap. Large outputs spill to an anonymous temporary file that is memory-mapped,
so memory stays flat. joblib writes compressed pickles in exactly these formats.
"""

from __future__ import annotations

import bz2
import contextlib
import lzma
import mmap
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from modelshield.pickle.opcodes import Buffer

CHUNK = 1 << 20
SPILL_AT = 64 << 20
"""Outputs larger than this go to a temporary file instead of memory."""


class DecompressError(Exception):
    """The stream is not valid for the format (or cannot be decoded here)."""


class OutputLimit(Exception):
    """The stream decompresses to more than allowed (a bomb, or a limit to raise)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"decompressed size exceeds {limit} bytes")
        self.limit = limit


class MissingCodec(Exception):
    """The format needs an optional package that is not installed."""

    def __init__(self, fmt: str, package: str) -> None:
        super().__init__(f"{fmt} needs the optional package {package!r}")
        self.fmt = fmt
        self.package = package


_ZF_HEADER = 21  # b"ZF" + hex length left-justified to 19 characters (joblib < 0.10)


def _zf_data_start(head: bytes) -> int | None:
    """Where the zlib stream of a joblib ``ZF`` file starts: after the 21-byte header, or one
    byte later (joblib <= 0.8.4 under Python 2 padded the length field one space wider, and
    joblib's reader skips that space)."""
    for start in (_ZF_HEADER, _ZF_HEADER + 1):
        if len(head) > start and _inflates(head[start:]):
            return start
    return None


def sniff_compression(head: bytes) -> str | None:
    """The compression format announced by the first bytes, if any."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and len(head) > 3 and head[3:4].isdigit():
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if head.startswith(b"ZF0x") and _zf_data_start(head) is not None:
        return "joblib-zf"
    if _inflates(head):
        return "zlib"
    if _is_lzma_alone(head):
        return "lzma"
    return None


def _is_lzma_alone(head: bytes) -> bool:
    """Raw ("alone") LZMA, as joblib writes and ``lzma.open`` reads.

    Header: properties byte (lc/lp/pb, < 225), a non-zero dictionary size, and the 8-byte
    uncompressed size or -1. ``lzma.open`` would try any bytes, so beyond the header the start
    must also decode to something (the range coder's first byte is always 0); a bare header
    counts only with the standard properties byte 0x5d.
    """
    if len(head) < 13 or head[0] >= 225 or head[1:5] == b"\x00\x00\x00\x00":
        return False
    size = int.from_bytes(head[5:13], "little")
    if size != 0xFFFFFFFFFFFFFFFF and size >= 1 << 48:
        return False
    if len(head) == 13:
        return head[0] == 0x5D
    if head[13] != 0:
        return False
    d = lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    try:
        out = d.decompress(head, 1 << 16)
    except lzma.LZMAError:
        return False
    # A complete small stream, real content, or zeros (a bomb) behind the standard properties.
    return d.eof or any(out) or (bool(out) and head[0] == 0x5D)


def _inflates(head: bytes) -> bool:
    """A zlib header (1 in ~2000 random byte pairs pass) whose first bytes also inflate."""
    if not _is_zlib(head):
        return False
    try:
        zlib.decompressobj().decompress(head, 1 << 16)
    except zlib.error:
        return False
    return True


def _is_zlib(head: bytes) -> bool:
    return (
        len(head) >= 2
        and head[0] & 0x0F == 8
        and head[0] >> 4 <= 7
        and (head[0] << 8 | head[1]) % 31 == 0
        and not head[1] & 0x20  # no preset dictionary
    )


def _chunks(buf: Buffer, start: int, end: int) -> Iterator[memoryview]:
    view = memoryview(buf)
    for pos in range(start, end, CHUNK):
        yield view[pos : min(end, pos + CHUNK)]


def _stream(
    make: Callable[[], object], buf: Buffer, start: int, end: int, cap: int
) -> Iterator[bytes]:
    """Drive zlib, bz2 or lzma decompressor objects with bounded output.

    Like ``gzip.open``/``bz2.open``/``lzma.open`` (and joblib's readers), a stream that ends
    before the data does is followed by the next one: concatenated members are all read. Bytes
    after the last complete stream that do not start another one end the data.
    """
    produced = 0
    pending: bytes | memoryview = b""
    chunks = _chunks(buf, start, end)
    first = True
    while True:
        d = make()
        decompress = d.decompress  # type: ignore[attr-defined]
        is_zlib = hasattr(d, "unconsumed_tail")
        data: bytes | memoryview = pending
        try:
            while True:
                if not data:
                    nxt = next(chunks, None)
                    if nxt is None:
                        break
                    data = nxt
                out = decompress(data, CHUNK)
                produced += len(out)
                if produced > cap:
                    raise OutputLimit(cap)
                if out:
                    yield out
                if getattr(d, "eof", False):
                    break
                if is_zlib:
                    data = d.unconsumed_tail  # type: ignore[attr-defined]
                    if not data and len(out) == CHUNK:
                        data = b""
                        out2 = decompress(b"", CHUNK)
                        produced += len(out2)
                        if produced > cap:
                            raise OutputLimit(cap)
                        if out2:
                            yield out2
                else:
                    data = b""
                    while not d.needs_input and not d.eof:  # type: ignore[attr-defined]
                        out2 = decompress(b"", CHUNK)
                        produced += len(out2)
                        if produced > cap:
                            raise OutputLimit(cap)
                        if out2:
                            yield out2
                    if d.eof:  # type: ignore[attr-defined]
                        break
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
            if first:
                raise
            return  # bytes after a complete stream that are not another one: trailing data
        if not getattr(d, "eof", False):
            if first:
                raise DecompressError("compressed stream is truncated")
            return
        first = False
        pending = bytes(d.unused_data)  # type: ignore[attr-defined]
        if not pending:
            nxt = next(chunks, None)
            if nxt is None:
                return
            pending = bytes(nxt)
        if not any(pending):
            return  # zero padding after the last member (gzip tolerates it)


def _zlib_like(wbits: int) -> Callable[[], object]:
    return lambda: zlib.decompressobj(wbits)


def iter_decompress(fmt: str, buf: Buffer, start: int, end: int, cap: int) -> Iterator[bytes]:
    """Yield decompressed chunks of ``buf[start:end]``. Raises on invalid data or past ``cap``."""
    try:
        if fmt == "gzip":
            yield from _stream(_zlib_like(16 + zlib.MAX_WBITS), buf, start, end, cap)
        elif fmt == "zlib":
            yield from _stream(_zlib_like(zlib.MAX_WBITS), buf, start, end, cap)
        elif fmt == "joblib-zf":
            skip = _zf_data_start(bytes(memoryview(buf)[start : start + 64])) or _ZF_HEADER
            yield from _stream(_zlib_like(zlib.MAX_WBITS), buf, start + skip, end, cap)
        elif fmt == "bzip2":
            yield from _stream(bz2.BZ2Decompressor, buf, start, end, cap)
        elif fmt == "xz":
            yield from _stream(lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), buf, start, end, cap)
        elif fmt == "lzma":
            yield from _stream(
                lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE), buf, start, end, cap
            )
        elif fmt == "lz4":
            yield from _lz4_frames(memoryview(buf)[start:end], cap)
        elif fmt == "zstd":
            yield from _zstd(buf, start, end, cap)
        else:
            raise DecompressError(f"unknown compression {fmt!r}")
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError, IndexError) as exc:
        raise DecompressError(f"invalid {fmt} data: {exc}") from None


def _zstd(buf: Buffer, start: int, end: int, cap: int) -> Iterator[bytes]:
    try:
        import zstandard  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise MissingCodec("zstd", "zstandard") from None
    data = memoryview(buf)[start:end]
    try:
        expected = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError as exc:
        raise DecompressError(f"invalid zstd data: {exc}") from None
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    produced = 0
    try:
        while chunk := reader.read(CHUNK):
            produced += len(chunk)
            if produced > cap:
                raise OutputLimit(cap)
            yield chunk
    except zstandard.ZstdError as exc:
        raise DecompressError(f"invalid zstd data: {exc}") from None
    if expected != zstandard.CONTENTSIZE_UNKNOWN and produced < expected:
        raise DecompressError("zstd stream is truncated")


# ---------------------------------------------------------------------------- LZ4 frames


def _lz4_frames(data: memoryview, cap: int) -> Iterator[bytes]:
    """A small, bounded LZ4 frame decoder (the format joblib writes with ``compress='lz4'``)."""
    pos = 0
    produced = 0
    n = len(data)
    while pos + 4 <= n:
        magic = int.from_bytes(data[pos : pos + 4], "little")
        if 0x184D2A50 <= magic <= 0x184D2A5F:  # skippable frame
            size = int.from_bytes(data[pos + 4 : pos + 8], "little")
            pos += 8 + size
            continue
        if magic != 0x184D2204:
            if produced:
                return  # trailing bytes after the last frame
            raise DecompressError("not an LZ4 frame")
        flg = data[pos + 4]
        bd = data[pos + 5]
        pos += 6
        if flg >> 6 != 1:
            raise DecompressError("unsupported LZ4 frame version")
        block_checksum = bool(flg & 0x10)
        content_size = bool(flg & 0x08)
        content_checksum = bool(flg & 0x04)
        dict_id = bool(flg & 0x01)
        del bd
        pos += (8 if content_size else 0) + (4 if dict_id else 0) + 1  # + header checksum
        window = bytearray()
        while True:
            if pos + 4 > n:
                raise DecompressError("truncated LZ4 frame")
            bsize = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
            if bsize == 0:
                break
            raw = bool(bsize & 0x80000000)
            bsize &= 0x7FFFFFFF
            block = data[pos : pos + bsize]
            if len(block) < bsize:
                raise DecompressError("truncated LZ4 block")
            pos += bsize + (4 if block_checksum else 0)
            try:
                out = bytes(block) if raw else _lz4_block(block, window, cap - produced)
            except OutputLimit:
                raise OutputLimit(cap) from None
            produced += len(out)
            if produced > cap:
                raise OutputLimit(cap)
            window += out
            if len(window) > 1 << 17:
                del window[: len(window) - (1 << 16)]
            yield out
        pos += 4 if content_checksum else 0


def _lz4_block(block: memoryview, window: bytearray, room: int) -> bytes:
    out = bytearray(window[-(1 << 16) :])
    base = len(out)
    i = 0
    n = len(block)
    while i < n:
        token = block[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                b = block[i]
                i += 1
                lit += b
                if b != 255:
                    break
        out += block[i : i + lit]
        i += lit
        if i >= n:
            break
        offset = block[i] | block[i + 1] << 8
        i += 2
        if offset == 0 or offset > len(out):
            raise DecompressError("invalid LZ4 match offset")
        mlen = token & 15
        if mlen == 15:
            while True:
                b = block[i]
                i += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        if len(out) - base + mlen > room:
            raise OutputLimit(room)
        start = len(out) - offset
        if mlen <= offset:
            out += out[start : start + mlen]
        else:
            # An overlapping match repeats the last `offset` bytes.
            pattern = bytes(out[start:])
            reps, rest = divmod(mlen, offset)
            out += pattern * reps + pattern[:rest]
    return bytes(out[base:])


# ---------------------------------------------------------------------------- buffers


@dataclass
class Spilled:
    """Decompressed output: in memory, or in a memory-mapped temporary file."""

    buf: Buffer
    size: int
    _file: IO[bytes] | None = None

    def close(self) -> None:
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()
        if self._file is not None:
            self._file.close()


def collect(chunks: Iterator[bytes]) -> Spilled:
    """Gather chunks into memory, spilling to a temporary file past :data:`SPILL_AT`."""
    parts: list[bytes] = []
    size = 0
    spill: IO[bytes] | None = None
    try:
        for c in chunks:
            size += len(c)
            if spill is not None:
                spill.write(c)
            elif size > SPILL_AT:
                import tempfile  # rarely needed: not at start-up

                spill = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Spilled.close()
                for p in parts:
                    spill.write(p)
                spill.write(c)
                parts = []
            else:
                parts.append(c)
    except BaseException:
        if spill is not None:
            spill.close()
        raise
    if spill is None:
        return Spilled(b"".join(parts), size)
    spill.flush()
    if size == 0:
        spill.close()
        return Spilled(b"", 0)
    with contextlib.suppress(Exception):
        return Spilled(mmap.mmap(spill.fileno(), 0, access=mmap.ACCESS_READ), size, spill)
    spill.close()
    raise DecompressError("cannot map the decompressed data")
