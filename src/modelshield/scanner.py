"""Walk inputs, recognise formats by content, analyse, and collect a :class:`ScanResult`."""

from __future__ import annotations

import _thread
import array
import collections
import contextlib
import dataclasses
import enum
import fnmatch
import json
import os
import signal
import stat
import sys
import time
import types
import typing
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
_FORK = hasattr(os, "fork") and sys.platform.startswith("linux")
"""Parallel scans fork their workers (Linux); elsewhere a process pool starts them."""
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
    """Files under ``root`` in sorted order, each directory's files before its subdirectories
    (as ``os.walk``), with ``os.scandir`` and plain strings: one ``stat`` per file."""
    real_root = str(root.resolve())
    prefix = "" if shown_root in (".", "./") else shown_root.rstrip("/") + "/"
    stack = [(os.fspath(root), "")]  # (directory, its path relative to root with a "/")
    while stack:
        path, rel_dir = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            errors.append(
                ScanError(str(exc.filename or path), f"cannot list: {exc.strerror or exc}")
            )
            continue
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # (follows symlinks, as os.walk)
            except OSError:
                is_dir = False
            if is_dir:
                if entry.is_symlink():
                    skipped.append(
                        Coverage(
                            prefix + rel_dir + entry.name,
                            CoverageStatus.SKIPPED,
                            "symlink",
                            reason=f"symlink to directory {os.readlink(entry.path)!r} not followed",
                        )
                    )
                else:
                    subdirs.append((entry.path, rel_dir + entry.name + "/"))
                continue
            _add_file(
                entry, rel_dir + entry.name, prefix, real_root, config, tasks, skipped, errors
            )
        stack.extend(reversed(subdirs))


def _add_file(
    entry: os.DirEntry[str],
    rel_in_tree: str,
    prefix: str,
    real_root: str,
    config: Config,
    tasks: list[FileTask],
    skipped: list[Coverage],
    errors: list[ScanError],
) -> None:
    shown = prefix + rel_in_tree
    if config.include and not _matches(rel_in_tree, config.include):
        reason = "not matched by the include patterns"
        skipped.append(Coverage(shown, CoverageStatus.SKIPPED, "excluded", reason=reason))
        return
    if config.exclude and _matches(rel_in_tree, config.exclude):
        reason = "excluded by pattern"
        skipped.append(Coverage(shown, CoverageStatus.SKIPPED, "excluded", reason=reason))
        return
    note = None
    if entry.is_symlink():
        try:
            target = Path(entry.path).resolve(strict=True)
        except (OSError, RuntimeError):
            reason = "broken symlink"
            skipped.append(Coverage(shown, CoverageStatus.SKIPPED, "symlink", reason=reason))
            return
        if not target.is_relative_to(real_root):
            note = f"followed symlink to {target}, outside the scanned tree"
    try:
        st = entry.stat()  # follows a symlink
    except OSError as exc:
        errors.append(ScanError(shown, f"cannot access: {exc.strerror or exc}"))
        return
    if not stat.S_ISREG(st.st_mode):
        reason = "not a regular file"
        skipped.append(Coverage(shown, CoverageStatus.SKIPPED, "special", reason=reason))
        return
    tasks.append(FileTask(entry.path, shown, note, st.st_size))


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
    batches = _batches(tasks)
    done = 0
    parts = _forked(batches, jobs, analyzer) if _FORK else _pooled(batches, jobs, analyzer)
    with contextlib.closing(parts):  # an exception here (a progress callback) stops the workers
        for batch, outcomes in parts:
            for outcome, t in zip(outcomes, batch, strict=True):
                done += 1
                yield outcome
                if progress:
                    progress(done, total, t.display)


def _pooled(
    batches: list[list[FileTask]], jobs: int, analyzer: Analyzer
) -> Generator[tuple[list[FileTask], list[FileOutcome]]]:
    """Batches scanned by a process pool (where fork is not the way to start processes)."""
    from concurrent.futures import (
        ProcessPoolExecutor,  # only for parallel scans: slow import
        as_completed,
    )

    with ProcessPoolExecutor(
        max_workers=min(jobs, len(batches)),
        initializer=_init_worker,
        initargs=(analyzer.config, analyzer.limits),
    ) as pool:
        # The results are sorted by the caller: the order they come back in does not matter.
        futures = {pool.submit(_work, b): b for b in batches}
        for future in as_completed(futures):
            yield futures[future], future.result()


