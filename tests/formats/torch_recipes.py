"""Readable recipes that generate PyTorch samples for the container tests (not a test module).

Benign samples are written by the real libraries (``torch.save``, ``torch.jit.save``). Malicious
ones start from a real ``torch.save`` archive whose members are re-packed by :func:`write_zip`, a
small zip writer that can lie the way attackers do: wrong CRCs, flag bits (encryption, data
descriptor), a local-header name that differs from the central directory's, duplicate members,
bytes before the archive. Payloads are harmless: they create a *marker* file in pytest's
``tmp_path``, so a test proves that the real loader ran them before asserting detection.
"""

from __future__ import annotations

import io
import os
import pickle
import shlex
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modelshield import Finding, ScanResult, Severity

STORED = 0
DEFLATED = 8
FLAG_ENCRYPTED = 0x1
FLAG_DATA_DESCRIPTOR = 0x8
FLAG_UTF8 = 0x800

# ---------------------------------------------------------------------------------- payloads


def shell_touch(marker: Path) -> str:
    """A shell command that creates ``marker``."""
    return f"touch {shlex.quote(str(marker))}"


class Reduce:
    """An object that pickles as ``func(*args)``: unpickling calls ``func``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def evil_pickle(marker: Path, protocol: int = 2) -> bytes:
    """``os.system('touch <marker>')`` as a pickle (what a malicious ``data.pkl`` holds)."""
    return pickle.dumps(Reduce(os.system, shell_touch(marker)), protocol=protocol)


def benign_pickle(protocol: int = 2) -> bytes:
    """A harmless ``data.pkl``: a small dict without tensors."""
    return pickle.dumps({"epoch": 3, "note": "benign"}, protocol=protocol)


# ---------------------------------------------------------------------------------- zip writer


@dataclass(frozen=True)
class Member:
    """One zip member, with every field an attacker may falsify."""

    name: str
    data: bytes
    method: int = STORED
    flags: int = 0
    local_name: str | None = None
    """Name written in the local header (defaults to ``name``)."""
    crc: int | None = None
    """CRC-32 written in both headers (defaults to the correct one)."""
    local_flags: int | None = None
    """Flag bits written in the local header (defaults to ``flags``)."""


def write_zip(
    members: Sequence[Member],
    *,
    prefix: bytes = b"",
    comment: bytes = b"",
    cd_order: Sequence[int] | None = None,
    zip64: bool = False,
) -> bytes:
    """A zip archive of ``members`` after ``prefix`` (offsets are not adjusted for it, exactly
    as ``cat prefix archive.zip`` produces). ``cd_order`` lists the members in central-directory
    order (default: the order of their data). ``zip64`` moves sizes, offsets and counts into
    zip64 fields (``0xFFFFFFFF`` in the classic ones, values in extra field 0x0001 and in the
    zip64 end-of-central-directory record)."""
    out = bytearray()
    central: list[bytes] = []
    for m in members:
        payload = m.data
        if m.method == DEFLATED:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = c.compress(m.data) + c.flush()
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        lname = (m.name if m.local_name is None else m.local_name).encode()
        cname = m.name.encode()
        lflags = m.flags if m.local_flags is None else m.local_flags
        offset = len(out)
        out += struct.pack(
            "<4sHHHHHIIIHH",
            b"PK\x03\x04",
            45 if zip64 else 20,
            lflags,
            m.method,
            0,
            0x21,
            crc,
            len(payload),
            len(m.data),
            len(lname),
            0,
        )
        out += lname + payload
        extra = b""
        csize, usize, off = len(payload), len(m.data), offset
        if zip64:
            extra = struct.pack("<HHQQQ", 0x0001, 24, usize, csize, off)
            csize = usize = off = 0xFFFFFFFF
        central.append(
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                45 if zip64 else 20,
                45 if zip64 else 20,
                m.flags,
                m.method,
                0,
                0x21,
                crc,
                csize,
                usize,
                len(cname),
                len(extra),
                0,
                0,
                0,
                0,
                off,
            )
            + cname
            + extra
        )
    order = range(len(members)) if cd_order is None else cd_order
    cd_offset = len(out)
    for i in order:
        out += central[i]
    cd_size = len(out) - cd_offset
    count = len(order)
    if zip64:
        eocd64 = len(out)
        out += struct.pack(
            "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset
        )
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd64, 1)
        out += struct.pack(
            "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, len(comment)
        )
    else:
        out += struct.pack(
            "<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, len(comment)
        )
    out += comment
    return prefix + bytes(out)


# ---------------------------------------------------------------------------------- checkpoints


def torch_checkpoint(obj: Any, **kwargs: Any) -> bytes:
    """What ``torch.save(obj, f, **kwargs)`` writes."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def members_of(archive: bytes) -> list[Member]:
    """The members of a well-formed archive (read with Python's ``zipfile``), stored."""
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return [Member(i.filename, z.read(i)) for i in z.infolist()]


def sample_members() -> list[Member]:
    """A real ``torch.save`` checkpoint (``{"w": tensor}``, record folder ``archive/``)."""
    import torch

    return members_of(torch_checkpoint({"w": torch.arange(4, dtype=torch.float32)}))


