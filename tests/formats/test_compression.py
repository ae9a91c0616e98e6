"""Single-stream compression (``modelshield.formats.compression``) and its use by the scanner.

Unit tests: format sniffing (and what must not be mistaken for a compressed stream), round trips
against the reference compressors (gzip, bzip2, xz, raw LZMA, zlib, joblib's ``ZF``, LZ4 frames,
zstd), output caps on bombs with bounded time and memory, errors on damaged streams, the missing
optional codec, spilling to a temporary file. Through the scanner: compressed payloads PROVEN
with the loader a user would use (``gzip.open`` + ``pickle.load``, ``joblib.load``), bombs that
end as MS203 + partial coverage, damaged streams that end as MS206 + inconclusive coverage.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import mmap
import os
import pickle
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pickle"))

from pickle_recipes import Reduce, assert_clean, assert_flagged, describe, shell_touch

import modelshield
from modelshield import Config, CoverageStatus, ScanResult, Severity
from modelshield.analysis import ContainerLimits
from modelshield.formats import compression as comp
from modelshield.pickle.machine import Limits
from modelshield.scanner import Analyzer, FileTask

lz4_frame = pytest.importorskip("lz4.frame")
zstandard = pytest.importorskip("zstandard")

SAMPLE = pickle.dumps({"weights": list(range(2000)), "name": "model" * 50}, protocol=4)


def _zf(raw: bytes) -> bytes:
    return b"ZF" + hex(len(raw)).encode().ljust(19) + zlib.compress(raw)


def _alone(data: bytes, **kw: Any) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_ALONE, **kw)


def _zstd(data: bytes) -> bytes:
    return bytes(zstandard.ZstdCompressor().compress(data))


def _lz4(data: bytes, **kw: Any) -> bytes:
    return bytes(lz4_frame.compress(data, **kw))


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "lzma": _alone,
    "zlib": zlib.compress,
    "joblib-zf": _zf,
    "lz4": _lz4,
    "zstd": _zstd,
}


def decompress(fmt: str, data: bytes, cap: int = 1 << 30) -> bytes:
    spilled = comp.collect(comp.iter_decompress(fmt, data, 0, len(data), cap))
    try:
        return bytes(memoryview(spilled.buf)[: spilled.size])
    finally:
        spilled.close()


def _formats(result: ScanResult) -> list[str]:
    """Coverage formats from the outermost container to the innermost content."""
    ordered = sorted(result.coverage, key=lambda c: len(c.member or ""))
    return [c.format for c in ordered]


# ------------------------------------------------------------------------------ sniffing


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_sniff_each_format(fmt: str) -> None:
    assert comp.sniff_compression(COMPRESSORS[fmt](SAMPLE)[:512]) == fmt


@pytest.mark.parametrize("level", range(-1, 10))
@pytest.mark.parametrize("wbits", [9, 12, 15])
def test_sniff_zlib_every_level_and_window(level: int, wbits: int) -> None:
    c = zlib.compressobj(level, zlib.DEFLATED, wbits)
    data = c.compress(SAMPLE) + c.flush()
    assert comp.sniff_compression(data) == "zlib"
    assert decompress("zlib", data) == SAMPLE


@pytest.mark.parametrize("preset", [0, 1, 6, 9])
def test_sniff_raw_lzma_presets(preset: int) -> None:
    data = _alone(SAMPLE, preset=preset)
    assert comp.sniff_compression(data) == "lzma"
    assert decompress("lzma", data) == SAMPLE


@pytest.mark.parametrize("protocol", [0, 1])
@pytest.mark.parametrize(
    "value",
    [[], [1, 2], [[]], [["a"], {"b": 1}], [None] * 300, [b"\x00\x00\x00\x00"]],
    ids=["empty", "ints", "nested", "mixed", "long", "zero-bytes"],
)
def test_pickles_starting_with_empty_list_are_not_lzma(protocol: int, value: list[Any]) -> None:
    """A protocol 0/1 list pickle starts with ``]`` (EMPTY_LIST) or ``(``, like LZMA's 0x5d."""
    data = pickle.dumps(value, protocol=protocol)
    assert comp.sniff_compression(data[:512]) != "lzma"
    result = modelshield.scan_bytes(data, "list.pkl")
    assert _formats(result) == ["pickle"]
    assert_clean(result)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"", None),
        (b"hello world, this is text\n", None),
        (b'{"a": 1}', None),
        (b"\x80\x04\x95\x00", None),
        (b"PK\x03\x04" + bytes(30), None),
        (b"\x93NUMPY\x01\x00", None),
        (b"BZh", None),  # no block-size digit
        (b"BZhx" + bytes(10), None),
        (b"ZF0x10" + bytes(30), None),  # ZF prefix but no zlib stream after the header
        (b"]\x00\x00\x00\x00" + b"\xff" * 8, None),  # dictionary size 0
        (b"](K\x01K\x02e." + bytes(8), None),  # protocol 1 list pickle
        (b"]\x00\x00\x80\x00" + b"\xff" * 8, "lzma"),  # 8 MiB dictionary
        (b"]\xff\xff\xff\xff" + b"\xff" * 8, "lzma"),
        (b"\x78\x9c", "zlib"),
        (b"\x78\xbb", None),  # FDICT set: a preset dictionary joblib never writes
        (b"\x78\x9d", None),  # bad FCHECK
        (b"\x04\x22\x4d\x18", "lz4"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
    ],
)
def test_sniff_edge_cases(head: bytes, expected: str | None) -> None:
    assert comp.sniff_compression(head) == expected


