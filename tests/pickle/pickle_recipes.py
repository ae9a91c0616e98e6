"""Readable recipes that generate pickle samples for the scanner tests (not a test module).

Samples are never committed as blobs: each is produced here either by

* :class:`Asm`, a tiny pickle assembler whose method names follow the opcode names of
  :mod:`pickletools` (``asm(2).global_("os", "system").text("id").tuple1().reduce().stop()``), or
* :func:`pickle.dumps` of a :class:`Reduce` object, whose ``__reduce__`` returns the callable and
  arguments given to it (the way real-world malicious models are usually made).

Payloads are harmless: they create a *marker* file in pytest's ``tmp_path`` (``touch`` through a
shell or a program, or ``open(marker, "w")`` through Python source), so a test can prove that
the real loader executed them before asserting that the scanner reports them.
"""

from __future__ import annotations

import cProfile
import enum
import os
import pickle
import shlex
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelshield import Finding, ScanResult, Severity

# ---------------------------------------------------------------------------------- payloads


def shell_touch(marker: Path) -> str:
    """A shell command that creates ``marker``."""
    return f"touch {shlex.quote(str(marker))}"


def py_touch(marker: Path) -> str:
    """Python source (a statement and an expression) that creates ``marker``."""
    return f"open({str(marker)!r}, 'w').close()"


def argv_touch(marker: Path) -> list[str]:
    """An argument vector that creates ``marker`` without a shell."""
    return ["touch", str(marker)]


def wait_for(marker: Path, timeout: float = 10.0) -> bool:
    """True once ``marker`` exists (payloads started in a child process finish later)."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------------------------- __reduce__


class Reduce:
    """An object that pickles as ``func(*args)``: ``pickle.loads`` calls ``func``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args

    def __call__(self, *args: Any) -> Any:
        # Only so that pickle accepts a Reduce as the callable of another Reduce (the result
        # of one call is called by the next REDUCE); never called in the test process.
        raise TypeError("a recipe, not a callable")


# ---------------------------------------------------------------------------------- assembler


