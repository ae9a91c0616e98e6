"""Interpret one sandboxed load: strace records + audit events -> behaviour, findings, verdict.

Only what happens after the ``loading`` marker counts. The marker is a ``write`` of a known
JSON line on the report pipe, recorded by strace; strace is attached just before it, so the
framework import (done earlier, untraced) never pollutes the record.

Kernel records decide (the payload cannot forge or suppress them); audit events add meaning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from modelshield.findings import (
    Coverage,
    CoverageStatus,
    Finding,
    Location,
    ScanError,
    ScanResult,
    Severity,
)
from modelshield.sandbox import rules as R
from modelshield.sandbox._child import FILE_AUDIT, NATIVE_AUDIT, NET_AUDIT, PROCESS_AUDIT
from modelshield.sandbox.runner import RawRun
from modelshield.sandbox.strace import ProcessExit, Signal, Syscall, decode_string, fd_path, parse

SCHEMA = "modelshield-sandbox-behaviour/1"
MAX_EVENTS = 1000
"""Events kept in the behaviour report (the rest are counted)."""
MAX_DETAIL = 300

_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_TMPFILE")
_OPEN_CALLS = {"open": (0, 1), "creat": (0, None), "openat": (1, 2), "openat2": (1, 2)}
_FILE_CALLS = {
    "unlink": "delete",
    "unlinkat": "delete",
    "rmdir": "delete directory",
    "rename": "rename",
    "renameat": "rename",
    "renameat2": "rename",
    "mkdir": "create directory",
    "mkdirat": "create directory",
    "link": "hard link",
    "linkat": "hard link",
    "symlink": "symlink",
    "symlinkat": "symlink",
    "truncate": "truncate",
    "chmod": "chmod",
    "fchmodat": "chmod",
    "chown": "chown",
    "lchown": "chown",
    "fchownat": "chown",
    "mknod": "mknod",
    "mknodat": "mknod",
    "memfd_create": "anonymous file",
}
_NET_CALLS = {
    "socket",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "sendto",
    "sendmsg",
    "sendmmsg",
}
_ESCAPE_CALLS = {
    "ptrace",
    "mount",
    "umount2",
    "unshare",
    "setns",
    "pivot_root",
    "chroot",
    "bpf",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "keyctl",
    "add_key",
    "request_key",
    "perf_event_open",
    "process_vm_writev",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "seccomp",
}
_LOADER_FILES = ("pickle.py", "_child.py", "serialization.py", "numpy_pickle.py", "format.py")
_SCRATCH_DIRS = ("/tmp", "/dev/shm")  # noqa: S108 - paths inside the sandbox
_SCRATCH = tuple(d + "/" for d in _SCRATCH_DIRS)
_PY_WRITE = 0x1 | 0x2 | 0x40 | 0x200 | 0x400  # O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND


@dataclass(frozen=True)
class Event:
    """One thing the load did (or tried)."""

    source: str
    """``kernel`` (strace, authoritative) or ``audit`` (Python audit hook in the child)."""
    kind: str
    """process, network, file, escape, native, code, global, tamper, import, info."""
    name: str
    """System call or audit event name."""
    detail: str
    """Human-readable arguments (paths, command line, address)."""
    args: tuple[Any, ...] = ()
    result: str | None = None
    blocked: bool = False
    """The attempt failed (EPERM from seccomp or strace, EROFS, no network, ...)."""
    pid: int | None = None
    time: float | None = None
    rule_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "name": self.name,
            "detail": self.detail,
            "args": list(self.args),
            "result": self.result,
            "blocked": self.blocked,
            "pid": self.pid,
            "time": self.time,
            "rule": self.rule_id,
        }


@dataclass
class Behaviour:
    """The interpretation of one sandboxed load."""

    path: str
    loader: str
    events: list[Event] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    completed: bool = False
    problems: list[str] = field(default_factory=list)
    """Why the observation is incomplete (empty when the load was fully observed)."""
    globals: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    threads: int = 0
    events_dropped: int = 0
    load_error: str | None = None
    loaded_type: str | None = None
    exit: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    stderr_tail: str = ""
    size: int | None = None
    sha256: str | None = None

    def verdict(self, threshold: Severity = Severity.HIGH) -> str:
        if any(f.severity >= threshold for f in self.findings):
            return "malicious"
        if not self.completed:
            return "inconclusive"
        return "clean"

    def coverage(self) -> Coverage:
        status = CoverageStatus.SCANNED if self.completed else CoverageStatus.INCONCLUSIVE
        reason = (
            "loaded in the sandbox and fully observed"
            if self.completed
            else "; ".join(self.problems)
        )
        return Coverage(
            self.path,
            status,
            f"sandbox:{self.loader}",
            reason=reason,
            size=self.size,
            sha256=self.sha256,
        )

    def to_json(self, threshold: Severity = Severity.HIGH) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "path": self.path,
            "loader": self.loader,
            "verdict": self.verdict(threshold),
            "completed": self.completed,
            "problems": list(self.problems),
            "sha256": self.sha256,
            "size": self.size,
            "load": {"error": self.load_error, "result_type": self.loaded_type},
            "exit": self.exit,
            "timings_s": self.timings,
            "limits": self.limits,
            "events": [e.as_json() for e in self.events],
            "events_dropped": self.events_dropped,
            "blocked": [e.as_json() for e in self.events if e.blocked],
            "globals_resolved": list(self.globals),
            "modules_imported": list(self.imports),
            "threads_started": self.threads,
            "findings": [
                {
                    "rule": f.rule_id,
                    "severity": f.severity.label,
                    "confidence": f.confidence.label,
                    "message": f.message,
                    "evidence": f.evidence,
                    "cwe": f.cwe,
                }
                for f in self.findings
            ],
            "stderr_tail": self.stderr_tail,
        }


def _short(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def _str_arg(arg: str) -> str:
    s = decode_string(arg)
    return s if s is not None else arg


def _errno_text(call: Syscall) -> str:
    if call.errno:
        return f"{call.errno}{' (injected by strace)' if call.injected else ''}"
    return call.ret


def _resolve(path: str, dirfd: str | None) -> str:
    if os.path.isabs(path) or dirfd is None:
        return path
    base = fd_path(dirfd) or _SCRATCH_DIRS[0]
    return os.path.normpath(os.path.join(base, path))


def _in_range(fd: str, args: tuple[str, ...]) -> bool:
    """Whether ``close_range(first, last, flags)`` covers ``fd`` (CLOEXEC-only does not)."""
    try:
        first = int(args[0].split("<", 1)[0])
        last = int(args[1].split("<", 1)[0]) if args[1] not in ("~0", "-1") else 2**32
        number = int(fd)
    except (IndexError, ValueError):
        return True  # cannot tell: assume the worst
    cloexec = len(args) > 2 and "CLOSE_RANGE_CLOEXEC" in args[2]
    return first <= number <= last and not cloexec


def _where(path: str) -> str:
    if path.startswith(_SCRATCH) or path in _SCRATCH_DIRS:
        return "private scratch, discarded"
    return "read-only view"


class _Analyser:
    def __init__(self, raw: RawRun, behaviour: Behaviour) -> None:
        self.raw = raw
        self.b = behaviour
        self.report_fd: str | None = None
        self.report_pipe: str | None = None
        self.tampered: list[str] = []
        self.signals: list[Signal] = []
        self.exits: dict[int, ProcessExit] = {}
        self.unflagged_dropped = 0

    def add(self, event: Event) -> None:
        if event.rule_id is None and len(self.b.events) >= MAX_EVENTS // 2:
            self.unflagged_dropped += 1  # context only: not a gap in what decides the verdict
        elif len(self.b.events) < MAX_EVENTS:
            self.b.events.append(event)
        else:
            self.b.events_dropped += 1

    # kernel -------------------------------------------------------------------------------

    def kernel(self) -> bool:
        """Walk the strace log; returns whether the load marker was seen."""
        marker = False
        for rec in parse(self.raw.trace):
            if isinstance(rec, ProcessExit):
                self.exits[rec.pid] = rec
                continue
            if isinstance(rec, Signal):
                if marker:
                    self.signals.append(rec)
                continue
            if not marker:
                if rec.name == "write" and rec.args:
                    data = decode_string(rec.args[1]) if len(rec.args) > 1 else None
                    if data and data.startswith('{"ev": "loading"'):
                        marker = True
                        self.report_fd = rec.args[0].split("<", 1)[0]
                        self.report_pipe = fd_path(rec.args[0])
                continue
            self.syscall(rec)
        return marker

    def syscall(self, c: Syscall) -> None:
        name = c.name
        blocked = c.failed
        res = _errno_text(c)

        def record(
            kind: str, detail: str, rule_id: str, args: tuple[str, ...] | None = None
        ) -> None:
            self.add(
                Event(
                    kind=kind,
                    detail=_short(detail),
                    args=c.args if args is None else args,
                    result=res,
                    blocked=blocked,
                    rule_id=rule_id,
                    source="kernel",
                    name=name,
                    pid=c.pid,
                    time=c.time,
                )
            )

        if name in ("execve", "execveat"):
            idx = 1 if name == "execveat" else 0
            prog = _str_arg(c.args[idx]) if len(c.args) > idx else "?"
            argv = c.args[idx + 1] if len(c.args) > idx + 1 else ""
            record("process", f"{prog} {argv}", R.PROCESS, c.args[:3])
        elif name in ("fork", "vfork", "clone", "clone3"):
            if "CLONE_THREAD" in " ".join(c.args):
                if not c.failed:
                    self.b.threads += 1
                return
            flags = "|".join(sorted({t for t in re.findall(r"CLONE_[A-Z_]+", " ".join(c.args))}))
            record("process", f"new process ({name}{', ' + flags if flags else ''})", R.PROCESS)
        elif name in _NET_CALLS:
            detail = ", ".join(c.args[:2]) if name != "socket" else ", ".join(c.args)
            record("network", detail, R.NETWORK)
        elif name in _OPEN_CALLS:
            pidx, fidx = _OPEN_CALLS[name]
            flags = c.args[fidx] if fidx is not None and len(c.args) > fidx else "O_CREAT"
            if not any(f in flags for f in _WRITE_FLAGS) and name != "creat":
                return
            raw_path = _str_arg(c.args[pidx]) if len(c.args) > pidx else "?"
            path = _resolve(raw_path, c.args[0] if pidx == 1 else None)
            if path == "/dev/null":
                return
            record("file", f"open for writing {path} ({flags}; {_where(path)})", R.FILE_CHANGE)
        elif name in _FILE_CALLS:
            paths = [
                _str_arg(a) for a in c.args if a.startswith('"') and decode_string(a) is not None
            ]
            where = _where(paths[0]) if paths and name != "memfd_create" else "memory"
            record("file", f"{_FILE_CALLS[name]} {' -> '.join(paths)} ({where})", R.FILE_CHANGE)
        elif name in _ESCAPE_CALLS:
            record("escape", f"{name}({', '.join(c.args[:3])})", R.ESCAPE, c.args[:4])
        elif name in ("close", "close_range", "dup2", "dup3") and self.report_fd is not None:
            if name == "close_range":
                hit = _in_range(self.report_fd, c.args)
            else:
                target = c.args[0] if name == "close" else (c.args[1] if len(c.args) > 1 else "")
                hit = target.split("<", 1)[0] == self.report_fd
            if hit:
                what = "closed" if name == "close" else "replaced"
                self.tampered.append(f"report channel {what} ({name}({', '.join(c.args)}))")
                record("tamper", f"report channel {what}: {name}({', '.join(c.args)})", R.TAMPERING)

    # audit --------------------------------------------------------------------------------

    def audit(self, msg: dict[str, Any]) -> None:
        event = str(msg.get("event", "?"))
        raw_args = msg.get("args")
        args: list[Any] = raw_args if isinstance(raw_args, list) else []
        text = ", ".join(repr(a) for a in args)
        common: dict[str, Any] = {"source": "audit", "name": event, "args": tuple(args)}
        if event == "pickle.find_class" and len(args) >= 2:
            dotted = f"{args[0]}.{args[1]}"
            if dotted not in self.b.globals:
                self.b.globals.append(dotted)
            self.add(Event(kind="global", detail=_short(dotted), **common))
        elif event == "import":
            if args and isinstance(args[0], str) and args[0] not in self.b.imports:
                self.b.imports.append(args[0])
        elif event in PROCESS_AUDIT:
            self.add(Event(kind="process", detail=_short(text), rule_id=R.PROCESS, **common))
        elif event in NET_AUDIT:
            self.add(Event(kind="network", detail=_short(text), rule_id=R.NETWORK, **common))
        elif event in FILE_AUDIT:
            self.add(Event(kind="file", detail=_short(text), rule_id=R.FILE_CHANGE, **common))
        elif event == "open" and args:
            mode = args[1] if len(args) > 1 else None
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writes = (isinstance(mode, str) and any(ch in mode for ch in "wax+")) or bool(
                flags & _PY_WRITE
            )
            if writes and args[0] != "/dev/null":
                self.add(Event(kind="file", detail=_short(text), rule_id=R.FILE_CHANGE, **common))
        elif event in NATIVE_AUDIT:
            self.add(Event(kind="native", detail=_short(text), rule_id=R.NATIVE_CODE, **common))
        elif event in ("exec", "compile", "marshal.loads"):
            caller = msg.get("caller")
            cfile = str(caller[0]) if isinstance(caller, list) and caller else ""
            target = ""
            if event == "exec" and args and isinstance(args[0], dict):
                target = str(args[0].get("filename", ""))
            elif event == "compile" and len(args) > 1:
                target = str(args[1])
            dynamic = target.startswith("<") and not target.startswith("<frozen")
            from_loader = os.path.basename(cfile) in _LOADER_FILES or (
                cfile.startswith("<") and not cfile.startswith("<frozen")
            )
            flagged = (event == "marshal.loads" and not cfile.startswith("<frozen")) or (
                dynamic and from_loader
            )
            self.add(
                Event(
                    kind="code",
                    detail=_short(f"{text} (called from {cfile or '?'})"),
                    rule_id=R.DYNAMIC_CODE if flagged else None,
                    **common,
                )
            )
        else:
            self.add(Event(kind="info", detail=_short(text), **common))


def _finding(
    b: Behaviour,
    rule_id: str,
    message: str,
    evidence: str | None = None,
    severity: Severity | None = None,
    reason: str | None = None,
) -> Finding:
    rule = next(r for r in R.RULES if r.id == rule_id)
    return rule.finding(
        message, Location(b.path), severity=severity, evidence=evidence, reason=reason
    )


_KIND_TEXT = {
    R.PROCESS: "tried to start a program or process",
    R.NETWORK: "tried to use the network",
    R.FILE_CHANGE: "tried to change the file system",
    R.NATIVE_CODE: "used native code through ctypes",
    R.DYNAMIC_CODE: "ran dynamically created code",
    R.ESCAPE: "tried to escape or weaken the sandbox",
    R.TAMPERING: "interfered with the sandbox's observation",
}


def _event_findings(b: Behaviour) -> list[Finding]:
    grouped: dict[tuple[str, str], list[Event]] = {}
    for e in b.events:
        if e.rule_id is None:
            continue
        grouped.setdefault((e.rule_id, e.detail), []).append(e)
    out: list[Finding] = []
    for (rule_id, detail), events in grouped.items():
        first = events[0]
        status = ""
        if first.source == "kernel":
            status = f"; blocked: {first.result}" if first.blocked else f"; result: {first.result}"
        times = f" ({len(events)} times)" if len(events) > 1 else ""
        out.append(
            _finding(
                b,
                rule_id,
                f"Loading with {b.loader} {_KIND_TEXT[rule_id]} "
                f"[{first.source}: {first.name}{status}]{times}",
                evidence=detail,
            )
        )
    return out


def _global_findings(b: Behaviour) -> list[Finding]:
    from modelshield.policy import Policy, Verdict

    policy = Policy.default()
    out: list[Finding] = []
    for dotted in b.globals:
        cls = policy.classify(dotted)
        if cls.verdict is Verdict.DANGEROUS and cls.entry is not None:
            out.append(
                _finding(
                    b,
                    R.DANGEROUS_GLOBAL,
                    f"The {b.loader} loader resolved the dangerous global {dotted}",
                    evidence=dotted,
                    severity=max(cls.entry.severity, Severity.HIGH),
                    reason=cls.entry.reason,
                )
            )
    return out


_LIMIT_ERRORS = {"MemoryError": "memory (address-space) limit"}


def analyse(raw: RawRun) -> Behaviour:
    """Turn a :class:`RawRun` into a :class:`Behaviour` with findings and completeness."""
    b = Behaviour(path=raw.path, loader=raw.loader)
    try:
        st = os.stat(raw.path)
        b.size = st.st_size
        h = hashlib.sha256()
        with open(raw.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        b.sha256 = h.hexdigest()
    except OSError:
        pass
    b.stderr_tail = raw.stderr[-2000:]
    b.timings = {
        "startup": round(raw.startup_s, 4),
        "load": round(raw.load_s, 4),
        "total": round(raw.total_s, 4),
    }
    a = _Analyser(raw, b)
    marker = a.kernel()
    done: dict[str, Any] | None = None
    after_loading = False
    for msg in raw.messages:
        ev = msg.get("ev")
        if ev == "ready":
            lim = msg.get("limits")
            b.limits = dict(lim) if isinstance(lim, dict) else {}
            b.timings["framework_import"] = round(float(msg.get("import_s", 0.0)), 4)
        elif ev == "loading":
            after_loading = True
        elif ev == "audit" and after_loading:
            a.audit(msg)
        elif ev == "done" and after_loading and done is None:
            done = msg
    b.limits["wall_clock_s"] = raw.load_s if raw.timed_out else None

    findings = _event_findings(b) + _global_findings(b)
    problems: list[str] = []
    limit_hit: list[str] = []

    child_exit = a.exits.get(raw.host_pid or -1)
    sig = child_exit.signal if child_exit else None
    b.exit = {
        "status": raw.exit_status,
        "signal": sig,
        "code": child_exit.code if child_exit else None,
        "timed_out": raw.timed_out,
    }
    if raw.timed_out:
        limit_hit.append(f"wall-clock limit reached after {raw.load_s:.1f} s; sandbox killed")
    if sig in ("SIGXCPU",) or any(s.name == "SIGXCPU" for s in a.signals):
        limit_hit.append("CPU-time limit reached (SIGXCPU)")
    if sig == "SIGXFSZ" or any(s.name == "SIGXFSZ" for s in a.signals):
        limit_hit.append("file-size limit reached (SIGXFSZ)")
    if done is not None:
        if done.get("ok"):
            b.loaded_type = str(done.get("type"))
        else:
            err = str(done.get("error"))
            b.load_error = f"{err}: {done.get('message', '')}"
            if err in _LIMIT_ERRORS:
                limit_hit.append(f"{_LIMIT_ERRORS[err]} reached ({b.load_error})")
            elif "can't start new thread" in str(done.get("message", "")):
                limit_hit.append(f"thread/process limit reached ({b.load_error})")
            elif "File too large" in str(done.get("message", "")):
                limit_hit.append(f"file-size limit reached ({b.load_error})")
            else:
                problems.append(f"the loader raised {_short(b.load_error)}")
        if int(done.get("audit_dropped", 0) or 0):
            problems.append(f"{done['audit_dropped']} audit events over the limit were dropped")
    elif not raw.timed_out:
        if sig and sig not in ("SIGXCPU", "SIGXFSZ"):
            problems.append(f"the child was killed by {sig} during the load")
        elif not limit_hit:
            code = child_exit.code if child_exit else raw.exit_status
            a.tampered.append(
                f"the child exited (status {code}) during the load without its final heartbeat"
            )
    if not marker:
        problems.append("the kernel trace does not contain the load marker")
    if raw.trace_truncated:
        problems.append("the kernel trace was longer than the analysis limit")
    if raw.garbled_lines:
        a.tampered.append(f"{raw.garbled_lines} malformed lines on the report channel")
    if raw.report_overflow:
        a.tampered.append("the report channel was flooded past its limit")
    if b.events_dropped:
        problems.append(f"{b.events_dropped} events over the report limit were not kept")

    kernel_tamper = {e.detail for e in b.events if e.kind == "tamper"}
    for t in a.tampered:
        if not any(t in k or k.endswith(t) for k in kernel_tamper) and not any(
            t in (f.evidence or "") for f in findings
        ):
            findings.append(_finding(b, R.TAMPERING, f"Observation was disturbed: {t}", evidence=t))
    for lim in limit_hit:
        findings.append(_finding(b, R.RESOURCE_LIMIT, f"The load hit a limit: {lim}"))
    for p in problems:
        findings.append(_finding(b, R.LOAD_INCOMPLETE, f"The load was not fully observed: {p}"))
    b.problems = limit_hit + problems + a.tampered
    b.completed = not b.problems and done is not None and bool(done.get("ok"))
    b.findings = sorted(findings, key=Finding.sort_key)
    return b


def to_scan_result(behaviours: Iterable[Behaviour], errors: Iterable[ScanError] = ()) -> ScanResult:
    """A :class:`ScanResult` for the existing reporters (text, json, sarif)."""
    items = list(behaviours)
    findings = tuple(sorted((f for b in items for f in b.findings), key=Finding.sort_key))
    return ScanResult(
        findings=findings,
        coverage=tuple(b.coverage() for b in items),
        errors=tuple(errors),
        duration_s=sum(b.timings.get("total", 0.0) for b in items),
        bytes_read=sum(b.size or 0 for b in items),
        inputs=tuple(b.path for b in items),
    )


def behaviour_json(behaviours: Iterable[Behaviour], threshold: Severity = Severity.HIGH) -> str:
    """The JSON behaviour report for one or more loads."""
    items = list(behaviours)
    return json.dumps(
        {"schema": SCHEMA, "results": [b.to_json(threshold) for b in items]},
        indent=2,
        ensure_ascii=True,
    )


def summary(b: Behaviour, threshold: Severity = Severity.HIGH) -> str:
    """A readable summary of what the load did (strings from the model made printable)."""
    from modelshield.report._common import printable

    lines = [
        f"sandbox: {printable(b.path)} loaded with {b.loader}: {b.verdict(threshold).upper()}",
        f"  timings: framework import {b.timings.get('framework_import', 0):.2f} s, "
        f"load {b.timings.get('load', 0):.2f} s, total {b.timings.get('total', 0):.2f} s",
    ]
    if b.loaded_type:
        lines.append(f"  load result: {printable(b.loaded_type)}")
    if b.load_error:
        lines.append(f"  load error: {printable(b.load_error)}")
    if b.globals:
        shown = ", ".join(printable(g) for g in b.globals[:20])
        more = f" (+{len(b.globals) - 20})" if len(b.globals) > 20 else ""
        lines.append(f"  globals resolved: {shown}{more}")
    flagged = [e for e in b.events if e.rule_id]
    if flagged:
        lines.append("  behaviour:")
        for e in flagged[:40]:
            state = " [BLOCKED]" if e.blocked else ""
            res = f" -> {e.result}" if e.result else ""
            lines.append(f"    {e.source:6} {e.kind:8} {printable(e.detail)}{res}{state}")
        if len(flagged) > 40:
            lines.append(f"    ... {len(flagged) - 40} more (see the JSON behaviour report)")
    else:
        lines.append("  behaviour: nothing beyond reading the model")
    for p in b.problems:
        lines.append(f"  incomplete: {printable(p)}")
    return "\n".join(lines)
