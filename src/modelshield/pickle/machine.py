"""The symbolic pickle machine: runs every opcode of protocols 0-5 on symbolic values.

It mirrors CPython's unpickler step by step (stack, mark stack, memo, protocol-dependent name
fixing) but never imports or calls anything. Calls are recorded as events tied to the callable
they really invoke, seeing through the indirections attackers use to hide a target from
denylists (``getattr``, ``operator.attrgetter``/``methodcaller``, ``functools.partial``,
``importlib.import_module``, ``sys.modules[...]``, instance-level ``__setstate__``, bytes decoded
by base64/zlib/codecs and handed to ``pickle.loads``...). A small set of pure functions is
*emulated* on constants for that purpose; nothing else is evaluated.

Every resource is bounded (see :class:`Limits`): hostile input ends in a recorded error or limit,
never a crash, hang or memory blow-up.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import codecs
import lzma
import os
import re
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from modelshield.pickle.names import canonical, fix_import, is_identifier_path
from modelshield.pickle.opcodes import (
    HIGHEST_PROTOCOL,
    OPCODES,
    ArgKind,
    Buffer,
    Decoder,
    PickleFormatError,
    parse_line_int,
)
from modelshield.pickle.trace import Event, EventKind, LimitKind, PickleAnalysis, Stream
from modelshield.pickle.values import (
    EAGER_BYTES,
    AttrGetter,
    CodeObject,
    Const,
    DictV,
    ItemGetter,
    MethodCaller,
    Namespace,
    Obj,
    Partial,
    Persistent,
    Ref,
    Seq,
    Unknown,
    Value,
    is_dunder_name,
    render,
    render_call,
)


@dataclass(frozen=True)
class Limits:
    """Hard bounds on one analysis. Reaching one stops the stream and is reported."""

    max_opcodes: int = 50_000_000
    max_stack: int = 1_000_000
    max_memo: int = 5_000_000
    max_events: int = 200_000
    max_nesting: int = 4
    """Depth of pickles nested in pickles (``pickle.loads(b'...')``) that are followed."""
    max_decoded: int = 64 << 20
    """Largest output of an emulated decoder (base64, zlib, ...) or nested payload, in bytes."""
    max_seconds: float = 120.0


class _Limit(Exception):
    def __init__(self, kind: LimitKind) -> None:
        super().__init__(kind.value)
        self.kind = kind


class _Broken(Exception):
    """The stream breaks the format at an opcode (what CPython raises as UnpicklingError)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


KeepFilter = Callable[[Event], bool]
"""Returns False for events the caller does not need stored (e.g. calls of allowlisted names)."""

# Loaders that deserialize bytes handed to them: name -> kind of payload.
_LOADERS = {
    "pickle.loads": "pickle",
    "pickle.load": "pickle",
    "pickle.Unpickler": "pickle",
    "pickle._loads": "pickle",
    "pickle._load": "pickle",
    "pickle._Unpickler": "pickle",
    "dill.loads": "pickle",
    "dill.load": "pickle",
    "dill._dill.loads": "pickle",
    "cloudpickle.loads": "pickle",
    "cloudpickle.load": "pickle",
    "joblib.load": "pickle",
    "joblib.numpy_pickle.load": "pickle",
    "pandas.read_pickle": "pickle",
    "torch.load": "unknown",
    "torch.serialization.load": "unknown",
    "numpy.load": "unknown",
    "numpy.lib.npyio.load": "unknown",
    "marshal.loads": "marshal",
    "marshal.load": "marshal",
    "lib2to3.pgen2.grammar.Grammar.loads": "pickle",
}

_B64ISH: dict[str, Callable[[bytes], bytes]] = {
    "base64.b64decode": base64.b64decode,
    "base64.standard_b64decode": base64.standard_b64decode,
    "base64.urlsafe_b64decode": base64.urlsafe_b64decode,
    "base64.decodebytes": base64.decodebytes,
    "base64.b32decode": base64.b32decode,
    "base64.b16decode": base64.b16decode,
    "base64.b85decode": base64.b85decode,
    "base64.a85decode": base64.a85decode,
    "binascii.a2b_base64": binascii.a2b_base64,
    "binascii.unhexlify": binascii.unhexlify,
    "binascii.a2b_hex": binascii.a2b_hex,
    "builtins.bytes.fromhex": lambda b: bytes.fromhex(b.decode("ascii")),
}

_OBJECT = "builtins.object"
# dill._dill._load_type names -> the builtin they return (others resolve to types.<Name>).
_DILL_TYPES = {
    n: f"builtins.{n}"
    for n in (
        "bool",
        "bytearray",
        "bytes",
        "complex",
        "dict",
        "float",
        "frozenset",
        "int",
        "list",
        "object",
        "range",
        "set",
        "slice",
        "str",
        "tuple",
        "type",
        "memoryview",
        "property",
        "staticmethod",
        "classmethod",
        "super",
        "zip",
        "map",
        "filter",
        "enumerate",
        "reversed",
    )
}
_DILL_TYPES.update(
    {
        "NoneType": "builtins.NoneType",
        "EllipsisType": "builtins.Ellipsis",
        "NotImplementedType": "builtins.NotImplemented",
    }
)
_DILL_SAFE_REPR = re.compile(r"^(?:range\(-?\d+, -?\d+(?:, -?\d+)?\)|Ellipsis|NotImplemented)$")
_RECONSTRUCTORS = {
    "copyreg._reconstructor",
    "copyreg.__newobj__",
    "copyreg.__newobj_ex__",
    # scikit-learn's Cython newObj(cls) helpers: return cls.__new__(cls).
    "sklearn.neighbors._kd_tree.newObj",
    "sklearn.neighbors._ball_tree.newObj",
    "sklearn.metrics._dist_metrics.newObj",
}

_DECOMPRESSORS = {"zlib.decompress", "bz2.decompress", "lzma.decompress", "gzip.decompress"}


_EMULATED = frozenset(
    {
        "builtins.getattr",
        "operator.attrgetter",
        "operator.itemgetter",
        "operator.methodcaller",
        "functools.partial",
        "importlib.import_module",
        "importlib.__import__",
        "builtins.__import__",
        "pkgutil.resolve_name",
        "pydoc.locate",
        "operator.getitem",
        "builtins.dict.get",
        "builtins.dict.__getitem__",
        "builtins.vars",
        "builtins.globals",
        "builtins.locals",
        "dill._dill._load_type",
        "dill._dill._import_module",
        "dill._dill._get_attr",
        "dill._dill._create_array",
        "codecs.decode",
        "codecs.encode",
        "builtins.str.encode",
        "builtins.bytes",
        "builtins.bytearray",
        "io.BytesIO",
        "builtins.eval",
        *_RECONSTRUCTORS,
        *_LOADERS,
        *_B64ISH,
        *_DECOMPRESSORS,
    }
)
"""Every name :meth:`_Run.emulate` computes a result for (any other call gives an Obj)."""


def _bounded_decompress(name: str, data: bytes, limit: int) -> bytes:
    if name == "zlib.decompress":
        d = zlib.decompressobj()
        out = d.decompress(data, limit + 1)
    elif name == "gzip.decompress":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(data, limit + 1)
    elif name == "bz2.decompress":
        out = bz2.BZ2Decompressor().decompress(data, limit + 1)
    else:
        out = lzma.LZMADecompressor().decompress(data, limit + 1)
    if len(out) > limit:
        raise _Limit(LimitKind.DECODED_SIZE)
    return out