class Asm:
    """A pickle assembler. Each method appends one opcode (named as in :mod:`pickletools`).

    Text and tuple helpers (:meth:`text`, :meth:`tuple_n`) choose the opcode the given protocol
    allows, so one recipe yields a valid pickle at every protocol.
    """

    def __init__(self, protocol: int = 2) -> None:
        self.protocol = protocol
        self.out = bytearray()
        if protocol >= 2:
            self.out += b"\x80" + bytes([protocol])  # PROTO

    def raw(self, data: bytes) -> Asm:
        self.out += data
        return self

    # -- stack and memo
    def mark(self) -> Asm:
        return self.raw(b"(")

    def pop(self) -> Asm:
        return self.raw(b"0")

    def dup(self) -> Asm:
        return self.raw(b"2")

    def put(self, idx: int) -> Asm:
        if self.protocol == 0:
            return self.raw(b"p%d\n" % idx)  # PUT
        return self.raw(b"q" + bytes([idx]))  # BINPUT

    def get(self, idx: int) -> Asm:
        if self.protocol == 0:
            return self.raw(b"g%d\n" % idx)  # GET
        return self.raw(b"h" + bytes([idx]))  # BINGET

    def memoize(self) -> Asm:
        assert self.protocol >= 4
        return self.raw(b"\x94")

    # -- constants
    def none(self) -> Asm:
        return self.raw(b"N")

    def int_(self, n: int) -> Asm:
        if self.protocol == 0:
            return self.raw(b"I%d\n" % n)  # INT
        return self.raw(b"J" + struct.pack("<i", n))  # BININT

    def string(self, s: str) -> Asm:
        """STRING: a Python 2 ``str`` (protocol 0 syntax, accepted at every protocol)."""
        return self.raw(b"S" + repr(s).encode("ascii") + b"\n")

    def unicode(self, s: str) -> Asm:
        """BINUNICODE (protocol 1+)."""
        data = s.encode("utf-8", "surrogatepass")
        return self.raw(b"X" + struct.pack("<I", len(data)) + data)

    def text(self, s: str) -> Asm:
        """A ``str`` constant with the opcode the protocol allows (UNICODE or BINUNICODE)."""
        if self.protocol == 0:
            # UNICODE is one raw-unicode-escape line: escape what would end or corrupt it,
            # exactly as pickle's own protocol-0 writer does.
            for ch in "\\\0\n\r\x1a":
                s = s.replace(ch, f"\\u{ord(ch):04x}")
            return self.raw(b"V" + s.encode("raw-unicode-escape") + b"\n")
        return self.unicode(s)

    def bytes_(self, data: bytes) -> Asm:
        """A ``bytes`` constant: BINBYTES at protocol 3+, else ``_codecs.encode(text, 'latin1')``
        (how pickle itself writes bytes for protocols 0-2)."""
        if self.protocol >= 3:
            return self.raw(b"B" + struct.pack("<I", len(data)) + data)  # BINBYTES
        return self.call("_codecs", "encode", data.decode("latin-1"), "latin1")

    # -- containers
    def empty_tuple(self) -> Asm:
        return self.raw(b")")

    def tuple_(self) -> Asm:
        return self.raw(b"t")

    def tuple1(self) -> Asm:
        return self.raw(b"\x85")

    def tuple2(self) -> Asm:
        return self.raw(b"\x86")

    def tuple3(self) -> Asm:
        return self.raw(b"\x87")

    def tuple_n(self, items: Sequence[Callable[[Asm], object]]) -> Asm:
        """A tuple of the items pushed by ``items`` (TUPLEn at protocol 2+, MARK/TUPLE below)."""
        if self.protocol >= 2 and 1 <= len(items) <= 3:
            for push in items:
                push(self)
            return self.raw({1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(items)])  # TUPLEn
        self.mark()
        for push in items:
            push(self)
        return self.tuple_()

    def args(self, *texts: str) -> Asm:
        """A tuple of ``str`` constants, ready for REDUCE."""
        return self.tuple_n([_text(t) for t in texts])

    def empty_dict(self) -> Asm:
        return self.raw(b"}")

    def dict_(self) -> Asm:
        return self.raw(b"d")

    def setitem(self) -> Asm:
        return self.raw(b"s")

    def empty_list(self) -> Asm:
        return self.raw(b"]")

    def list_(self) -> Asm:
        return self.raw(b"l")

    def append(self) -> Asm:
        return self.raw(b"a")

    # -- globals and calls
    def global_(self, module: str, name: str) -> Asm:
        return self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def stack_global(self, module: str, name: str) -> Asm:
        """Push ``module`` and ``name`` as strings, then STACK_GLOBAL (protocol 4+)."""
        assert self.protocol >= 4
        return self.unicode(module).unicode(name).raw(b"\x93")

    def reduce(self) -> Asm:
        return self.raw(b"R")

    def build(self) -> Asm:
        return self.raw(b"b")

    def inst(self, module: str, name: str) -> Asm:
        return self.raw(b"i" + module.encode() + b"\n" + name.encode() + b"\n")

    def obj(self) -> Asm:
        return self.raw(b"o")

    def newobj(self) -> Asm:
        return self.raw(b"\x81")

    def newobj_ex(self) -> Asm:
        return self.raw(b"\x92")

    def call(self, module: str, name: str, *texts: str) -> Asm:
        """``module.name(*texts)`` with GLOBAL and REDUCE."""
        return self.global_(module, name).args(*texts).reduce()

    def stop(self) -> Asm:
        return self.raw(b".")

    def bytes(self) -> bytes:
        return bytes(self.out)


def asm(protocol: int = 2) -> Asm:
    return Asm(protocol)


def _text(s: str) -> Callable[[Asm], object]:
    return lambda a: a.text(s)


# ---------------------------------------------------------------------------------- loaders


def load_all(data: bytes) -> list[Any]:
    """What a loader reading a stream to its end does: ``pickle.load`` until EOF."""
    import io

    stream = io.BytesIO(data)
    out: list[Any] = []
    while stream.tell() < len(data):
        out.append(pickle.load(stream))
    return out


# ---------------------------------------------------------------------------------- assertions


def describe(result: ScanResult) -> str:
    lines = [
        f"  {f.rule_id} {f.severity.label}: {f.message} | {f.evidence}" for f in result.findings
    ]
    return "\n".join(lines) or "  (no findings)"


def text_of(f: Finding) -> str:
    return f"{f.message} {f.evidence or ''} {f.location.member or ''}"


def flagged(
    result: ScanResult,
    target: str,
    rules: Iterable[str] = ("MS101",),
    *,
    threshold: Severity = Severity.HIGH,
) -> list[Finding]:
    """Findings at or above ``threshold`` with one of ``rules`` that name ``target``."""
    wanted = set(rules)
    return [
        f
        for f in result.findings
        if f.severity >= threshold and f.rule_id in wanted and target in text_of(f)
    ]


