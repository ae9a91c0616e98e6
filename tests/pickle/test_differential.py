"""Differential tests: the symbolic machine against CPython's own unpickler.

The reference is CPython's C ``pickle.Unpickler`` whose ``find_class`` and ``persistent_load``
are overridden to return *recording stubs* instead of real objects: nothing named by a pickle
is ever imported or called. Every global the loader looks up is recorded as ``import NAME``;
every time a stub is called (REDUCE, INST/OBJ, NEWOBJ via ``cls.__new__``, BUILD through an
instance-level ``__setstate__``, ``copyreg._reconstructor``...) it records ``call NAME`` and
returns another stub. The machine's trace must equal that record exactly for valid pickles, and
on broken input the machine must never miss an import or call the loader performed before it
failed.

The stubs model just enough object semantics to keep the comparison at the level of *names*:
``getattr(stub, 'x')`` is the stub for ``NAME.x``, ``functools.partial`` objects remember their
function and arguments (including through ``__setstate__``), and the copyreg reconstructors
instantiate their class argument the way the real ones do.
"""

from __future__ import annotations

import collections
import copyreg
import datetime
import decimal
import functools
import io
import operator
import pickle
import pickletools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelshield.pickle import Machine
from modelshield.pickle.names import canonical, fix_import
from modelshield.pickle.trace import Event, EventKind

# ----------------------------------------------------------------------------- the reference

Record = tuple[str, str | None]
"""``("import", name)``, ``("call", name or None)`` or ``("persid", None)``."""


def _global_protocols(data: bytes) -> list[int]:
    """The protocol in force at each GLOBAL / INST / STACK_GLOBAL, in stream order.

    The C unpickler applies the Python 2 name mapping *inside* its default ``find_class``; an
    override receives the names as written, so the recorder maps them itself, with the
    protocol CPython would use (the last PROTO seen, 0 before any).
    """
    proto = 0
    out: list[int] = []
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name == "PROTO":
                assert isinstance(arg, int)
                proto = arg
            elif op.name in ("GLOBAL", "INST", "STACK_GLOBAL"):
                out.append(proto)
            elif op.name == "STOP":
                break
    except Exception:  # noqa: S110 - malformed input: keep what was decoded
        pass
    return out