# ------------------------------------------------------------------------------ round trips

PAYLOADS: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "one-byte": lambda: b"x",
    "pickle": lambda: SAMPLE,
    "random": lambda: os.urandom(200_000),
    "text-1mb": lambda: (b"".join(b"line %d of a log file\n" % i for i in range(50_000)))[
        : 1 << 20
    ],
    "mixed": lambda: b"".join(os.urandom(1000) + bytes(5000) for _ in range(50)),
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_round_trip(fmt: str, payload: str) -> None:
    data = PAYLOADS[payload]()
    assert decompress(fmt, COMPRESSORS[fmt](data)) == data


def test_round_trip_inside_a_larger_buffer() -> None:
    """Decompression of ``buf[start:end]`` ignores bytes around the stream."""
    for fmt, make in COMPRESSORS.items():
        stream = make(SAMPLE)
        buf = b"junk" * 10 + stream + b"tail"
        out = comp.collect(comp.iter_decompress(fmt, buf, 40, 40 + len(stream), 1 << 30))
        assert bytes(memoryview(out.buf)[: out.size]) == SAMPLE, fmt
        out.close()


def test_zf_header_announces_the_length() -> None:
    data = _zf(SAMPLE)
    assert data[:2] == b"ZF" and int(data[2:21], 16) == len(SAMPLE)
    assert decompress("joblib-zf", data) == SAMPLE


LZ4_OPTIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "block-checksum": {"block_checksum": True},
    "no-content-checksum": {"content_checksum": False},
    "content-size": {"store_size": True},
    "no-content-size": {"store_size": False},
    "independent-blocks": {"block_linked": False, "block_size": lz4_frame.BLOCKSIZE_MAX64KB},
    "linked-blocks": {"block_linked": True, "block_size": lz4_frame.BLOCKSIZE_MAX64KB},
    "256kb-blocks": {"block_size": lz4_frame.BLOCKSIZE_MAX256KB},
    "1mb-blocks": {"block_size": lz4_frame.BLOCKSIZE_MAX1MB},
    "4mb-blocks": {"block_size": lz4_frame.BLOCKSIZE_MAX4MB, "block_checksum": True},
    "high-compression": {"compression_level": lz4_frame.COMPRESSIONLEVEL_MAX},
    "all-checksums-and-size": {
        "block_checksum": True,
        "content_checksum": True,
        "store_size": True,
        "block_linked": False,
    },
}


def _lz4_data() -> bytes:
    # Repeats at distances below and above 64 KiB, random runs (stored as raw blocks), zeros
    # (overlapping matches with offset 1): every path of the block decoder.
    words = b"".join(b"token%05d " % (i % 997) for i in range(60_000))
    return words[:400_000] + os.urandom(70_000) + bytes(100_000) + words[:300_000]


@pytest.mark.parametrize("options", sorted(LZ4_OPTIONS))
def test_lz4_frame_options(options: str) -> None:
    data = _lz4_data()
    frame = _lz4(data, **LZ4_OPTIONS[options])
    assert lz4_frame.decompress(frame) == data
    assert decompress("lz4", frame) == data


def test_lz4_large_input() -> None:
    data = (b"".join(b"%08d," % i for i in range(700_000)))[: 5 << 20]
    frame = _lz4(data, block_size=lz4_frame.BLOCKSIZE_MAX4MB)
    assert decompress("lz4", frame) == data