def assert_flagged(
    result: ScanResult,
    target: str,
    rules: Iterable[str] = ("MS101",),
    *,
    threshold: Severity = Severity.HIGH,
) -> list[Finding]:
    """The scan is not clean and a finding of one of ``rules`` names ``target``."""
    rules = tuple(rules)
    assert not result.is_clean(), f"scan is clean:\n{describe(result)}"
    hits = flagged(result, target, rules, threshold=threshold)
    assert hits, (
        f"no {'/'.join(rules)} finding >= {threshold.label} names {target!r}:\n" + describe(result)
    )
    return hits


# ---------------------------------------------------------------------------------- catalogue

ALL_PROTOCOLS = (0, 1, 2, 3, 4, 5)

Builder = Callable[[Path, int], bytes]
"""``build(marker, protocol)`` returns pickle bytes whose loading creates ``marker``."""


@dataclass(frozen=True)
class Recipe:
    """One malicious technique: how to build it, and what the scanner must name."""

    name: str
    build: Builder
    target: str
    """Text the reporting finding must contain (message or evidence): the real callable."""
    protocols: tuple[int, ...] = ALL_PROTOCOLS
    rules: tuple[str, ...] = ("MS101",)
    """Rule IDs acceptable for the finding that names ``target``."""
    child_process: bool = False
    """The payload starts a program that creates the marker a moment later."""
    note: str = ""


def _dumps(func: Any, *args: Any) -> Builder:
    """``pickle.dumps`` of an object reducing to ``func(*args)``; args may use the marker."""

    def build(marker: Path, protocol: int) -> bytes:
        real = tuple(a(marker) if callable(a) and not isinstance(a, Reduce) else a for a in args)
        return pickle.dumps(Reduce(func, *real), protocol=protocol)

    return build


def _global_call(module: str, name: str, payload: Callable[[Path], str]) -> Builder:
    """``GLOBAL module name`` + ``(payload,)`` + REDUCE, assembled by hand."""

    def build(marker: Path, protocol: int) -> bytes:
        return asm(protocol).call(module, name, payload(marker)).stop().bytes()

    return build


def _import_module(name: str) -> Callable[[Asm], object]:
    return lambda a: a.call("importlib", "import_module", name)


def _getattr_import_module(marker: Path, protocol: int) -> bytes:
    # getattr(importlib.import_module('os'), 'system')('touch ...')
    a = asm(protocol).global_("builtins", "getattr")
    a.tuple_n([_import_module("os"), _text("system")]).reduce()
    return a.args(shell_touch(marker)).reduce().stop().bytes()


def _getattr_dunder_import(marker: Path, protocol: int) -> bytes:
    # getattr(__import__('os'), 'system')('touch ...')
    a = asm(protocol).global_("builtins", "getattr")
    a.tuple_n([lambda x: x.call("builtins", "__import__", "os"), _text("system")]).reduce()
    return a.args(shell_touch(marker)).reduce().stop().bytes()


def _attrgetter(marker: Path, protocol: int) -> bytes:
    # operator.attrgetter('system')(importlib.import_module('os'))('touch ...')
    a = asm(protocol).call("operator", "attrgetter", "system")
    a.tuple_n([_import_module("os")]).reduce()
    return a.args(shell_touch(marker)).reduce().stop().bytes()


def _methodcaller(marker: Path, protocol: int) -> bytes:
    # operator.methodcaller('system', 'touch ...')(importlib.import_module('os'))
    a = asm(protocol).call("operator", "methodcaller", "system", shell_touch(marker))
    return a.tuple_n([_import_module("os")]).reduce().stop().bytes()


def _partial(marker: Path, protocol: int) -> bytes:
    # functools.partial(os.system, 'touch ...')()
    a = asm(protocol).global_("functools", "partial")
    a.tuple_n([lambda x: x.global_("os", "system"), _text(shell_touch(marker))]).reduce()
    return a.tuple_n([]).reduce().stop().bytes()


def _resolve_name(marker: Path, protocol: int) -> bytes:
    # pkgutil.resolve_name('os:system')('touch ...')
    a = asm(protocol).call("pkgutil", "resolve_name", "os:system")
    return a.args(shell_touch(marker)).reduce().stop().bytes()