@dataclass
class Recorder:
    events: list[Record] = field(default_factory=list)
    classes: dict[str, type[GlobalStub]] = field(default_factory=dict)

    def stub(self, name: str) -> type[GlobalStub]:
        cls = self.classes.get(name)
        if cls is None:
            cls = type(f"Stub[{name}]", (GlobalStub,), {"_rec": self, "_name": name})
            self.classes[name] = cls
        return cls

    def call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call something found on the loader's stack (a stub, or data: CPython would raise)."""
        if isinstance(func, type) and issubclass(func, GlobalStub):
            return func(*args, **kwargs)
        if isinstance(func, InstanceStub):
            return func(*args, **kwargs)
        raise TypeError(f"{type(func).__name__!r} object is not callable")

    def emulate(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The result of calling the global ``name`` (already recorded)."""
        if name == "builtins.getattr" and len(args) >= 2 and isinstance(args[1], str):
            obj, attr = args[0], args[1]
            if isinstance(obj, type) and issubclass(obj, GlobalStub):
                return self.stub(canonical(f"{obj._name}.{attr}"))
            if isinstance(obj, InstanceStub) and attr in obj._attrs:
                return obj._attrs[attr]
            return InstanceStub(self)
        if name == "functools.partial" and args:
            return PartialStub(self, args[0], args[1:], kwargs)
        if name == "copyreg._reconstructor" and args:
            # obj = base.__new__(cls, state); base.__init__(obj, state) unless base is object
            base = args[1] if len(args) > 1 else None
            if not (isinstance(base, type) and getattr(base, "_name", "") == "builtins.object"):
                self.call(base, args[2:3] or (None,), {})
            return _new(args[0], ())
        if name == "copyreg.__newobj__" and args:
            return _new(args[0], args[1:])
        if name == "copyreg.__newobj_ex__" and args:
            return _new(args[0], ())
        return InstanceStub(self)


def _new(cls: Any, args: tuple[Any, ...]) -> Any:
    if isinstance(cls, type) and issubclass(cls, GlobalStub):
        return cls.__new__(cls, *args)
    raise TypeError("not a type")


class GlobalStub:
    """Base of the stub *classes* returned by ``find_class``: NEWOBJ needs a real type."""

    _rec: Recorder
    _name: str

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        cls._rec.events.append(("call", cls._name))
        return cls._rec.emulate(cls._name, args, kwargs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


class InstanceStub:
    """What a stub call returns: accepts BUILD, APPENDS, SETITEMS and ADDITEMS, and records
    being called. An instance-level ``__setstate__`` written by BUILD is honoured, as CPython's
    ``getattr(inst, '__setstate__')`` would find it."""

    def __init__(self, rec: Recorder) -> None:
        self._rec = rec
        self._attrs: dict[str, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._rec.events.append(("call", None))
        return InstanceStub(self._rec)

    def __setstate__(self, state: Any) -> None:
        if "__setstate__" in self._attrs:
            self._rec.call(self._attrs["__setstate__"], (state,), {})
            return
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        for part in (state, slots):
            if isinstance(part, dict):
                for k, v in part.items():
                    if isinstance(k, str):
                        self._attrs[k] = v

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class PartialStub(InstanceStub):
    def __init__(
        self, rec: Recorder, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        super().__init__(rec)
        self.func, self.args, self.kwargs = func, args, kwargs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 4:
            self.func, args, kwargs, _ = state
            self.args = tuple(args)
            self.kwargs = dict(kwargs or {})
        else:
            raise TypeError("invalid partial state")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._rec.call(self.func, self.args + args, {**self.kwargs, **kwargs})


class RecordingUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, rec: Recorder) -> None:
        super().__init__(io.BytesIO(data))
        self.rec = rec
        self.protos = _global_protocols(data)
        self.n_globals = 0

    def find_class(self, module: str, name: str) -> Any:
        i = self.n_globals
        self.n_globals += 1
        proto = self.protos[i] if i < len(self.protos) else (self.protos or [0])[-1]
        module, name = fix_import(module, name, proto)
        dotted = canonical(f"{module}.{name}")
        self.rec.events.append(("import", dotted))
        return self.rec.stub(dotted)

    def persistent_load(self, pid: Any) -> Any:
        self.rec.events.append(("persid", None))
        return InstanceStub(self.rec)


def reference(data: bytes) -> tuple[list[Record], BaseException | None]:
    """What CPython's loader imports and calls on ``data`` (up to an error, if it raises)."""
    rec = Recorder()
    try:
        RecordingUnpickler(data, rec).load()
    except Exception as exc:
        return rec.events, exc
    return rec.events, None


_COMPARED = {EventKind.IMPORT: "import", EventKind.CALL: "call", EventKind.PERSID: "persid"}


def engine_records(events: tuple[Event, ...]) -> list[Record]:
    out: list[Record] = []
    for e in events:
        if e.kind in _COMPARED:
            # A call the engine evaluated (dill's literal _eval_repr) names the global called.
            name = e.origin or e.name if e.kind is not EventKind.PERSID else None
            out.append((_COMPARED[e.kind], name))
        elif e.kind is EventKind.DYNAMIC_IMPORT:
            out.append(("import", "*"))
    return out


def _analyse(data: bytes) -> tuple[list[Record], Any]:
    analysis = Machine().analyse(data)
    return engine_records(analysis.streams[0].events if analysis.streams else ()), analysis


# ----------------------------------------------------------------------------- test objects
# Module-level classes so that the picklers can name them; the loader side never imports them.


class Plain:
    """Dict state: copyreg._reconstructor at protocols 0-1, NEWOBJ + BUILD from 2."""

    def __init__(self, payload: object) -> None:
        self.payload = payload


class Slotted:
    """Slot state: BUILD with a ``(dict, slots)`` tuple."""

    __slots__ = ("__dict__", "x", "y")

    def __init__(self, x: object, y: object) -> None:
        self.x = x
        self.y = y
        self.extra = 1

    def __getstate__(self) -> object:
        return (self.__dict__, {"x": self.x, "y": self.y})

    def __setstate__(self, state: Any) -> None:  # pragma: no cover - never loaded for real
        raise AssertionError


class NewArgs:
    """NEWOBJ with arguments (``__getnewargs__``)."""

    v: object

    def __new__(cls, v: object = None) -> NewArgs:
        self = super().__new__(cls)
        self.v = v
        return self

    def __getnewargs__(self) -> tuple[object, ...]:
        return (self.v,)


class NewArgsEx:
    """NEWOBJ_EX from protocol 4; ``functools.partial(cls.__new__, ...)`` at 2-3."""

    v: object
    k: object

    def __new__(cls, v: object = None, *, k: object = None) -> NewArgsEx:
        self = super().__new__(cls)
        self.v, self.k = v, k
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[object, ...], dict[str, object]]:
        return (self.v,), {"k": self.k}