def test_lz4_several_frames_and_skippable_frames() -> None:
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    data = _lz4(b"first;") + skippable + _lz4(b"second;", block_checksum=True) + _lz4(b"")
    assert decompress("lz4", data) == b"first;second;"


def test_lz4_incremental_frame_from_the_compressor_object() -> None:
    c = lz4_frame.LZ4FrameCompressor(block_size=lz4_frame.BLOCKSIZE_MAX64KB, block_linked=True)
    parts = [os.urandom(100) + b"abc" * 30_000 for _ in range(5)]
    frame = c.begin() + b"".join(c.compress(p) for p in parts) + c.flush()
    assert decompress("lz4", frame) == b"".join(parts)


def test_lz4_decoder_matches_the_reference_on_random_inputs() -> None:
    @settings(max_examples=30, deadline=None)
    @given(
        chunks=st.lists(st.binary(max_size=300), max_size=20),
        repeat=st.integers(1, 50),
        linked=st.booleans(),
    )
    def check(chunks: list[bytes], repeat: int, linked: bool) -> None:
        data = b"".join(c * repeat for c in chunks)
        frame = _lz4(data, block_linked=linked, block_size=lz4_frame.BLOCKSIZE_MAX64KB)
        assert decompress("lz4", frame) == data

    check()


def test_zstd_several_frames() -> None:
    data = _zstd(b"one;") + _zstd(b"two;")
    assert decompress("zstd", data) == b"one;two;"


def test_zstd_streamed_frame_without_content_size() -> None:
    c = zstandard.ZstdCompressor().compressobj()
    frame = c.compress(SAMPLE) + c.flush()
    assert decompress("zstd", frame) == SAMPLE


@pytest.mark.parametrize("fmt", ["gzip", "bzip2", "xz", "lzma"])
def test_concatenated_streams_are_all_decompressed(fmt: str) -> None:
    make = COMPRESSORS[fmt]
    data = make(SAMPLE[:100]) + make(SAMPLE[100:])
    reference = {
        "gzip": gzip.decompress,
        "bzip2": bz2.decompress,
        "xz": lzma.decompress,
        "lzma": lzma.decompress,
    }[fmt]
    assert reference(data) == SAMPLE
    assert decompress(fmt, data) == SAMPLE


# ------------------------------------------------------------------------------ bombs

_MB = 1 << 20


def _bomb(fmt: str, megabytes: int) -> bytes:
    """``megabytes`` MiB of zeros, compressed incrementally (never held uncompressed)."""
    chunk = bytes(_MB)
    if fmt == "lz4":
        c4 = lz4_frame.LZ4FrameCompressor(block_size=lz4_frame.BLOCKSIZE_MAX4MB)
        return bytes(
            c4.begin() + b"".join(c4.compress(chunk) for _ in range(megabytes)) + c4.flush()
        )
    if fmt == "zstd":
        cz = zstandard.ZstdCompressor().compressobj()
        return bytes(b"".join(cz.compress(chunk) for _ in range(megabytes)) + cz.flush())
    makers: dict[str, Callable[[], Any]] = {
        "gzip": lambda: zlib.compressobj(1, zlib.DEFLATED, 31),
        "zlib": lambda: zlib.compressobj(1),
        "bzip2": lambda: bz2.BZ2Compressor(1),
        "xz": lambda: lzma.LZMACompressor(preset=0),
        "lzma": lambda: lzma.LZMACompressor(format=lzma.FORMAT_ALONE, preset=0),
    }
    c = makers[fmt]()
    return bytes(b"".join(c.compress(chunk) for _ in range(megabytes)) + c.flush())


# Sizes keep the test fast: the slower compressors get smaller (but still over twice the cap) bombs.
BOMBS = {"gzip": 200, "zlib": 200, "zstd": 200, "lz4": 200, "bzip2": 24, "xz": 24, "lzma": 24}
CAP = 10 * _MB


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {fmt: _bomb(fmt, mb) for fmt, mb in BOMBS.items()}


