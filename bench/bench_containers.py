#!/usr/bin/env python3
"""Benchmark the cost of scanning model containers: big checkpoints and whole directories.

Scanning cost must depend on the size of the pickles, not of the weights, and start-up must be
light. Two workloads, each scanned with modelshield, picklescan, modelscan and modelaudit in the
same run:

* **checkpoint**: one PyTorch checkpoint of ``--size-gb`` GB (default 2) written with
  ``torch.save`` (a state dict of a few big float32 tensors), plus a ``--small-mb`` (default
  200) MB one for the scaling check (time and memory must stay flat as the weights grow);
* **corpus**: the real-file corpus directory (``--corpus``, built by
  ``shared/corpus/build_real_corpus.sh``) in one invocation per tool.

Per tool and workload: median and best wall time of N runs (``-n``) of the CLI in a subprocess
(interpreter start-up included), peak RSS (``/usr/bin/time -f %M``, children included), bytes
read, what the tool reports as dangerous and what it left unscanned, skipped or errored.

Bytes read, three ways (none is perfect, so all are shown):

* ``rchar``: the ``read()`` bytes of the tool process and its children (``/proc/PID/io``); it
  includes the interpreter's own reads (``.pyc`` files, ~2-10 MB) and misses what a tool reads
  through ``mmap`` (modelshield does);
* file pages touched: in one extra, untimed run per tool the page cache of the input files is
  dropped first (``posix_fadvise(DONTNEED)``) and the resident bytes of those files are counted
  after the run (``mincore``) -- what the tool made the kernel read from the files, by
  ``read()`` or ``mmap``, kernel read-ahead included;
* modelshield's own ``summary.bytes_read``.

Timed runs happen with a warm page cache for every tool alike: after the cold runs every input
file is read once, then each tool has one untimed warm-up run (also filling a private
byte-code cache, see ``bench_pickle.tool_env``), then the timed runs go round-robin. A tool whose
cold run took longer than ``--slow`` seconds gets no more runs: its cold
run is reported: one run of that length is dominated neither by noise nor by the page cache).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import datetime
import io
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pickle as bp

_TIME = "/usr/bin/time"
_SH = "/bin/sh"
_PAGE = os.sysconf("SC_PAGE_SIZE")

# --------------------------------------------------------------------------- measuring


@dataclass
class Run:
    wall_s: float
    rc: int
    stdout: str
    stderr: str
    maxrss_kb: int
    cpu_s: float
    """User + system CPU seconds of the tool and its children (steadier than wall under load)."""
    io: dict[str, int]
    """``/proc/PID/io`` of the tool and its reaped children (empty when unavailable)."""


def run_measured(cmd: Sequence[str], env: dict[str, str], timeout: float) -> Run:
    """Run ``cmd``; wall time, peak RSS (with children) and the I/O counters of the process tree.

    ``/usr/bin/time`` gives the peak RSS (a ``wait4`` in this big process would report the
    parent's RSS at fork for a vfork-ed child). The I/O counters come from a ``/bin/sh`` between
    ``time`` and the tool: it waits for the tool (the kernel then adds the tool's counters, and
    those of the children the tool reaped, to the shell's) and copies ``/proc/$$/io`` to a file.
    The two wrappers cost ~2 ms of wall time (see ``wrapper overhead`` in the output).
    """
    with tempfile.TemporaryDirectory(prefix="msbench-run-") as d:
        rss, iof = Path(d) / "rss", Path(d) / "io"
        out, err = Path(d) / "out", Path(d) / "err"
        script = f'"$@"; rc=$?; cat /proc/$$/io > {shlex.quote(str(iof))} 2>/dev/null; exit $rc'
        full = [_TIME, "-q", "-f", "%M %U %S", "-o", str(rss), _SH, "-c", script, "sh", *cmd]
        with out.open("wb") as fo, err.open("wb") as fe:
            start = time.perf_counter()
            p = subprocess.Popen(
                full,
                env=env,
                stdout=fo,
                stderr=fe,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a timeout kills the whole tree
            )
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                rc = 124
            wall = time.perf_counter() - start
        try:
            fields = rss.read_text().split()
            maxrss, cpu = int(fields[-3]), float(fields[-2]) + float(fields[-1])
        except (OSError, ValueError, IndexError):
            maxrss, cpu = 0, float("nan")
        io: dict[str, int] = {}
        try:
            for line in iof.read_text().splitlines():
                k, _, v = line.partition(":")
                io[k.strip()] = int(v)
        except (OSError, ValueError):
            io = {}
        return Run(
            wall,
            rc,
            out.read_bytes().decode("utf-8", "replace"),
            err.read_bytes().decode("utf-8", "replace"),
            maxrss,
            cpu,
            io,
        )


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_PROT_READ, _MAP_SHARED = 1, 1


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` now in the page cache (``mincore`` over a mapping that touches nothing)."""
    size = path.stat().st_size
    if size == 0:
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            pages = (size + _PAGE - 1) // _PAGE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            resident = sum(b & 1 for b in bytes(vec))
        finally:
            _libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))
    finally:
        os.close(fd)
    return min(resident * _PAGE, size)