class Reduced:
    """A plain ``__reduce__`` with state, list items and dict items."""

    def __init__(self, items: list[object], mapping: dict[str, object]) -> None:
        self.items, self.mapping = items, mapping

    def __reduce__(self) -> tuple[object, ...]:
        return (Reduced, ([], {}), {"s": 1}, iter(self.items), iter(self.mapping.items()))


class ViaNewobj:
    """``__reduce__`` naming copyreg.__newobj__ itself (NEWOBJ from 2, a REDUCE below)."""

    def __init__(self, v: object) -> None:
        self.v = v

    def __reduce__(self) -> tuple[object, ...]:
        return (copyreg.__newobj__, (ViaNewobj,), {"v": self.v})  # type: ignore[attr-defined]


class StdlibCall:
    """Reduces to a call of a standard-library callable."""

    def __init__(self, which: int, arg: object) -> None:
        self.which, self.arg = which, arg

    def __reduce__(self) -> tuple[object, ...]:
        funcs: list[Callable[..., object]] = [
            collections.OrderedDict,
            operator.add,
            operator.attrgetter,
            functools.reduce,
            getattr,
        ]
        f = funcs[self.which % len(funcs)]
        if f is collections.OrderedDict:
            return (f, ())
        if f is operator.attrgetter:
            return (f, ("real",))
        if f is getattr:
            return (f, (Factory, "create"))
        return (f, (self.arg, self.arg))


class Factory:
    class Inner:
        """A nested class: STACK_GLOBAL with a dotted name from 4, getattr below."""

        def __init__(self, v: object) -> None:
            self.v = v

    @classmethod
    def create(cls) -> Factory:
        return cls()


class MyList(list[object]):
    """A list subclass: APPENDS on the instance; _reconstructor with base list below 2."""


class MyDict(dict[object, object]):
    """A dict subclass: SETITEMS on the instance."""


def _stdlib_values() -> list[object]:
    return [
        collections.OrderedDict([("a", 1), ("b", [2])]),
        collections.Counter("abca"),
        collections.deque([1, 2], maxlen=5),
        decimal.Decimal("1.25"),
        complex(1.5, -2),
        range(1, 10, 3),
        slice(1, None, 2),
        datetime.date(2020, 2, 29),
        datetime.datetime(2021, 1, 1, 12, 0, tzinfo=datetime.UTC),
        functools.partial(max, 1, key=abs),
        operator.attrgetter("a.b"),
        operator.itemgetter(1),
        ValueError("boom", 3),
        Ellipsis,
        NotImplemented,
        type(None),
        len,
        Factory.create,
        Factory.Inner(5),
        bytearray(b"\x00\xff"),
        b"raw\x00bytes",
    ]


# ----------------------------------------------------------------------------- strategies

_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=False),
    st.text(),
    st.text(alphabet=st.sampled_from("\\\n\r'\"\x00é€😀\udc80 ab")),
    st.binary(max_size=40),
    st.binary(max_size=40).map(bytearray),
    st.sampled_from(_stdlib_values()),
)
_hashable: st.SearchStrategy[object] = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.binary(max_size=8)
)


def _objects(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(_hashable, children, max_size=4),
        st.sets(_hashable, max_size=4),
        st.frozensets(_hashable, max_size=4),
        children.map(Plain),
        st.tuples(children, children).map(lambda t: Slotted(*t)),
        children.map(NewArgs),
        st.tuples(children, children).map(lambda t: NewArgsEx(t[0], k=t[1])),
        st.tuples(
            st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children)
        ).map(lambda t: Reduced(*t)),
        children.map(ViaNewobj),
        st.tuples(st.integers(0, 10), children).map(lambda t: StdlibCall(*t)),
        st.lists(children, max_size=3).map(MyList),
        st.dictionaries(_hashable, children, max_size=3).map(
            lambda d: MyDict(dict[object, object](d))
        ),
        children.map(Factory.Inner),
    )


_trees = st.recursive(_leaves, _objects, max_leaves=12)