@pytest.mark.parametrize("fmt", sorted(BOMBS))
def test_bomb_stops_at_the_cap(fmt: str, bombs: dict[str, bytes]) -> None:
    data = bombs[fmt]
    assert len(data) < CAP // 10
    started = time.perf_counter()
    with pytest.raises(comp.OutputLimit) as info:
        comp.collect(comp.iter_decompress(fmt, data, 0, len(data), CAP))
    assert time.perf_counter() - started < 10
    if fmt != "lz4":  # see test_lz4_output_limit_reports_the_cap
        assert info.value.limit == CAP


@pytest.mark.parametrize("fmt", sorted(set(BOMBS) - {"lz4"}))  # tracemalloc slows LZ4 10-fold
def test_bomb_memory_stays_near_the_cap(fmt: str, bombs: dict[str, bytes]) -> None:
    data = bombs[fmt]
    tracemalloc.start()
    try:
        with pytest.raises(comp.OutputLimit):
            comp.collect(comp.iter_decompress(fmt, data, 0, len(data), CAP))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * CAP, f"peak {peak} bytes for a {CAP} byte cap"


def test_lz4_output_limit_reports_the_cap(bombs: dict[str, bytes]) -> None:
    data = bombs["lz4"]
    with pytest.raises(comp.OutputLimit) as info:
        comp.collect(comp.iter_decompress("lz4", data, 0, len(data), CAP))
    assert info.value.limit == CAP


def test_output_exactly_at_the_cap_is_allowed() -> None:
    data = bytes(1000)
    for fmt, make in COMPRESSORS.items():
        assert decompress(fmt, make(data), cap=1000) == data, fmt
        with pytest.raises(comp.OutputLimit):
            decompress(fmt, make(data), cap=999)


def test_lz4_decoding_throughput(bombs: dict[str, bytes]) -> None:
    data = bombs["lz4"]
    started = time.perf_counter()
    with pytest.raises(comp.OutputLimit):
        comp.collect(comp.iter_decompress("lz4", data, 0, len(data), 16 * _MB))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.25, f"{16 / elapsed:.0f} MB/s"


# ------------------------------------------------------------------------------ damaged streams


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_truncated_stream_raises(fmt: str) -> None:
    data = COMPRESSORS[fmt](os.urandom(5000))
    with pytest.raises(comp.DecompressError):
        decompress(fmt, data[: len(data) // 2])


CORRUPT: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda d: d[:10] + b"\xff" * 20 + d[30:],
    "bzip2": lambda d: d[:10] + b"\x00" * 20 + d[30:],
    "xz": lambda d: d[:12] + b"\xff" * 20 + d[32:],
    "lzma": lambda d: d[:13] + b"\xff" * 200 + d[213:],
    # A zlib header counts only when the first bytes inflate: damage the Adler-32 instead.
    "zlib": lambda d: d[:-4] + bytes(b ^ 0xFF for b in d[-4:]),
    "joblib-zf": lambda d: d[:-4] + bytes(b ^ 0xFF for b in d[-4:]),
    "lz4": lambda d: d[:7] + b"\x00\x00\x00\x00\xff",  # end mark, then a non-frame
    "zstd": lambda d: d[:4] + b"\xff" * 30,
}


@pytest.mark.parametrize("fmt", sorted(CORRUPT))
def test_corrupt_stream_raises(fmt: str) -> None:
    data = CORRUPT[fmt](COMPRESSORS[fmt](os.urandom(5000)))
    with pytest.raises(comp.DecompressError):
        decompress(fmt, data)


def _lz4_frame_with_block(block: bytes) -> bytes:
    header = _lz4(b"", store_size=False, content_checksum=False)[:7]
    return header + len(block).to_bytes(4, "little") + block + bytes(4)


LZ4_BAD_BLOCKS = {
    "literal-length-cut": b"\xf0",
    "literal-run-past-end": b"\x1fa\x01",
    "match-offset-cut": b"\x1fa\x01\x00\xff",
    "offset-one-byte": b"\x00\x00",
    "match-length-cut": b"\x0f\x01",
    "offset-beyond-output": b"\x00\x01\x00",
}


@pytest.mark.parametrize("case", sorted(LZ4_BAD_BLOCKS))
def test_malformed_lz4_block_raises_decompress_error(case: str) -> None:
    data = _lz4_frame_with_block(LZ4_BAD_BLOCKS[case])
    with pytest.raises(RuntimeError):  # lz4.frame rejects it too
        lz4_frame.decompress(data)
    with pytest.raises(comp.DecompressError):
        decompress("lz4", data)


def test_not_an_lz4_frame() -> None:
    with pytest.raises(comp.DecompressError):
        decompress("lz4", b"\x04\x22\x4d\x19" + bytes(20))


def test_unknown_format_name() -> None:
    with pytest.raises(comp.DecompressError):
        decompress("brotli", b"abc")


def test_missing_zstandard_is_missing_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import raises ImportError
    with pytest.raises(comp.MissingCodec) as info:
        decompress("zstd", _zstd(SAMPLE))
    assert info.value.package == "zstandard" and info.value.fmt == "zstd"


# ------------------------------------------------------------------------------ collect / spill


def test_collect_in_memory_below_spill_at() -> None:
    out = comp.collect(iter([b"ab", b"cd"]))
    assert isinstance(out.buf, bytes) and out.buf == b"abcd" and out.size == 4
    out.close()


def test_collect_spills_to_a_mapped_temporary_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comp, "SPILL_AT", 10)
    parts = [b"0123456", b"789abc", b"def" * 1000]
    out = comp.collect(iter(parts))
    assert isinstance(out.buf, mmap.mmap)
    assert out.size == len(b"".join(parts))
    assert out.buf[: out.size] == b"".join(parts)
    file = out._file
    assert file is not None and not file.closed
    out.close()
    assert out.buf.closed and file.closed


