"""Unit tests of the PyTorch-faithful zip reader and of the TorchScript source checks.

Archives are written either by Python's ``zipfile`` (the well-formed reference) or by
:func:`torch_recipes.write_zip`, which can falsify what attackers falsify.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import pytest
from torch_recipes import DEFLATED, FLAG_ENCRYPTED, Member, write_zip

from modelshield.findings import Severity
from modelshield.formats.torchscript import torchscript_findings
from modelshield.formats.zip import (
    MemberTooLarge,
    ZipArchive,
    ZipEntry,
    ZipError,
    find_eocd,
    member_span,
    read_member,
    read_zip,
    unsafe_name,
)


def listing(data: bytes, **kwargs: int) -> ZipArchive:
    return read_zip(data, len(data), **kwargs)


def contents(data: bytes, max_size: int = 1 << 20) -> dict[str, bytes]:
    arc = listing(data)
    return {e.name: read_member(data, len(data), e, max_size=max_size) for e in arc.entries}


def kinds(arc: ZipArchive) -> set[str]:
    return {a.kind for a in arc.anomalies}


def zipfile_archive(files: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


FILES = {"archive/data.pkl": b"\x80\x02}q\x00.", "archive/data/0": bytes(range(256)) * 4}


# ============================================================================ well-formed


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_reads_what_zipfile_writes(compression: int) -> None:
    data = zipfile_archive(FILES, compression=compression)
    arc = listing(data)
    assert [e.name for e in arc.entries] == list(FILES)
    assert not arc.anomalies
    assert arc.start == 0
    assert arc.end == len(data)
    assert contents(data) == FILES
    for e in arc.entries:
        assert e.method == compression
        assert e.size == len(FILES[e.name])
        assert e.crc == zlib.crc32(FILES[e.name])
        assert e.local_name == e.name
        assert not e.is_dir and not e.encrypted


def test_stored_member_span_is_the_raw_bytes() -> None:
    data = zipfile_archive(FILES)
    for e in listing(data).entries:
        span = member_span(e, len(data))
        assert span is not None
        assert data[span[0] : span[1]] == FILES[e.name]


def test_directory_entries() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.mkdir("archive")
        z.writestr("archive/x", b"1")
    arc = listing(buf.getvalue())
    assert [e.is_dir for e in arc.entries] == [True, False]


def test_zip64_records_are_followed() -> None:
    # Sizes, offsets and counts live in zip64 fields; zipfile agrees on every member.
    members = [Member("a/one", b"1" * 300), Member("a/two", b"2" * 5000, method=DEFLATED)]
    data = write_zip(members, zip64=True)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert {i.filename: z.read(i) for i in z.infolist()} == {m.name: m.data for m in members}
    arc = listing(data)
    assert [(e.name, e.size) for e in arc.entries] == [("a/one", 300), ("a/two", 5000)]
    assert contents(data) == {m.name: m.data for m in members}


def test_zipfile_force_zip64_local_headers() -> None:
    # zipfile's force_zip64 puts a zip64 extra field in the local header only: its length
    # must be skipped to find the data.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, payload in FILES.items():
            with z.open(name, "w", force_zip64=True) as fh:
                fh.write(payload)
    data = buf.getvalue()
    assert contents(data) == FILES
    assert not listing(data).anomalies


# ============================================================================ end records


def test_find_eocd() -> None:
    data = zipfile_archive(FILES)
    assert find_eocd(data, len(data)) == len(data) - 22
    assert find_eocd(b"not a zip at all" * 10, 160) is None
    assert find_eocd(b"", 0) is None


def test_comment_at_the_end() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/x", b"data")
        z.comment = b"a comment that follows the end record"
    data = buf.getvalue()
    eocd = find_eocd(data, len(data))
    assert eocd == len(data) - 22 - len(z.comment)
    arc = listing(data)
    assert arc.end == len(data)
    assert contents(data) == {"archive/x": b"data"}


def test_truncated_end_record_is_not_an_end_record() -> None:
    data = zipfile_archive(FILES)
    assert find_eocd(data, len(data) - 1) is None
    with pytest.raises(ZipError, match="end-of-central-directory"):
        read_zip(data, len(data) - 1)


def test_end_record_further_back_than_a_comment_allows_is_not_found() -> None:
    # The record is looked for in the last 65535 + 22 bytes only (the largest comment).
    data = zipfile_archive({"a/x": b"1"}) + bytes(70_000)
    assert find_eocd(data, len(data)) is None


def test_last_end_signature_wins() -> None:
    # Like miniz, the search runs backwards: a fake record in the comment is the one used.
    real = write_zip([Member("a/x", b"1")])
    fake = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0, 0, 0, 0, 0)
    data = real[:-2] + struct.pack("<H", len(fake)) + fake
    assert find_eocd(data, len(data)) == len(real)
    assert listing(data).entries == []


# ============================================================================ prepended data


def test_prepended_data_shifts_offsets() -> None:
    prefix = b"\x80\x02K\x01." + b"junk" * 25  # e.g. a pickle in front (a polyglot)
    plain = write_zip([Member("a/x", b"hello"), Member("a/y", b"w" * 100, method=DEFLATED)])
    data = prefix + plain
    arc = listing(data)
    assert arc.start == len(prefix)
    assert "prepended-data" in kinds(arc)
    assert contents(data) == {"a/x": b"hello", "a/y": b"w" * 100}
    assert arc.entries[0].header_offset == len(prefix)
    with zipfile.ZipFile(io.BytesIO(data)) as z:  # zipfile also corrects the offsets
        assert z.read("a/x") == b"hello"


def test_prepended_data_with_zip64() -> None:
    data = write_zip([Member("a/x", b"hello")], prefix=b"P" * 33, zip64=True)
    arc = listing(data)
    assert arc.start == 33
    assert contents(data) == {"a/x": b"hello"}


# ============================================================================ anomalies


def test_duplicate_names_ignore_case() -> None:
    data = write_zip(
        [Member("a/data.pkl", b"1"), Member("a/other", b"2"), Member("a/DATA.pkl", b"3")]
    )
    arc = listing(data)
    dups = [a for a in arc.anomalies if a.kind == "duplicate-name"]
    assert [a.member for a in dups] == ["a/DATA.pkl"]
    assert contents(data)["a/DATA.pkl"] == b"3"


def test_exact_duplicates_are_both_listed() -> None:
    data = write_zip([Member("a/data.pkl", b"first"), Member("a/data.pkl", b"second")])
    arc = listing(data)
    assert [read_member(data, len(data), e, max_size=100) for e in arc.entries] == [
        b"first",
        b"second",
    ]
    assert "duplicate-name" in kinds(arc)


def test_local_name_mismatch_uses_central_name_and_local_length() -> None:
    data = write_zip(
        [
            Member("a/data.pkl", b"payload", local_name="a/a-much-longer-local-name.bin"),
            Member("a/next", b"n", local_name="x"),
        ]
    )
    arc = listing(data)
    assert [e.local_name for e in arc.entries] == ["a/a-much-longer-local-name.bin", "x"]
    assert [a.member for a in arc.anomalies if a.kind == "name-mismatch"] == [
        "a/data.pkl",
        "a/next",
    ]
    assert contents(data) == {"a/data.pkl": b"payload", "a/next": b"n"}


def test_encrypted_flag_is_reported_and_ignored() -> None:
    data = write_zip([Member("a/data.pkl", b"plain bytes", flags=FLAG_ENCRYPTED)])
    arc = listing(data)
    (entry,) = arc.entries
    assert entry.encrypted
    assert "encrypted-flag" in kinds(arc)
    assert read_member(data, len(data), entry, max_size=100) == b"plain bytes"


def test_local_flags_and_crc_are_not_checked() -> None:
    data = write_zip([Member("a/x", b"data", crc=0, local_flags=0xFFFF)])
    arc = listing(data)
    assert not arc.anomalies
    assert arc.entries[0].crc == 0
    assert contents(data) == {"a/x": b"data"}


def test_unsupported_method() -> None:
    raw = bytearray(write_zip([Member("a/x", b"data")]))
    # Patch both headers to method 12 (bzip2).
    struct.pack_into("<H", raw, 8, 12)
    cd = raw.index(b"PK\x01\x02")
    struct.pack_into("<H", raw, cd + 10, 12)
    data = bytes(raw)
    arc = listing(data)
    assert arc.entries[0].method == 12
    assert "unsupported-method" in kinds(arc)
    with pytest.raises(ZipError, match="method 12"):
        read_member(data, len(data), arc.entries[0], max_size=100)


def test_unsafe_names_are_reported() -> None:
    data = write_zip([Member("../data.pkl", b"1"), Member("/abs", b"2"), Member("a/ok", b"3")])
    unsafe = [a.member for a in listing(data).anomalies if a.kind == "unsafe-name"]
    assert unsafe == ["../data.pkl", "/abs"]


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [
        ("archive/data.pkl", False),
        ("a..b/data.pkl", False),
        ("weird name/x", False),
        ("../x", True),
        ("a/../../x", True),
        ("a\\..\\x", True),
        ("/etc/passwd", True),
        ("\\windows\\x", True),
        ("C:/x", True),
        ("c:x", True),
        ("..", True),
        ("...", False),
        ("a/..b", False),
    ],
)
def test_unsafe_name(name: str, unsafe: bool) -> None:
    assert unsafe_name(name) is unsafe


def test_bad_local_header() -> None:
    raw = bytearray(write_zip([Member("a/x", b"data")]))
    raw[0:4] = b"XXXX"
    data = bytes(raw)
    arc = listing(data)
    assert "bad-local-header" in kinds(arc)
    assert arc.entries[0].data_offset == -1
    assert member_span(arc.entries[0], len(data)) is None
    with pytest.raises(ZipError, match="outside the file"):
        read_member(data, len(data), arc.entries[0], max_size=100)


def test_non_utf8_names_fall_back_to_cp437() -> None:
    raw = bytearray(write_zip([Member("a/xx", b"1")]))
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = raw.index(sig) + (30 if sig == b"PK\x03\x04" else 46)
        raw[at : at + 4] = b"a/\x81\xe9"
    arc = listing(bytes(raw))
    assert arc.entries[0].name == b"a/\x81\xe9".decode("cp437")


# ============================================================================ damage and limits


def test_damaged_central_directory() -> None:
    raw = bytearray(zipfile_archive(FILES))
    cd = raw.index(b"PK\x01\x02")
    raw[cd : cd + 4] = b"XXXX"
    with pytest.raises(ZipError, match="damaged"):
        listing(bytes(raw))


def test_central_directory_larger_than_the_file() -> None:
    raw = bytearray(zipfile_archive(FILES))
    eocd = raw.rindex(b"PK\x05\x06")
    struct.pack_into("<I", raw, eocd + 12, len(raw) * 2)  # central directory size
    with pytest.raises(ZipError, match="larger than the file"):
        listing(bytes(raw))


def test_entry_count_beyond_the_directory() -> None:
    raw = bytearray(zipfile_archive(FILES))
    eocd = raw.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", raw, eocd + 8, 5, 5)  # claims 5 entries, holds 2
    with pytest.raises(ZipError, match="entry 2"):
        listing(bytes(raw))


def test_max_entries_truncates_the_listing() -> None:
    data = write_zip([Member(f"a/{i}", b"x") for i in range(10)])
    arc = listing(data, max_entries=4)
    assert arc.truncated_listing
    assert len(arc.entries) == 4
    assert "entry-count" in kinds(arc)


def _deflated(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    out = [c.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(out) + c.flush()


def test_deflate_bomb_stops_at_the_limit() -> None:
    # 100 MB of zeros in ~100 KB: inflating stops just past the 1 MB allowed.
    size = 100 << 20
    payload = _deflated(size)
    header = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, DEFLATED, 0, 0, 0, len(payload), size, 5, 0
    )
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        b"PK\x01\x02",
        20,
        20,
        0,
        DEFLATED,
        0,
        0,
        0,
        len(payload),
        size,
        5,
        0,
        0,
        0,
        0,
        0,
        0,
    )
    body = header + b"a/bom" + payload
    data = (
        body
        + central
        + b"a/bom"
        + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, 46 + 5, len(body), 0)
    )
    (entry,) = listing(data).entries
    assert entry.size == size
    with pytest.raises(MemberTooLarge) as info:
        read_member(data, len(data), entry, max_size=1 << 20)
    assert info.value.produced == 1 << 20
    assert len(read_member(data, len(data), entry, max_size=size)) == size


def test_stored_member_over_the_limit() -> None:
    data = write_zip([Member("a/x", bytes(5000))])
    (entry,) = listing(data).entries
    with pytest.raises(MemberTooLarge):
        read_member(data, len(data), entry, max_size=4999)
    assert len(read_member(data, len(data), entry, max_size=5000)) == 5000


def test_member_that_runs_past_the_end_of_the_file() -> None:
    data = write_zip([Member("a/x", b"0123456789")])
    (entry,) = listing(data).entries
    cut = entry.data_offset + 5  # the data is cut short (the directory is read from `data`)
    assert member_span(entry, cut) is None
    with pytest.raises(ZipError, match="outside the file"):
        read_member(data, cut, entry, max_size=100)


def test_corrupt_deflate_data() -> None:
    data = write_zip([Member("a/x", b"compress me " * 50, method=DEFLATED)])
    (entry,) = listing(data).entries
    raw = bytearray(data)
    raw[entry.data_offset] = 0xFF  # reserved block type
    with pytest.raises(ZipError, match="cannot inflate"):
        read_member(bytes(raw), len(raw), entry, max_size=10_000)


def test_truncated_deflate_data_yields_what_inflates() -> None:
    # No CRC or end-of-stream check: a cut stream gives its prefix, as miniz's reader would.
    text = bytes(range(256)) * 40
    data = write_zip([Member("a/x", text, method=DEFLATED)])
    (entry, *_) = listing(data).entries
    short = ZipEntry(
        entry.name,
        entry.method,
        entry.flags,
        entry.crc,
        entry.compressed_size // 2,
        entry.size,
        entry.header_offset,
        entry.data_offset,
        entry.local_name,
    )
    out = read_member(data, len(data), short, max_size=len(text))
    assert text.startswith(out)
    assert len(out) < len(text)


# ============================================================================ TorchScript sources

BENIGN_SOURCE = """class Model(Module):
  __parameters__ = ["weight", ]
  weight : Tensor
  def forward(self: __torch__.Model, x: Tensor) -> Tensor:
    # calls torch.save( in a comment are not code
    _0 = "builtins.ValueError"
    _1 = "os.system('id') and torch.save(x, 'f') inside a string"
    _2 = ops.prim.unchecked_cast(x)
    _3 = ops.aten.relu(x)
    _4 = ops.quantized.linear(x, self.packed)
    if torch.gt(torch.sum(x), 0.):
      ops.prim.RaiseException("builtins.ValueError: bad", "builtins.ValueError")
    return torch.add(x, self.weight)