@st.composite
def pickled_objects(draw: st.DrawFn) -> object:
    """A tree with shared references and cycles."""
    obj = draw(_trees)
    shape = draw(st.integers(0, 3))
    if shape == 1:
        return [obj, obj, (obj,)]
    if shape == 2:
        cyc: list[object] = [obj]
        cyc.append(cyc)
        holder = Plain(cyc)
        holder.me = holder  # type: ignore[attr-defined]
        return {"c": cyc, "h": holder, "d": {"again": holder}}
    if shape == 3:
        d: dict[str, object] = {"v": obj}
        d["self"] = d
        return MyList([d, d])
    return obj


def _pickles(obj: object) -> Iterator[tuple[str, bytes]]:
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        c = pickle.dumps(obj, protocol=proto)
        yield f"C proto {proto}", c
        yield f"C proto {proto} optimized", pickletools.optimize(c)
        buf = io.BytesIO()
        try:
            _plain_python_pickler(buf, proto).dump(obj)
        finally:
            if "dill" in sys.modules:
                sys.modules["dill"].extend(True)
        yield f"Python proto {proto}", buf.getvalue()


def _plain_python_pickler(buf: io.BytesIO, proto: int) -> Any:
    """The pure-Python pickler with the standard dispatch table: importing dill (other tests
    in the session do) adds dill's reducers to ``pickle._Pickler.dispatch``."""
    dill = sys.modules.get("dill")
    if dill is not None:
        dill.extend(False)
    return pickle._Pickler(buf, protocol=proto)


def _check_equal(data: bytes, label: str) -> None:
    expected, exc = reference(data)
    assert exc is None, f"{label}: the reference loader raised {exc!r} on a valid pickle"
    actual, analysis = _analyse(data)
    assert len(analysis.streams) == 1, f"{label}: {len(analysis.streams)} streams"
    stream = analysis.streams[0]
    assert stream.complete, f"{label}: {stream.error} at {stream.error_pos} ({stream.limit})"
    assert stream.end == len(data)
    assert analysis.trailing_start is None
    # Where the recording stubs can only say "a computed object" (None), the engine may know
    # more: it models a few pure helpers (e.g. dill's _load_type, which the pure-Python pickler
    # uses once dill is imported in the test session).
    same = len(actual) == len(expected) and all(
        _matches(r, e) or (r[0] == e[0] and r[1] is None)
        for r, e in zip(expected, actual, strict=True)
    )
    assert same, f"{label}: trace differs\n  engine:  {actual}\n  cpython: {expected}"


# ----------------------------------------------------------------------------- valid pickles


@pytest.mark.parametrize("obj", _stdlib_values(), ids=lambda o: type(o).__name__)
def test_stdlib_objects_match_cpython(obj: object) -> None:
    for label, data in _pickles(obj):
        _check_equal(data, label)


@pytest.mark.parametrize(
    "obj",
    [
        Plain(1),
        Slotted("x", [1]),
        NewArgs((1, 2)),
        NewArgsEx("v", k={"a": 1}),
        Reduced([1, 2], {"a": 3}),
        ViaNewobj(2),
        MyList([1, MyDict({1: 2})]),
        Factory.Inner(Factory.Inner(None)),
        *[StdlibCall(i, 2) for i in range(5)],
    ],
    ids=lambda o: type(o).__name__,
)
def test_test_classes_match_cpython(obj: object) -> None:
    for label, data in _pickles(obj):
        _check_equal(data, label)


def test_reconstructor_records_the_class_instantiated() -> None:
    data = pickle.dumps(Plain(1), protocol=0)
    expected, _ = reference(data)
    here = f"{__name__}.Plain"
    assert ("call", "copyreg._reconstructor") in expected
    assert expected[expected.index(("call", "copyreg._reconstructor")) + 1] == ("call", here)
    calls = [e for e in Machine().analyse(data).events() if e.kind is EventKind.CALL]
    assert [c.name for c in calls] == ["copyreg._reconstructor", here]
    assert calls[1].via == "copyreg._reconstructor"


def test_newobj_is_a_call_of_the_class() -> None:
    data = pickle.dumps(NewArgs(3), protocol=2)
    calls = [e for e in Machine().analyse(data).events() if e.kind is EventKind.CALL]
    assert [c.name for c in calls] == [f"{__name__}.NewArgs"]
    assert calls[0].via is not None and calls[0].via.startswith("NEWOBJ")
    data = pickle.dumps(NewArgsEx(3, k=4), protocol=4)
    calls = [e for e in Machine().analyse(data).events() if e.kind is EventKind.CALL]
    assert [c.name for c in calls] == [f"{__name__}.NewArgsEx"]
    assert calls[0].via is not None and calls[0].via.startswith("NEWOBJ_EX")