def test_collect_spill_through_iter_decompress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comp, "SPILL_AT", 1000)
    data = os.urandom(3 * comp.CHUNK)
    stream = gzip.compress(data)
    out = comp.collect(comp.iter_decompress("gzip", stream, 0, len(stream), 1 << 30))
    try:
        assert isinstance(out.buf, mmap.mmap)
        assert out.buf[:] == data
    finally:
        out.close()


def test_collect_closes_the_spill_file_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comp, "SPILL_AT", 10)
    opened: list[Any] = []
    real = tempfile.TemporaryFile

    def tracking() -> Any:
        f = real()
        opened.append(f)
        return f

    monkeypatch.setattr(tempfile, "TemporaryFile", tracking)

    def chunks() -> Any:
        yield b"x" * 20
        raise comp.OutputLimit(20)

    with pytest.raises(comp.OutputLimit):
        comp.collect(chunks())
    assert len(opened) == 1 and opened[0].closed


def test_collect_empty_spill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comp, "SPILL_AT", -1)  # spill at the first (empty) chunk
    out = comp.collect(iter([b""]))
    assert out.size == 0 and out.buf == b""
    out.close()


# ------------------------------------------------------------------------------ through the scanner


def _evil(marker: Path) -> bytes:
    return pickle.dumps(Reduce(os.system, shell_touch(marker)), protocol=2)


OPENERS: dict[str, Callable[[Path], Any]] = {
    "gzip": gzip.open,
    "bzip2": bz2.open,
    "xz": lzma.open,
    "lzma": lzma.open,
    "zlib": lambda p: io.BytesIO(zlib.decompress(p.read_bytes())),
    "lz4": lz4_frame.open,
    "zstd": lambda p: io.BytesIO(zstandard.ZstdDecompressor().decompress(p.read_bytes())),
}