def drop_cache(paths: Sequence[Path]) -> None:
    """Evict ``paths`` from the page cache (clean pages only; the files are synced first)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_cache(paths: Sequence[Path]) -> None:
    """Read every file once so that every tool's timed runs find it in the page cache."""
    for p in paths:
        with p.open("rb", buffering=0) as fh:
            while fh.read(1 << 24):
                pass


# --------------------------------------------------------------------------- tools


@dataclass
class Target:
    """What the tools scan: one file or one directory."""

    path: Path
    label: str

    @property
    def root(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    def files(self) -> list[str]:
        if self.path.is_dir():
            return bp.all_files(self.path)
        return [self.path.name]

    def file_paths(self) -> list[Path]:
        return [self.root / f for f in self.files()]

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.file_paths())


@dataclass
class Result(bp.Timed):
    tool: str
    target: str
    available: bool = True
    note: str = ""
    times: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    maxrss_kb: int = 0
    rchar: int | None = None
    read_bytes: int | None = None
    touched: int | None = None
    """File bytes in the page cache after a cold-cache run (None: cache could not be dropped)."""
    self_reported: int | None = None
    rc: int | None = None
    cold_s: float | None = None
    flagged: set[str] = field(default_factory=set)
    unscanned: set[str] = field(default_factory=set)
    errored: set[str] = field(default_factory=set)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus) if self.cpus else float("nan")


Parse = Callable[[Run, Target, Result, Path], None]


@dataclass
class ToolSpec:
    name: str
    command: Callable[[Target, Path], list[str]]
    """The command line for a target, given a private scratch directory for reports."""
    parse: Parse
    env: dict[str, str]
    ok_codes: tuple[int, ...] = (0, 1)


def _ms_command(target: Target, scratch: Path) -> list[str]:
    report = scratch / "modelshield.json"
    return [
        *bp.modelshield_cmd(),
        "scan",
        str(target.path),
        "-f",
        "json",
        "-o",
        str(report),
        "-q",
        "--no-config",
    ]


def _report(run: Run, res: Result, report: Path) -> Any:
    """A tool's JSON report, or None with the reason noted on ``res``."""
    if not report.exists():
        res.note = f"no report (exit {run.rc}): {(run.stderr or run.stdout).strip()[-300:]}"
        return None
    return json.loads(report.read_text("utf-8"))


def _ms_parse(run: Run, target: Target, res: Result, scratch: Path) -> None:
    data = _report(run, res, scratch / "modelshield.json")
    if data is None:
        return
    root = target.root
    res.self_reported = int(data["summary"]["bytes_read"])
    by_rule: collections.Counter[str] = collections.Counter()
    for f in data["findings"]:
        by_rule[f"{f['rule_id']}/{f['severity']}"] += 1
        if f["at_or_above_threshold"]:
            res.flagged.add(bp._norm(root, f["location"]["path"]))
    top: collections.Counter[str] = collections.Counter()
    members: collections.Counter[str] = collections.Counter()
    incomplete: dict[str, list[str]] = {}
    for c in data["coverage"]:
        key = f"{c['format']}:{c['status']}"
        (top if c["member"] is None else members)[key] += 1
        if c["status"] != "scanned":
            rel = bp._norm(root, c["path"])
            res.unscanned.add(rel)
            where = f" [{c['member']}]" if c["member"] else ""
            incomplete.setdefault(rel, []).append(f"{key}{where}: {c['reason']}")
    for e in data["errors"]:
        res.errored.add(bp._norm(root, e["path"]))
    res.extra.update(
        exit_code=run.rc,
        verdict=data.get("verdict"),
        findings_by_rule=dict(sorted(by_rule.items())),
        coverage_files=dict(sorted(top.items())),
        coverage_members=dict(sorted(members.items())),
        incomplete=incomplete,
    )