def _sys_modules_getitem(marker: Path, protocol: int) -> bytes:
    # getattr(operator.getitem(sys.modules, 'os'), 'system')('touch ...')
    def os_module(a: Asm) -> None:
        a.global_("operator", "getitem")
        a.tuple_n([lambda x: x.global_("sys", "modules"), _text("os")]).reduce()

    a = asm(protocol).global_("builtins", "getattr")
    a.tuple_n([os_module, _text("system")]).reduce()
    return a.args(shell_touch(marker)).reduce().stop().bytes()


def _dotted_stack_global(module: str, name: str) -> Builder:
    # Protocol 4+ resolves a dotted name attribute by attribute: subprocess.os is the os module.
    def build(marker: Path, protocol: int) -> bytes:
        a = asm(protocol).stack_global(module, name)
        return a.args(shell_touch(marker)).reduce().stop().bytes()

    return build


def _memo(marker: Path, protocol: int) -> bytes:
    # The callable is stored in the memo, dropped, and fetched back just before the call.
    a = asm(protocol).global_("os", "system").put(7).pop()
    a.text("decoy").pop()
    return a.get(7).args(shell_touch(marker)).reduce().stop().bytes()


def _memoize(marker: Path, protocol: int) -> bytes:
    a = asm(protocol).stack_global("posix", "system").memoize().pop()
    return a.get(0).args(shell_touch(marker)).reduce().stop().bytes()


def _inst(marker: Path, protocol: int) -> bytes:
    # INST: MARK args INST module name -> module.name(*args) (os.system is not a class: called)
    return asm(protocol).mark().text(shell_touch(marker)).inst("os", "system").stop().bytes()


def _obj(marker: Path, protocol: int) -> bytes:
    # OBJ: MARK callable args OBJ -> callable(*args)
    a = asm(protocol).mark().global_("os", "system").text(shell_touch(marker))
    return a.obj().stop().bytes()


def _dict_of(a: Asm, pairs: Sequence[tuple[str, Callable[[Asm], object]]]) -> Asm:
    a.mark()
    for key, push in pairs:
        a.text(key)
        push(a)
    return a.dict_()


def _instance_setstate(marker: Path, protocol: int) -> bytes:
    # ns = types.SimpleNamespace(); BUILD {'__setstate__': os.system} sets an *instance*
    # attribute; the second BUILD finds it with getattr(ns, '__setstate__') and calls it.
    a = asm(protocol).global_("types", "SimpleNamespace").tuple_n([]).reduce()
    _dict_of(a, [("__setstate__", lambda x: x.global_("os", "system"))]).build()
    return a.text(shell_touch(marker)).build().stop().bytes()


def _compile_exec(marker: Path, protocol: int) -> bytes:
    # exec(compile("open(...)", "<model>", "exec"))
    a = asm(protocol).global_("builtins", "exec")
    a.tuple_n([lambda x: x.call("builtins", "compile", py_touch(marker), "<model>", "exec")])
    return a.reduce().stop().bytes()


def _nested(inner: Builder) -> Builder:
    # pickle.loads(b'<inner pickle>'): bytes are _codecs.encode(text, 'latin1') below protocol 3
    def build(marker: Path, protocol: int) -> bytes:
        return pickle.dumps(Reduce(pickle.loads, inner(marker, 2)), protocol=protocol)

    return build


def _nested_base64(marker: Path, protocol: int) -> bytes:
    import base64

    inner = base64.b64encode(pickle.dumps(Reduce(os.system, shell_touch(marker)), 2)).decode()
    a = asm(protocol).global_("pickle", "loads")
    a.tuple_n([lambda x: x.call("base64", "b64decode", inner)]).reduce()
    return a.stop().bytes()


def _nested_zlib(marker: Path, protocol: int) -> bytes:
    import zlib

    inner = zlib.compress(pickle.dumps(Reduce(os.system, shell_touch(marker)), 2))
    return pickle.dumps(Reduce(pickle.loads, Reduce(zlib.decompress, inner)), protocol=protocol)


def marshal_code(source: str) -> bytes:
    import marshal

    return marshal.dumps(compile(source, "<model>", "exec"))


def _marshal_function(marker: Path, protocol: int) -> bytes:
    # types.FunctionType(marshal.loads(<code object bytes>), {})()
    code = marshal_code(py_touch(marker))
    a = asm(protocol).global_("types", "FunctionType")
    a.tuple_n(
        [
            lambda x: x.global_("marshal", "loads").tuple_n([lambda y: y.bytes_(code)]).reduce(),
            lambda x: _dict_of(x, []),
        ]
    ).reduce()
    return a.tuple_n([]).reduce().stop().bytes()


