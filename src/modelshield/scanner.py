"""Walk inputs, recognise formats by content, analyse, and collect a :class:`ScanResult`."""

from __future__ import annotations

import fnmatch
import hashlib
import mmap
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelshield.config import Config
from modelshield.errors import InputError
from modelshield.findings import (
    Coverage,
    CoverageStatus,
    Finding,
    Location,
    ScanError,
    ScanResult,
)
from modelshield.formats.sniff import (
    CONTAINERS,
    Format,
    looks_like_text,
    runs_as_pickle,
    sniff_magic,
)
from modelshield.pickle.machine import Limits, Machine
from modelshield.pickle.trace import Event, EventKind, PickleAnalysis
from modelshield.policy import Policy, Verdict
from modelshield.rules.catalog import RULES
from modelshield.rules.pickle_rules import Where, pickle_findings

ProgressCallback = Callable[[int, int, str], None]
"""Called as ``progress(done, total, path)`` after each file."""

_HEAD = 512
_PARALLEL_MIN_FILES = 16


@dataclass(frozen=True)
class FileTask:
    path: str
    """Filesystem path to open."""
    display: str
    """Path as shown in reports (as given, or relative to the directory given)."""
    note: str | None = None


@dataclass
class FileOutcome:
    findings: list[Finding] = field(default_factory=list)
    coverage: list[Coverage] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    suppressed: list[Finding] = field(default_factory=list)
    bytes_read: int = 0