def with_pickle(
    members: Iterable[Member], data: bytes, *, name: str = "data.pkl", **changes: Any
) -> list[Member]:
    """``members`` with the member ending in ``/<name>`` replaced by ``data`` (and ``changes``)."""
    out = []
    for m in members:
        if m.name.endswith("/" + name):
            m = replace(m, data=data, **changes)
        out.append(m)
    return out


def renamed_folder(members: Iterable[Member], folder: str) -> list[Member]:
    """``members`` moved from their top-level record folder to ``folder``."""
    return [replace(m, name=folder + "/" + m.name.split("/", 1)[1]) for m in members]


def evil_checkpoint(marker: Path, **changes: Any) -> bytes:
    """A real checkpoint whose ``data.pkl`` runs the payload (``changes`` apply to that member)."""
    return write_zip(with_pickle(sample_members(), evil_pickle(marker), **changes))


# ---------------------------------------------------------------------------------- legacy


def legacy_tar(
    pickle_member: bytes,
    *,
    storages: bytes | None = None,
    tensors: bytes | None = None,
    sys_info: bytes | None = None,
) -> bytes:
    """The tar layout of PyTorch < 0.4: members ``sys_info``, ``pickle``, ``storages`` and
    ``tensors``. ``storages`` holds a pickled count, one record per storage and a pickled list
    of views; ``tensors`` a pickled count and one record per tensor (both empty by default)."""
    default_sys_info = pickle.dumps(
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}, protocol=2
    )
    members = {
        "sys_info": default_sys_info if sys_info is None else sys_info,
        "pickle": pickle_member,
        "storages": (
            pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)
            if storages is None
            else storages
        ),
        "tensors": pickle.dumps(0, protocol=2) if tensors is None else tensors,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ---------------------------------------------------------------------------------- assertions


def describe(result: ScanResult) -> str:
    lines = [
        f"  {f.rule_id} {f.severity.label} [{f.location.member}]: {f.message} | {f.evidence}"
        for f in result.findings
    ]
    return "\n".join(lines) or "  (no findings)"


def text_of(f: Finding) -> str:
    return f"{f.message} {f.evidence or ''}"


def assert_flagged(
    result: ScanResult,
    target: str,
    rules: Iterable[str] = ("MS101",),
    *,
    threshold: Severity = Severity.HIGH,
    member: str | None = None,
) -> list[Finding]:
    """A finding of one of ``rules`` at or above ``threshold`` names ``target`` (in ``member``
    when given: a suffix of the finding's member chain)."""
    wanted = set(rules)
    hits = [
        f
        for f in result.findings
        if f.severity >= threshold
        and f.rule_id in wanted
        and target in text_of(f)
        and (member is None or (f.location.member or "").endswith(member))
    ]
    assert not result.is_clean(threshold), f"scan is clean:\n{describe(result)}"
    assert hits, f"no {'/'.join(wanted)} finding >= {threshold.label} names {target!r}:\n" + (
        describe(result)
    )
    return hits


def has_rule(result: ScanResult, rule_id: str, threshold: Severity = Severity.INFO) -> bool:
    return any(f.rule_id == rule_id and f.severity >= threshold for f in result.findings)


def assert_clean(
    result: ScanResult,
    *,
    allow: Iterable[str] = (),
    threshold: Severity = Severity.MEDIUM,
) -> None:
    """Complete coverage and no finding at or above ``threshold`` except rules in ``allow``."""
    allowed = set(allow)
    assert result.complete, f"incomplete coverage: {result.coverage}\n{describe(result)}"
    bad = [f for f in result.at_or_above(threshold) if f.rule_id not in allowed]
    assert not bad, describe(result)


# ---------------------------------------------------------------------------------- TorchScript


def _torch_module_classes() -> tuple[type[Any], type[Any]]:
    import torch

    class Affine(torch.nn.Module):
        """A small scriptable model."""

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight + 1.0

    class SaveOnLoad(torch.nn.Module):
        """Its TorchScript ``__setstate__`` calls ``torch.save(tensor, path)``: ``torch.jit.load``
        runs it, so the archive writes a file of the author's choosing when it is loaded."""

        def __init__(self, path: str) -> None:
            super().__init__()
            self.w = torch.ones(2)
            self.path = path

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.w

        @torch.jit.export
        def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
            return (self.w, self.path, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
            self.w = state[0]
            self.path = state[1]
            self.training = state[2]
            torch.save(self.w, self.path)

    return Affine, SaveOnLoad


def torchscript_archive(module: Any) -> bytes:
    """What ``torch.jit.save(torch.jit.script(module), f)`` writes."""
    import torch

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def jit_load(path: Path) -> Any:
    """``torch.jit.load(path)`` (untyped in torch's stubs)."""
    import torch

    return torch.jit.load(path)  # type: ignore[no-untyped-call]


def affine_torchscript() -> bytes:
    return torchscript_archive(_torch_module_classes()[0]())


def save_on_load_torchscript(marker: Path) -> bytes:
    """A TorchScript archive whose loading writes ``marker`` (through ``torch.save``)."""
    return torchscript_archive(_torch_module_classes()[1](str(marker)))