def _picklescan_command(exe: str) -> Callable[[Target, Path], list[str]]:
    def command(target: Target, scratch: Path) -> list[str]:
        return [exe, "--path", str(target.path)]

    return command


def _picklescan_parse(exe: str, env: dict[str, str], timeout: float) -> Parse:
    def parse(run: Run, target: Target, res: Result, scratch: Path) -> None:
        root = target.root
        lines = (run.stdout + "\n" + run.stderr).splitlines()
        for line in lines:
            if m := bp._PICKLESCAN_FOUND.match(line):
                res.flagged.add(bp._norm(root, m["path"].split(":", 1)[0]))
            elif m := bp._PICKLESCAN_ERR.match(line):
                res.errored.add(bp._norm(root, (m["a"] or m["b"]).split(":", 1)[0]))
        prefixes = ("Scanned", "Infected", "Dangerous", "Suspicious")
        res.extra.update(exit_code=run.rc, summary=[ln for ln in lines if ln.startswith(prefixes)])
        # Which files picklescan opened at all: one more, untimed, run with debug logging.
        dbg = run_measured([exe, "--path", str(target.path), "-l", "DEBUG"], env, timeout)
        seen = set()
        for line in (dbg.stdout + "\n" + dbg.stderr).splitlines():
            if m := bp._PICKLESCAN_DEBUG.search(line):
                seen.add(bp._norm(root, m["path"].split(":", 1)[0]))
        res.unscanned = {f for f in target.files() if f not in seen}

    return parse


def _modelscan_command(exe: str) -> Callable[[Target, Path], list[str]]:
    def command(target: Target, scratch: Path) -> list[str]:
        report = scratch / "modelscan.json"
        cmd = [exe, "scan", "-p", str(target.path), "-r", "json", "-o", str(report)]
        return [*cmd, "--show-skipped"]

    return command


def _modelscan_parse(run: Run, target: Target, res: Result, scratch: Path) -> None:
    data = _report(run, res, scratch / "modelscan.json")
    if data is None:
        return
    root = target.root
    sev: collections.Counter[str] = collections.Counter()
    for issue in data.get("issues", []):
        res.flagged.add(bp._norm(root, bp._modelscan_source(issue["source"])))
        sev[issue.get("severity", "?")] += 1
    for err in data.get("errors", []):
        if "source" in err:
            res.errored.add(bp._norm(root, bp._modelscan_source(err["source"])))
    summary = data.get("summary", {})
    # Entries are files or "archive:member"; a file counts as unscanned when nothing of it was
    # scanned (zip members it skips beside a scanned data.pkl are counted apart).
    scanned = {
        bp._norm(root, bp._modelscan_source(s))
        for s in summary.get("scanned", {}).get("scanned_files", [])
    }
    skipped = summary.get("skipped", {}).get("skipped_files", [])
    skipped_members = 0
    for s in skipped:
        path = bp._norm(root, bp._modelscan_source(s["source"]))
        if path in scanned:
            skipped_members += 1
        else:
            res.unscanned.add(path)
    res.extra.update(
        exit_code=run.rc,
        issues_by_severity=dict(sev),
        skipped_categories=dict(collections.Counter(s.get("category", "?") for s in skipped)),
        files_scanned=len(scanned),
        skipped_members_of_scanned_files=skipped_members,
    )


def _modelaudit_command(exe: str) -> Callable[[Target, Path], list[str]]:
    def command(target: Target, scratch: Path) -> list[str]:
        report = scratch / "modelaudit.json"
        cmd = [exe, "scan", str(target.path), "-f", "json", "-o", str(report), "-q"]
        return [*cmd, "--no-cache"]

    return command


_MA_BLOCKING = ("critical", "warning")
"""modelaudit severities that make it exit 1 ("security issues found")."""


def _ma_path(root: Path, loc: str | None) -> str | None:
    """The file of a modelaudit location.

    Locations are ``path``, ``path (pos 12)``, ``path (nested raw pickle at pos 40937)``,
    ``path (function ...)``, ``archive -> member`` or ``archive:member``.
    """
    if not loc:
        return None
    raw = loc.split(" -> ", 1)[0]
    while " (" in raw and not Path(raw).exists() and not (root / raw).exists():
        raw = raw.rsplit(" (", 1)[0]
    if not Path(raw).exists() and ":" in raw:
        raw = raw.split(":", 1)[0]
    return bp._norm(root, raw)