class _Run:
    """The state of one pickle stream being analysed."""

    def __init__(self, machine: Machine, buf: Buffer, start: int, depth: int) -> None:
        self.m = machine
        self.dec = Decoder(buf, start)
        self.start = start
        self.depth = depth
        self.stack: list[Value] = []
        self.metastack: list[list[Value]] = []
        self.marked = 0
        """Values held in the lists on the mark stack (kept up to date for the stack bound)."""
        self.memo: dict[int, Value] = {}
        self.proto = 0
        self.events: list[Event] = []
        self.dropped = 0
        self.index = 0
        self.op_pos = start
        self.op_code = 0
        self.result: Value | None = None

    # ------------------------------------------------------------------ stack helpers
    def push(self, v: Value) -> None:
        # The stack grows by at most one value per opcode; run() checks its size periodically.
        self.stack.append(v)

    def check_stack(self) -> None:
        """Periodic bounds on what grows at most one entry per opcode: stack, marks, memo."""
        if len(self.memo) > self.m.limits.max_memo:
            raise _Limit(LimitKind.MEMO)
        limit = self.m.limits.max_stack
        if len(self.metastack) > limit:
            raise _Limit(LimitKind.STACK)
        if len(self.stack) + len(self.metastack) + self.marked > limit:
            raise _Limit(LimitKind.STACK)

    def pop(self) -> Value:
        if not self.stack:
            raise _Broken("unpickling stack underflow")
        return self.stack.pop()

    def top(self) -> Value:
        if not self.stack:
            raise _Broken("unpickling stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[Value]:
        if not self.metastack:
            raise _Broken("could not find MARK")
        items = self.stack
        self.stack = self.metastack.pop()
        self.marked -= len(self.stack)
        return items

    # ------------------------------------------------------------------ events
    def emit(self, kind: EventKind, **kw: object) -> Event:
        ev = Event(
            kind,
            self.op_pos - self.m.base,
            self.index,
            _NAMES[self.op_code],
            **kw,  # type: ignore[arg-type]
        )
        if self.m.keep is not None and not self.m.keep(ev):
            self.dropped += 1
            return ev
        self.events.append(ev)
        if len(self.events) > self.m.limits.max_events:
            raise _Limit(LimitKind.EVENTS)
        return ev

    # ------------------------------------------------------------------ globals
    def global_ref(self, module: str, name: str) -> Value:
        module, name = fix_import(module, name, self.proto)
        dotted = canonical(f"{module}.{name}")
        self.emit(EventKind.IMPORT, name=dotted, evidence=f"{module}.{name}")
        return _namespace_of(dotted) or Ref(dotted)

    # ------------------------------------------------------------------ calls
    def call(
        self,
        func: Value,
        args: list[Value],
        kwargs: DictV | None,
        via: str | None,
        *,
        new_only: bool = False,
    ) -> Value:
        """Record a call of ``func`` and return a symbolic result."""
        if type(func) is not Ref:  # the common case first: a named callable
            return self._call_other(func, args, kwargs, via, new_only)
        name = func.name
        if name == "dill._dill._eval_repr" and len(args) == 1 and isinstance(args[0], Const):
            text = args[0].as_str()
            if text is not None and _DILL_SAFE_REPR.match(text):
                # dill writes range/Ellipsis as their repr; eval of exactly these literals
                # constructs them and nothing else.
                built = "builtins.range" if text.startswith("range") else f"builtins.{text}"
                self.emit(
                    EventKind.CALL, name=built, evidence=f"{name}({text!r})", via=via, origin=name
                )
                return Obj(built, text)
        quiet = self.m.quiet_names.get(name)
        if quiet is None:
            m = self.m
            quiet = m.quiet_names[name] = (
                m.quiet is not None and m.keep is not None and m.quiet(name)
            )
        if quiet:
            # Allowlisted: the event would not be kept; neither render nor record it.
            self.dropped += 1
            return self.emulate(name, args, kwargs, f"{name}(...)")
        evidence = render_call(name, args, kwargs)
        self.emit(EventKind.CALL, name=name, evidence=evidence, via=via, new_only=new_only)
        return self.emulate(name, args, kwargs, evidence)

    def _call_other(
        self, func: Value, args: list[Value], kwargs: DictV | None, via: str | None, new_only: bool
    ) -> Value:
        """:meth:`call` of anything but a plain named callable."""
        if isinstance(func, Partial):
            via2 = "functools.partial" if via is None else f"{via} -> functools.partial"
            return self.call(func.func, func.args + args, kwargs, via2)
        if isinstance(func, AttrGetter):
            return _getattr_path(args[0], func.path) if args else Unknown("attrgetter()")
        if isinstance(func, ItemGetter):
            return _getitem(args[0], func.key) if args else Unknown("itemgetter()")
        if isinstance(func, MethodCaller):
            if not args:
                return Unknown("methodcaller()")
            target = _getattr_path(args[0], func.method)
            via2 = "operator.methodcaller" if via is None else f"{via} -> operator.methodcaller"
            return self.call(target, func.args, kwargs, via2)
        if isinstance(func, Namespace):
            ref = Ref("sys.modules" if func.prefix is None else func.prefix)
            return self.call(ref, args, kwargs, via, new_only=new_only)
        desc = render(func)
        self.emit(
            EventKind.CALL,
            name=None,
            evidence=render_call(desc, args, kwargs),
            via=via,
        )
        return Obj(None, render_call(desc, args, kwargs))

    def instantiate(self, cls: Value, args: list[Value], kwargs: DictV | None, via: str) -> Value:
        """``cls.__new__(cls, *args)`` (NEWOBJ, copyreg): recorded as a call of the class."""
        return self.call(cls, args, kwargs, via, new_only=True)

    def emulate(self, name: str, args: list[Value], kwargs: DictV | None, evidence: str) -> Value:
        """Compute the result of the few pure functions needed to see through indirection."""
        if name not in _EMULATED:
            return Obj(name, evidence, args=args[:4])
        a0 = args[0] if args else None
        s0 = a0.as_str() if isinstance(a0, Const) else None
        if name == "builtins.getattr":
            attr = args[1].as_str() if len(args) >= 2 and isinstance(args[1], Const) else None
            return _getattr_path(args[0], attr) if attr else Unknown("getattr result")
        if name == "operator.attrgetter" and s0 is not None and len(args) == 1:
            return AttrGetter(s0)
        if name == "operator.itemgetter" and a0 is not None and len(args) == 1:
            return ItemGetter(a0)
        if name == "operator.methodcaller" and s0 is not None:
            return MethodCaller(s0, list(args[1:]))
        if name == "functools.partial" and a0 is not None:
            return Partial(a0, list(args[1:]))
        if name in ("importlib.import_module", "importlib.__import__") and s0:
            return _module_ref(s0)
        if name == "builtins.__import__" and s0:
            fromlist = args[3] if len(args) > 3 else None
            if kwargs is not None:
                fromlist = kwargs.get("fromlist") or fromlist
            has_from = isinstance(fromlist, Seq) and fromlist.total > 0
            return _module_ref(s0 if has_from else s0.split(".")[0])
        if name == "pkgutil.resolve_name" and s0:
            return _namespace_of(s0.replace(":", ".")) or Ref(canonical(s0.replace(":", ".")))
        if name == "pydoc.locate" and s0:
            return _namespace_of(s0) or Ref(canonical(s0))
        if name in ("operator.getitem", "builtins.dict.get", "builtins.dict.__getitem__"):
            if len(args) >= 2:
                return _getitem(args[0], args[1])
            return Unknown("getitem result")
        if name in ("builtins.vars",) and isinstance(a0, Ref):
            return Namespace(a0.name)
        if name in ("builtins.globals", "builtins.locals"):
            return Unknown("globals()")
        if a0 is not None and name in _RECONSTRUCTORS:
            # copyreg._reconstructor(cls, base, state) / __newobj__(cls, *args) /
            # __newobj_ex__(cls, args, kwargs) all create an instance of cls.
            if name == "copyreg.__newobj__":
                rest = list(args[1:])
            elif name == "copyreg.__newobj_ex__" and len(args) > 1:
                rest = _tuple_items(args[1])
            elif name.endswith(".newObj"):
                rest = []
            else:
                rest = []
                base = args[1] if len(args) > 1 else None
                if base is not None and not (isinstance(base, Ref) and base.name == _OBJECT):
                    # base.__new__(cls, state) and base.__init__(obj, state) run.
                    state = args[2:3] or [Const(None)]
                    self.call(base, state, None, "copyreg._reconstructor (base class)")
            return self.instantiate(a0, rest, None, name)
        if name == "dill._dill._load_type" and s0 is not None:
            # dill names builtin types by their name; the type returned is judged when called.
            return Ref(_DILL_TYPES.get(s0, f"types.{s0}"))
        if name == "dill._dill._import_module" and s0:
            return _module_ref(s0)
        if name == "dill._dill._get_attr" and len(args) >= 2:
            attr = args[1].as_str() if isinstance(args[1], Const) else None
            return _getattr_path(args[0], attr) if attr else Unknown("getattr result")
        if name == "dill._dill._create_array" and a0 is not None:
            # _create_array(f, args, state, npdict): array = f(*args); array.__setstate__(state)
            inner = _tuple_items(args[1]) if len(args) > 1 else []
            return self.call(a0, inner, None, "dill._dill._create_array")
        if name in _LOADERS:
            return self.nested(name, _LOADERS[name], a0)
        if name in _B64ISH or name == "codecs.decode":
            return self.decode(name, args)
        if name in _DECOMPRESSORS and isinstance(a0, Const):
            raw = a0.as_bytes(self.m.limits.max_decoded)
            if raw is not None:
                try:
                    return Const(_bounded_decompress(name, raw, self.m.limits.max_decoded))
                except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
                    return Unknown(f"{name} error")
        if name in ("codecs.encode", "builtins.str.encode") and s0 is not None:
            enc = args[1].as_str() if len(args) > 1 and isinstance(args[1], Const) else "utf-8"
            try:
                return Const(codecs.encode(s0, enc or "utf-8"))
            except (LookupError, ValueError, TypeError):
                return Unknown("encode error")
        if name in ("builtins.bytes", "builtins.bytearray", "io.BytesIO") and isinstance(a0, Const):
            raw = a0.as_bytes(self.m.limits.max_decoded)
            if raw is not None:
                return Const(raw)
        if name == "builtins.eval" and s0 is not None:
            return Obj(None, evidence)
        return Obj(name, evidence, args=args[:4])

    def decode(self, name: str, args: list[Value]) -> Value:
        a0 = args[0] if args else None
        if not isinstance(a0, Const):
            return Unknown(f"{name} result")
        out: object
        raw = a0.as_bytes(self.m.limits.max_decoded)
        if raw is None:
            text = a0.as_str()
            if text is None:
                return Unknown(f"{name} result")
            raw = text.encode("utf-8", "surrogatepass")
        try:
            if name == "codecs.decode":
                enc = args[1].as_str() if len(args) > 1 and isinstance(args[1], Const) else None
                if enc is None:
                    return Unknown("codecs.decode result")
                enc = codecs.lookup(enc).name
                if enc in ("zlib_codec", "bz2_codec"):
                    kind = "zlib.decompress" if enc == "zlib_codec" else "bz2.decompress"
                    return Const(_bounded_decompress(kind, raw, self.m.limits.max_decoded))
                if enc == "rot-13":
                    return Const(codecs.decode(raw.decode("latin-1"), "rot13"))
                out = codecs.decode(raw, enc)
            else:
                out = _B64ISH[name](raw)
        except _Limit:
            raise
        except (ValueError, TypeError, LookupError, binascii.Error, zlib.error, OSError):
            return Unknown(f"{name} error")
        if isinstance(out, bytes | str) and len(out) <= self.m.limits.max_decoded:
            return Const(out)
        return Unknown(f"{name} result")

    def nested(self, loader: str, kind: str, payload: Value | None) -> Value:
        raw = payload.as_bytes(self.m.limits.max_decoded) if isinstance(payload, Const) else None
        if raw is None or kind == "unknown":
            self.emit(
                EventKind.NESTED,
                name=loader,
                evidence=f"{loader}({render(payload) if payload else ''})",
                payload_kind="marshal" if kind == "marshal" else "unknown",
            )
            return CodeObject() if kind == "marshal" else Unknown(f"{loader} result")
        if kind == "marshal":
            self.emit(
                EventKind.NESTED,
                name=loader,
                evidence=f"{loader}(<{len(raw)} bytes of marshalled code>)",
                payload_kind="marshal",
            )
            return CodeObject()
        if self.depth + 1 > self.m.limits.max_nesting:
            raise _Limit(LimitKind.NESTING)
        sub = Machine(self.m.limits, keep=self.m.keep, deadline=self.m.deadline, quiet=self.m.quiet)
        analysis, result = sub.analyse_with_result(raw, depth=self.depth + 1)
        self.emit(
            EventKind.NESTED,
            name=loader,
            evidence=f"{loader}(<{len(raw)}-byte pickle>)",
            nested=analysis,
            payload_kind="pickle",
        )
        return result if result is not None else Unknown(f"{loader} result")

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        """Run opcodes up to STOP. The common fixed-size opcodes are decoded inline; the rest
        go through :meth:`Decoder.next_op`, which also produces every format error."""
        m = self.m
        dec = self.dec
        data = dec.data
        end = dec.end
        fast = _FAST
        stop = _op_stop
        max_ops = m.limits.max_opcodes
        index = self.index
        u4 = _U4_FROM
        i4 = _I4_FROM
        f8 = _F8_FROM
        push_arg = _op_push_arg
        binput = _op_binput
        memo = self.memo
        eager = EAGER_BYTES
        raw = dec.buf  # slices of it are bytes (or bytearray): cheaper to decode than views
        tight = not isinstance(raw, memoryview)  # (a view's slices have no decode())
        native = _NATIVE_RUN
        small = _SMALL_INTS
        while True:
            pos = dec.pos
            if tight and index & 0xFFF:
                # Runs of plain-data opcodes (strings, small ints, memo traffic: most of a big
                # vocabulary or state dict) are handled by this tight loop. It stops at the next
                # bounds check (every 4096 opcodes) and at anything that could fail or emit an
                # event: the general step below then handles that opcode, errors included.
                stack = self.stack
                stop_at = (index | 0xFFF) + 1
                if stop_at > max_ops:
                    stop_at = max_ops
                if native is not None:
                    # The same loop in C (see _fastloop.c): it stops where this one would.
                    pos, index, stack, self.marked = native(
                        raw, pos, end, index, stop_at, stack, memo, self.metastack, self.marked
                    )
                    self.stack = stack
                else:
                    while index < stop_at and pos < end:
                        code = raw[pos]
                        if code == 0x58 or code == 0x8C:  # BINUNICODE, SHORT_BINUNICODE
                            if code == 0x8C:
                                if pos + 2 > end:
                                    break
                                start = pos + 2
                                n = raw[pos + 1]
                            else:
                                if pos + 5 > end:
                                    break
                                start = pos + 5
                                n = u4(raw, pos + 1)[0]
                            stop_pos = start + n
                            if n > eager or stop_pos > end:
                                break
                            try:
                                text = raw[start:stop_pos].decode("utf-8", "surrogatepass")
                            except UnicodeDecodeError:
                                break
                            value = Const(text)
                            stack.append(value)
                            pos = stop_pos
                            # Strings are usually memoized next: done here, one pass fewer.
                            if pos + 5 <= end and index + 1 < stop_at:
                                code = raw[pos]
                                if code == 0x72:  # LONG_BINPUT
                                    memo[u4(raw, pos + 1)[0]] = value
                                    pos += 5
                                    index += 1
                                elif code == 0x94:  # MEMOIZE
                                    memo[len(memo)] = value
                                    pos += 1
                                    index += 1
                                elif code == 0x71:  # BINPUT
                                    memo[raw[pos + 1]] = value
                                    pos += 2
                                    index += 1
                        elif code == 0x72 or code == 0x71 or code == 0x94:  # (LONG_)BINPUT, MEMOIZE
                            if not stack:
                                break
                            if code == 0x71:
                                if pos + 2 > end:
                                    break
                                memo[raw[pos + 1]] = stack[-1]
                                pos += 2
                            elif code == 0x72:
                                if pos + 5 > end:
                                    break
                                memo[u4(raw, pos + 1)[0]] = stack[-1]
                                pos += 5
                            else:
                                memo[len(memo)] = stack[-1]
                                pos += 1
                        elif code == 0x68 or code == 0x6A:  # BINGET, LONG_BINGET
                            if code == 0x68:
                                if pos + 2 > end:
                                    break
                                got = memo.get(raw[pos + 1])
                                if got is None:
                                    break
                                pos += 2
                            else:
                                if pos + 5 > end:
                                    break
                                got = memo.get(u4(raw, pos + 1)[0])
                                if got is None:
                                    break
                                pos += 5
                            stack.append(got)
                        elif code == 0x4B:  # BININT1
                            if pos + 2 > end:
                                break
                            stack.append(small[raw[pos + 1]])
                            pos += 2
                        elif code == 0x4A:  # BININT
                            if pos + 5 > end:
                                break
                            stack.append(Const(i4(raw, pos + 1)[0]))
                            pos += 5
                        elif code == 0x4D:  # BININT2
                            if pos + 3 > end:
                                break
                            stack.append(Const(raw[pos + 1] | (raw[pos + 2] << 8)))
                            pos += 3
                        elif code == 0x47:  # BINFLOAT
                            if pos + 9 > end:
                                break
                            stack.append(Const(f8(raw, pos + 1)[0]))
                            pos += 9
                        elif code == 0x4E:  # NONE
                            stack.append(_NONE)
                            pos += 1
                        elif code == 0x88 or code == 0x89:  # NEWTRUE, NEWFALSE
                            stack.append(_TRUE if code == 0x88 else _FALSE)
                            pos += 1
                        elif code == 0x28:  # MARK
                            self.metastack.append(stack)
                            self.marked += len(stack)
                            stack = self.stack = []
                            pos += 1
                        elif 0x85 <= code <= 0x87:  # TUPLE1, TUPLE2, TUPLE3
                            n = code - 0x84
                            if len(stack) < n:
                                break
                            items = stack[-n:]
                            del stack[-n:]
                            stack.append(Seq("tuple", items, n))
                            pos += 1
                        elif code == 0x7D:  # EMPTY_DICT
                            stack.append(DictV())
                            pos += 1
                        elif code == 0x5D or code == 0x29:  # EMPTY_LIST, EMPTY_TUPLE
                            stack.append(Seq("list" if code == 0x5D else "tuple"))
                            pos += 1
                        elif code == 0x55 or code == 0x43:  # SHORT_BINSTRING, SHORT_BINBYTES
                            if pos + 2 > end:
                                break
                            start = pos + 2
                            stop_pos = start + raw[pos + 1]
                            if stop_pos > end:
                                break
                            if code == 0x55:  # a Python 2 str: kept as text (see _op_string)
                                stack.append(Const(raw[start:stop_pos].decode("latin-1")))
                            else:
                                stack.append(Const(bytes(raw[start:stop_pos])))
                            pos = stop_pos
                        else:
                            break
                        index += 1
                dec.pos = pos
            self.index = index  # exact for errors raised while decoding the next opcode
            if pos >= end:
                raise PickleFormatError(pos, "pickle data was truncated", truncated=True)
            code = data[pos]
            kind, handler = fast[code]
            arg: object
            if kind == _K_NONE:
                dec.pos = pos + 1
                arg = None
            elif kind == _K_U1 and pos + 2 <= end:
                dec.pos = pos + 2
                arg = data[pos + 1]
            elif kind == _K_U4 and pos + 5 <= end:
                dec.pos = pos + 5
                arg = u4(data, pos + 1)[0]
            elif kind == _K_I4 and pos + 5 <= end:
                dec.pos = pos + 5
                arg = i4(data, pos + 1)[0]
            elif kind == _K_BYTES1 and pos + 2 <= end and pos + 2 + data[pos + 1] <= end:
                n = data[pos + 1]
                dec.pos = pos + 2 + n
                arg = data[pos + 2 : pos + 2 + n]
            elif kind == _K_BYTES4 and pos + 5 <= end:
                n = u4(data, pos + 1)[0]
                if pos + 5 + n > end:
                    arg = dec.next_op().arg  # raises the truncation error at this opcode
                else:
                    dec.pos = pos + 5 + n
                    arg = data[pos + 5 : pos + 5 + n]
            elif kind == _K_F8 and pos + 9 <= end:
                dec.pos = pos + 9
                arg = f8(data, pos + 1)[0]
            elif kind == _K_U2 and pos + 3 <= end:
                dec.pos = pos + 3
                arg = data[pos + 1] | (data[pos + 2] << 8)
            else:
                arg = dec.next_op().arg  # general path; raises on invalid or truncated input
            if index >= max_ops:
                self.index = index
                raise _Limit(LimitKind.OPCODES)
            if not index & 0xFFF:
                self.index = index
                self.check_stack()
                if time.monotonic() > m.deadline:
                    raise _Limit(LimitKind.TIME)
            # The two most frequent opcodes inline; they cannot fail when the stack is not empty
            # (so the position bookkeeping for events and errors is skipped for them).
            if handler is push_arg:
                self.stack.append(Const(arg))
            elif handler is binput and self.stack:
                memo[arg] = self.stack[-1]  # type: ignore[index]  # BINPUT: an unsigned int
            else:
                self.op_pos = pos
                self.op_code = code
                self.index = index
                handler(self, arg)
            index += 1
            if handler is stop:
                self.index = index
                return

    def bytes_value(self, view: memoryview, lazy: str) -> Const:
        if len(view) <= EAGER_BYTES:
            raw = bytes(view)
            if lazy == "str":
                try:
                    return Const(raw.decode("utf-8", "surrogatepass"))
                except UnicodeDecodeError as exc:
                    raise _Broken(f"invalid UTF-8 in string: {exc.reason}") from None
            return Const(bytearray(raw) if lazy == "bytearray" else raw)
        return Const(view, lazy)


def _module_ref(name: str) -> Value:
    return _namespace_of(name) or Ref(canonical(name))


def _namespace_of(dotted: str) -> Value | None:
    if dotted == "sys.modules":
        return Namespace(None)
    return None


def _getattr_path(obj: Value, path: str) -> Value:
    if not path:
        return Unknown("getattr result")
    if isinstance(obj, Ref):
        dotted = canonical(f"{obj.name}.{path}")
        return _namespace_of(dotted) or Ref(dotted)
    if isinstance(obj, Namespace) and obj.prefix is not None and path == "__dict__":
        return obj
    if isinstance(obj, Obj) and path in obj.attrs:
        return obj.attrs[path]
    return Unknown(f"attribute {path!r} of {render(obj, budget=80)}")


def _getitem(obj: Value, key: Value) -> Value:
    k = key.as_str() if isinstance(key, Const) else None
    if isinstance(obj, Namespace) and k:
        if obj.prefix is None:
            return _module_ref(k)
        return Ref(canonical(f"{obj.prefix}.{k}"))
    if isinstance(obj, DictV) and k is not None:
        found = obj.get(k)
        if found is not None:
            return found
    if isinstance(obj, Seq) and isinstance(key, Const) and isinstance(key.value, int):
        i = key.value
        if -len(obj.items) <= i < len(obj.items) and len(obj.items) == obj.total:
            return obj.items[i]
    return Unknown(f"item of {render(obj, budget=80)}")


# ---------------------------------------------------------------------- opcode handlers

Handler = Callable[["_Run", object], None]


def _arg_bytes(arg: object) -> memoryview:
    assert isinstance(arg, memoryview)
    return arg


def _op_mark(r: _Run, arg: object) -> None:
    r.metastack.append(r.stack)
    r.marked += len(r.stack)
    r.stack = []


def _op_stop(r: _Run, arg: object) -> None:
    r.result = r.pop()


def _op_pop(r: _Run, arg: object) -> None:
    if r.stack:
        r.stack.pop()
    else:
        r.pop_mark()


def _op_pop_mark(r: _Run, arg: object) -> None:
    r.pop_mark()


def _op_dup(r: _Run, arg: object) -> None:
    r.push(r.top())


def _c_string(raw: bytes) -> bytes:
    """CPython parses numeric line arguments as C strings: they end at the first NUL."""
    nul = raw.find(b"\0")
    return raw if nul < 0 else raw[:nul]


def _op_float(r: _Run, arg: object) -> None:
    assert isinstance(arg, bytes)
    try:
        r.push(Const(float(_c_string(arg))))
    except ValueError:
        raise _Broken(f"could not convert string to float: {arg[:40]!r}") from None


def _op_int(r: _Run, arg: object) -> None:
    assert isinstance(arg, bytes)
    raw = _c_string(arg)
    if not raw and arg:
        # strtol converts nothing and stops at the NUL: CPython accepts that as 0.
        r.push(Const(0))
    elif raw == b"00":
        r.push(Const(False))
    elif raw == b"01":
        r.push(Const(True))
    else:
        r.push(Const(_line_int(r, arg)))


def _line_int(r: _Run, arg: object) -> int:
    assert isinstance(arg, bytes)
    try:
        return parse_line_int(_c_string(arg), r.op_pos, _NAMES[r.op_code])
    except PickleFormatError as exc:
        raise _Broken(exc.message) from None


def _op_push_arg(r: _Run, arg: object) -> None:
    r.stack.append(Const(arg))


# Constants are never mutated: the common ones are shared (as CPython shares them).
_NONE = Const(None)
_TRUE = Const(True)
_FALSE = Const(False)
_SMALL_INTS = [Const(i) for i in range(256)]


def _native_run() -> Callable[..., tuple[int, int, list[Value], int]] | None:
    """The C version of :meth:`_Run.run`'s plain-data loop, when it was built (it is optional:
    without a compiler the package installs without it) and not switched off with
    ``MODELSHIELD_PURE_PYTHON=1``."""
    if os.environ.get("MODELSHIELD_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from modelshield.pickle import _fastloop
    except ImportError:
        return None
    _fastloop.init(Const, Seq, DictV, _SMALL_INTS, _NONE, _TRUE, _FALSE, EAGER_BYTES)
    return _fastloop.run


_NATIVE_RUN = _native_run()


def _op_none(r: _Run, arg: object) -> None:
    r.push(_NONE)


def _op_true(r: _Run, arg: object) -> None:
    r.push(_TRUE)


def _op_false(r: _Run, arg: object) -> None:
    r.push(_FALSE)


def _op_persid(r: _Run, arg: object) -> None:
    assert isinstance(arg, bytes)
    try:
        pid: Value = Const(arg.decode("ascii"))
    except UnicodeDecodeError:
        raise _Broken("persistent IDs in protocol 0 must be ASCII strings") from None
    r.emit(EventKind.PERSID, evidence=f"persistent_load({render(pid)})")
    r.push(Persistent(pid))


def _op_binpersid(r: _Run, arg: object) -> None:
    pid = r.pop()
    r.emit(EventKind.PERSID, evidence=f"persistent_load({render(pid)})")
    r.push(_persistent(pid))


def _persistent(pid: Value) -> Value:
    """Legacy ``torch.save`` stores modules as ``('module', cls, file, source)`` persistent IDs
    whose loader returns ``cls`` (a global, judged like any other); other IDs stay opaque."""
    if (
        isinstance(pid, Seq)
        and pid.kind == "tuple"
        and pid.total >= 2
        and isinstance(pid.items[0], Const)
        and pid.items[0].value == "module"
        and isinstance(pid.items[1], Ref)
    ):
        return pid.items[1]
    return Persistent(pid)


def _op_reduce(r: _Run, arg: object) -> None:
    args = r.pop()
    func = r.pop()
    r.push(r.call(func, _tuple_items(args), None, None))


def _tuple_items(args: Value) -> list[Value]:
    if isinstance(args, Seq):
        items = list(args.items)
        if args.total > len(items):
            items.append(Unknown(f"{args.total - len(items)} more arguments"))
        return items
    return [Unknown(f"*{render(args, budget=80)}")]


def _op_string(r: _Run, arg: object) -> None:
    # Protocol-0/1 str (Python 2 ``str``): CPython decodes it with the Unpickler's encoding
    # (ASCII by default; loaders such as numpy pass latin1). Keep the text for analysis.
    raw = bytes(arg) if isinstance(arg, memoryview) else arg
    assert isinstance(raw, bytes)
    r.push(Const(raw.decode("latin-1")))


def _op_unicode_nl(r: _Run, arg: object) -> None:
    r.push(Const(arg))


def _op_binunicode(r: _Run, arg: object) -> None:
    assert isinstance(arg, memoryview)
    if len(arg) > EAGER_BYTES:
        r.stack.append(Const(arg, "str"))
        return
    try:
        r.stack.append(Const(str(arg, "utf-8", "surrogatepass")))
    except UnicodeDecodeError as exc:
        raise _Broken(f"invalid UTF-8 in string: {exc.reason}") from None


def _op_binbytes(r: _Run, arg: object) -> None:
    r.push(r.bytes_value(_arg_bytes(arg), "bytes"))


def _op_bytearray8(r: _Run, arg: object) -> None:
    r.push(r.bytes_value(_arg_bytes(arg), "bytearray"))


def _op_append(r: _Run, arg: object) -> None:
    value = r.pop()
    _extend(r, r.top(), [value])


def _op_appends(r: _Run, arg: object) -> None:
    items = r.pop_mark()
    _extend(r, r.top(), items)


def _extend(r: _Run, target: Value, items: list[Value]) -> None:
    if not items:
        return  # CPython does nothing for an empty APPENDS, whatever the target
    if isinstance(target, Seq) and target.kind == "list":
        target.extend(items)
    elif isinstance(target, Ref | Namespace):
        # CPython calls target.extend()/append() on whatever object is there.
        r.emit(
            EventKind.MUTATION,
            name=_target_name(target),
            evidence=f"{render(target)}.extend({render(Seq('list', items, len(items)))})",
        )
    elif isinstance(target, Seq | DictV) or (
        isinstance(target, Const) and not isinstance(target.value, bytearray | memoryview)
    ):
        raise _Broken(f"cannot append to {render(target, budget=60)}")
    # Otherwise (objects, bytearrays, unknown values) CPython calls append/extend: lenient.


def _op_setitem(r: _Run, arg: object) -> None:
    value = r.pop()
    key = r.pop()
    _setitems(r, r.top(), [key, value])


def _op_setitems(r: _Run, arg: object) -> None:
    items = r.pop_mark()
    _setitems(r, r.top(), items)


def _setitems(r: _Run, target: Value, items: list[Value]) -> None:
    if not items:
        return  # CPython does nothing for an empty SETITEMS, whatever the target
    if len(items) % 2:
        raise _Broken("odd number of items for SETITEMS")
    if isinstance(target, DictV):
        target.update(list(zip(items[::2], items[1::2], strict=True)))
    elif isinstance(target, Ref | Namespace):
        pairs = DictV([(items[i], items[i + 1]) for i in range(0, len(items), 2)], len(items) // 2)
        r.emit(
            EventKind.MUTATION,
            name=_target_name(target),
            evidence=f"{render(target)}.update({render(pairs)})",
        )
    elif (isinstance(target, Seq) and target.kind != "list") or (
        isinstance(target, Const) and not isinstance(target.value, bytearray | memoryview)
    ):
        raise _Broken(f"object does not support item assignment: {render(target, budget=60)}")


def _op_additems(r: _Run, arg: object) -> None:
    items = r.pop_mark()
    target = r.top()
    if not items:
        return
    if isinstance(target, Seq) and target.kind == "set":
        target.extend(items)
    elif isinstance(target, Ref | Namespace):
        r.emit(
            EventKind.MUTATION,
            name=_target_name(target),
            evidence=f"{render(target)}.add(...)",
        )


def _target_name(v: Value) -> str:
    if isinstance(v, Ref):
        return v.name
    if isinstance(v, Namespace):
        return "sys.modules" if v.prefix is None else v.prefix
    return render(v)


def _op_build(r: _Run, arg: object) -> None:
    state = r.pop()
    inst = r.top()
    if isinstance(inst, Obj) and "__setstate__" in inst.attrs:
        # getattr(inst, "__setstate__") finds the instance attribute set by an earlier BUILD.
        r.call(inst.attrs["__setstate__"], [state], None, "BUILD -> instance __setstate__")
        return
    dict_state: Value | None = state
    slot_state: Value | None = None
    if isinstance(state, Seq) and state.kind == "tuple" and state.total == 2:
        dict_state, slot_state = state.items[0], state.items[1]
    keys: list[tuple[str, Value]] = []
    for part in (dict_state, slot_state):
        if isinstance(part, DictV):
            for key_v, val in part.items:
                if type(key_v) is Const:
                    ks = key_v.value  # a str, or a long one still a view of the input:
                    if type(ks) is str or (ks := key_v.as_str()) is not None:
                        keys.append((ks, val))
    if isinstance(inst, Ref | Namespace):
        names = ", ".join(k for k, _ in keys[:8]) or render(state, budget=80)
        r.emit(
            EventKind.MUTATION,
            name=_target_name(inst),
            evidence=f"{render(inst)}.__dict__.update({render(state)})",
            via=f"BUILD sets {names}",
        )
        return
    if isinstance(inst, Obj):
        if not isinstance(state, DictV):
            inst.state = state
        dunders = [k for k, _ in keys if k[:2] == "__" and is_dunder_name(k)]
        attrs = inst.attrs
        for k, v in keys:
            if len(attrs) < 64 or k in attrs:
                attrs[k] = v
        if inst.target in _JOBLIB_WRAPPERS and r.m.joblib:
            _joblib_inline_array(r, inst)
        if dunders:
            r.emit(
                EventKind.MUTATION,
                name=inst.target,
                evidence=f"{inst.desc}: sets {', '.join(dunders)} = "
                + ", ".join(render(v, budget=80) for k, v in keys if k in dunders),
                via="BUILD on instance",
            )
    elif isinstance(inst, Partial):
        # functools.partial.__setstate__((func, args, kwds, dict)) replaces all of them.
        if isinstance(state, Seq) and state.kind == "tuple" and state.total == 4:
            inst.func = state.items[0]
            inst.args = _tuple_items(state.items[1]) if isinstance(state.items[1], Seq) else []
    elif isinstance(inst, Const | Seq | DictV):
        # Builtin values have no __setstate__ and no __dict__: CPython raises when there is a
        # dict state (even empty) or slot state to set.
        no_dict = isinstance(dict_state, Const) and dict_state.value is None
        no_slots = slot_state is None or (isinstance(slot_state, DictV) and slot_state.total == 0)
        if not (no_dict and no_slots):
            raise _Broken(f"BUILD on a value without __dict__: {render(inst, budget=60)}")


_JOBLIB_WRAPPERS = {
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",  # scikit-learn's vendored copy
}
_DTYPE_RE = re.compile(r"^[<>=|]?([a-zA-Z])(\d*)$")
_HASOBJECT_FLAG = 0x01  # NPY_ITEM_REFCOUNT in a dtype's pickled flags


def _dtype_layout(dtype: Value) -> tuple[int, bool] | None:
    """(itemsize, has_object) of a symbolic ``numpy.dtype(...)`` object, if it can be known."""
    if not (isinstance(dtype, Obj) and dtype.target == "numpy.dtype" and dtype.args):
        return None
    spec = dtype.args[0].as_str() if isinstance(dtype.args[0], Const) else None
    match = _DTYPE_RE.match(spec or "")
    if match is None:
        return None
    kind, digits = match.group(1), match.group(2)
    size = int(digits) if digits else 0
    if kind == "U":
        size *= 4
    flags = 0
    st = dtype.state
    if isinstance(st, Seq) and st.total >= 8 and isinstance(st.items[7], Const):
        flag_value = st.items[7].value
        flags = flag_value if isinstance(flag_value, int) else 0
    return size, kind == "O" or bool(flags & _HASOBJECT_FLAG)


def _joblib_inline_array(r: _Run, wrapper: Obj) -> None:
    """What ``joblib.load`` does after BUILD of a NumpyArrayWrapper: read the array in place.

    joblib writes the raw bytes of each array straight into the stream after the wrapper's
    BUILD (after a padding-length byte and padding when ``numpy_array_alignment_bytes`` is
    set); arrays of Python objects are written as a separate pickle at that point instead.
    The raw bytes are stepped over as data; an embedded pickle is analysed.
    """
    layout = _dtype_layout(wrapper.attrs.get("dtype", Unknown("dtype")))
    shape = wrapper.attrs.get("shape")
    if layout is None or not isinstance(shape, Seq) or shape.total != len(shape.items):
        raise _Broken("joblib NumpyArrayWrapper with a dtype or shape that cannot be read")
    count = 1
    for dim in shape.items:
        if not (isinstance(dim, Const) and isinstance(dim.value, int) and dim.value >= 0):
            raise _Broken("joblib NumpyArrayWrapper with an invalid shape")
        count *= dim.value
    itemsize, has_object = layout
    dec = r.dec
    start = dec.pos
    if has_object:
        sub = _Run(r.m, dec.buf, dec.pos, r.depth)
        sub.dec.end = dec.end
        try:
            sub.run()
        finally:
            r.events.extend(sub.events)
            r.dropped += sub.dropped
        dec.pos = sub.dec.pos
        r.m.joblib_regions.append((start, dec.pos, "object array pickle"))
        return
    align = wrapper.attrs.get("numpy_array_alignment_bytes")
    if align is not None and not (isinstance(align, Const) and align.value is None):
        if dec.pos >= dec.end:
            raise _Broken("joblib array padding is truncated")
        dec.pos += 1 + dec.data[dec.pos]
    dec.pos += count * itemsize
    if dec.pos > dec.end:
        raise _Broken("joblib array data is truncated")
    r.m.joblib_regions.append((start, dec.pos, "raw array data"))


def _op_global(r: _Run, arg: object) -> None:
    assert isinstance(arg, tuple)
    module, name = arg
    r.push(r.global_ref(module, name))


def _op_stack_global(r: _Run, arg: object) -> None:
    name_v = r.pop()
    module_v = r.pop()
    name = name_v.as_str() if isinstance(name_v, Const) else None
    module = module_v.as_str() if isinstance(module_v, Const) else None
    if name is not None and module is not None:
        r.push(r.global_ref(module, name))
        return
    if isinstance(name_v, Const | Seq | DictV) and isinstance(module_v, Const | Seq | DictV):
        raise _Broken("STACK_GLOBAL requires str")
    r.emit(
        EventKind.DYNAMIC_IMPORT,
        evidence=f"import {render(module_v, budget=100)}.{render(name_v, budget=100)}",
    )
    r.push(Unknown(f"global {render(module_v, budget=60)}.{render(name_v, budget=60)}"))


def _op_dict(r: _Run, arg: object) -> None:
    items = r.pop_mark()
    d = DictV()
    if len(items) % 2:
        raise _Broken("odd number of items for DICT")
    for i in range(0, len(items), 2):
        d.set(items[i], items[i + 1])
    r.push(d)


def _op_empty_dict(r: _Run, arg: object) -> None:
    r.push(DictV())


def _op_empty_list(r: _Run, arg: object) -> None:
    r.push(Seq("list"))


def _op_empty_tuple(r: _Run, arg: object) -> None:
    r.push(Seq("tuple"))


def _op_empty_set(r: _Run, arg: object) -> None:
    r.push(Seq("set"))


def _seq(kind: str, items: list[Value]) -> Seq:
    s = Seq(kind)
    s.extend(items)
    return s


def _op_list(r: _Run, arg: object) -> None:
    r.push(_seq("list", r.pop_mark()))


def _op_tuple(r: _Run, arg: object) -> None:
    r.push(_seq("tuple", r.pop_mark()))


def _op_frozenset(r: _Run, arg: object) -> None:
    r.push(_seq("frozenset", r.pop_mark()))


def _op_tuple_n(r: _Run, arg: object) -> None:
    n = r.op_code - 0x84  # TUPLE1 is 0x85, TUPLE2 0x86, TUPLE3 0x87
    if len(r.stack) < n:
        raise _Broken("unpickling stack underflow")
    items = r.stack[-n:]
    del r.stack[-n:]
    r.push(_seq("tuple", items))


def _memo_get(r: _Run, idx: int) -> None:
    try:
        r.push(r.memo[idx])
    except KeyError:
        raise _Broken(f"Memo value not found at index {idx}") from None


def _op_get(r: _Run, arg: object) -> None:
    _memo_get(r, _line_int(r, arg))


def _op_binget(r: _Run, arg: object) -> None:
    assert isinstance(arg, int)
    _memo_get(r, arg)


def _memo_put(r: _Run, idx: int) -> None:
    # The memo grows by at most one entry per opcode; run() checks its size periodically.
    if idx < 0:
        raise _Broken("negative PUT argument")
    if not r.stack:
        raise _Broken("unpickling stack underflow")
    r.memo[idx] = r.stack[-1]


def _op_put(r: _Run, arg: object) -> None:
    _memo_put(r, _line_int(r, arg))


def _op_binput(r: _Run, arg: object) -> None:
    stack = r.stack
    if not stack:
        raise _Broken("unpickling stack underflow")
    r.memo[arg] = stack[-1]  # type: ignore[index]  # BINPUT/LONG_BINPUT: unsigned


def _op_memoize(r: _Run, arg: object) -> None:
    stack = r.stack
    if not stack:
        raise _Broken("unpickling stack underflow")
    r.memo[len(r.memo)] = stack[-1]


def _op_inst(r: _Run, arg: object) -> None:
    assert isinstance(arg, tuple)
    module, name = arg
    args = r.pop_mark()
    cls = r.global_ref(module, name)
    r.push(r.call(cls, args, None, None))


def _op_obj(r: _Run, arg: object) -> None:
    items = r.pop_mark()
    if not items:
        raise _Broken("OBJ without a class")
    r.push(r.call(items[0], items[1:], None, None))


def _op_newobj(r: _Run, arg: object) -> None:
    args = r.pop()
    cls = r.pop()
    r.push(r.instantiate(cls, _tuple_items(args), None, "NEWOBJ (cls.__new__)"))


def _op_newobj_ex(r: _Run, arg: object) -> None:
    kwargs = r.pop()
    args = r.pop()
    cls = r.pop()
    kw = kwargs if isinstance(kwargs, DictV) else None
    r.push(r.instantiate(cls, _tuple_items(args), kw, "NEWOBJ_EX (cls.__new__)"))


def _op_ext(r: _Run, arg: object) -> None:
    assert isinstance(arg, int)
    code = arg
    if code <= 0:
        raise _Broken("EXT specifies code <= 0")
    r.emit(EventKind.EXT, evidence=f"copyreg extension code {code}")
    r.push(Unknown(f"global from extension code {code}"))


def _op_proto(r: _Run, arg: object) -> None:
    assert isinstance(arg, int)
    if arg > HIGHEST_PROTOCOL:
        raise _Broken(f"unsupported pickle protocol: {arg}")
    r.proto = arg


def _op_frame(r: _Run, arg: object) -> None:
    return None


def _op_next_buffer(r: _Run, arg: object) -> None:
    # pickle.loads without buffers= raises here; with buffers, the data comes from outside.
    r.push(Unknown("out-of-band buffer"))


def _op_readonly_buffer(r: _Run, arg: object) -> None:
    r.top()


_DISPATCH: dict[str, Handler] = {
    "MARK": _op_mark,
    "STOP": _op_stop,
    "POP": _op_pop,
    "POP_MARK": _op_pop_mark,
    "DUP": _op_dup,
    "FLOAT": _op_float,
    "INT": _op_int,
    "BININT": _op_push_arg,
    "BININT1": _op_push_arg,
    "LONG": lambda r, arg: r.push(Const(_line_int(r, arg))),
    "BININT2": _op_push_arg,
    "NONE": _op_none,
    "PERSID": _op_persid,
    "BINPERSID": _op_binpersid,
    "REDUCE": _op_reduce,
    "STRING": _op_string,
    "BINSTRING": _op_string,
    "SHORT_BINSTRING": _op_string,
    "UNICODE": _op_unicode_nl,
    "BINUNICODE": _op_binunicode,
    "APPEND": _op_append,
    "BUILD": _op_build,
    "GLOBAL": _op_global,
    "DICT": _op_dict,
    "EMPTY_DICT": _op_empty_dict,
    "APPENDS": _op_appends,
    "GET": _op_get,
    "BINGET": _op_binget,
    "INST": _op_inst,
    "LONG_BINGET": _op_binget,
    "LIST": _op_list,
    "EMPTY_LIST": _op_empty_list,
    "OBJ": _op_obj,
    "PUT": _op_put,
    "BINPUT": _op_binput,
    "LONG_BINPUT": _op_binput,
    "SETITEM": _op_setitem,
    "TUPLE": _op_tuple,
    "EMPTY_TUPLE": _op_empty_tuple,
    "SETITEMS": _op_setitems,
    "BINFLOAT": _op_push_arg,
    "PROTO": _op_proto,
    "NEWOBJ": _op_newobj,
    "EXT1": _op_ext,
    "EXT2": _op_ext,
    "EXT4": _op_ext,
    "TUPLE1": _op_tuple_n,
    "TUPLE2": _op_tuple_n,
    "TUPLE3": _op_tuple_n,
    "NEWTRUE": _op_true,
    "NEWFALSE": _op_false,
    "LONG1": _op_push_arg,
    "LONG4": _op_push_arg,
    "BINBYTES": _op_binbytes,
    "SHORT_BINBYTES": _op_binbytes,
    "SHORT_BINUNICODE": _op_binunicode,
    "BINUNICODE8": _op_binunicode,
    "BINBYTES8": _op_binbytes,
    "EMPTY_SET": _op_empty_set,
    "ADDITEMS": _op_additems,
    "FROZENSET": _op_frozenset,
    "NEWOBJ_EX": _op_newobj_ex,
    "STACK_GLOBAL": _op_stack_global,
    "MEMOIZE": _op_memoize,
    "FRAME": _op_frame,
    "BYTEARRAY8": _op_bytearray8,
    "NEXT_BUFFER": _op_next_buffer,
    "READONLY_BUFFER": _op_readonly_buffer,
}


_NAMES: list[str] = [OPCODES[c].name if c in OPCODES else "?" for c in range(256)]
_K_NONE, _K_U1, _K_U4, _K_I4, _K_BYTES1, _K_F8, _K_U2, _K_BYTES4, _K_OTHER = range(9)
_FAST_KINDS = {
    ArgKind.NONE: _K_NONE,
    ArgKind.U1: _K_U1,
    ArgKind.U4: _K_U4,
    ArgKind.I4: _K_I4,
    ArgKind.BYTES1: _K_BYTES1,
    ArgKind.FLOAT8: _K_F8,
    ArgKind.U2: _K_U2,
    ArgKind.BYTES4: _K_BYTES4,
}
_U4_FROM = struct.Struct("<I").unpack_from
_I4_FROM = struct.Struct("<i").unpack_from
_F8_FROM = struct.Struct(">d").unpack_from
_HANDLERS: list[Handler] = [
    _DISPATCH.get(OPCODES[c].name, _op_stop) if c in OPCODES else _op_stop for c in range(256)
]


_FAST: list[tuple[int, Handler]] = [
    (_FAST_KINDS.get(OPCODES[c].arg, _K_OTHER), _HANDLERS[c])
    if c in OPCODES
    else (_K_OTHER, _op_stop)
    for c in range(256)
]


class Machine:
    """Analyses buffers of pickle data. Reusable; each ``analyse`` call is independent."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        keep: KeepFilter | None = None,
        deadline: float | None = None,
        joblib: bool = True,
        quiet: Callable[[str], bool] | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.keep = keep
        self.deadline = deadline if deadline is not None else 0.0
        self.base = 0
        self.joblib = joblib
        self.joblib_regions: list[tuple[int, int, str]] = []
        self.quiet = quiet
        """Names whose call events ``keep`` would drop: they are neither rendered nor built."""
        self.quiet_names: dict[str, bool] = {}
        """What ``quiet`` said of each name, remembered."""

    def analyse(self, buf: Buffer, *, start: int = 0, end: int | None = None) -> PickleAnalysis:
        """Analyse every pickle in ``buf[start:end]``; offsets in events are relative to start."""
        return self.analyse_with_result(buf, start=start, end=end)[0]

    def analyse_with_result(
        self, buf: Buffer, *, start: int = 0, end: int | None = None, depth: int = 0
    ) -> tuple[PickleAnalysis, Value | None]:
        if depth == 0 or self.deadline == 0.0:
            self.deadline = time.monotonic() + self.limits.max_seconds
        view_len = len(memoryview(buf)) if end is None else end
        self.base = start
        self.joblib_regions = []
        streams: list[Stream] = []
        first_result: Value | None = None
        pos = start
        trailing_start: int | None = None
        trailing_events: tuple[Event, ...] = ()
        while pos < view_len:
            stream, result = self._one(buf, pos, view_len, depth)
            if streams and not stream.complete and stream.limit is None:
                # Bytes after a complete pickle that do not form one: trailing data. Keep only
                # calls of well-formed global names (a loader reading on would run them).
                trailing_start = pos - start
                trailing_events = tuple(
                    e
                    for e in stream.events
                    if e.kind in (EventKind.CALL, EventKind.MUTATION, EventKind.NESTED)
                    and e.name is not None
                    and is_identifier_path(e.name)
                )
                break
            if not streams:
                first_result = result
            streams.append(stream)
            if not stream.complete:
                break
            pos = start + stream.end
        regions = tuple((a - start, b - start, what) for a, b, what in self.joblib_regions)
        alternate = None
        if regions:
            # A plain pickle.load reads the same file differently: array bytes become opcodes.
            plain = Machine(
                self.limits, keep=self.keep, deadline=self.deadline, joblib=False, quiet=self.quiet
            )
            alternate = plain.analyse(buf, start=start, end=end)
        analysis = PickleAnalysis(
            streams=tuple(streams),
            size=view_len - start,
            trailing_start=trailing_start,
            trailing_events=trailing_events,
            data_regions=regions,
            alternate=alternate,
        )
        return analysis, first_result

    def _one(self, buf: Buffer, pos: int, end: int, depth: int) -> tuple[Stream, Value | None]:
        run = _Run(self, buf, pos, depth)
        run.dec.end = end
        error: str | None = None
        error_pos: int | None = None
        truncated = False
        limit: LimitKind | None = None
        try:
            run.run()
        except PickleFormatError as exc:
            error, error_pos, truncated = exc.message, exc.pos - self.base, exc.truncated
        except _Broken as exc:
            error = exc.message
            error_pos = run.op_pos - self.base
        except _Limit as exc:
            limit = exc.kind
        except RecursionError:
            limit = LimitKind.NESTING
        except MemoryError:
            limit = LimitKind.MEMO
        stream = Stream(
            start=pos - self.base,
            end=run.dec.pos - self.base,
            protocol=run.proto if run.proto else None,
            opcodes=run.index,
            events=tuple(run.events),
            error=error,
            error_pos=error_pos,
            truncated=truncated,
            limit=limit,
            dropped_events=run.dropped,
        )
        return stream, run.result


def analyse(
    buf: Buffer, *, limits: Limits | None = None, keep: KeepFilter | None = None
) -> PickleAnalysis:
    """Analyse every pickle in ``buf`` (bytes, bytearray or mmap) without executing anything."""
    return Machine(limits, keep=keep).analyse(buf)
