"""Content analysis of one input: sniff by content, recurse into containers, collect results.

Every blob (a file, an archive member, a decompressed stream) is recognised from its bytes and
handed to the matching format reader; containers hand their members back here, within limits on
depth, member count, member size and total decompressed size. Each blob ends with a coverage
entry: scanned, partial, skipped (with the reason) or inconclusive.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
from dataclasses import dataclass, field
from typing import Protocol

from modelshield.checks import matching_check, zip_hooks
from modelshield.checks.context import Context, Probe
from modelshield.config import Config
from modelshield.findings import (
    Confidence,
    Coverage,
    CoverageStatus,
    Finding,
    Location,
    ScanError,
    Severity,
)
from modelshield.formats import compression as comp
from modelshield.formats import numpy as npy
from modelshield.formats import zip as zipf
from modelshield.formats.sniff import Format, looks_like_text, runs_as_pickle, sniff_magic
from modelshield.formats.torchscript import torchscript_findings
from modelshield.pickle.machine import Limits, Machine
from modelshield.pickle.opcodes import Buffer
from modelshield.pickle.trace import Event, EventKind, PickleAnalysis
from modelshield.policy import Policy, Verdict
from modelshield.rules.catalog import RULES
from modelshield.rules.pickle_rules import Where, pickle_findings

_HEAD = 4096
"""Bytes read to recognise a format (HDF5 may start after a user block of up to 2 KiB here)."""
_POLYGLOT_COPY_LIMIT = 1 << 30
"""Largest embedded pickle copied out to look for a zip archive appended to it."""


@dataclass(frozen=True)
class ContainerLimits:
    """Bounds on recursion into archives and compressed streams."""

    max_depth: int = 8
    max_members: int = 100_000
    max_member_size: int = 8 << 30
    """Largest single decompressed member or stream, in bytes."""
    max_total: int = 32 << 30
    """Largest total of decompressed bytes for one input."""


@dataclass
class FileOutcome:
    findings: list[Finding] = field(default_factory=list)
    coverage: list[Coverage] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    suppressed: list[Finding] = field(default_factory=list)
    bytes_read: int = 0
    decompressed: int = 0


@dataclass(frozen=True)
class Blob:
    """Bytes to analyse: ``buf[start:end]``, found at ``member`` inside file ``path``."""

    path: str
    member: str | None
    buf: Buffer
    start: int
    end: int
    depth: int = 0
    name: str = ""
    """File or member name (for the extension check)."""
    fs_path: str | None = None
    """Real path of the top-level file, for checks that look beside it (ONNX external data)."""
    is_file_content: bool = True
    """True for the file itself and for the decompressed stream of a compressed file: what a
    loader opening the file by its name reads (used to compare content with the name)."""

    @property
    def size(self) -> int:
        return self.end - self.start

    def head(self, n: int = _HEAD) -> bytes:
        return bytes(memoryview(self.buf)[self.start : min(self.end, self.start + n)])

    def child(self, member: str, buf: Buffer, start: int, end: int, name: str) -> Blob:
        chain = f"{self.member} > {member}" if self.member else member
        return Blob(self.path, chain, buf, start, end, self.depth + 1, name, self.fs_path, False)

    def decompressed(self, member: str, buf: Buffer, size: int) -> Blob:
        """The content of this blob's compressed stream (still 'the file' if this blob is)."""
        chain = f"{self.member} > {member}" if self.member else member
        return Blob(
            self.path,
            chain,
            buf,
            0,
            size,
            self.depth + 1,
            self.name,
            self.fs_path,
            self.is_file_content,
        )

    def materialise(self) -> Buffer:
        """The region as a standalone buffer (zero-copy when it is the whole buffer)."""
        if self.start == 0 and self.end == len(memoryview(self.buf)):
            return self.buf
        return bytes(memoryview(self.buf)[self.start : self.end])


_SAFE_EXTENSIONS = {
    ".safetensors": "safetensors",
    ".json": "JSON",
    ".txt": "text",
    ".md": "text",
    ".npy": "NumPy array",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".onnx": "ONNX",
    ".gguf": "GGUF",
    ".tflite": "TFLite",
}