def _timeit(marker: Path, protocol: int) -> bytes:
    import timeit

    return pickle.dumps(
        Reduce(timeit.timeit, "pass", py_touch(marker), time.perf_counter, 1), protocol=protocol
    )


def _interpreter_runsource(marker: Path, protocol: int) -> bytes:
    # code.InteractiveInterpreter.runsource(code.InteractiveInterpreter(), "open(...)")
    a = asm(protocol).stack_global("code", "InteractiveInterpreter.runsource")
    a.tuple_n(
        [
            lambda x: x.global_("code", "InteractiveInterpreter").tuple_n([]).reduce(),
            _text(py_touch(marker)),
        ]
    )
    return a.reduce().stop().bytes()


def _commands_getoutput(marker: Path, protocol: int) -> bytes:
    # Python 2 name: fix_imports maps commands.getoutput to subprocess.getoutput (protocol < 3)
    return asm(protocol).call("commands", "getoutput", shell_touch(marker)).stop().bytes()


PROVEN: tuple[Recipe, ...] = (
    Recipe("os.system", _dumps(os.system, shell_touch), "os.system"),
    Recipe("posix.system-global", _global_call("posix", "system", shell_touch), "os.system"),
    Recipe("os.system-global", _global_call("os", "system", shell_touch), "os.system"),
    Recipe(
        "subprocess.Popen",
        _dumps(subprocess.Popen, argv_touch),
        "subprocess.Popen",
        child_process=True,
    ),
    Recipe("subprocess.run", _dumps(subprocess.run, argv_touch), "subprocess.run"),
    Recipe(
        "subprocess.check_output",
        _dumps(subprocess.check_output, argv_touch),
        "subprocess.check_output",
    ),
    Recipe(
        "subprocess.getoutput", _dumps(subprocess.getoutput, shell_touch), "subprocess.getoutput"
    ),
    Recipe(
        "commands.getoutput-py2-name",
        _commands_getoutput,
        "subprocess.getoutput",
        protocols=(0, 1, 2),
    ),
    Recipe("builtins.eval", _dumps(eval, py_touch), "builtins.eval"),
    Recipe("builtins.exec", _dumps(exec, py_touch), "builtins.exec"),
    Recipe("compile+exec", _compile_exec, "builtins.exec"),
    Recipe(
        "__builtin__.eval-py2-name",
        _global_call("__builtin__", "eval", py_touch),
        "builtins.eval",
        protocols=(0, 1, 2),
    ),
    Recipe("INST", _inst, "os.system"),
    Recipe("OBJ", _obj, "os.system"),
    Recipe("BUILD-instance-__setstate__", _instance_setstate, "os.system"),
    Recipe("getattr(import_module)", _getattr_import_module, "os.system"),
    Recipe("getattr(__import__)", _getattr_dunder_import, "os.system"),
    Recipe("operator.attrgetter", _attrgetter, "os.system"),
    Recipe("operator.methodcaller", _methodcaller, "os.system"),
    Recipe("functools.partial", _partial, "os.system"),
    Recipe("pkgutil.resolve_name", _resolve_name, "os.system"),
    Recipe("sys.modules-getitem", _sys_modules_getitem, "os.system"),
    Recipe(
        "STACK_GLOBAL-dotted-subprocess.os.system",
        _dotted_stack_global("subprocess", "os.system"),
        "os.system",
        protocols=(4, 5),
    ),
    Recipe(
        "STACK_GLOBAL-dotted-argparse._os.system",
        _dotted_stack_global("argparse", "_os.system"),
        "os.system",
        protocols=(4, 5),
        rules=("MS101", "MS102"),
        note="argparse is allowlisted for argparse.Namespace; argparse._os is the os module",
    ),
    Recipe(
        "STACK_GLOBAL-dotted-uuid.os.system",
        _dotted_stack_global("uuid", "os.system"),
        "os.system",
        protocols=(4, 5),
        rules=("MS101", "MS102"),
        note="uuid.UUID is allowlisted; uuid.os is the os module",
    ),
    Recipe("memo-PUT-GET", _memo, "os.system"),
    Recipe("memo-MEMOIZE", _memoize, "os.system", protocols=(4, 5)),
    Recipe("nested-pickle.loads", _nested(_dumps(os.system, shell_touch)), "os.system"),
    Recipe("nested-base64", _nested_base64, "os.system"),
    Recipe("nested-zlib", _nested_zlib, "os.system"),
    Recipe(
        "marshal+FunctionType",
        _marshal_function,
        "marshal.loads",
        rules=("MS101", "MS107"),
    ),
    Recipe("timeit.timeit", _timeit, "timeit.timeit"),
    Recipe("cProfile.run", _dumps(cProfile.run, py_touch), "cProfile.run"),
    Recipe(
        "code.InteractiveInterpreter.runsource",
        _interpreter_runsource,
        "code.InteractiveInterpreter",
        protocols=(4, 5),
    ),
)


