"""Symbolic values on the pickle machine's stack and memo.

A value stands for what CPython's unpickler would hold at that point, without ever creating the
real object: a constant, a reference to a global by dotted name, a container, the result of a
call. Containers keep only a bounded prefix of their items (enough to explain and to resolve
indirection) so memory stays flat on huge pickles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_KEPT_ITEMS = 256
"""Items a container keeps for evidence and indirection; the rest are counted, not kept."""
EAGER_BYTES = 1 << 16
"""Byte and string arguments up to this size are copied; larger ones stay memoryviews."""


class Value:
    __slots__ = ()


@dataclass(eq=False, slots=True)
class Const(Value):
    """A literal: int, float, bool, None, str, bytes, bytearray.

    Large bytes/str arguments are kept as a ``memoryview`` of the input (``lazy`` is then the
    type they stand for: ``"bytes"``, ``"str"`` or ``"bytearray"``).
    """

    value: object
    lazy: str | None = None

    def as_str(self) -> str | None:
        if self.lazy == "str" and isinstance(self.value, memoryview):
            if len(self.value) > 1 << 20:
                return None  # never needed as a name; not worth materialising
            try:
                return bytes(self.value).decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                return None
        return self.value if isinstance(self.value, str) else None

    def as_bytes(self, limit: int) -> bytes | None:
        v = self.value
        if isinstance(v, memoryview) and self.lazy in ("bytes", "bytearray"):
            return bytes(v) if len(v) <= limit else None
        if isinstance(v, bytes | bytearray):
            return bytes(v)
        return None


@dataclass(eq=False, slots=True)
class Ref(Value):
    """A Python object named by its dotted path: a module, class, function or attribute."""

    name: str


@dataclass(eq=False, slots=True)
class Seq(Value):
    """list, tuple, set or frozenset."""

    kind: str
    items: list[Value] = field(default_factory=list)
    total: int = 0

    def add(self, item: Value) -> None:
        if len(self.items) < MAX_KEPT_ITEMS:
            self.items.append(item)
        self.total += 1

    def extend(self, items: list[Value]) -> None:
        room = MAX_KEPT_ITEMS - len(self.items)
        if room > 0:
            self.items.extend(items[:room])
        self.total += len(items)


@dataclass(eq=False, slots=True)
class DictV(Value):
    items: list[tuple[Value, Value]] = field(default_factory=list)
    total: int = 0

    def set(self, key: Value, value: Value) -> None:
        if len(self.items) < MAX_KEPT_ITEMS or _is_dunder(key):
            self.items.append((key, value))
        self.total += 1

    def update(self, pairs: list[tuple[Value, Value]]) -> None:
        """:meth:`set` for each pair, in one step."""
        room = MAX_KEPT_ITEMS - len(self.items)
        if room > 0:
            self.items.extend(pairs[:room])
        if room < len(pairs):  # past the cap: only dunder keys are kept (see set())
            self.items.extend(p for p in pairs[max(room, 0) :] if _is_dunder(p[0]))
        self.total += len(pairs)

    def get(self, key: str) -> Value | None:
        for k, v in reversed(self.items):
            if isinstance(k, Const) and k.value == key:
                return v
        return None


@dataclass(eq=False, slots=True)
class Obj(Value):
    """The result of a call or instantiation. ``target`` is the resolved callable, if known.

    ``attrs`` records instance attributes written by BUILD, so that a later BUILD that finds an
    instance-level ``__setstate__`` is tied to the callable really invoked.
    """

    target: str | None
    desc: str
    attrs: dict[str, Value] = field(default_factory=dict)
    args: list[Value] = field(default_factory=list)
    """The first few call arguments (to interpret e.g. ``numpy.dtype('f8')``)."""
    state: Value | None = None
    """The last non-dict state given to BUILD (e.g. a dtype's byte order and flags)."""


@dataclass(eq=False, slots=True)
class AttrGetter(Value):
    path: str


@dataclass(eq=False, slots=True)
class ItemGetter(Value):
    key: Value


@dataclass(eq=False, slots=True)
class MethodCaller(Value):
    method: str
    args: list[Value]


@dataclass(eq=False, slots=True)
class Partial(Value):
    func: Value
    args: list[Value]


@dataclass(eq=False, slots=True)
class Namespace(Value):
    """A mapping whose items are globals: ``sys.modules`` or a module's ``__dict__``."""

    prefix: str | None
    """``None`` for sys.modules (keys are module names), else the module name."""


@dataclass(eq=False, slots=True)
class Persistent(Value):
    pid: Value


@dataclass(eq=False, slots=True)
class CodeObject(Value):
    """What ``marshal.loads`` returns: a code object, never decoded by us."""


@dataclass(eq=False, slots=True)
class Unknown(Value):
    """Anything the machine cannot model (out-of-band buffers, extension codes, ...)."""

    desc: str


class Mark:
    """The MARK sentinel (never a value; kept off the value stack in CPython too)."""


def _is_dunder(v: Value) -> bool:
    return type(v) is Const and type(s := v.value) is str and s[:2] == "__" and _dunder(s)


def _dunder(s: str) -> bool:
    return len(s) > 4 and s.startswith("__") and s.endswith("__")


def is_dunder_name(s: str) -> bool:
    return _dunder(s)


# ---------------------------------------------------------------------------- rendering


def render(v: Value, depth: int = 0, budget: int = 240) -> str:
    """A short, Python-like rendering of a value for evidence strings."""
    text = _render(v, depth)
    if len(text) > budget:
        text = text[: budget - 3] + "..."
    return text


def _render(v: Value, depth: int) -> str:
    if depth > 4:
        return "..."
    if isinstance(v, Const):
        if isinstance(v.value, memoryview):
            return f"<{v.lazy} of {len(v.value)} bytes>"
        if isinstance(v.value, str) and len(v.value) > 200:
            return repr(v.value[:200]) + "..."
        if isinstance(v.value, bytes | bytearray) and len(v.value) > 120:
            return repr(bytes(v.value[:120])) + f"...<{len(v.value)} bytes>"
        return repr(v.value)
    if isinstance(v, Ref):
        return v.name
    if isinstance(v, Seq):
        shown = [_render(i, depth + 1) for i in v.items[:8]]
        if v.total > len(shown):
            shown.append(f"...+{v.total - len(shown)}")
        body = ", ".join(shown)
        if v.kind == "tuple":
            return f"({body},)" if v.total == 1 else f"({body})"
        if v.kind == "list":
            return f"[{body}]"
        if v.kind == "set":
            return "{" + body + "}" if body else "set()"
        return f"frozenset({{{body}}})"
    if isinstance(v, DictV):
        shown = [f"{_render(k, depth + 1)}: {_render(x, depth + 1)}" for k, x in v.items[:8]]
        if v.total > len(shown):
            shown.append(f"...+{v.total - len(shown)}")
        return "{" + ", ".join(shown) + "}"
    if isinstance(v, Obj):
        return v.desc
    if isinstance(v, AttrGetter):
        return f"operator.attrgetter({v.path!r})"
    if isinstance(v, ItemGetter):
        return f"operator.itemgetter({_render(v.key, depth + 1)})"
    if isinstance(v, MethodCaller):
        args = "".join(", " + _render(a, depth + 1) for a in v.args)
        return f"operator.methodcaller({v.method!r}{args})"
    if isinstance(v, Partial):
        args = "".join(", " + _render(a, depth + 1) for a in v.args)
        return f"functools.partial({_render(v.func, depth + 1)}{args})"
    if isinstance(v, Namespace):
        return "sys.modules" if v.prefix is None else f"vars({v.prefix})"
    if isinstance(v, Persistent):
        return f"persistent_load({_render(v.pid, depth + 1)})"
    if isinstance(v, CodeObject):
        return "<code object>"
    if isinstance(v, Unknown):
        return f"<{v.desc}>"
    return "<?>"


def render_call(func: str, args: list[Value], kwargs: DictV | None = None) -> str:
    parts = [render(a, budget=400) for a in args]
    if kwargs is not None:
        for k, x in kwargs.items[:8]:
            key = k.value if isinstance(k, Const) and isinstance(k.value, str) else render(k)
            parts.append(f"{key}={render(x)}")
    text = f"{func}({', '.join(parts)})"
    if len(text) > 1000:
        text = text[:997] + "..."
    return text