def _modelaudit_parse(run: Run, target: Target, res: Result, scratch: Path) -> None:
    """Dangerous: a ``critical`` or ``warning`` issue (what makes it exit 1). Unscanned: no
    asset for the file, or an issue saying the analysis was incomplete (a missing optional
    dependency, an unparsable pickle...)."""
    data = _report(run, res, scratch / "modelaudit.json")
    if data is None:
        return
    root = target.root
    sev: collections.Counter[str] = collections.Counter()
    critical: set[str] = set()
    incomplete: collections.Counter[str] = collections.Counter()
    for issue in data.get("issues", []):
        s = str(issue.get("severity", "?")).lower()
        sev[s] += 1
        path = _ma_path(root, issue.get("location"))
        if path is None:
            continue
        if s in _MA_BLOCKING:
            res.flagged.add(path)
        if s == "critical":
            critical.add(path)
        det = issue.get("details") or {}
        if det.get("analysis_incomplete") or det.get("operational_error"):
            res.unscanned.add(path)
            why = det.get("scan_outcome_reason") or "analysis_incomplete"
            incomplete[f"{issue.get('type', '?')}/{s}/{why}"] += 1
    scanned = {p for a in data.get("assets", []) if (p := _ma_path(root, a.get("path")))}
    res.unscanned |= set(target.files()) - scanned
    res.extra.update(
        exit_code=run.rc,
        issues_by_severity=dict(sev),
        files_with_critical=len(critical),
        incomplete_issues=dict(incomplete.most_common()),
        files_scanned=data.get("files_scanned"),
        bytes_scanned=data.get("bytes_scanned"),
        self_reported_duration_s=data.get("duration"),
    )


def tool_specs(
    args: argparse.Namespace, env: dict[str, str], ms_env: dict[str, str]
) -> tuple[list[ToolSpec], list[str]]:
    """modelshield first (the reference), then the tools asked for that are installed."""
    venv = Path(args.tools_venv) if args.tools_venv else None
    specs = [ToolSpec("modelshield", _ms_command, _ms_parse, ms_env, (0, 1, 3))]
    missing: list[str] = []
    for name in [t.strip() for t in args.tools.split(",") if t.strip()]:
        exe = bp.find_tool(name, venv)
        if exe is None:
            missing.append(name)
        elif name == "picklescan":
            parse = _picklescan_parse(exe, env, args.timeout)
            specs.append(ToolSpec(name, _picklescan_command(exe), parse, env))
        elif name == "modelscan":
            specs.append(ToolSpec(name, _modelscan_command(exe), _modelscan_parse, env))
        elif name == "modelaudit":
            ma_env = dict(env, PROMPTFOO_DISABLE_TELEMETRY="1", NO_ANALYTICS="1")
            cmd = _modelaudit_command(exe)
            specs.append(ToolSpec(name, cmd, _modelaudit_parse, ma_env, (0, 1, 2)))
        else:
            raise SystemExit(f"unknown tool {name!r} (picklescan, modelscan, modelaudit)")
    return specs, missing


# --------------------------------------------------------------------------- running