_AHEAD = 2
"""Batches queued at a forked worker (so that it need not wait for the parent between two)."""

_FORK_LOCK = _thread.allocate_lock()
_PARENT_FDS: set[int] = set()
"""The parent's ends of the pipes of every live worker, of every scan in this process (scans
may run in threads): each new worker closes them all, so that the end of a pipe is seen when
its own worker ends. Changed only under _FORK_LOCK, which also covers each fork."""


@dataclass
class _Child:
    pid: int
    tasks: int
    """Write end of the pipe of batches to scan (task numbers)."""
    results: int
    """Read end of the pipe of outcomes (JSON)."""
    assigned: collections.deque[list[int]] = field(default_factory=collections.deque)


def _forked(
    batches: list[list[FileTask]], jobs: int, analyzer: Analyzer
) -> Generator[tuple[list[FileTask], list[FileOutcome]]]:
    """Batches scanned by ``jobs`` forked worker processes (Linux).

    Workers inherit the analyser and the tasks: the parent only sends task numbers and reads
    back the outcomes (as plain values, see :func:`_pack`: no pickle in the parent either).
    No multiprocessing machinery (~25 ms to import and start). A worker that dies (killed, out
    of memory, a crash in a native library) is replaced; the other files of the batch it was
    scanning are scanned again one by one, so only the file that killed it is reported as not
    analysed (never as clean). Closing the generator stops and reaps every worker.
    """
    import select

    tasks = [t for batch in batches for t in batch]
    pending: collections.deque[list[int]] = collections.deque()
    for batch in batches:
        first = len(pending) and pending[-1][-1] + 1
        pending.append(list(range(first, first + len(batch))))
    children: dict[int, _Child] = {}
    poll = select.poll()  # (select() fails on descriptors over 1023)
    try:
        while pending or children:
            while pending and len(children) < jobs:
                child = _fork_child(tasks, analyzer, children)
                poll.register(child.results, select.POLLIN)
                _assign(child, pending.popleft())  # one each first: every worker starts
            for child in children.values():
                while pending and len(child.assigned) < _AHEAD:
                    _assign(child, pending.popleft())
            for fd, _ in poll.poll():
                child = children[fd]
                message = _read_message(fd)
                if message is None:  # it died
                    how = _reap(child, children, poll)
                    unit = child.assigned.popleft()
                    pending.extendleft(reversed(child.assigned))  # not started
                    if len(unit) > 1:
                        pending.extendleft([i] for i in reversed(unit))
                    else:
                        yield [tasks[unit[0]]], [_lost(tasks[unit[0]], how)]
                    continue
                unit = child.assigned.popleft()
                yield [tasks[i] for i in unit], _unpack(message)
                if pending:
                    _assign(child, pending.popleft())
                elif not child.assigned:
                    _stop(child)
                    _reap(child, children, poll)
    finally:
        for child in list(children.values()):
            with contextlib.suppress(Exception):
                _reap(child, children, poll, kill=True)


def _fork_child(tasks: list[FileTask], analyzer: Analyzer, children: dict[int, _Child]) -> _Child:
    """Start a worker and register it in ``children`` (by its results pipe)."""
    with _FORK_LOCK:
        tasks_r, tasks_w = os.pipe()
        try:
            results_r, results_w = os.pipe()
        except OSError:
            os.close(tasks_r)
            os.close(tasks_w)
            raise
        try:
            pid = os.fork()
        except OSError:
            for fd in (tasks_r, tasks_w, results_r, results_w):
                os.close(fd)
            raise
        if pid == 0:  # the worker: never returns
            code = 1
            try:
                for fd in (*_PARENT_FDS, tasks_w, results_r):
                    os.close(fd)
                _child_loop(tasks, analyzer, tasks_r, results_w)
                code = 0
            finally:
                os._exit(code)  # whatever happened: the parent reports an unfinished batch
        os.close(tasks_r)
        os.close(results_w)
        child = _Child(pid, tasks_w, results_r)
        _PARENT_FDS.update((tasks_w, results_r))
        children[results_r] = child
        return child