# ------------------------------------------------------------------ detection-only techniques


def _newobj(opcode: str) -> Builder:
    # cls.__new__(cls, *args): Popen.__new__ is object.__new__, which runs nothing (the program
    # starts in __init__, which NEWOBJ does not call). The class is still a dangerous reference.
    def build(marker: Path, protocol: int) -> bytes:
        a = asm(protocol).global_("subprocess", "Popen")
        a.tuple_n([lambda x: x.empty_list().text("touch").append().text(str(marker)).append()])
        if opcode == "NEWOBJ":
            return a.newobj().stop().bytes()
        return a.empty_dict().newobj_ex().stop().bytes()

    return build


def _socket_connect(marker: Path, protocol: int) -> bytes:
    a = asm(protocol).global_("socket", "create_connection")
    a.tuple_n([lambda x: x.tuple_n([_text("192.0.2.1"), lambda y: y.int_(9)])])
    return a.reduce().stop().bytes()


DETECTION_ONLY: tuple[Recipe, ...] = (
    Recipe(
        "nt.system-alias",
        _global_call("nt", "system", shell_touch),
        "os.system",
        note="the nt module only exists on Windows",
    ),
    Recipe(
        "NEWOBJ-subprocess.Popen",
        _newobj("NEWOBJ"),
        "subprocess.Popen",
        protocols=(2, 3, 4, 5),
        note="Popen.__new__ starts nothing",
    ),
    Recipe(
        "NEWOBJ_EX-subprocess.Popen",
        _newobj("NEWOBJ_EX"),
        "subprocess.Popen",
        protocols=(4, 5),
        note="Popen.__new__ starts nothing",
    ),
    Recipe(
        "pdb.run",
        _global_call("pdb", "run", py_touch),
        "pdb.run",
        note="pdb.run starts an interactive debugger that waits on stdin",
    ),
    Recipe(
        "ctypes.CDLL",
        _global_call("ctypes", "CDLL", lambda m: "libc.so.6"),
        "ctypes.CDLL",
        note="loads native code",
    ),
    Recipe(
        "socket.create_connection",
        _socket_connect,
        "socket.create_connection",
        note="would connect out (TEST-NET-1 address)",
    ),
    Recipe(
        "webbrowser.open",
        _global_call("webbrowser", "open", lambda m: "https://example.invalid/"),
        "webbrowser.open",
        note="would launch a browser",
    ),
)


# ------------------------------------------------------------------ benign user-defined types
# Importable (as ``pickle_recipes``) so that pickles reference them by name, like a user's own
# model classes. They are not on the built-in allowlist.


@dataclass
class TrainingConfig:
    learning_rate: float = 0.1
    epochs: int = 3
    layers: tuple[int, ...] = (8, 4)


class Color(enum.Enum):
    RED = 1
    GREEN = 2


def assert_clean(result: ScanResult, threshold: Severity = Severity.MEDIUM) -> None:
    """Complete coverage and no finding at or above ``threshold`` (default: none >= MEDIUM)."""
    assert result.complete, f"incomplete coverage: {result.coverage}\n{describe(result)}"
    assert not result.at_or_above(threshold), describe(result)


def mutate(data: bytes, edits: Iterable[tuple[int, int, str]]) -> bytes:
    """``data`` with each edit ``(position, byte, how)`` applied in turn: ``s`` sets the byte at
    the position (taken modulo the length), ``i`` inserts one there, ``d`` deletes it."""
    buf = bytearray(data)
    for pos, value, how in edits:
        i = pos % (len(buf) or 1)
        if how == "s" and buf:
            buf[i] = value
        elif how == "i":
            buf.insert(i, value)
        elif buf:
            del buf[i]
    return bytes(buf)