class Analyzer:
    """Analyses single files with one policy, limits and configuration."""

    def __init__(self, config: Config, limits: Limits, policy: Policy | None = None) -> None:
        self.config = config
        self.limits = limits
        base = policy or Policy.default()
        self.policy = base.with_allowed(config.allow) if config.allow else base

    def _keep(self, ev: Event) -> bool:
        # Calls and imports of allowlisted names never produce findings: do not store them.
        if ev.kind in (EventKind.CALL, EventKind.IMPORT) and ev.name is not None:
            return self.policy.classify(ev.name).verdict is not Verdict.ALLOWED
        return True

    def analyse_pickle(self, buf: bytes | mmap.mmap) -> PickleAnalysis:
        return Machine(self.limits, keep=self._keep).analyse(buf)

    def scan_file(self, task: FileTask, data: bytes | None = None) -> FileOutcome:
        """Analyse one file (or ``data`` standing for it). Never raises for hostile input."""
        out = FileOutcome()
        try:
            if data is None:
                self._scan_file(task, out)
            elif not data:
                out.coverage.append(
                    Coverage(task.display, CoverageStatus.SCANNED, Format.EMPTY.value, size=0)
                )
            else:
                self._scan_buffer(task, data, len(data), None, out)
        except OSError as exc:
            msg = f"cannot read: {exc.strerror or exc}"
            out.errors.append(ScanError(task.display, msg))
            out.coverage.append(
                Coverage(task.display, CoverageStatus.INCONCLUSIVE, "unknown", reason=msg)
            )
        except Exception as exc:  # analyser bug on hostile input: report, never crash
            out.findings.append(
                Finding(
                    rule_id="MS112",
                    severity=RULES["MS112"].severity,
                    confidence=RULES["MS112"].confidence,
                    message=f"internal error while analysing: {type(exc).__name__}: {exc}",
                    location=Location(task.display),
                )
            )
            out.coverage = [
                Coverage(
                    task.display,
                    CoverageStatus.INCONCLUSIVE,
                    "unknown",
                    reason=f"analyser error ({type(exc).__name__})",
                )
            ]
        self._apply_config(task, out)
        return out

    def _scan_file(self, task: FileTask, out: FileOutcome) -> None:
        with open(task.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            sha = _sha256(fh) if self.config.baselines else None
            if size == 0:
                out.coverage.append(
                    Coverage(
                        task.display,
                        CoverageStatus.SCANNED,
                        Format.EMPTY.value,
                        size=0,
                        sha256=sha,
                        reason=task.note,
                    )
                )
                return
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                self._scan_buffer(task, mm, size, sha, out)

    def _scan_buffer(
        self, task: FileTask, buf: bytes | mmap.mmap, size: int, sha: str | None, out: FileOutcome
    ) -> None:
        head = buf[:_HEAD]
        fmt = sniff_magic(head)
        analysis: PickleAnalysis | None = None
        reason = task.note
        if fmt is None:
            analysis = self.analyse_pickle(buf)
            text = looks_like_text(head)
            if runs_as_pickle(analysis, text=text):
                fmt = Format.PICKLE
            elif text:
                fmt = Format.TEXT
            else:
                fmt = Format.DATA
                err = analysis.streams[0].error_pos if analysis.streams else 0
                reason = _join(
                    reason,
                    "no recognised model format; a pickle loader rejects it at byte "
                    f"{err} before importing anything",
                )

        def cov(status: CoverageStatus, why: str | None = None) -> Coverage:
            return Coverage(
                task.display, status, fmt.value, reason=_join(reason, why), size=size, sha256=sha
            )

        if fmt is Format.PICKLE:
            if analysis is None:
                analysis = self.analyse_pickle(buf)
            out.findings.extend(pickle_findings(analysis, self.policy, Where(task.display)))
            analysed = max((s.end for s in analysis.streams), default=0)
            out.bytes_read = max(len(head), analysed)
            if analysis.limit is not None:
                out.coverage.append(
                    cov(
                        CoverageStatus.PARTIAL,
                        f"analysis stopped at the {analysis.limit.value} limit",
                    )
                )
            else:
                out.coverage.append(cov(CoverageStatus.SCANNED))
            return
        out.bytes_read = len(head)
        if fmt in CONTAINERS:
            out.coverage.append(
                cov(
                    CoverageStatus.INCONCLUSIVE,
                    f"{fmt.value} content is recognised but not analysed by this version; "
                    "a loader may execute code from it",
                )
            )
            return
        if fmt is Format.TEXT:
            out.bytes_read = min(size, _HEAD)
        out.coverage.append(cov(CoverageStatus.SCANNED))

    def _apply_config(self, task: FileTask, out: FileOutcome) -> None:
        cfg = self.config
        sha = next((c.sha256 for c in out.coverage if c.sha256), None)
        baseline = cfg.baseline_for(sha)
        kept: list[Finding] = []
        for f in out.findings:
            if f.rule_id in cfg.ignore or (
                baseline is not None and (baseline.rules is None or f.rule_id in baseline.rules)
            ):
                out.suppressed.append(f)
            else:
                kept.append(f)
        out.findings = kept


def _join(a: str | None, b: str | None) -> str | None:
    if a and b:
        return f"{b}; {a}"
    return a or b


def _sha256(fh: object) -> str:
    h = hashlib.sha256()
    read = fh.read  # type: ignore[attr-defined]
    while chunk := read(1 << 20):
        h.update(chunk)
    fh.seek(0)  # type: ignore[attr-defined]
    return h.hexdigest()


# ---------------------------------------------------------------------------- walking


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def collect(
    inputs: Sequence[str | os.PathLike[str]], config: Config
) -> tuple[list[FileTask], list[Coverage], list[ScanError]]:
    """Expand inputs into files to scan, plus coverage for what is skipped and errors.

    Raises :class:`InputError` when an input given explicitly does not exist.
    """
    tasks: list[FileTask] = []
    skipped: list[Coverage] = []
    errors: list[ScanError] = []
    for raw in inputs:
        shown = os.fspath(raw)
        p = Path(shown)
        try:
            st = p.stat()
        except FileNotFoundError:
            if p.is_symlink():
                skipped.append(
                    Coverage(shown, CoverageStatus.SKIPPED, "symlink", reason="broken symlink")
                )
            else:
                raise InputError(f"{shown}: no such file or directory") from None
            continue
        except OSError as exc:
            errors.append(ScanError(shown, f"cannot access: {exc.strerror or exc}"))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(p, shown, config, tasks, skipped, errors)
        elif stat.S_ISREG(st.st_mode):
            tasks.append(FileTask(shown, shown))
        else:
            skipped.append(
                Coverage(shown, CoverageStatus.SKIPPED, "special", reason="not a regular file")
            )
    return tasks, skipped, errors


def _walk(
    root: Path,
    shown_root: str,
    config: Config,
    tasks: list[FileTask],
    skipped: list[Coverage],
    errors: list[ScanError],
) -> None:
    real_root = root.resolve()

    def onerror(exc: OSError) -> None:
        errors.append(ScanError(str(exc.filename or root), f"cannot list: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames.sort()
        base = Path(dirpath)
        for d in list(dirnames):
            full = base / d
            if full.is_symlink():
                dirnames.remove(d)
                rel = _display(shown_root, root, full)
                skipped.append(
                    Coverage(
                        rel,
                        CoverageStatus.SKIPPED,
                        "symlink",
                        reason=f"symlink to directory {os.readlink(full)!r} not followed",
                    )
                )
        for name in sorted(filenames):
            full = base / name
            rel_in_tree = full.relative_to(root).as_posix()
            shown = _display(shown_root, root, full)
            if config.include and not _matches(rel_in_tree, config.include):
                continue
            if config.exclude and _matches(rel_in_tree, config.exclude):
                skipped.append(
                    Coverage(
                        shown, CoverageStatus.SKIPPED, "excluded", reason="excluded by pattern"
                    )
                )
                continue
            note = None
            if full.is_symlink():
                try:
                    target = full.resolve(strict=True)
                except (OSError, RuntimeError):
                    skipped.append(
                        Coverage(shown, CoverageStatus.SKIPPED, "symlink", reason="broken symlink")
                    )
                    continue
                if not target.is_relative_to(real_root):
                    note = f"followed symlink to {target}, outside the scanned tree"
            try:
                mode = full.stat().st_mode
            except OSError as exc:
                errors.append(ScanError(shown, f"cannot access: {exc.strerror or exc}"))
                continue
            if not stat.S_ISREG(mode):
                skipped.append(
                    Coverage(shown, CoverageStatus.SKIPPED, "special", reason="not a regular file")
                )
                continue
            tasks.append(FileTask(str(full), shown, note))


def _display(shown_root: str, root: Path, full: Path) -> str:
    rel = full.relative_to(root).as_posix()
    return rel if shown_root in (".", "./") else f"{shown_root.rstrip('/')}/{rel}"


# ---------------------------------------------------------------------------- parallel

_WORKER: Analyzer | None = None


def _init_worker(config: Config, limits: Limits) -> None:
    global _WORKER
    _WORKER = Analyzer(config, limits)


def _work(task: FileTask) -> FileOutcome:
    assert _WORKER is not None
    return _WORKER.scan_file(task)


def _run(
    tasks: list[FileTask],
    analyzer: Analyzer,
    jobs: int,
    progress: ProgressCallback | None,
) -> Iterator[FileOutcome]:
    total = len(tasks)
    if jobs == 0:
        jobs = (os.cpu_count() or 1) if total >= _PARALLEL_MIN_FILES else 1
    if jobs <= 1 or total < 2:
        for i, t in enumerate(tasks, 1):
            yield analyzer.scan_file(t)
            if progress:
                progress(i, total, t.display)
        return
    from concurrent.futures import ProcessPoolExecutor  # only for parallel scans: slow import

    with ProcessPoolExecutor(
        max_workers=min(jobs, total),
        initializer=_init_worker,
        initargs=(analyzer.config, analyzer.limits),
    ) as pool:
        for i, (t, outcome) in enumerate(
            zip(tasks, pool.map(_work, tasks, chunksize=4), strict=True), 1
        ):
            yield outcome
            if progress:
                progress(i, total, t.display)


def scan(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    config: Config | None = None,
    policy: Policy | None = None,
    limits: Limits | None = None,
    jobs: int = 1,
    progress: ProgressCallback | None = None,
) -> ScanResult:
    """Scan files and directories without executing anything from them.

    ``jobs``: worker processes (0 = one per CPU for large trees). ``config`` defaults to no
    configuration (the CLI discovers ``.modelshield.toml``/``pyproject.toml``; the API does not).
    A user ``policy`` is only used in-process (``jobs=1``). Raises :class:`InputError` when
    an input does not exist; problems inside directories are reported in the result instead.
    """
    started = time.perf_counter()
    inputs: list[str | os.PathLike[str]] = (
        [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    )
    cfg = config or Config()
    lim = limits or Limits()
    analyzer = Analyzer(cfg, lim, policy)
    tasks, coverage, errors = collect(inputs, cfg)
    findings: list[Finding] = []
    suppressed: list[Finding] = []
    bytes_read = 0
    if policy is not None:
        jobs = 1
    for outcome in _run(tasks, analyzer, jobs, progress):
        findings.extend(outcome.findings)
        coverage.extend(outcome.coverage)
        errors.extend(outcome.errors)
        suppressed.extend(outcome.suppressed)
        bytes_read += outcome.bytes_read
    return ScanResult(
        findings=tuple(sorted(findings, key=Finding.sort_key)),
        coverage=tuple(sorted(coverage, key=lambda c: (c.path, c.member or ""))),
        errors=tuple(errors),
        suppressed=tuple(suppressed),
        duration_s=time.perf_counter() - started,
        bytes_read=bytes_read,
        inputs=tuple(os.fspath(i) for i in inputs),
    )


def scan_bytes(data: bytes, name: str = "<bytes>", *, config: Config | None = None) -> ScanResult:
    """Scan an in-memory buffer as if it were a file called ``name``."""
    started = time.perf_counter()
    out = Analyzer(config or Config(), Limits()).scan_file(FileTask(name, name), data)
    return ScanResult(
        findings=tuple(sorted(out.findings, key=Finding.sort_key)),
        coverage=tuple(out.coverage),
        errors=tuple(out.errors),
        suppressed=tuple(out.suppressed),
        duration_s=time.perf_counter() - started,
        bytes_read=out.bytes_read,
        inputs=(name,),
    )


__all__ = ["Analyzer", "FileTask", "collect", "scan", "scan_bytes"]
