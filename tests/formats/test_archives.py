"""A pickle hidden in archives and compressed streams, recursively, within ContainerLimits.

Every malicious sample is proven first: ``pickle.loads`` of the packed pickle creates a marker
file, and the standard library's reader of the container gives that very pickle back. Then the
scanner must flag it at HIGH or above, naming the member chain that leads to it.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelshield import CoverageStatus, ScanResult, Severity, scan
from modelshield.analysis import ContainerLimits, FileOutcome
from modelshield.config import Config
from modelshield.pickle.machine import Limits
from modelshield.scanner import Analyzer, FileTask

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pickle"))
from pickle_recipes import (  # type: ignore[import-not-found, unused-ignore]
    Reduce,
    describe,
    shell_touch,
)

MEMBER = "model.pkl"
BENIGN = pickle.dumps({"epoch": 3, "weights": [0.5, -1.25], "name": "bert"}, protocol=4)

# ---------------------------------------------------------------------------------- builders


def zip_bytes(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    value: bytes = buf.getvalue()
    return value


def tar_link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def seven_zip_bytes(members: list[tuple[str, bytes]], password: str | None = None) -> bytes:
    import py7zr

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password=password, header_encryption=bool(password)) as z:
        for name, data in members:
            z.writestr(data, name)
    return buf.getvalue()


def zstd_bytes(data: bytes) -> bytes:
    import zstandard

    out: bytes = zstandard.ZstdCompressor().compress(data)
    return out


def lz4_bytes(data: bytes) -> bytes:
    import lz4.frame

    out: bytes = lz4.frame.compress(data)
    return out


def tar_read(blob: bytes, mode: str = "r:*") -> bytes:
    with tarfile.open(fileobj=io.BytesIO(blob), mode=mode) as tf:  # type: ignore[call-overload]
        fh = tf.extractfile(MEMBER)
        assert fh is not None
        data: bytes = fh.read()
        return data


def zip_read(blob: bytes, name: str = MEMBER) -> bytes:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return zf.read(name)


def seven_zip_read(blob: bytes) -> bytes:
    import tempfile

    import py7zr

    with tempfile.TemporaryDirectory() as tmp, py7zr.SevenZipFile(io.BytesIO(blob)) as z:
        assert z.getnames() == [MEMBER]
        z.extractall(path=tmp)  # noqa: S202 - a member name we wrote ourselves
        return (Path(tmp) / MEMBER).read_bytes()


def zstd_read(blob: bytes) -> bytes:
    import zstandard

    out: bytes = zstandard.ZstdDecompressor().decompress(blob)
    return out


def lz4_read(blob: bytes) -> bytes:
    import lz4.frame

    out: bytes = lz4.frame.decompress(blob)
    return out


def nested(payload: bytes) -> bytes:
    """zip inside tar.gz inside zip."""
    inner = zip_bytes([(MEMBER, payload)])
    middle = tar_bytes([("inner.zip", inner)], "w:gz")
    return zip_bytes([("inner.tar.gz", middle)])


def nested_read(blob: bytes) -> bytes:
    middle = zip_read(blob, "inner.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(middle), mode="r:gz") as tf:
        fh = tf.extractfile("inner.zip")
        assert fh is not None
        return zip_read(fh.read())


@dataclass(frozen=True)
class Packing:
    id: str
    filename: str
    pack: Callable[[bytes], bytes]
    unpack: Callable[[bytes], bytes]
    member: str
    """The Location.member the finding must carry: the chain of members to the pickle."""
    outer_format: str
    marks: tuple[pytest.MarkDecorator, ...] = ()


PACKINGS = (
    Packing(
        "zip-stored",
        "model.zip",
        lambda d: zip_bytes([(MEMBER, d)], zipfile.ZIP_STORED),
        zip_read,
        MEMBER,
        "zip",
    ),
    Packing(
        "zip-deflated",
        "model.zip",
        lambda d: zip_bytes([(MEMBER, d)]),
        zip_read,
        MEMBER,
        "zip",
    ),
    Packing("tar", "model.tar", lambda d: tar_bytes([(MEMBER, d)]), tar_read, MEMBER, "tar"),
    Packing(
        "tar.gz",
        "model.tar.gz",
        lambda d: tar_bytes([(MEMBER, d)], "w:gz"),
        tar_read,
        f"<gzip content> > {MEMBER}",
        "gzip",
    ),
    Packing(
        "tar.bz2",
        "model.tar.bz2",
        lambda d: tar_bytes([(MEMBER, d)], "w:bz2"),
        tar_read,
        f"<bzip2 content> > {MEMBER}",
        "bzip2",
    ),
    Packing(
        "tar.xz",
        "model.tar.xz",
        lambda d: tar_bytes([(MEMBER, d)], "w:xz"),
        tar_read,
        f"<xz content> > {MEMBER}",
        "xz",
    ),
    Packing(
        "7z",
        "model.7z",
        lambda d: seven_zip_bytes([(MEMBER, d)]),
        seven_zip_read,
        MEMBER,
        "7z",
    ),
    Packing("gz", "model.pkl.gz", gzip.compress, gzip.decompress, "<gzip content>", "gzip"),
    Packing("bz2", "model.pkl.bz2", bz2.compress, bz2.decompress, "<bzip2 content>", "bzip2"),
    Packing("xz", "model.pkl.xz", lzma.compress, lzma.decompress, "<xz content>", "xz"),
    Packing(
        "lzma",
        "model.pkl.lzma",
        lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
        lambda b: lzma.decompress(b, format=lzma.FORMAT_ALONE),
        "<lzma content>",
        "lzma",
    ),
    Packing("zst", "model.pkl.zst", zstd_bytes, zstd_read, "<zstd content>", "zstd"),
    Packing("lz4", "model.pkl.lz4", lz4_bytes, lz4_read, "<lz4 content>", "lz4"),
    Packing(
        "zip>tar.gz>zip",
        "outer.zip",
        nested,
        nested_read,
        f"inner.tar.gz > <gzip content> > inner.zip > {MEMBER}",
        "zip",
    ),
)


def packing_params() -> list[object]:
    return [pytest.param(p, id=p.id, marks=p.marks) for p in PACKINGS]


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture
def payload(tmp_path: Path) -> tuple[bytes, Path]:
    """A malicious pickle (``os.system('touch marker')``), proven to run with pickle.loads."""
    marker = tmp_path / "pwned"
    data = pickle.dumps(Reduce(os.system, shell_touch(marker)), protocol=4)
    assert not marker.exists()
    pickle.loads(data)
    assert marker.exists(), "the payload did not run: the sample proves nothing"
    marker.unlink()
    return data, marker


def analyse(path: Path, limits: ContainerLimits) -> FileOutcome:
    return Analyzer(Config(), Limits(), containers=limits).scan_file(FileTask(str(path), path.name))


def as_result(out: FileOutcome) -> ScanResult:
    return ScanResult(findings=tuple(out.findings), coverage=tuple(out.coverage))


def rules_of(out: FileOutcome | ScanResult) -> set[str]:
    return {f.rule_id for f in out.findings}


def top(out: FileOutcome | ScanResult) -> list[CoverageStatus]:
    return [c.status for c in out.coverage if c.member is None]


# ---------------------------------------------------------------------------------- payloads


@pytest.mark.parametrize("packing", packing_params())
def test_malicious_pickle_in_container_is_flagged_with_member_chain(
    tmp_path: Path, payload: tuple[bytes, Path], packing: Packing
) -> None:
    data, _ = payload
    packed = packing.pack(data)
    assert packing.unpack(packed) == data, "the container's own reader must give it back"
    path = tmp_path / packing.filename
    path.write_bytes(packed)

    result = scan(path)

    hits = [f for f in result.at_or_above(Severity.HIGH) if f.rule_id == "MS101"]
    assert hits, describe(result)
    assert {f.location.member for f in hits} == {packing.member}
    assert all(f.location.path == str(path) for f in hits)
    assert "os.system" in " ".join(f"{f.message} {f.evidence}" for f in hits)
    assert not result.is_clean()
    # The container and every member on the chain have a coverage entry.
    outer = [c for c in result.coverage if c.member is None]
    assert [c.format for c in outer] == [packing.outer_format]
    inner = next(c for c in result.coverage if c.member == packing.member)
    assert inner.format == "pickle"
    assert inner.status is CoverageStatus.SCANNED


@pytest.mark.parametrize("packing", packing_params())
def test_benign_container_is_clean_and_complete(tmp_path: Path, packing: Packing) -> None:
    path = tmp_path / packing.filename
    path.write_bytes(packing.pack(BENIGN))

    result = scan(path)

    assert result.is_clean(Severity.LOW), describe(result)
    assert result.complete
    assert all(c.status is CoverageStatus.SCANNED for c in result.coverage)
    assert any(c.member == packing.member and c.format == "pickle" for c in result.coverage)


def test_benign_archive_of_pickles_and_text_is_clean(tmp_path: Path) -> None:
    members = [
        ("checkpoint/weights.pkl", BENIGN),
        ("checkpoint/config.json", b'{"hidden_size": 8}'),
        ("README.md", "# Model card \u2014 caf\u00e9\n".encode()),
        ("empty.txt", b""),
    ]
    for name, blob in (
        ("bundle.zip", zip_bytes(members)),
        ("bundle.tar.gz", tar_bytes(members, "w:gz")),
    ):
        (tmp_path / name).write_bytes(blob)
    result = scan(tmp_path)
    assert result.is_clean(Severity.LOW), describe(result)
    assert not result.findings
    members_seen = {c.member for c in result.coverage if c.path.endswith("bundle.zip")}
    assert members_seen == {None, *(m for m, _ in members)}
    assert {c.format for c in result.coverage} >= {"zip", "gzip", "tar", "pickle", "text"}


def test_benign_7z_with_several_members_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "bundle.7z"
    path.write_bytes(seven_zip_bytes([(MEMBER, BENIGN), ("notes.txt", b"hello")]))
    result = scan(path)
    assert result.is_clean(), describe(result)
    assert {c.member for c in result.coverage} == {None, MEMBER, "notes.txt"}


# ---------------------------------------------------------------------------------- unsafe paths

UNSAFE_NAMES = ("../evil.pkl", "/abs.pkl", "a/../../x")


def test_zip_slip_names_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "slip.zip"
    members = [(n, BENIGN) for n in UNSAFE_NAMES] + [("safe/ok.pkl", BENIGN)]
    path.write_bytes(zip_bytes(members))
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist()[: len(UNSAFE_NAMES)] == list(UNSAFE_NAMES)

    result = scan(path)

    slips = [f for f in result.findings if f.rule_id == "MS202"]
    assert {f.location.member for f in slips} == set(UNSAFE_NAMES)
    assert all(f.severity >= Severity.HIGH for f in slips)
    assert not result.is_clean()
    # The members are still analysed (a loader reading them by name sees their bytes).
    assert {c.member for c in result.coverage if c.format == "pickle"} == {
        *UNSAFE_NAMES,
        "safe/ok.pkl",
    }


def test_tar_slip_names_and_links_pointing_outside_are_reported(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in UNSAFE_NAMES:
            info = tarfile.TarInfo(name)
            info.size = len(BENIGN)
            tf.addfile(info, io.BytesIO(BENIGN))
        tf.addfile(tar_link("etc-link", "/etc/passwd"))
        tf.addfile(tar_link("up-link", "../../outside"))
        tf.addfile(tar_link("hard-link", "../x", tarfile.LNKTYPE))
        tf.addfile(tar_link("inside-link", "sub/file.txt"))
    path = tmp_path / "slip.tar"
    path.write_bytes(buf.getvalue())

    result = scan(path)

    slips = {f.location.member: f for f in result.findings if f.rule_id == "MS202"}
    assert set(slips) == {*UNSAFE_NAMES, "etc-link", "up-link", "hard-link"}
    assert "/etc/passwd" in slips["etc-link"].message
    assert all(f.severity >= Severity.HIGH for f in slips.values())
    assert "inside-link" not in slips


# ---------------------------------------------------------------------------------- bombs


def write_deflated_zeros(fh: io.BufferedWriter, size: int) -> tuple[int, int]:
    """Stream a raw deflate stream of ``size`` zero bytes into ``fh``; (compressed, crc32).

    After a full flush the compressor starts from scratch, so every 1 MiB block of zeros
    compresses to the same bytes: they are computed once and written ``size >> 20`` times.
    """
    chunk = bytes(1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    assert comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH) == block
    tail = comp.flush()
    crc = 0
    for _ in range(size >> 20):
        fh.write(block)
        crc = zlib.crc32(chunk, crc)
    fh.write(tail)
    return len(block) * (size >> 20) + len(tail), crc


def write_zip_bomb(path: Path, members: list[tuple[str, int]]) -> None:
    """A zip whose deflated members each inflate to the given number of zero bytes."""
    central = b""
    with path.open("wb") as fh:
        for name, size in members:
            raw = name.encode()
            offset = fh.tell()
            fh.write(b"\0" * (30 + len(raw)))  # local header, rewritten once sizes are known
            csize, crc = write_deflated_zeros(fh, size)
            end = fh.tell()
            fh.seek(offset)
            sizes = (crc, csize, size, len(raw))
            fh.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, *sizes, 0) + raw)
            fh.seek(end)
            central += struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                0,
                8,
                0,
                0,
                *sizes,
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            central += raw
        cd_offset = fh.tell()
        fh.write(central)
        n = len(members)
        fh.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(central), cd_offset, 0))


@pytest.fixture(scope="module")
def gigabyte_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    write_zip_bomb(path, [("zeros.bin", 1 << 30)])
    assert path.stat().st_size < 2 << 20  # ~1 MiB that inflates to 1 GiB
    with zipfile.ZipFile(path) as zf:
        (info,) = zf.infolist()
        assert info.file_size == 1 << 30
    return path


def test_zip_bomb_by_ratio_stops_at_member_limit(gigabyte_bomb: Path) -> None:
    out = analyse(gigabyte_bomb, ContainerLimits(max_member_size=16 << 20))

    limit = [f for f in out.findings if f.rule_id == "MS203"]
    assert [f.location.member for f in limit] == ["zeros.bin"]
    assert out.decompressed == 0
    member = next(c for c in out.coverage if c.member == "zeros.bin")
    assert member.status is CoverageStatus.PARTIAL
    assert top(out) == [CoverageStatus.PARTIAL]
    assert not as_result(out).complete


def test_zip_bomb_under_default_limits_keeps_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    write_zip_bomb(path, [("zeros.bin", 256 << 20)])
    child = (
        "import resource, sys\n"
        "from modelshield import scan\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "result = scan(sys.argv[1])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(result.complete, (after - before) // 1024)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", child, str(path)], capture_output=True, text=True, check=True
    )
    complete, grown_mib = proc.stdout.split()
    assert complete == "True"  # 256 MiB is within the default limits: analysed in full
    assert int(grown_mib) < 128, f"peak memory grew by {grown_mib} MiB"


def test_zip_bomb_by_total_size_stops_at_total_limit(tmp_path: Path) -> None:
    path = tmp_path / "many-bombs.zip"
    write_zip_bomb(path, [(f"zeros{i}.bin", 8 << 20) for i in range(8)])

    out = analyse(path, ContainerLimits(max_member_size=16 << 20, max_total=20 << 20))

    limit = [f for f in out.findings if f.rule_id == "MS203"]
    assert limit, describe(as_result(out))
    assert out.decompressed <= 20 << 20
    assert {f.location.member for f in limit} == {f"zeros{i}.bin" for i in range(2, 8)}
    assert top(out) == [CoverageStatus.PARTIAL]
    assert not as_result(out).complete


def test_gzip_bomb_stops_at_member_limit(tmp_path: Path) -> None:
    path = tmp_path / "zeros.gz"
    size = 256 << 20
    with path.open("wb") as fh:
        fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        _, crc = write_deflated_zeros(fh, size)
        fh.write(struct.pack("<II", crc, size & 0xFFFFFFFF))
    assert path.stat().st_size < 1 << 20

    out = analyse(path, ContainerLimits(max_member_size=8 << 20))

    assert "MS203" in rules_of(out)
    assert top(out) == [CoverageStatus.PARTIAL]


def test_tar_member_larger_than_limit_is_partial(tmp_path: Path) -> None:
    path = tmp_path / "big.tar"
    path.write_bytes(tar_bytes([("small.txt", b"hi"), ("big.bin", bytes(64 << 10))]))
    out = analyse(path, ContainerLimits(max_member_size=32 << 10))
    assert [f.location.member for f in out.findings if f.rule_id == "MS203"] == ["big.bin"]
    assert top(out) == [CoverageStatus.PARTIAL]


# ---------------------------------------------------------------------------------- nesting


def twelve_levels(data: bytes) -> tuple[bytes, str]:
    chain = [MEMBER]
    blob = zip_bytes([(MEMBER, data)])
    for level in range(11, 0, -1):
        name = f"l{level}.zip"
        blob = zip_bytes([(name, blob)])
        chain.insert(0, name)
    return blob, " > ".join(chain)


def test_deep_nesting_is_inconclusive_at_the_depth_limit(
    tmp_path: Path, payload: tuple[bytes, Path]
) -> None:
    blob, _ = twelve_levels(payload[0])
    path = tmp_path / "deep.zip"
    path.write_bytes(blob)

    out = analyse(path, ContainerLimits())  # default max_depth: 8

    nesting = [f for f in out.findings if f.rule_id == "MS203"]
    assert len(nesting) == 1
    assert "nesting" in nesting[0].message
    at_limit = " > ".join(f"l{i}.zip" for i in range(1, 10))
    assert nesting[0].location.member == at_limit
    gap = next(c for c in out.coverage if c.member == at_limit)
    assert gap.status is CoverageStatus.INCONCLUSIVE
    assert "nesting" in (gap.reason or "")
    assert not as_result(out).is_clean()
    assert as_result(out).at_or_above(Severity.HIGH) == ()  # never reached: incomplete, not clean


def test_deep_nesting_within_a_raised_limit_finds_the_payload(
    tmp_path: Path, payload: tuple[bytes, Path]
) -> None:
    blob, chain = twelve_levels(payload[0])
    path = tmp_path / "deep.zip"
    path.write_bytes(blob)
    out = analyse(path, ContainerLimits(max_depth=12))
    hits = [f for f in out.findings if f.rule_id == "MS101"]
    assert [f.location.member for f in hits] == [chain]
    assert all(c.status is CoverageStatus.SCANNED for c in out.coverage)
    assert len(out.coverage) == 13


# ---------------------------------------------------------------------------------- member count


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_huge_member_count_is_partial(tmp_path: Path, kind: str) -> None:
    members = [(f"m{i:04d}.txt", b"hi") for i in range(3000)]
    path = tmp_path / f"many.{kind}"
    path.write_bytes(
        zip_bytes(members, zipfile.ZIP_STORED) if kind == "zip" else tar_bytes(members)
    )

    out = analyse(path, ContainerLimits(max_members=1000))

    assert "MS203" in rules_of(out)
    assert top(out) == [CoverageStatus.PARTIAL]
    analysed = [c for c in out.coverage if c.member is not None]
    assert len(analysed) == 1000
    assert not as_result(out).complete


def test_huge_member_count_in_7z_is_partial(tmp_path: Path) -> None:
    path = tmp_path / "many.7z"
    path.write_bytes(seven_zip_bytes([(f"m{i}.txt", b"hi") for i in range(30)]))
    out = analyse(path, ContainerLimits(max_members=10))
    assert "MS203" in rules_of(out)
    assert top(out) == [CoverageStatus.PARTIAL]


# ---------------------------------------------------------------------------------- encrypted


@pytest.mark.parametrize("header_encrypted", [True, False], ids=["header", "data-only"])
def test_encrypted_7z_is_inconclusive_not_clean(
    tmp_path: Path, payload: tuple[bytes, Path], header_encrypted: bool
) -> None:
    import py7zr

    path = tmp_path / "secret.7z"
    with py7zr.SevenZipFile(
        path,
        "w",
        password="hunter2",  # noqa: S106
        header_encryption=header_encrypted,
    ) as z:
        z.writestr(payload[0], MEMBER)

    result = scan(path)

    assert not result.complete
    assert not result.is_clean()
    assert top(result) == [CoverageStatus.INCONCLUSIVE]


# ---------------------------------------------------------------------------------- damage


def damaged_zip_truncated() -> bytes:
    blob = zip_bytes([(MEMBER, BENIGN), ("notes.txt", b"x" * 100)])
    return blob[:-30]


def damaged_zip_central_directory() -> bytes:
    return zip_bytes([(MEMBER, BENIGN)]).replace(b"PK\x01\x02", b"PK\x01\x09", 1)


def damaged_zip_deflate_stream() -> bytes:
    blob = bytearray(zip_bytes([(MEMBER, BENIGN * 20)]))
    start = blob.index(MEMBER.encode()) + len(MEMBER) + 5
    blob[start : start + 20] = b"\xff" * 20
    return bytes(blob)


def damaged_tar_truncated() -> bytes:
    blob = tar_bytes([(MEMBER, BENIGN), ("big.txt", b"a" * 5000)])
    return blob[: 2048 + 612]


def damaged_gzip_truncated() -> bytes:
    return gzip.compress(BENIGN)[:-10]


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("truncated.zip", damaged_zip_truncated),
        ("bad-central-directory.zip", damaged_zip_central_directory),
        ("bad-deflate.zip", damaged_zip_deflate_stream),
        ("truncated.tar", damaged_tar_truncated),
        ("truncated.pkl.gz", damaged_gzip_truncated),
    ],
)
def test_damaged_container_is_reported_and_not_clean(
    tmp_path: Path, name: str, build: Callable[[], bytes]
) -> None:
    path = tmp_path / name
    path.write_bytes(build())
    result = scan(path)
    assert "MS206" in rules_of(result), describe(result)
    assert not result.complete
    assert not result.is_clean()


def test_tar_member_hidden_behind_a_damaged_header_is_not_clean(
    tmp_path: Path, payload: tuple[bytes, Path]
) -> None:
    blob = bytearray(
        tar_bytes([("readme.txt", b"hello"), ("junk.txt", b"junk!"), (MEMBER, payload[0])])
    )
    blob[1024 + 148 : 1024 + 156] = b"XXXXXXXX"  # the checksum of junk.txt's header
    path = tmp_path / "damaged.tar"
    path.write_bytes(bytes(blob))
    with tarfile.open(path) as tf:  # Python's tarfile stops at the damaged header...
        assert tf.getnames() == ["readme.txt"]
    # ... GNU tar prints "Skipping to next header" and extracts model.pkl.

    result = scan(path)

    assert not result.is_clean(), describe(result)
    assert "MS206" in rules_of(result) or "MS101" in rules_of(result)