def bench_target(
    target: Target, specs: Sequence[ToolSpec], args: argparse.Namespace, work: Path
) -> list[Result]:
    """Cold-cache run per tool (bytes touched), then warm-up and timed runs round-robin."""
    files = target.file_paths()
    size = target.size
    results: list[Result] = []
    scratch: list[Path] = []
    last: list[Run | None] = []
    rchars: list[list[int]] = []
    reads: list[list[int]] = []

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{target.label}] {msg}", file=sys.stderr, flush=True)

    for spec in specs:
        res = Result(spec.name, target.label)
        d = work / f"{target.label}-{spec.name}"
        d.mkdir(parents=True, exist_ok=True)
        results.append(res)
        scratch.append(d)
        last.append(None)
        rchars.append([])
        reads.append([])
        drop_cache(files)
        before = sum(resident_bytes(f) for f in files)
        log(f"{spec.name}: cold-cache run ...")
        run = run_measured(spec.command(target, d), spec.env, args.timeout)
        res.cold_s = run.wall_s
        if run.rc not in spec.ok_codes:
            res.extra["cold_run_exit"] = f"{run.rc}: {(run.stderr or run.stdout).strip()[-300:]}"
        if before <= max(size // 100, 1 << 20):
            res.touched = sum(resident_bytes(f) for f in files)
        else:
            res.extra["touched_note"] = f"page cache not dropped ({before} bytes stayed resident)"
        if run.rc == 124:
            res.note = f"timed out after {args.timeout:.0f} s"
        elif run.wall_s > args.slow:
            # One run this long is not dominated by noise or by the page cache: report it.
            res.times.append(run.wall_s)
            res.cpus.append(run.cpu_s)
            res.maxrss_kb = run.maxrss_kb
            if "rchar" in run.io:
                rchars[-1].append(run.io["rchar"])
            if "read_bytes" in run.io:
                reads[-1].append(run.io["read_bytes"])
            last[-1] = run
            res.extra["timing"] = f"cold-cache run only (took more than --slow {args.slow:.0f} s)"
    log("reading every input file once (warm page cache for every tool) ...")
    warm_cache(files)

    def slow(res: Result) -> bool:
        return res.cold_s is not None and res.cold_s > args.slow

    log("warm-up run per tool ...")
    for spec, res, d in zip(specs, results, scratch, strict=True):
        if not slow(res) and not res.note:
            run_measured(spec.command(target, d), spec.env, args.timeout)
    for rnd in range(args.runs):
        log(f"timed run {rnd + 1}/{args.runs} ...")
        for i, (spec, res, d) in enumerate(zip(specs, results, scratch, strict=True)):
            if res.note or slow(res):
                continue
            run = run_measured(spec.command(target, d), spec.env, args.timeout)
            if run.rc == 124:
                res.note = f"timed out after {args.timeout:.0f} s"
                continue
            res.times.append(run.wall_s)
            res.cpus.append(run.cpu_s)
            res.maxrss_kb = max(res.maxrss_kb, run.maxrss_kb)
            if "rchar" in run.io:
                rchars[i].append(run.io["rchar"])
            if "read_bytes" in run.io:
                reads[i].append(run.io["read_bytes"])
            last[i] = run
    for spec, res, d, run, rc, rb in zip(specs, results, scratch, last, rchars, reads, strict=True):
        if rc:
            res.rchar = int(statistics.median(rc))
        if rb:
            res.read_bytes = int(statistics.median(rb))
        if run is None:
            continue
        res.rc = run.rc
        if run.rc not in spec.ok_codes:
            res.extra["unexpected_exit"] = f"{run.rc}: {(run.stderr or run.stdout).strip()[-300:]}"
        spec.parse(run, target, res, d)
    return results


_GEN = r"""
import sys, torch
path, nbytes, legacy = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
n, cols = 8, 4096
rows = max(1, nbytes // (4 * n * cols))
g = torch.Generator().manual_seed(0)
sd = {f"layer{i}.weight": torch.randn(rows, cols, generator=g) for i in range(n)}
torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
"""


def make_checkpoint(path: Path, nbytes: int, legacy: bool = False) -> None:
    """A state dict of 8 float32 tensors, ``nbytes`` in all, saved by ``torch.save``.

    Written by a child process so that this process (which runs the tools) stays small.
    """
    subprocess.run(
        [sys.executable, "-c", _GEN, str(path), str(nbytes), "1" if legacy else "0"], check=True
    )


def floor_timings(env: dict[str, str], runs: int) -> dict[str, tuple[float, float]]:
    """Start-up references: the measuring wrappers alone, a bare interpreter, ``--version``."""
    cmds = {
        "wrapper overhead (/bin/true)": ["/bin/true"],
        "python -c pass (project venv)": [sys.executable, "-c", "pass"],
        "modelshield --version": [*bp.modelshield_cmd(), "--version"],
    }
    out: dict[str, tuple[float, float]] = {}
    for label, cmd in cmds.items():
        run_measured(cmd, env, 60)
        rs = [run_measured(cmd, env, 60) for _ in range(max(3, runs))]
        out[label] = (
            statistics.median(r.wall_s for r in rs),
            statistics.median(r.cpu_s for r in rs),
        )
    return out


# --------------------------------------------------------------------------- reporting


def _mib(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 2**20:.1f} MiB"


def table(results: Sequence[Result], n_files: int) -> str:
    ref = results[0].median
    head = (
        "| tool | median wall (s) | best (s) | median CPU (s) | runs | vs modelshield "
        "| peak RSS (MiB) "
        "| rchar | file bytes touched (cold) | reported dangerous "
        f"| unscanned / skipped (of {n_files}) | errored |"
    )
    rows = [head, "|" + "---|" * 12]
    for r in results:
        if not r.available:
            rows.append(f"| {r.tool} | not installed |" + " |" * 10)
            continue
        if not r.times:
            rows.append(f"| {r.tool} | failed: {r.note} |" + " |" * 10)
            continue
        rows.append(
            f"| {r.tool} | {r.median:.3f} | {r.best:.3f} | {r.cpu:.2f} "
            f"| {len(r.times)}{' (cold)' if 'timing' in r.extra else ''} "
            f"| {bp._fmt_ratio(r.median, ref)} | {r.maxrss_kb / 1024:.0f} | {_mib(r.rchar)} "
            f"| {_mib(r.touched)} | {len(r.flagged)} | {len(r.unscanned)} | {len(r.errored)} |"
        )
    return "\n".join(rows)


def scaling_table(small: Sequence[Result], big: Sequence[Result], labels: tuple[str, str]) -> str:
    head = (
        f"| tool | wall {labels[0]} (s) | wall {labels[1]} (s) | ratio "
        f"| CPU {labels[0]} (s) | CPU {labels[1]} (s) "
        f"| RSS {labels[0]} (MiB) | RSS {labels[1]} (MiB) | ratio "
        f"| touched {labels[0]} | touched {labels[1]} |"
    )
    rows = [head, "|" + "---|" * 11]
    for s, b in zip(small, big, strict=True):
        if not (s.times and b.times):
            rows.append(f"| {s.tool} | {s.note or '-'} | {b.note or '-'} |" + " |" * 8)
            continue
        rows.append(
            f"| {s.tool} | {s.median:.3f} | {b.median:.3f} | {b.median / s.median:.2f} "
            f"| {s.cpu:.2f} | {b.cpu:.2f} "
            f"| {s.maxrss_kb / 1024:.0f} | {b.maxrss_kb / 1024:.0f} "
            f"| {b.maxrss_kb / max(s.maxrss_kb, 1):.2f} | {_mib(s.touched)} | {_mib(b.touched)} |"
        )
    return "\n".join(rows)


def details(results: Sequence[Result], limit: int = 12) -> list[str]:
    out: list[str] = []
    for r in results:
        if not r.times:
            out.append(f"{r.tool}: {r.note or 'no timed run'}")
            continue
        out.append(
            f"{r.tool}: exit {r.rc}, cold run {r.cold_s:.2f} s, rchar {_mib(r.rchar)}, "
            f"read_bytes {_mib(r.read_bytes)}"
            + (f", self-reported bytes read {_mib(r.self_reported)}" if r.self_reported else "")
        )
        for label, items in (
            ("dangerous", r.flagged),
            ("unscanned", r.unscanned),
            ("errored", r.errored),
        ):
            shown = sorted(items)[:limit]
            more = f" ... +{len(items) - limit} (see --json)" if len(items) > limit else ""
            if shown:
                out.append(f"  {label} ({len(items)}): {', '.join(shown)}{more}")
        for k, v in r.extra.items():
            if k == "incomplete":
                for path, why in list(v.items())[:limit]:
                    out.append(f"  incomplete: {path}: {'; '.join(why)[:200]}")
                if len(v) > limit:
                    out.append(f"  incomplete: ... +{len(v) - limit} (see --json)")
            else:
                out.append(f"  {k}: {v}")
    return out


def _as_json(r: Result) -> dict[str, Any]:
    return {
        "tool": r.tool,
        "target": r.target,
        "available": r.available,
        "note": r.note,
        "times_s": r.times,
        "cpu_s": r.cpus,
        "median_s": r.median if r.times else None,
        "best_s": r.best if r.times else None,
        "cold_s": r.cold_s,
        "maxrss_kb": r.maxrss_kb,
        "rchar": r.rchar,
        "read_bytes": r.read_bytes,
        "touched_bytes": r.touched,
        "self_reported_bytes_read": r.self_reported,
        "exit_code": r.rc,
        "flagged": sorted(r.flagged),
        "unscanned": sorted(r.unscanned),
        "errored": sorted(r.errored),
        "extra": r.extra,
    }


def check_targets(
    big: Sequence[Result] | None,
    small: Sequence[Result] | None,
    corpus: Sequence[Result] | None,
    scaling_tolerance: float,
) -> list[str]:
    """The issue's targets, each as ``MET``/``MISSED`` with the numbers."""
    out: list[str] = []

    def verdict(ok: bool) -> str:
        return "MET   " if ok else "MISSED"

    if big:
        ms = big[0]
        if ms.times:
            out.append(
                f"{verdict(ms.median < 0.2)} (a) wall < 0.2 s incl. start-up: "
                f"median {ms.median:.3f} s, best {ms.best:.3f} s (CPU {ms.cpu:.2f} s)"
            )
            out.append(
                f"{verdict(ms.maxrss_kb < 200 * 1024)} (a) peak RSS < 200 MB: "
                f"{ms.maxrss_kb / 1024:.0f} MiB"
            )
            if small and small[0].times:
                s = small[0]
                tr, mr = ms.median / s.median, ms.maxrss_kb / max(s.maxrss_kb, 1)
                ok = tr <= scaling_tolerance and mr <= scaling_tolerance
                out.append(
                    f"{verdict(ok)} (a) flat scaling (ratio <= {scaling_tolerance}): "
                    f"time x{tr:.2f}, memory x{mr:.2f} for x{big_size_ratio(small, big):.0f} bytes"
                )
    if corpus:
        ms = corpus[0]
        by_name = {r.tool: r for r in corpus}
        if ms.times:
            inc = ms.extra.get("incomplete", {})
            out.append(
                f"{verdict(not ms.unscanned)} (b) full coverage: {len(ms.unscanned)} files "
                f"incomplete ({_incomplete_formats(inc)})"
            )
            if (ps := by_name.get("picklescan")) and ps.times:
                out.append(
                    f"{verdict(ms.median < ps.median)} (b) faster than picklescan: "
                    f"{ms.median:.2f} s vs {ps.median:.2f} s (picklescan left "
                    f"{len(ps.unscanned)} files unscanned)"
                )
            if (ma := by_name.get("modelaudit")) and ma.times:
                out.append(
                    f"{verdict(ms.median * 5 < ma.median)} (b) far less than modelaudit (5x): "
                    f"{ms.median:.2f} s vs {ma.median:.2f} s ({ma.median / ms.median:.0f}x)"
                )
    return out


_SIZES: dict[str, int] = {}


def big_size_ratio(small: Sequence[Result], big: Sequence[Result]) -> float:
    s, b = _SIZES.get(small[0].target, 0), _SIZES.get(big[0].target, 0)
    return b / s if s else float("nan")


def _incomplete_formats(incomplete: dict[str, list[str]]) -> str:
    c: collections.Counter[str] = collections.Counter()
    for reasons in incomplete.values():
        for r in reasons:
            c[r.split(":", 2)[0] + ":" + r.split(":", 2)[1].split(" ", 1)[0]] += 1
    return ", ".join(f"{k} {v}" for k, v in c.most_common()) or "none"


# --------------------------------------------------------------------------- main


def snapshot(dest: Path) -> tuple[Path, str]:
    """Extract ``src/`` of the committed HEAD into ``dest``: what modelshield runs from.

    The working tree may be edited while the benchmark runs (a half-written policy file makes
    every later run fail); a snapshot of a commit is stable and names what was measured.
    """
    repo = Path(__file__).resolve().parent.parent
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "archive",
            "HEAD",
            "src",
            "setup.py",
            "pyproject.toml",
            "README.md",
        ],
        capture_output=True,
        check=True,
    ).stdout
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")  # our own repository's archive
    # The optional C loop of the pickle engine, built as `pip install` builds it.
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=dest,
        capture_output=True,
        check=False,
    )
    native = any((dest / "src/modelshield/pickle").glob("_fastloop*.so"))
    what = "C loop built" if native else "C loop NOT built: pure Python"
    return dest / "src", f"modelshield {head} (committed tree, snapshot; {what})"


