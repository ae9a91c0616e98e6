"""A zip reader that sees what PyTorch's loader sees, and says where other readers differ.

PyTorch reads checkpoints with miniz: it finds the end-of-central-directory record from the end of
the file, trusts the central directory for sizes and methods, skips the local header using the
*local* name and extra lengths, does not check CRCs, ignores local-header flag bits and most
central ones (it refuses encrypted members), and looks names up case-insensitively. Python's
``zipfile`` refuses some of those files, which is how scanners built on it have been bypassed.
This reader follows the lenient rules, records every inconsistency as an anomaly, and never
decompresses more than it is allowed to.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from modelshield.pickle.opcodes import Buffer

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CDH = b"PK\x01\x02"
_LFH = b"PK\x03\x04"
_EOCD_STRUCT = struct.Struct("<4sHHHHIIH")
_EOCD64_LOC_STRUCT = struct.Struct("<4sIQI")
_EOCD64_STRUCT = struct.Struct("<4sQHHIIQQQQ")
_CDH_STRUCT = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LFH_STRUCT = struct.Struct("<4sHHHHHIIIHH")

STORED = 0
DEFLATED = 8
FLAG_ENCRYPTED = 0x1
FLAG_UTF8 = 0x800


class ZipError(Exception):
    """The data is not a zip archive a loader could open."""


@dataclass(frozen=True)
class ZipEntry:
    name: str
    """Name in the central directory (what loaders look records up by)."""
    method: int
    flags: int
    crc: int
    compressed_size: int
    size: int
    """Uncompressed size claimed by the central directory."""
    header_offset: int
    """Offset of the local header in the buffer (after adjusting for prepended data)."""
    data_offset: int
    """Offset of the member's data (after the local header's name and extra field)."""
    local_name: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)


@dataclass(frozen=True)
class Anomaly:
    """Something about the archive that differs between readers or is unsafe."""

    kind: str
    """``prepended-data``, ``name-mismatch``, ``duplicate-name``, ``encrypted-flag``,
    ``bad-local-header``, ``unsafe-name``, ``entry-count``, ``unsupported-method``."""
    detail: str
    member: str | None = None


@dataclass
class ZipArchive:
    entries: list[ZipEntry] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    start: int = 0
    """Offset where the archive proper starts (> 0 when data is prepended)."""
    end: int = 0
    """Offset just past the end-of-central-directory record."""
    truncated_listing: bool = False
    """True when more entries exist than ``max_entries`` allowed to list."""


def find_eocd(buf: Buffer, size: int) -> int | None:
    """Offset of the end-of-central-directory record, searching back from the end as miniz does."""
    lo = max(0, size - (0xFFFF + _EOCD_STRUCT.size))
    pos = buf.rfind(_EOCD, lo, size)
    while pos >= 0:
        if pos + _EOCD_STRUCT.size <= size:
            return pos
        pos = buf.rfind(_EOCD, lo, pos)
    return None


def _decode_name(raw: bytes, flags: int) -> str:
    if flags & FLAG_UTF8:
        return raw.decode("utf-8", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp437")


def unsafe_name(name: str) -> bool:
    """Names that escape the extraction directory (zip-slip) or are absolute."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return ".." in norm.split("/")


def read_zip(buf: Buffer, size: int, *, max_entries: int = 100_000) -> ZipArchive:
    """List an archive's members from its central directory. Raises :class:`ZipError`."""
    view = memoryview(buf)
    eocd = find_eocd(buf, size)
    if eocd is None:
        raise ZipError("no end-of-central-directory record")
    (_, _, _, _, count, cd_size, cd_offset, comment_len) = _EOCD_STRUCT.unpack_from(view, eocd)
    arc = ZipArchive(end=min(size, eocd + _EOCD_STRUCT.size + comment_len))
    # zip64: the locator sits just before the EOCD record.
    loc = eocd - _EOCD64_LOC_STRUCT.size
    if loc >= 0 and bytes(view[loc : loc + 4]) == _EOCD64_LOCATOR:
        rec = loc - _EOCD64_STRUCT.size
        if rec >= 0 and bytes(view[rec : rec + 4]) == _EOCD64:
            fields = _EOCD64_STRUCT.unpack_from(view, rec)
            count, cd_size, cd_offset = fields[7], fields[8], fields[9]
            cd_real = rec - cd_size
        else:
            cd_real = eocd - cd_size
    else:
        cd_real = eocd - cd_size
    if cd_real < 0:
        raise ZipError("central directory larger than the file")
    # Data before the archive (or an archive appended to other data): offsets shift.
    shift = cd_real - cd_offset
    arc.start = max(0, shift)
    if shift:
        arc.anomalies.append(
            Anomaly(
                "prepended-data",
                f"{shift} bytes precede the archive; offsets in the central directory are "
                "relative to the archive, not the file",
            )
        )
    pos = cd_real
    seen: dict[str, int] = {}
    for index in range(count):
        if index >= max_entries:
            arc.truncated_listing = True
            arc.anomalies.append(
                Anomaly("entry-count", f"{count} entries; only the first {max_entries} listed")
            )
            break
        if pos + _CDH_STRUCT.size > size or bytes(view[pos : pos + 4]) != _CDH:
            raise ZipError(f"central directory entry {index} is damaged at byte {pos}")
        f = _CDH_STRUCT.unpack_from(view, pos)
        flags, method, crc, csize, usize = f[3], f[4], f[7], f[8], f[9]
        name_len, extra_len, comment_len2, local_off = f[10], f[11], f[12], f[16]
        name = _decode_name(bytes(view[pos + 46 : pos + 46 + name_len]), flags)
        extra = bytes(view[pos + 46 + name_len : pos + 46 + name_len + extra_len])
        csize, usize, local_off = _zip64_sizes(extra, csize, usize, local_off)
        pos += 46 + name_len + extra_len + comment_len2
        header = local_off + shift
        entry = _entry_with_local(view, size, arc, name, flags, method, crc, csize, usize, header)
        arc.entries.append(entry)
        key = name.lower()  # miniz looks names up case-insensitively
        if key in seen:
            arc.anomalies.append(
                Anomaly(
                    "duplicate-name",
                    "more than one member has this name (ignoring case); loaders disagree "
                    "on which one they read",
                    name,
                )
            )
        seen[key] = index
        if unsafe_name(name):
            arc.anomalies.append(
                Anomaly("unsafe-name", "member name escapes the extraction directory", name)
            )
        if entry.encrypted:
            arc.anomalies.append(
                Anomaly(
                    "encrypted-flag",
                    "the encryption flag is set: PyTorch and Python's zipfile refuse the "
                    "member, other readers may decrypt or ignore it; its bytes were analysed "
                    "as stored",
                    name,
                )
            )
        if method not in (STORED, DEFLATED) and not entry.is_dir:
            arc.anomalies.append(
                Anomaly("unsupported-method", f"compression method {method}", name)
            )
    return arc


