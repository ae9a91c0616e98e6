"""Walk inputs, recognise formats by content, analyse, and collect a :class:`ScanResult`."""

from __future__ import annotations

import fnmatch
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelshield.analysis import Analyzer as ContentAnalyzer
from modelshield.analysis import Blob, FileOutcome
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
from modelshield.pickle.machine import Limits
from modelshield.policy import Policy
from modelshield.rules.catalog import RULES

ProgressCallback = Callable[[int, int, str], None]
"""Called as ``progress(done, total, path)`` after each file."""

_PARALLEL_MIN_FILES = 16
_PARALLEL_MIN_BYTES = 64 << 20
_SMALL_FILE = 256 << 10
"""Files under this size go to worker processes in batches of up to _BATCH_FILES."""
_BATCH_FILES = 16
_BATCH_BYTES = 64 << 20
"""A batch of several files holds at most this many bytes (big models stay parallel)."""
_FAMILIES = {".h5": "hdf5", ".hdf5": "hdf5", ".keras": "hdf5", ".gguf": "gguf"}
"""Extensions of files read with h5py or jinja2 (~0.1 s to import in each worker): a scheduling
hint only, the content decides how a file is read."""


@dataclass(frozen=True)
class FileTask:
    path: str
    """Filesystem path to open."""
    display: str
    """Path as shown in reports (as given, or relative to the directory given)."""
    note: str | None = None
    size: int = 0
    """Size in bytes when known (to decide whether a parallel scan pays off)."""


class Analyzer(ContentAnalyzer):
    """Analyses whole files (or in-memory buffers standing for one) and applies configuration."""

    def scan_file(self, task: FileTask, data: bytes | None = None) -> FileOutcome:
        """Analyse one file (or ``data`` standing for it). Never raises for hostile input."""
        out = FileOutcome()
        try:
            if data is None:
                self.scan_path(task.path, task.display, task.note, out)
            else:
                name = os.path.basename(task.display)
                self.scan_blob(Blob(task.display, None, data, 0, len(data), 0, name), out)
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
        self._apply_config(out)
        return out

    def _apply_config(self, out: FileOutcome) -> None:
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
            tasks.append(FileTask(shown, shown, size=st.st_size))
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
                skipped.append(
                    Coverage(
                        shown,
                        CoverageStatus.SKIPPED,
                        "excluded",
                        reason="not matched by the include patterns",
                    )
                )
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
                st_full = full.stat()
                mode, mode_size = st_full.st_mode, st_full.st_size
            except OSError as exc:
                errors.append(ScanError(shown, f"cannot access: {exc.strerror or exc}"))
                continue
            if not stat.S_ISREG(mode):
                skipped.append(
                    Coverage(shown, CoverageStatus.SKIPPED, "special", reason="not a regular file")
                )
                continue
            tasks.append(FileTask(str(full), shown, note, mode_size))


def _display(shown_root: str, root: Path, full: Path) -> str:
    rel = full.relative_to(root).as_posix()
    return rel if shown_root in (".", "./") else f"{shown_root.rstrip('/')}/{rel}"


# ---------------------------------------------------------------------------- parallel

_WORKER: Analyzer | None = None


def _init_worker(config: Config, limits: Limits) -> None:
    global _WORKER
    _WORKER = Analyzer(config, limits)


def _work(batch: list[FileTask]) -> list[FileOutcome]:
    assert _WORKER is not None
    return [_WORKER.scan_file(t) for t in batch]


def _batches(tasks: list[FileTask]) -> list[list[FileTask]]:
    """Work units for the pool, largest first so that the workers finish together: each big
    file alone, small files grouped (one unit each would cost more to hand over than to scan),
    and files that need the same heavy library grouped (up to _BATCH_FILES files and
    _BATCH_BYTES) so that fewer workers import it."""
    units: list[list[FileTask]] = []
    families: dict[str, list[FileTask]] = {}
    small: list[FileTask] = []
    for t in sorted(tasks, key=lambda t: t.size, reverse=True):
        family = _FAMILIES.get(os.path.splitext(t.path)[1].lower())
        if family is not None:
            families.setdefault(family, []).append(t)
        elif t.size >= _SMALL_FILE:
            units.append([t])
        else:
            small.append(t)
    for group in [*families.values(), small]:
        unit: list[FileTask] = []
        size = 0
        for t in group:
            if unit and (len(unit) == _BATCH_FILES or size + t.size > _BATCH_BYTES):
                units.append(unit)
                unit, size = [], 0
            unit.append(t)
            size += t.size
        if unit:
            units.append(unit)
    units.sort(key=lambda unit: sum(t.size for t in unit), reverse=True)
    return units


def _run(
    tasks: list[FileTask],
    analyzer: Analyzer,
    jobs: int,
    progress: ProgressCallback | None,
) -> Iterator[FileOutcome]:
    total = len(tasks)
    if jobs == 0:
        # Worker processes cost ~0.1 s to start: worth it for many files with real content.
        big = sum(t.size for t in tasks) >= _PARALLEL_MIN_BYTES
        jobs = (os.cpu_count() or 1) if total >= _PARALLEL_MIN_FILES and big else 1
    if jobs <= 1 or total < 2:
        for i, t in enumerate(tasks, 1):
            yield analyzer.scan_file(t)
            if progress:
                progress(i, total, t.display)
        return
    from concurrent.futures import (
        ProcessPoolExecutor,  # only for parallel scans: slow import
        as_completed,
    )

    batches = _batches(tasks)
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(batches)),
        initializer=_init_worker,
        initargs=(analyzer.config, analyzer.limits),
    ) as pool:
        # The results are sorted by the caller: the order they come back in does not matter.
        futures = {pool.submit(_work, b): b for b in batches}
        done = 0
        for future in as_completed(futures):
            for outcome, t in zip(future.result(), futures[future], strict=True):
                done += 1
                yield outcome
                if progress:
                    progress(done, total, t.display)


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
        errors=tuple(sorted(errors, key=lambda e: (e.path, e.message))),
        suppressed=tuple(sorted(suppressed, key=Finding.sort_key)),
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