def test_python2_names_are_mapped_like_cpython() -> None:
    # Protocol < 3 pickles written by Python 3 use Python 2 names (copy_reg, __builtin__).
    data = pickle.dumps([Plain(range(3)), b"x"], protocol=1)
    assert b"copy_reg" in data and b"__builtin__" in data
    _check_equal(data, "proto 1")
    expected, _ = reference(data)
    assert ("import", "copyreg._reconstructor") in expected
    assert ("import", "builtins.range") in expected
    # At protocol 3 the same names are taken literally, by both.
    lit = b"\x80\x03ccopy_reg\n_reconstructor\nq\x00."
    assert reference(lit)[0] == [("import", "copy_reg._reconstructor")]
    _check_equal(lit, "literal")


def test_persistent_ids_match() -> None:
    class P(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return "storage" if isinstance(obj, bytes) else None

    for proto in range(6):
        buf = io.BytesIO()
        P(buf, protocol=proto).dump([b"a", Plain(b"b"), "c"])
        _check_equal(buf.getvalue(), f"persid proto {proto}")
        assert ("persid", None) in reference(buf.getvalue())[0]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pickled_objects())
def test_random_objects_match_cpython(obj: object) -> None:
    for label, data in _pickles(obj):
        _check_equal(data, label)


# ----------------------------------------------------------------------------- broken pickles


def _safe_for_cpython(data: bytes) -> bool:
    """Whether CPython's loader can run ``data`` without allocating gigabytes.

    The C unpickler resizes its memo array to twice the largest PUT index (and zeroes it), and
    allocates a bytes object of the claimed size before reading it.
    """
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("PUT", "LONG_BINPUT") and isinstance(arg, int) and arg > 1 << 20:
                return False
    except Exception:  # noqa: S110 - decoded as far as possible
        pass
    for i, b in enumerate(data):
        width = 8 if b in b"\x8d\x8e\x95\x96" else 4 if b in b"BTX" else 0
        if width and int.from_bytes(data[i + 1 : i + 1 + width], "little") > 1 << 26:
            return False
        if b in b"pr" and data[i + 1 : i + 2].isdigit():
            line = data[i + 1 : data.find(b"\n", i + 1)]
            if len(line) > 6:
                return False
    return True


def _matches(ref: Record, eng: Record) -> bool:
    if ref[0] != eng[0]:
        return False
    return ref[1] == eng[1] or eng[1] == "*"


def check_never_misses(data: bytes, label: str) -> None:
    """Everything CPython's loader imported/called before it raised was recorded, in order."""
    if not _safe_for_cpython(data):
        return
    expected, exc = reference(data)
    actual, analysis = _analyse(data)
    n = len(expected)
    prefix = actual[:n]
    assert len(prefix) == n and all(
        _matches(r, e) for r, e in zip(expected, prefix, strict=True)
    ), (
        f"{label}: data={data!r}\n  cpython ({exc!r}): {expected}\n  engine "
        f"({analysis.streams[0].error if analysis.streams else None}): {actual}"
    )
    if exc is None:
        # The loader accepted it: the machine must not call the stream broken either.
        assert analysis.streams and analysis.streams[0].complete, (
            f"{label}: data={data!r} loads in CPython but the engine says "
            f"{analysis.streams[0].error if analysis.streams else 'no stream'}"
        )


_SEEDS: list[object] = [
    Plain({"k": [1, 2.5, "s"]}),
    [NewArgs(1), NewArgsEx(2, k=3), Slotted(1, 2)],
    StdlibCall(4, 0),
    Reduced([1], {"a": MyList([2])}),
    {"d": collections.OrderedDict(a=1), "r": range(2), "b": b"xy"},
]


def _seed_pickles() -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for i, obj in enumerate(_SEEDS):
        for proto in (0, 1, 2, 4, 5):
            out.append((f"seed {i} proto {proto}", pickle.dumps(obj, protocol=proto)))
    return out


@pytest.mark.parametrize(("label", "data"), _seed_pickles(), ids=lambda x: str(x)[:20])
def test_truncated_pickles_never_miss_events(label: str, data: bytes) -> None:
    machine = Machine()
    for cut in range(len(data)):
        check_never_misses(data[:cut], f"{label} cut at {cut}")
        a = machine.analyse(data[:cut])
        assert not any(s.complete for s in a.streams[:1]) or cut == 0
        if a.streams:
            assert a.streams[0].truncated


