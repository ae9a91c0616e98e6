"""Parse ``strace -f -ttt -y`` output into complete system-call records.

The log is written by strace, outside the sandbox, so its content is trustworthy in structure,
but every string in it (paths, buffers) comes from the payload: nothing here evaluates it, and
decoding is bounded. Lines interleaved by threads (``<unfinished ...>`` / ``<... resumed>``)
are stitched back together per pid.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
_CALL = re.compile(r"^([a-z_0-9]+)\((.*)$", re.S)
_RESUMED = re.compile(r"^<\.\.\. ([a-z_0-9]+) resumed>(.*)$", re.S)
_RESULT = re.compile(
    r"^(?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|\?|0x[0-9a-f]+)(?P<fdpath><[^>]*>)?"
    r"(?:\s+(?P<errno>E[A-Z0-9]+)\s*(?:\([^)]*\))?)?(?P<rest>.*)$",
    re.S,
)
_EXIT = re.compile(
    r"^\+\+\+ (exited with (\d+)|killed by (SIG[A-Z0-9]+))(?: \(core dumped\))? \+\+\+$"
)
_SIGNAL = re.compile(r"^--- (SIG[A-Z0-9]+) (.*) ---$")


@dataclass(frozen=True)
class Syscall:
    pid: int
    time: float
    name: str
    args: tuple[str, ...]
    """Raw argument texts as strace printed them (strings still quoted and escaped)."""
    ret: str
    """Return value text: a number, ``?`` (process died in the call) or ``0x...``."""
    errno: str | None = None
    injected: bool = False
    ret_path: str | None = None
    """With ``-y``: the path of a returned file descriptor (``openat`` etc.)."""

    @property
    def failed(self) -> bool:
        return self.errno is not None or self.ret.startswith("-")


@dataclass(frozen=True)
class ProcessExit:
    pid: int
    time: float
    code: int | None
    signal: str | None


@dataclass(frozen=True)
class Signal:
    pid: int
    time: float
    name: str
    detail: str


TraceRecord = Syscall | ProcessExit | Signal


def split_args(text: str) -> tuple[str, ...]:
    """Split strace's argument list at top-level commas (quotes and brackets respected)."""
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i : j + 1])
            i = j + 1
            continue
        if c in "([{<":
            depth += 1
        elif c in ")]}>" and depth > 0:
            depth -= 1
        elif c == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    last = "".join(cur).strip()
    if last or out:
        out.append(last)
    return tuple(out)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f", "\\": "\\", '"': '"'}


def decode_string(arg: str) -> str | None:
    """Decode a quoted strace string (``"a\\n\\x00"...``); None when ``arg`` is not one."""
    arg = arg.strip()
    if arg.endswith("..."):
        arg = arg[:-3]
    if len(arg) < 2 or arg[0] != '"' or arg[-1] != '"':
        return None
    body = arg[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\" or i + 1 >= len(body):
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "x" and i + 3 < len(body) + 1:
            try:
                out.append(chr(int(body[i + 2 : i + 4], 16)))
            except ValueError:
                out.append(nxt)
            i += 4
        elif nxt.isdigit():
            j = i + 1
            while j < len(body) and j < i + 4 and body[j] in "01234567":
                j += 1
            out.append(chr(int(body[i + 1 : j], 8)))
            i = j
        else:
            out.append(nxt)
            i += 2
    return "".join(out)


def fd_path(arg: str) -> str | None:
    """The ``-y`` annotation of a file-descriptor argument: ``3</tmp/x>`` -> ``/tmp/x``."""
    m = re.match(r"^(?:-?\d+|AT_FDCWD)<(.*)>$", arg.strip(), re.S)
    return m.group(1) if m else None


def _finish(pid: int, ts: float, name: str, tail: str) -> Syscall | None:
    m = _RESULT.match(tail)
    if not m:
        return None
    ret = m.group("ret")
    fdpath = m.group("fdpath")
    return Syscall(
        pid=pid,
        time=ts,
        name=name,
        args=split_args(m.group("args")),
        ret=ret,
        errno=m.group("errno"),
        injected="(INJECTED)" in (m.group("rest") or ""),
        ret_path=fdpath[1:-1] if fdpath else None,
    )


def parse(text: str) -> Iterator[TraceRecord]:
    """Yield syscalls, exits and signals in log order (entry order for interleaved calls)."""
    pending: dict[int, tuple[float, str, str]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        pid = int(m.group(1))
        ts = float(m.group(2))
        body = m.group(3)
        if body.startswith("+++"):
            e = _EXIT.match(body)
            if e:
                code = int(e.group(2)) if e.group(2) is not None else None
                yield ProcessExit(pid, ts, code, e.group(3))
            continue
        if body.startswith("---"):
            s = _SIGNAL.match(body)
            if s:
                yield Signal(pid, ts, s.group(1), s.group(2))
            continue
        r = _RESUMED.match(body)
        if r:
            start = pending.pop(pid, None)
            if start is None:
                continue
            call = _finish(pid, start[0], r.group(1), start[2] + r.group(2))
            if call:
                yield call
            continue
        c = _CALL.match(body)
        if not c:
            continue
        name, rest = c.group(1), c.group(2)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = (ts, name, rest[: -len("<unfinished ...>")].rstrip())
            continue
        call = _finish(pid, ts, name, rest)
        if call:
            yield call
    for pid, (ts, name, rest) in pending.items():
        # the process died inside the call (killed): keep the attempt
        yield Syscall(pid, ts, name, split_args(rest), "?")