def _child_loop(tasks: list[FileTask], analyzer: Analyzer, requests: int, results: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (the parent's own handler is not ours)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    while (header := _read_exact(requests, 4)) is not None:
        count = int.from_bytes(header, "little")
        numbers = _read_exact(requests, 4 * count) if count else None
        if numbers is None:  # stop, or the parent is gone
            return
        batch = [tasks[i] for i in memoryview(numbers).cast("I")]
        data = _pack([analyzer.scan_file(t) for t in batch])
        view = memoryview(len(data).to_bytes(8, "little") + data)
        while view:
            view = view[os.write(results, view) :]


def _assign(child: _Child, unit: list[int]) -> None:
    child.assigned.append(unit)
    message = len(unit).to_bytes(4, "little") + array.array("I", unit).tobytes()
    with contextlib.suppress(BrokenPipeError):  # it died: seen as the end of its results
        os.write(child.tasks, message)  # a few bytes: the pipe never fills


def _stop(child: _Child) -> None:
    """Ask a worker to exit (an empty batch)."""
    with contextlib.suppress(BrokenPipeError):
        os.write(child.tasks, bytes(4))


def _read_message(fd: int) -> bytes | None:
    header = _read_exact(fd, 8)
    return None if header is None else _read_exact(fd, int.from_bytes(header, "little"))


def _read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes from a pipe, or None at end of file (the other side closed or died)."""
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _reap(child: _Child, children: dict[int, _Child], poll: Any, *, kill: bool = False) -> str:
    """Close a worker's pipes, wait for it and forget it; how it ended, in words."""
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
    with _FORK_LOCK:
        if children.pop(child.results, None) is None:
            return "already reaped"
        with contextlib.suppress(KeyError, ValueError):
            poll.unregister(child.results)
        for fd in (child.tasks, child.results):
            _PARENT_FDS.discard(fd)
            os.close(fd)
    try:
        _, status = os.waitpid(child.pid, 0)
    except ChildProcessError:  # reaped by the system (SIGCHLD ignored): no status to tell
        return "exit status unknown"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _pack(outcomes: list[FileOutcome]) -> bytes:
    """Outcomes as JSON: dataclasses as arrays of their fields, enums as their values."""
    return json.dumps([_plain(o) for o in outcomes]).encode()


def _plain(v: object) -> object:
    if isinstance(v, enum.Enum):
        return v.value
    if dataclasses.is_dataclass(v):
        return [_plain(getattr(v, f.name)) for f in dataclasses.fields(v)]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _unpack(data: bytes) -> list[FileOutcome]:
    return [_rebuild(FileOutcome, o) for o in json.loads(data)]


def _rebuild(cls: Any, values: Any) -> Any:
    """The inverse of :func:`_plain`, guided by the type hints of ``cls``'s fields."""
    if issubclass(cls, enum.Enum):
        return cls(values)
    kinds = _FIELD_KINDS.get(cls)
    if kinds is None:
        hints = typing.get_type_hints(cls)
        kinds = _FIELD_KINDS[cls] = [_kind(hints[f.name]) for f in dataclasses.fields(cls)]
    args = []
    for kind, v in zip(kinds, values, strict=True):
        if kind is not None and v is not None:
            many, item = kind
            v = [_rebuild(item, x) for x in v] if many else _rebuild(item, v)
        args.append(v)
    return cls(*args)


def _kind(hint: Any) -> tuple[bool, type] | None:
    """How a field is rebuilt: (False, class), (True, class) for a list of them, or None for a
    plain value."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if typing.get_origin(option) is list:
            (item,) = typing.get_args(option)
            if _structured(item):
                return (True, item)
        elif _structured(option):
            return (False, option)
    return None


def _structured(t: Any) -> bool:
    return isinstance(t, type) and (issubclass(t, enum.Enum) or dataclasses.is_dataclass(t))


_FIELD_KINDS: dict[type, list[tuple[bool, type] | None]] = {}


def _lost(task: FileTask, how: str) -> FileOutcome:
    msg = f"the worker process scanning it ended ({how})"
    return FileOutcome(
        errors=[ScanError(task.display, msg)],
        coverage=[Coverage(task.display, CoverageStatus.INCONCLUSIVE, "unknown", reason=msg)],
    )


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