@pytest.mark.parametrize("fmt", sorted(OPENERS))
def test_compressed_payload_is_proven_and_flagged(fmt: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "model.pkl.c"
    path.write_bytes(COMPRESSORS[fmt](_evil(marker)))
    with OPENERS[fmt](path) as fh:
        pickle.load(fh)
    assert marker.exists()

    result = modelshield.scan(path)
    hits = assert_flagged(result, "os.system")
    assert {h.location.member for h in hits} == {f"<{fmt} content>"}
    assert _formats(result) == [fmt, "pickle"]
    assert result.complete


def test_nested_compression_is_followed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "model.gz"
    path.write_bytes(gzip.compress(bz2.compress(lzma.compress(_evil(marker)))))
    with gzip.open(path) as g, bz2.open(g) as b, lzma.open(b) as x:
        pickle.load(x)
    assert marker.exists()
    result = modelshield.scan(path)
    hits = assert_flagged(result, "os.system")
    assert hits[0].location.member == "<gzip content> > <bzip2 content> > <xz content>"
    assert _formats(result) == ["gzip", "bzip2", "xz", "pickle"]


def test_benign_compressed_pickles_are_clean() -> None:
    for fmt, make in COMPRESSORS.items():
        result = modelshield.scan_bytes(make(SAMPLE), "model.bin")
        assert_clean(result)
        assert _formats(result) == [fmt, "pickle"], fmt


def test_compressed_text_and_data_are_clean() -> None:
    for fmt, make in COMPRESSORS.items():
        for content, inner in ((b"just some text\n" * 50, "text"), (b"", "empty")):
            result = modelshield.scan_bytes(make(content), "x")
            assert_clean(result)
            assert _formats(result) == [fmt, inner], fmt


def _scan_limited(data: bytes, max_member_size: int) -> ScanResult:
    analyzer = Analyzer(
        Config(), Limits(), containers=ContainerLimits(max_member_size=max_member_size)
    )
    out = analyzer.scan_file(FileTask("bomb", "bomb"), data)
    return ScanResult(tuple(out.findings), tuple(out.coverage), tuple(out.errors))


@pytest.mark.parametrize("fmt", sorted(BOMBS))
def test_bomb_through_the_scanner_is_partial(fmt: str, bombs: dict[str, bytes]) -> None:
    started = time.perf_counter()
    result = _scan_limited(bombs[fmt], CAP)
    assert time.perf_counter() - started < 10
    ms203 = [f for f in result.findings if f.rule_id == "MS203"]
    assert ms203, describe(result)
    if fmt != "lz4":  # see test_lz4_output_limit_reports_the_cap
        assert str(CAP) in ms203[0].message
    assert [(c.format, c.status) for c in result.coverage] == [(fmt, CoverageStatus.PARTIAL)]
    assert not result.complete and not result.is_clean()
    assert not any(f.rule_id == "MS112" for f in result.findings)


def test_total_decompressed_limit_applies_across_nesting() -> None:
    data = gzip.compress(gzip.compress(os.urandom(3 * _MB)))  # 3 MiB, then 3 MiB more
    analyzer = Analyzer(
        Config(), Limits(), containers=ContainerLimits(max_member_size=8 * _MB, max_total=4 * _MB)
    )
    out = analyzer.scan_file(FileTask("x", "x"), data)
    assert any(f.rule_id == "MS203" for f in out.findings)
    assert any(c.status is CoverageStatus.PARTIAL for c in out.coverage)


def test_deep_nesting_stops_at_the_depth_limit() -> None:
    data = pickle.dumps([1, 2, 3])
    for _ in range(12):
        data = gzip.compress(data)
    result = modelshield.scan_bytes(data, "deep.gz")
    assert any(f.rule_id == "MS203" and "nesting" in f.message for f in result.findings)
    assert not result.complete


# Raw LZMA has no magic: once its first bytes are damaged it is indistinguishable from random
# data (which no loader decodes into anything), so it is recognised as data, not as LZMA.
@pytest.mark.parametrize("fmt", sorted(set(CORRUPT) - {"zstd", "lzma"}))
def test_damaged_stream_through_the_scanner_is_inconclusive(fmt: str) -> None:
    data = CORRUPT[fmt](COMPRESSORS[fmt](os.urandom(5000)))
    result = modelshield.scan_bytes(data, "damaged")
    assert any(f.rule_id == "MS206" for f in result.findings), describe(result)
    assert (fmt, CoverageStatus.INCONCLUSIVE) in [(c.format, c.status) for c in result.coverage]
    assert not result.complete


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_truncated_stream_through_the_scanner_is_not_clean(fmt: str) -> None:
    data = COMPRESSORS[fmt](SAMPLE)
    result = modelshield.scan_bytes(data[: len(data) // 2], "cut")
    assert not result.complete, describe(result)


def test_corrupt_zstd_through_the_scanner_is_ms206() -> None:
    result = modelshield.scan_bytes(CORRUPT["zstd"](_zstd(os.urandom(5000))), "damaged.zst")
    assert not any(f.rule_id == "MS112" for f in result.findings), describe(result)
    assert ("zstd", CoverageStatus.INCONCLUSIVE) in [(c.format, c.status) for c in result.coverage]


def test_malformed_lz4_through_the_scanner_is_ms206() -> None:
    result = modelshield.scan_bytes(_lz4_frame_with_block(b"\xf0"), "damaged.lz4")
    assert not any(f.rule_id == "MS112" for f in result.findings), describe(result)
    assert ("lz4", CoverageStatus.INCONCLUSIVE) in [(c.format, c.status) for c in result.coverage]


def test_missing_zstandard_through_the_scanner_is_inconclusive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)
    result = modelshield.scan_bytes(_zstd(SAMPLE), "model.pkl.zst")
    assert [(c.format, c.status) for c in result.coverage] == [
        ("zstd", CoverageStatus.INCONCLUSIVE)
    ]
    assert "zstandard" in (result.coverage[0].reason or "")
    assert not result.is_clean()


# ------------------------------------------------------------------------------ bypasses (bugs)
# Each sample is PROVEN by a plain test; the scanner's verdict on it is the xfail test beside it.

SECOND_STREAM = ["gzip", "bzip2", "xz", "lzma"]


def _second_stream(fmt: str, tmp_path: Path) -> tuple[Path, Path]:
    """A pickle split across two concatenated streams; the payload lies in the second one."""
    marker = tmp_path / "marker"
    evil = pickle.dumps(["padding" * 10, Reduce(os.system, shell_touch(marker))], protocol=2)
    make = COMPRESSORS[fmt]
    path = tmp_path / "model.pkl.c"
    path.write_bytes(make(evil[:20]) + make(evil[20:]))
    return path, marker


@pytest.mark.parametrize("fmt", SECOND_STREAM)
def test_second_stream_sample_is_proven(fmt: str, tmp_path: Path) -> None:
    path, marker = _second_stream(fmt, tmp_path)
    with OPENERS[fmt](path) as fh:
        pickle.load(fh)
    assert marker.exists()
    if fmt != "gzip":  # joblib (bz2.BZ2File / lzma.LZMAFile) runs it too; its gzip reader hangs
        joblib = pytest.importorskip("joblib")
        marker.unlink()
        joblib.load(path)
        assert marker.exists()


@pytest.mark.parametrize("fmt", SECOND_STREAM)
def test_payload_in_a_second_stream_is_flagged(fmt: str, tmp_path: Path) -> None:
    path, _ = _second_stream(fmt, tmp_path)
    assert_flagged(modelshield.scan(path), "os.system")


DICT_SIZES = [pytest.param(n, id=f"{n / _MB:g}MiB") for n in (3 << 19, 3 << 20, 3 << 23)]


def _odd_dictionary(dict_size: int, tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    data = _alone(_evil(marker), filters=[{"id": lzma.FILTER_LZMA1, "dict_size": dict_size}])
    assert data[:2] == b"]\x00"  # what joblib recognises as LZMA
    assert int.from_bytes(data[1:5], "little") == dict_size
    path = tmp_path / "model.joblib"
    path.write_bytes(data)
    return path, marker


@pytest.mark.parametrize("dict_size", DICT_SIZES)
def test_odd_dictionary_sample_is_proven(dict_size: int, tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    path, marker = _odd_dictionary(dict_size, tmp_path)
    joblib.load(path)
    assert marker.exists()


@pytest.mark.parametrize("dict_size", DICT_SIZES)
def test_raw_lzma_with_a_non_power_of_two_dictionary(dict_size: int, tmp_path: Path) -> None:
    path, _ = _odd_dictionary(dict_size, tmp_path)
    assert_flagged(modelshield.scan(path), "os.system")


PROPERTIES = [(0, 0, 0), (4, 0, 0), (3, 0, 0), (1, 1, 1)]


def _odd_properties(lc: int, lp: int, pb: int, tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    data = _alone(_evil(marker), filters=[{"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb}])
    assert data[0] == (pb * 5 + lp) * 9 + lc != 0x5D
    path = tmp_path / "model.pkl.lzma"
    path.write_bytes(data)
    return path, marker


@pytest.mark.parametrize(("lc", "lp", "pb"), PROPERTIES)
def test_odd_properties_sample_is_proven(lc: int, lp: int, pb: int, tmp_path: Path) -> None:
    path, marker = _odd_properties(lc, lp, pb, tmp_path)
    with lzma.open(path) as fh:
        pickle.load(fh)
    assert marker.exists()


@pytest.mark.parametrize(("lc", "lp", "pb"), PROPERTIES)
def test_raw_lzma_with_other_properties(lc: int, lp: int, pb: int, tmp_path: Path) -> None:
    path, _ = _odd_properties(lc, lp, pb, tmp_path)
    assert_flagged(modelshield.scan(path), "os.system")


def test_compressed_pickle_named_safetensors_is_disguised(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    result = modelshield.scan_bytes(gzip.compress(_evil(marker)), "model.safetensors")
    assert_flagged(result, "os.system")
    assert_flagged(result, "model.safetensors", ("MS205",), threshold=Severity.MEDIUM)