def revision() -> str:
    """The modelshield revision measured: commit, and whether ``src/`` has local changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"modelshield {head}" + (" + uncommitted changes in src/" if dirty else "")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--corpus", help="real-file corpus directory (workload b); omitted: skip (b)")
    p.add_argument("--no-checkpoint", action="store_true", help="skip workload (a)")
    p.add_argument("--size-gb", type=float, default=2.0, help="big checkpoint size (default 2)")
    p.add_argument("--small-mb", type=float, default=200.0, help="scaling reference (MB)")
    p.add_argument(
        "--legacy",
        action="store_true",
        help="also time a legacy (non-zip, torch<1.6) checkpoint of --size-gb",
    )
    p.add_argument("--dir", help="write checkpoints here (default: a temp dir under /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    p.add_argument("--tools-venv", help="virtualenv holding the other tools (default: PATH)")
    p.add_argument(
        "--tools",
        default="picklescan,modelscan,modelaudit",
        help="comma-separated tools to compare with modelshield (default: all three)",
    )
    p.add_argument("-n", "--runs", type=int, default=3, help="timed runs per tool (median, best)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per tool run")
    p.add_argument(
        "--slow",
        type=float,
        default=60,
        help="a tool whose cold run exceeds this many seconds is timed by that run only",
    )
    p.add_argument(
        "--scaling-tolerance",
        type=float,
        default=1.25,
        help="largest big/small ratio of time and memory counted as flat",
    )
    p.add_argument(
        "--working-tree",
        action="store_true",
        help="run modelshield from the working tree as it is (default: a snapshot of HEAD)",
    )
    p.add_argument("--json", metavar="FILE", help="write all results as JSON")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if not Path(_TIME).exists():
        p.error(f"{_TIME} (GNU time) is needed for peak RSS")

    today = datetime.date.today().isoformat()
    header = (
        f"{today} - {bp.machine()} - median of {args.runs} warm-cache runs "
        "(after a cold-cache run and a warm-up run per tool)"
    )
    doc: dict[str, Any] = {
        "date": today,
        "machine": bp.machine(),
        "runs": args.runs,
        "revision": revision(),
        "load_average_at_start": os.getloadavg(),
    }
    print(header)
    print(f"{doc['revision']}; load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="msbench-containers-") as work:
        env = bp.tool_env(Path(work) / "pycache")
        ms_env = dict(env)
        if not args.working_tree:
            src, doc["revision"] = snapshot(Path(work) / "snapshot")
            ms_env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(src), env.get("PYTHONPATH", "")) if p
            )
            print(f"measuring {doc['revision']} from {src}")
        specs, missing = tool_specs(args, env, ms_env)
        for name in missing:
            print(f"{name}: not installed (looked in {args.tools_venv or 'PATH'}); skipped")
        floor = floor_timings(ms_env, args.runs)
        doc["startup_reference_s"] = floor
        print("\nstart-up reference (median wall / CPU, same wrappers):")
        for k, (w, c) in floor.items():
            print(f"  {k}: {w:.3f} s wall, {c:.2f} s CPU")
        big: list[Result] | None = None
        small: list[Result] | None = None
        corpus: list[Result] | None = None
        if not args.no_checkpoint:
            ckdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="msbench-ckpt-"))
            ckdir.mkdir(parents=True, exist_ok=True)
            todo = [
                ("small", int(args.small_mb * 1e6), False),
                ("big", int(args.size_gb * 1e9), False),
            ]
            if args.legacy:
                todo.append(("legacy", int(args.size_gb * 1e9), True))
            runs: dict[str, list[Result]] = {}
            try:
                for key, nbytes, legacy in todo:
                    path = ckdir / f"checkpoint-{key}-{nbytes // 10**6}MB.pt"
                    if not path.exists():
                        print(f"writing {path} ...", file=sys.stderr, flush=True)
                        make_checkpoint(path, nbytes, legacy)
                    target = Target(path, f"{key} {path.stat().st_size / 1e9:.2f} GB")
                    _SIZES[target.label] = path.stat().st_size
                    runs[key] = bench_target(target, specs, args, Path(work))
                    print(f"\n### checkpoint: {path.name} ({path.stat().st_size:,} bytes)")
                    print(table(runs[key], 1))
                    print("\n".join(details(runs[key])))
                    doc.setdefault("checkpoints", {})[key] = {
                        "path": str(path),
                        "bytes": path.stat().st_size,
                        "legacy": legacy,
                        "tools": [_as_json(r) for r in runs[key]],
                    }
            finally:
                if not args.keep:
                    for f in ckdir.glob("checkpoint-*.pt"):
                        f.unlink()
                    if not args.dir:
                        ckdir.rmdir()
            big, small = runs.get("big"), runs.get("small")
            if big and small:
                print(f"\n### scaling: {small[0].target} -> {big[0].target}")
                print(scaling_table(small, big, ("small", "big")))
        if args.corpus:
            root = Path(args.corpus)
            target = Target(root, "corpus")
            n_files = len(target.files())
            corpus = bench_target(target, specs, args, Path(work))
            print(f"\n### corpus: {root} ({n_files} files, {target.size / 1e6:.0f} MB)")
            print(table(corpus, n_files))
            print("\n".join(details(corpus)))
            doc["corpus"] = {
                "root": str(root),
                "files": n_files,
                "bytes": target.size,
                "tools": [_as_json(r) for r in corpus],
            }
    checks = check_targets(big, small, corpus, args.scaling_tolerance)
    if checks:
        print("\n### targets")
        print("\n".join(checks))
    doc["targets"] = checks
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