def _zip64_sizes(extra: bytes, csize: int, usize: int, offset: int) -> tuple[int, int, int]:
    i = 0
    while i + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, i)
        if tag == 0x0001:
            body = extra[i + 4 : i + 4 + length]
            vals = [v[0] for v in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            it = iter(vals)
            if usize == 0xFFFFFFFF:
                usize = next(it, usize)
            if csize == 0xFFFFFFFF:
                csize = next(it, csize)
            if offset == 0xFFFFFFFF:
                offset = next(it, offset)
            break
        i += 4 + length
    return csize, usize, offset


def _entry_with_local(
    view: memoryview,
    size: int,
    arc: ZipArchive,
    name: str,
    flags: int,
    method: int,
    crc: int,
    csize: int,
    usize: int,
    header: int,
) -> ZipEntry:
    local_name = None
    data_offset = -1
    if (
        header >= 0
        and header + _LFH_STRUCT.size <= size
        and bytes(view[header : header + 4]) == _LFH
    ):
        lf = _LFH_STRUCT.unpack_from(view, header)
        lname_len, lextra_len = lf[9], lf[10]
        start = header + _LFH_STRUCT.size
        local_name = _decode_name(bytes(view[start : start + lname_len]), lf[2])
        data_offset = start + lname_len + lextra_len
        if local_name != name:
            arc.anomalies.append(
                Anomaly(
                    "name-mismatch",
                    f"local header names it {local_name!r}; PyTorch uses the central directory "
                    "name, Python's zipfile refuses the member",
                    name,
                )
            )
    else:
        arc.anomalies.append(Anomaly("bad-local-header", f"no local header at byte {header}", name))
    return ZipEntry(
        name=name,
        method=method,
        flags=flags,
        crc=crc,
        compressed_size=csize,
        size=usize,
        header_offset=header,
        data_offset=data_offset,
        local_name=local_name,
    )


class MemberTooLarge(Exception):
    def __init__(self, produced: int) -> None:
        super().__init__(f"member decompresses to more than {produced} bytes")
        self.produced = produced


def member_span(entry: ZipEntry, size: int) -> tuple[int, int] | None:
    """``(start, end)`` of a stored member's bytes in the buffer, or None if out of bounds."""
    if entry.data_offset < 0:
        return None
    end = entry.data_offset + entry.compressed_size
    if end > size:
        return None
    return entry.data_offset, end


def iter_member(
    buf: Buffer, size: int, entry: ZipEntry, *, max_size: int, chunk: int = 1 << 20
) -> Iterator[bytes]:
    """The member's uncompressed bytes in chunks (no CRC check), for large members.

    Raises :class:`MemberTooLarge` past ``max_size`` and :class:`ZipError` on bad data.
    """
    span = member_span(entry, size)
    if span is None:
        raise ZipError(f"member data of {entry.name!r} lies outside the file")
    raw = memoryview(buf)[span[0] : span[1]]
    if entry.method == STORED:
        if len(raw) > max_size:
            raise MemberTooLarge(max_size)
        for pos in range(0, len(raw), chunk):
            yield bytes(raw[pos : pos + chunk])
        return
    if entry.method != DEFLATED:
        raise ZipError(f"{entry.name!r} uses compression method {entry.method}")
    d = zlib.decompressobj(-15)
    produced = 0
    try:
        for pos in range(0, len(raw), chunk):
            data: bytes | memoryview = raw[pos : pos + chunk]
            while True:
                out = d.decompress(data, chunk)
                produced += len(out)
                if produced > max_size:
                    raise MemberTooLarge(max_size)
                if out:
                    yield out
                data = d.unconsumed_tail
                if d.eof or (not data and len(out) < chunk):
                    break
            if d.eof:
                return
    except zlib.error as exc:
        raise ZipError(f"cannot inflate {entry.name!r}: {exc}") from None


def read_member(buf: Buffer, size: int, entry: ZipEntry, *, max_size: int) -> bytes:
    """The member's uncompressed bytes, without CRC checks (as PyTorch reads them).

    Raises :class:`MemberTooLarge` past ``max_size`` bytes and :class:`ZipError` when the data
    cannot be read or inflated.
    """
    return b"".join(iter_member(buf, size, entry, max_size=max_size))