_DATA_MAGICS: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"GIF8", 0, "gif"),
    (b"\xba\x16\x4f\x2f", 0, "fasttext"),
    (b"lCRF", 0, "crfsuite"),
    (b"RIFF", 0, "riff"),
)


def _finding(
    rule_id: str,
    message: str,
    blob: Blob,
    *,
    member: str | None = None,
    offset: int | None = None,
    severity: Severity | None = None,
    evidence: str | None = None,
    confidence: Confidence | None = None,
) -> Finding:
    return RULES[rule_id].finding(
        message,
        Location(blob.path, member if member is not None else blob.member, offset),
        severity=severity,
        confidence=confidence,
        evidence=evidence,
    )


class Analyzer:
    """Analyses inputs with one policy, limits and configuration."""

    def __init__(
        self,
        config: Config,
        limits: Limits,
        policy: Policy | None = None,
        containers: ContainerLimits | None = None,
    ) -> None:
        self.config = config
        self.limits = limits
        self.containers = containers or ContainerLimits()
        base = policy or Policy.default()
        self.policy = base.with_allowed(config.allow) if config.allow else base

    # ------------------------------------------------------------------ entry points
    def _keep(self, ev: Event) -> bool:
        # Calls and imports of allowlisted names never produce findings: do not store them.
        if ev.kind in (EventKind.CALL, EventKind.IMPORT) and ev.name is not None:
            if ev.origin is not None:
                return True  # needed to know that the global it names was called
            return self.policy.classify(ev.name).verdict is not Verdict.ALLOWED
        return True

    def analyse_pickle(self, buf: Buffer, start: int = 0, end: int | None = None) -> PickleAnalysis:
        return Machine(self.limits, keep=self._keep, quiet=self._allowed).analyse(
            buf, start=start, end=end
        )

    def _allowed(self, name: str) -> bool:
        return self.policy.classify(name).verdict is Verdict.ALLOWED

    def scan_path(self, path: str, display: str, note: str | None, out: FileOutcome) -> None:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            sha = _sha256(fh) if self.config.baselines else None
            blob_name = os.path.basename(display)
            if size == 0:
                out.coverage.append(
                    Coverage(
                        display,
                        CoverageStatus.SCANNED,
                        Format.EMPTY.value,
                        size=0,
                        sha256=sha,
                        reason=note,
                    )
                )
                return
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                before = len(out.coverage)
                self.scan_blob(Blob(display, None, mm, 0, size, 0, blob_name, path), out, note)
                # The top-level entry carries the file's digest (for baselines).
                for i in range(before, len(out.coverage)):
                    c = out.coverage[i]
                    if c.member is None:
                        out.coverage[i] = Coverage(
                            c.path, c.status, c.format, c.member, c.reason, c.size, sha
                        )
                        break

    # ------------------------------------------------------------------ dispatch
    def scan_blob(self, blob: Blob, out: FileOutcome, note: str | None = None) -> None:
        """Recognise ``blob`` by content and analyse it; appends findings and coverage."""
        head = blob.head()
        out.bytes_read += len(head)

        def cover(status: CoverageStatus, fmt: str, why: str | None = None) -> None:
            reason = "; ".join(x for x in (why, note) if x) or None
            out.coverage.append(Coverage(blob.path, status, fmt, blob.member, reason, blob.size))

        if blob.size == 0:
            cover(CoverageStatus.SCANNED, Format.EMPTY.value)
            return
        if blob.depth > self.containers.max_depth:
            out.findings.append(
                _finding(
                    "MS203",
                    f"nesting deeper than {self.containers.max_depth} levels was not analysed",
                    blob,
                )
            )
            cover(CoverageStatus.INCONCLUSIVE, "unknown", "nesting limit reached")
            return
        fmt = sniff_magic(head)
        kind = (
            comp.sniff_compression(head)
            if fmt in (None, Format.GZIP, Format.BZIP2, Format.XZ, Format.ZSTD)
            else None
        )
        if fmt is Format.PICKLE:
            self._pickle(blob, out, cover, None)
            return
        if fmt is Format.ZIP:
            self._zip(blob, out, cover)
            return
        if fmt is Format.NUMPY:
            self._npy(blob, out, cover)
            return
        if fmt is Format.TAR:
            self._tar(blob, out, cover)
            return
        if kind is not None and kind != "lzma":
            self._compressed(blob, kind, out, cover)
            return
        if fmt is Format.SEVEN_ZIP:
            self._seven_zip(blob, out, cover)
            return
        probe = Probe(head, blob.size, blob.name, blob.member)
        if fmt in (Format.HDF5, Format.GGUF) and self._run_checks(blob, probe, out):
            return
        if fmt in (Format.HDF5, Format.GGUF):
            cover(
                CoverageStatus.INCONCLUSIVE,
                fmt.value,
                f"{fmt.value} content is recognised but not analysed by this version; "
                "a loader may execute code from it",
            )
            return
        # No magic: a protocol 0/1 pickle, raw LZMA, a zip with data before it, text or data.
        analysis = self.analyse_pickle(blob.buf, blob.start, blob.end)
        text = looks_like_text(head)
        if runs_as_pickle(analysis, text=text):
            self._pickle(blob, out, cover, analysis)
            return
        if kind == "lzma":
            self._compressed(blob, kind, out, cover)
            return
        # Formats without a signature at byte 0 (TFLite, ONNX, TF graphs, safetensors...) come
        # before the zip fallback: a TFLite file may carry its metadata as an appended zip.
        if self._run_checks(blob, probe, out):
            return
        if self._zip_at_end(blob):
            self._zip(blob, out, cover)
            return
        if text:
            cover(CoverageStatus.SCANNED, Format.TEXT.value)
            return
        for magic, at, label in _DATA_MAGICS:
            if head[at : at + len(magic)] == magic:
                cover(CoverageStatus.SCANNED, label, "plain data format")
                return
        err = analysis.streams[0].error_pos if analysis.streams else 0
        cover(
            CoverageStatus.SCANNED,
            Format.DATA.value,
            "no recognised model format; a pickle loader rejects it at byte "
            f"{err} before importing anything",
        )

    def _zip_at_end(self, blob: Blob) -> bool:
        """A zip archive found from the end of data that does not start with one."""
        if blob.start == 0:
            return zipf.find_eocd(blob.buf, blob.end) is not None
        if blob.size > _POLYGLOT_COPY_LIMIT:
            return False
        return zipf.find_eocd(blob.materialise(), blob.size) is not None

    def _run_checks(self, blob: Blob, probe: Probe, out: FileOutcome) -> bool:
        """Hand the blob to the first format check that recognises it."""
        module = matching_check(probe)
        if module is None:
            return False
        module.check(Context(self, blob, out))
        return True

    # ------------------------------------------------------------------ pickles
    def _pickle(
        self, blob: Blob, out: FileOutcome, cover: _Cover, analysis: PickleAnalysis | None
    ) -> None:
        if analysis is None:
            analysis = self.analyse_pickle(blob.buf, blob.start, blob.end)
        where = Where(blob.path, blob.member, blob.start if blob.member is None else 0)
        out.findings.extend(pickle_findings(analysis, self.policy, where))
        analysed = max((s.end for s in analysis.streams), default=0)
        out.bytes_read += analysed
        self._disguise_check(blob, out, "a pickle")
        # A pickle at the start and a zip archive at the end: both readings are loadable.
        if analysis.streams and (blob.start == 0 or blob.size <= _POLYGLOT_COPY_LIMIT):
            whole = blob.materialise()
            eocd = zipf.find_eocd(whole, blob.size)
            if eocd is not None and eocd >= analysis.streams[0].end:
                try:
                    zipf.read_zip(whole, blob.size, max_entries=self.containers.max_members)
                except zipf.ZipError:
                    pass
                else:
                    out.findings.append(
                        _finding(
                            "MS200",
                            "the file is a pickle (what torch.load's legacy path and "
                            "pickle.load run) and also a zip archive (what zip-based tools "
                            "read); both were analysed",
                            blob,
                        )
                    )
                    self._zip(blob, out, None)
        if analysis.limit is not None:
            cover(
                CoverageStatus.PARTIAL,
                "pickle",
                f"analysis stopped at the {analysis.limit.value} limit",
            )
        else:
            cover(CoverageStatus.SCANNED, "pickle")

    def _disguise_check(
        self, blob: Blob, out: FileOutcome, what: str, native: tuple[str, ...] = ()
    ) -> None:
        """MS205 when the file's name promises a safe format (``native``: names that fit)."""
        if not blob.is_file_content:
            return
        ext = os.path.splitext(blob.name)[1].lower()
        label = _SAFE_EXTENSIONS.get(ext)
        if label is not None and ext not in native:
            out.findings.append(
                _finding(
                    "MS205",
                    f"named like a {label} file ({ext}) but contains {what}",
                    blob,
                    evidence=blob.name,
                )
            )

    # ------------------------------------------------------------------ zip archives
    def _zip(self, blob: Blob, out: FileOutcome, cover: _Cover | None) -> None:
        if isinstance(blob.buf, mmap.mmap):
            # Only the directory and the pickles are read, far apart: no read-ahead of weights.
            with contextlib.suppress(AttributeError, OSError, ValueError):
                blob.buf.madvise(mmap.MADV_RANDOM)
        buf = blob.materialise()
        size = blob.size
        try:
            arc = zipf.read_zip(buf, size, max_entries=self.containers.max_members)
        except zipf.ZipError as exc:
            out.findings.append(_finding("MS206", f"zip archive cannot be read: {exc}", blob))
            if cover:
                cover(CoverageStatus.INCONCLUSIVE, "zip", f"damaged archive: {exc}")
            return
        layout = _torch_layout(arc)
        if cover is not None and layout.pickles:
            self._disguise_check(blob, out, "a PyTorch checkpoint")
        for a in arc.anomalies:
            if a.kind == "unsafe-name":
                out.findings.append(
                    _finding("MS202", a.detail, blob, member=self._chain(blob, a.member))
                )
            elif a.kind == "entry-count":
                out.findings.append(_finding("MS203", a.detail, blob))
            else:
                out.findings.append(
                    _finding(
                        "MS201",
                        f"{a.kind}: {a.detail}",
                        blob,
                        member=self._chain(blob, a.member) if a.member else None,
                    )
                )
        for module in zip_hooks():
            hook = getattr(module, "check_zip", None)
            if hook is not None:
                hook(Context(self, blob, out), ZipView(buf, size, arc))
        fmt = "pytorch" if layout.pickles else ("torchscript" if layout.code else "zip")
        if layout.code:
            fmt = "torchscript"
        partial = arc.truncated_listing
        storage_count = 0
        for entry in arc.entries:
            if entry.is_dir:
                continue
            if entry.name in layout.storages:
                storage_count += 1  # raw tensor bytes: torch reads them as data, never unpickles
                continue
            if entry.data_offset < 0:
                continue  # reported as bad-local-header
            if entry.name in layout.code:
                self._torchscript_source(blob, buf, size, entry, out)
                continue
            partial |= not self._zip_member(blob, buf, size, entry, out)
        if storage_count:
            out.coverage.append(
                Coverage(
                    blob.path,
                    CoverageStatus.SCANNED,
                    "tensor-data",
                    self._chain(blob, f"{layout.prefix}data/*"),
                    f"{storage_count} PyTorch storage records: raw tensor bytes, not read",
                    None,
                )
            )
        if layout.code:
            out.findings.append(
                _finding(
                    "MS204",
                    f"TorchScript archive with {len(layout.code)} code files; "
                    "torch.jit.load compiles and runs them",
                    blob,
                )
            )
        if cover is not None:
            if partial:
                cover(CoverageStatus.PARTIAL, fmt, "some members were not analysed")
            else:
                cover(CoverageStatus.SCANNED, fmt)

    def _chain(self, blob: Blob, member: str | None) -> str | None:
        if member is None:
            return blob.member
        return f"{blob.member} > {member}" if blob.member else member

    def _zip_member(
        self, blob: Blob, buf: Buffer, size: int, entry: zipf.ZipEntry, out: FileOutcome
    ) -> bool:
        """Analyse one member; False when it could not be (fully) read."""
        name = entry.name
        lim = self.containers
        if entry.method == zipf.STORED:
            span = zipf.member_span(entry, size)
            if span is None:
                out.findings.append(
                    _finding(
                        "MS206",
                        "member data lies outside the file",
                        blob,
                        member=self._chain(blob, name),
                    )
                )
                return False
            self.scan_blob(blob.child(name, buf, span[0], span[1], name), out)
            return True
        room = min(lim.max_member_size, lim.max_total - out.decompressed)
        try:
            spilled = comp.collect(zipf.iter_member(buf, size, entry, max_size=room))
        except zipf.MemberTooLarge:
            out.findings.append(
                _finding(
                    "MS203",
                    f"member decompresses to more than {room} bytes (limit); not analysed",
                    blob,
                    member=self._chain(blob, name),
                )
            )
            out.coverage.append(
                Coverage(
                    blob.path,
                    CoverageStatus.PARTIAL,
                    "unknown",
                    self._chain(blob, name),
                    "decompression limit",
                    None,
                )
            )
            return False
        except zipf.ZipError as exc:
            out.findings.append(_finding("MS206", str(exc), blob, member=self._chain(blob, name)))
            out.coverage.append(
                Coverage(
                    blob.path,
                    CoverageStatus.INCONCLUSIVE,
                    "unknown",
                    self._chain(blob, name),
                    str(exc),
                    None,
                )
            )
            return False
        try:
            out.decompressed += spilled.size
            self.scan_blob(blob.child(name, spilled.buf, 0, spilled.size, name), out)
        finally:
            spilled.close()
        return True

    def _torchscript_source(
        self, blob: Blob, buf: Buffer, size: int, entry: zipf.ZipEntry, out: FileOutcome
    ) -> None:
        member = self._chain(blob, entry.name)
        try:
            data = zipf.read_member(buf, size, entry, max_size=64 << 20)
        except (zipf.ZipError, zipf.MemberTooLarge) as exc:
            out.coverage.append(
                Coverage(
                    blob.path, CoverageStatus.INCONCLUSIVE, "torchscript", member, str(exc), None
                )
            )
            return
        text = data.decode("utf-8", "replace")
        for rule_id, severity, message, evidence in torchscript_findings(text):
            out.findings.append(
                _finding(
                    rule_id, message, blob, member=member, severity=severity, evidence=evidence
                )
            )
        out.coverage.append(
            Coverage(blob.path, CoverageStatus.SCANNED, "torchscript", member, None, len(data))
        )

    # ------------------------------------------------------------------ numpy
    def _npy(self, blob: Blob, out: FileOutcome, cover: _Cover) -> None:
        try:
            header = npy.parse_npy(blob.buf, blob.start, blob.end)
        except npy.NpyError as exc:
            out.findings.append(_finding("MS206", f"invalid .npy header: {exc}", blob))
            cover(CoverageStatus.INCONCLUSIVE, "numpy", str(exc))
            return
        data_start = blob.start + header.data_offset
        if header.has_object:
            self._disguise_check(blob, out, "a NumPy object array (a pickle)", (".npy",))
            # numpy.load(allow_pickle=True) unpickles the data of object arrays.
            analysis = self.analyse_pickle(blob.buf, data_start, blob.end)
            where = Where(
                blob.path, blob.member, data_start if blob.member is None else header.data_offset
            )
            out.findings.extend(pickle_findings(analysis, self.policy, where))
            if analysis.limit is not None:
                cover(
                    CoverageStatus.PARTIAL,
                    "numpy-object",
                    f"analysis stopped at the {analysis.limit.value} limit",
                )
            else:
                cover(
                    CoverageStatus.SCANNED,
                    "numpy-object",
                    "object array: its data is a pickle (run by allow_pickle=True)",
                )
            return
        expected = header.data_size
        actual = blob.end - data_start
        if expected is not None and actual != expected:
            out.findings.append(
                _finding(
                    "MS206",
                    f".npy data is {actual} bytes but the header describes {expected}",
                    blob,
                    severity=Severity.LOW,
                )
            )
        cover(CoverageStatus.SCANNED, "numpy", "plain array data")

    # ------------------------------------------------------------------ compression
    def _compressed(self, blob: Blob, kind: str, out: FileOutcome, cover: _Cover) -> None:
        lim = self.containers
        room = min(lim.max_member_size, lim.max_total - out.decompressed)
        try:
            spilled = comp.collect(comp.iter_decompress(kind, blob.buf, blob.start, blob.end, room))
        except comp.OutputLimit as exc:
            out.findings.append(
                _finding(
                    "MS203",
                    f"{kind} stream decompresses to more than {exc.limit} bytes "
                    "(limit); not analysed",
                    blob,
                )
            )
            cover(CoverageStatus.PARTIAL, kind, "decompression limit")
            return
        except comp.MissingCodec as exc:
            cover(
                CoverageStatus.INCONCLUSIVE,
                kind,
                f"install the optional package {exc.package!r} to analyse {kind} data",
            )
            return
        except comp.DecompressError as exc:
            out.findings.append(_finding("MS206", str(exc), blob))
            cover(CoverageStatus.INCONCLUSIVE, kind, str(exc))
            return
        try:
            out.decompressed += spilled.size
            inner = f"<{kind} content>"
            self.scan_blob(blob.decompressed(inner, spilled.buf, spilled.size), out)
        finally:
            spilled.close()
        cover(CoverageStatus.SCANNED, kind)

    # ------------------------------------------------------------------ tar
    def _tar(self, blob: Blob, out: FileOutcome, cover: _Cover) -> None:
        import tarfile  # only for tar archives: ~5 ms at start-up otherwise

        lim = self.containers
        fileobj = io.BytesIO(memoryview(blob.buf)[blob.start : blob.end])
        partial = False
        try:
            # ignore_zeros: step over damaged headers block by block, as GNU tar does, instead
            # of treating the first bad header as the end of the archive.
            with tarfile.open(fileobj=fileobj, mode="r:", ignore_zeros=True) as tar:
                expected = 0
                for count, info in enumerate(tar):
                    if info.offset > expected and any(
                        memoryview(blob.buf)[blob.start + expected : blob.start + info.offset]
                    ):
                        partial = True
                        out.findings.append(
                            _finding(
                                "MS206",
                                f"damaged tar header(s) between bytes {expected} and "
                                f"{info.offset} skipped; members after them were analysed",
                                blob,
                                offset=blob.start + expected,
                            )
                        )
                    expected = info.offset_data + (
                        -(-info.size // 512) * 512 if info.isreg() else 0
                    )
                    if count >= lim.max_members:
                        out.findings.append(
                            _finding(
                                "MS203",
                                f"more than {lim.max_members} members; the rest were not analysed",
                                blob,
                            )
                        )
                        partial = True
                        break
                    member = self._chain(blob, info.name)
                    if zipf.unsafe_name(info.name) or (
                        (info.issym() or info.islnk()) and zipf.unsafe_name(info.linkname)
                    ):
                        target = f" -> {info.linkname}" if info.linkname else ""
                        out.findings.append(
                            _finding(
                                "MS202",
                                f"member path escapes the extraction directory{target}",
                                blob,
                                member=member,
                                evidence=info.name,
                            )
                        )
                    if not info.isfile():
                        continue
                    if info.size > min(lim.max_member_size, lim.max_total - out.decompressed):
                        out.findings.append(
                            _finding(
                                "MS203",
                                "member larger than the limit; not analysed",
                                blob,
                                member=member,
                            )
                        )
                        partial = True
                        continue
                    start = blob.start + info.offset_data
                    self.scan_blob(
                        blob.child(
                            info.name,
                            blob.buf,
                            start,
                            start + info.size,
                            os.path.basename(info.name),
                        ),
                        out,
                    )
        except tarfile.TarError as exc:
            out.findings.append(_finding("MS206", f"tar archive cannot be read: {exc}", blob))
            cover(CoverageStatus.PARTIAL, "tar", str(exc))
            return
        cover(CoverageStatus.PARTIAL if partial else CoverageStatus.SCANNED, "tar")

    # ------------------------------------------------------------------ 7z
    def _seven_zip(self, blob: Blob, out: FileOutcome, cover: _Cover) -> None:
        try:
            import py7zr  # type: ignore[import-not-found, unused-ignore]
            import py7zr.io  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            cover(
                CoverageStatus.INCONCLUSIVE,
                "7z",
                "install the optional package 'py7zr' (modelshield[7z]) to analyse 7z archives",
            )
            return
        lim = self.containers
        try:
            with py7zr.SevenZipFile(io.BytesIO(blob.materialise())) as arc:
                infos = [i for i in arc.list() if not i.is_directory]
                if len(infos) > lim.max_members:
                    out.findings.append(_finding("MS203", "too many members", blob))
                    cover(CoverageStatus.PARTIAL, "7z", "member limit")
                    return
                for info in infos:
                    if zipf.unsafe_name(info.filename):
                        out.findings.append(
                            _finding(
                                "MS202",
                                "member path escapes the extraction directory",
                                blob,
                                member=self._chain(blob, info.filename),
                            )
                        )
                    if info.uncompressed > min(
                        lim.max_member_size, lim.max_total - out.decompressed
                    ):
                        out.findings.append(
                            _finding(
                                "MS203",
                                "member larger than the limit",
                                blob,
                                member=self._chain(blob, info.filename),
                            )
                        )
                        cover(CoverageStatus.PARTIAL, "7z", "member limit")
                        return
                arc.reset()
                factory = py7zr.io.BytesIOFactory(lim.max_member_size + 1)
                arc.extractall(factory=factory)  # noqa: S202 - in memory: nothing is written
                for name, product in factory.products.items():
                    product.seek(0)
                    data = product.read()
                    if len(data) > lim.max_member_size:
                        out.findings.append(
                            _finding(
                                "MS203",
                                "member larger than the limit",
                                blob,
                                member=self._chain(blob, name),
                            )
                        )
                        cover(CoverageStatus.PARTIAL, "7z", "member limit")
                        return
                    out.decompressed += len(data)
                    self.scan_blob(
                        blob.child(name, data, 0, len(data), os.path.basename(name)), out
                    )
        except Exception as exc:  # py7zr raises many types on damaged or encrypted input
            out.findings.append(_finding("MS206", f"7z archive cannot be read: {exc}", blob))
            cover(CoverageStatus.INCONCLUSIVE, "7z", f"cannot be read: {type(exc).__name__}")
            return
        cover(CoverageStatus.SCANNED, "7z")


class ZipView:
    """A listed zip archive that format checks can read members of (bounded, lenient)."""

    def __init__(self, buf: Buffer, size: int, archive: zipf.ZipArchive) -> None:
        self.buf = buf
        self.size = size
        self.archive = archive
        self.names = {e.name: e for e in archive.entries}

    def read(self, name: str, max_size: int = 64 << 20) -> bytes | None:
        """The member's bytes, or None when absent, unreadable or larger than ``max_size``."""
        entry = self.names.get(name)
        if entry is None or entry.data_offset < 0:
            return None
        try:
            return zipf.read_member(self.buf, self.size, entry, max_size=max_size)
        except (zipf.ZipError, zipf.MemberTooLarge):
            return None


class _Cover(Protocol):
    def __call__(self, status: CoverageStatus, fmt: str, why: str | None = None) -> None: ...


@dataclass
class _TorchLayout:
    prefix: str = ""
    pickles: list[str] = field(default_factory=list)
    storages: set[str] = field(default_factory=set)
    code: set[str] = field(default_factory=set)


def _torch_layout(arc: zipf.ZipArchive) -> _TorchLayout:
    """Which members are PyTorch records: pickles, raw storages, TorchScript code.

    PyTorch looks records up case-insensitively (miniz), so names are compared lowered.
    """
    layout = _TorchLayout()
    for e in arc.entries:
        low = e.name.lower()
        if low.endswith("/data.pkl") and low.count("/") == 1:
            layout.prefix = e.name[: -len("data.pkl")]
            layout.pickles.append(e.name)
    if not layout.prefix:
        return layout
    data_dir = layout.prefix.lower() + "data/"
    code_dir = layout.prefix.lower() + "code/"
    for e in arc.entries:
        low = e.name.lower()
        if low.startswith(data_dir) and low[len(data_dir) :].isdigit():
            layout.storages.add(e.name)
        elif low.startswith(code_dir) and low.endswith(".py"):
            layout.code.add(e.name)
    return layout


def _sha256(fh: io.BufferedReader) -> str:
    import hashlib

    h = hashlib.sha256()
    while chunk := fh.read(1 << 20):
        h.update(chunk)
    fh.seek(0)
    return h.hexdigest()