"""


def test_benign_torchscript_source_has_no_findings() -> None:
    assert torchscript_findings(BENIGN_SOURCE) == []


@pytest.mark.parametrize(
    ("line", "severity", "what"),
    [
        ("_0 = ops.evil.run(x)", Severity.MEDIUM, "evil::run"),
        ("_0 = ops.my_lib.exec_shell(x)", Severity.MEDIUM, "my_lib::exec_shell"),
        ('torch.save(x, "/tmp/out")', Severity.HIGH, "save"),
        ('ops.aten.save(x, "/tmp/out")', Severity.HIGH, "save"),
        ('_0 = torch.load("/tmp/other.pt")', Severity.HIGH, "load"),
        ('_0 = torch.jit.load("/tmp/other.pt")', Severity.HIGH, "load"),
        ('os.system("id")', Severity.HIGH, "system module"),
        ('_0 = subprocess.run(["id"])', Severity.HIGH, "system module"),
        ('_0 = __import__("os")', Severity.HIGH, "built-in"),
        ('_0 = eval("1")', Severity.HIGH, "built-in"),
        ('_0 = open("/etc/passwd")', Severity.HIGH, "built-in"),
        ("_0 = x.__class__", Severity.HIGH, "internals"),
    ],
)
def test_dangerous_torchscript_source(line: str, severity: Severity, what: str) -> None:
    source = BENIGN_SOURCE.replace("    return torch.add", f"    {line}\n    return torch.add")
    found = torchscript_findings(source)
    assert found, line
    assert all(rule == "MS204" for rule, *_ in found)
    assert any(sev is severity and what in msg for _, sev, msg, _ in found), found
    assert all(line.strip() in evidence for *_, evidence in found)
    assert any("line 13:" in msg for _, _, msg, _ in found), found


def test_each_custom_operator_is_reported_once() -> None:
    source = "_0 = ops.evil.run(x)\n_1 = ops.evil.run(_0)\n_2 = ops.evil.other(x)\n"
    found = torchscript_findings(source)
    assert [msg.split(":")[0] for _, _, msg, _ in found] == ["line 1", "line 3"]


def test_string_with_escaped_quotes_is_not_code() -> None:
    source = "_0 = \"a \\\" torch.save(x, y) \\\" b\"\n_1 = 'os.system(\\'id\\')'\n"
    assert torchscript_findings(source) == []


def test_code_after_a_string_on_the_same_line_is_checked() -> None:
    found = torchscript_findings('_0 = "harmless"; torch.save(x, "f")\n')
    assert [sev for _, sev, _, _ in found] == [Severity.HIGH]