@pytest.mark.parametrize(("label", "data"), _seed_pickles(), ids=lambda x: str(x)[:20])
def test_flipped_bytes_never_miss_events(label: str, data: bytes) -> None:
    for pos in range(len(data)):
        for mask in (0x01, 0x20, 0xFF):
            mutated = bytearray(data)
            mutated[pos] ^= mask
            check_never_misses(bytes(mutated), f"{label} byte {pos} ^ {mask:#x}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_seed_pickles()),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_random_mutations_never_miss_events(
    seed: tuple[str, bytes], edits: list[tuple[int, int]]
) -> None:
    label, data = seed
    mutated = bytearray(data)
    for pos, value in edits:
        mutated[pos % len(mutated)] = value
    check_never_misses(bytes(mutated), label)


# ----------------------------------------------------------------------------- engine bugs

_PAYLOAD = b'cos\nsystem\n(S"id"\ntR.'
"""What follows each trigger: a call the loader performs and the engine must see."""


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"I010\n0" + _PAYLOAD, id="INT-leading-zero-is-octal-for-strtol"),
        pytest.param(b"N(lp010\n0" + _PAYLOAD, id="PUT-is-base-10"),
        pytest.param(b"Np010\n0g010\n0" + _PAYLOAD, id="GET-is-base-10"),
    ],
)
def test_numbers_are_parsed_like_cpython(data: bytes) -> None:
    # Fixed engine bug: INT follows strtol (base 0, '010' is 8), GET/PUT are base 10.
    expected, exc = reference(data)
    assert exc is None and ("call", "os.system") in expected
    check_never_misses(data, "numbers")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"I1\x00junk\n0" + _PAYLOAD, id="INT-ends-at-NUL"),
        pytest.param(b"F1.5\x00junk\n0" + _PAYLOAD, id="FLOAT-ends-at-NUL"),
        pytest.param(b"Np1\x00junk\n0" + _PAYLOAD, id="PUT-ends-at-NUL"),
        pytest.param(b"K\x01(e0" + _PAYLOAD, id="empty-APPENDS-is-a-no-op"),
        pytest.param(b"K\x01(u0" + _PAYLOAD, id="empty-SETITEMS-is-a-no-op"),
        pytest.param(b"(K\x01lK\x00K\x05s0" + _PAYLOAD, id="SETITEM-on-a-list"),
        pytest.param(
            b"\x80\x05\x96\x01\x00\x00\x00\x00\x00\x00\x00aK\x41a0" + _PAYLOAD,
            id="APPEND-to-a-bytearray",
        ),
        pytest.param(
            b"\x80\x05\x96\x01\x00\x00\x00\x00\x00\x00\x00aK\x00K\x41s0" + _PAYLOAD,
            id="SETITEM-on-a-bytearray",
        ),
        pytest.param(b"K\x01(N}tb0" + _PAYLOAD, id="BUILD-None-and-empty-slots-on-int"),
    ],
)
def test_engine_goes_on_where_cpython_does(data: bytes) -> None:
    # Fixed engine bugs: each prefix is accepted by CPython and used to stop the engine early,
    # hiding the os.system call after it.
    expected, exc = reference(data)
    assert exc is None and ("call", "os.system") in expected  # the loader really calls it
    check_never_misses(data, "bug")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"X\x01\x00\x00\x00\xff.", id="BINUNICODE"),
        pytest.param(b"\x8c\x01\xff.", id="SHORT_BINUNICODE"),
        pytest.param(b"\x8d\x01\x00\x00\x00\x00\x00\x00\x00\xff.", id="BINUNICODE8"),
        pytest.param(b"\x8c\x02\xed\xa0.", id="SHORT_BINUNICODE-truncated-surrogate"),
    ],
)
def test_invalid_utf8_is_a_broken_stream_not_a_crash(data: bytes) -> None:
    assert reference(data)[1] is not None  # CPython: UnicodeDecodeError, a broken stream
    analysis = Machine().analyse(data)
    assert analysis.streams[0].error is not None
    assert analysis.streams[0].error_pos == 0


def test_partial_setstate_replaces_the_function() -> None:
    # partial(print) whose BUILD state is (os.system, ('id',), {}, None): calling it runs
    # os.system('id'); the engine used to attribute the call to builtins.print.
    data = b'\x80\x04cfunctools\npartial\ncbuiltins\nprint\n\x85R(cos\nsystem\n(S"id"\nt}Ntb)R.'
    expected, exc = reference(data)
    assert exc is None
    assert expected[-1] == ("call", "os.system")
    _check_equal(data, "partial setstate")
