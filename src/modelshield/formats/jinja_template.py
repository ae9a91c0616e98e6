"""Jinja templates (GGUF and tokenizer chat templates) parsed into artifacts, never rendered.

``jinja2``'s parser builds an abstract syntax tree and executes nothing: no code is generated,
compiled or run, no filter, test or global is called. From the tree this module lists what the
template would touch when rendered: attribute and item accesses, filters and tests with their
arguments, calls, names read, templates loaded, and constant strings. Names built from constant
pieces (``'_' * 2 ~ 'class' ~ '_' * 2``, ``'%c' | format(95)``, ``['__', 'class', '__'] |
join``, ``'\\x5f'`` escapes, variables set to constants) are folded with a small bounded
evaluator over string and integer literals only. Judging what is dangerous is the caller's job.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import product

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.ext import Extension, do, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SOURCE = 4 << 20
"""Longest template parsed, in characters."""

_MAX_STR = 10_000
_MAX_CANDIDATES = 64
_MAX_FOLD_DEPTH = 40


class GenerationExtension(Extension):
    """``{% generation %}...{% endgeneration %}`` (Hugging Face transformers' assistant mask)."""

    tags = {"generation"}  # noqa: RUF012 (jinja2's declared type)

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


class Kind(enum.Enum):
    ATTR = "attribute"
    """``x.name``"""
    ITEM = "item"
    """``x['name']`` (Jinja falls back to the attribute of that name)."""
    FILTER_ARG = "filter-argument"
    """A string argument of a filter or test (``|attr('name')``, ``|map(attribute='a.b')``)."""
    CALL = "call"
    """``name(...)`` or ``x.name(...)``"""
    NAME = "name"
    """A variable read."""
    FORMAT = "format-string"
    """The receiver of ``.format`` / ``.format_map`` (its fields walk attributes)."""
    LOAD = "template-load"
    """``{% include %}``, ``{% import %}``, ``{% extends %}``, ``{% from %}``."""
    CONST = "string"
    """A constant string (literal or folded)."""


@dataclass(frozen=True)
class Artifact:
    kind: Kind
    name: str
    """The attribute, item, filter argument, callee, variable or string; ``""`` if dynamic."""
    lineno: int
    via: str | None = None
    """The filter or test for FILTER_ARG; ``"method"`` or ``"function"`` for CALL."""
    folded: bool = False
    """The name was computed from constant pieces, not written as one literal."""


@dataclass
class Analysis:
    artifacts: list[Artifact] = field(default_factory=list)
    filters: set[str] = field(default_factory=set)
    tests: set[str] = field(default_factory=set)

    def of(self, kind: Kind) -> Iterator[Artifact]:
        return (a for a in self.artifacts if a.kind is kind)


class TemplateError(Exception):
    """The template cannot be parsed (so no Jinja loader can render it)."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


def _environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        extensions=[loopcontrols, do, GenerationExtension],
        trim_blocks=True,
        lstrip_blocks=True,
    )


def parse(source: str) -> nodes.Template:
    """Parse (never render) ``source``; raises :class:`TemplateError`."""
    if len(source) > MAX_SOURCE:
        raise TemplateError(f"template of {len(source)} characters, over the {MAX_SOURCE} limit")
    try:
        return _environment().parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(exc.message or str(exc), exc.lineno) from None
    except RecursionError:
        raise TemplateError("template nested too deeply to parse") from None


Folded = str | int | tuple[str | int, ...]

_SAFE_PERCENT = re.compile(r"%(?:%|[-+ #0]?\d{0,2}[sdixXoc])")


def _percent(fmt: str, args: tuple[str | int, ...]) -> str | None:
    """``fmt % args`` for plain conversions of literal strings and small integers only."""
    stripped = _SAFE_PERCENT.sub("", fmt)
    if "%" in stripped:
        return None
    try:
        out = fmt % args
    except (TypeError, ValueError, OverflowError):
        return None
    return out if len(out) <= _MAX_STR else None


_STR_METHODS = {"lower", "upper", "strip", "lstrip", "rstrip", "title", "capitalize"}
_STR_FILTERS = {"lower", "upper", "trim", "string", "capitalize", "title"}


class _Folder:
    """Bounded evaluation of constant string and integer expressions (nothing else)."""

    def __init__(self, tree: nodes.Template) -> None:
        self.env: dict[str, list[tuple[bool, nodes.Node]]] = {}
        """Variable name -> (is-an-item-of, expression) for each constant-looking binding."""
        for a in tree.find_all(nodes.Assign):
            if isinstance(a.target, nodes.Name):
                self.env.setdefault(a.target.name, []).append((False, a.node))
        for f in tree.find_all(nodes.For):
            if isinstance(f.target, nodes.Name):
                self.env.setdefault(f.target.name, []).append((True, f.iter))
        for m in tree.find_all(nodes.Macro):
            tail = m.args[len(m.args) - len(m.defaults) :]
            for arg, default in zip(tail, m.defaults, strict=True):
                self.env.setdefault(arg.name, []).append((False, default))
        self.active: set[str] = set()

    def values(self, node: nodes.Node | None, depth: int = 0) -> list[Folded]:
        if node is None or depth > _MAX_FOLD_DEPTH:
            return []
        out = self._values(node, depth + 1)
        ok: list[Folded] = []
        for v in out:
            if isinstance(v, str) and len(v) > _MAX_STR:
                continue
            if v not in ok:
                ok.append(v)
            if len(ok) >= _MAX_CANDIDATES:
                break
        return ok

    def strings(self, node: nodes.Node | None) -> list[str]:
        return [v for v in self.values(node) if isinstance(v, str)]

    def _values(self, node: nodes.Node, d: int) -> list[Folded]:
        if isinstance(node, nodes.Const):
            v = node.value
            if isinstance(v, bool):
                return []
            if isinstance(v, str | int):
                return [v]
            return []
        if isinstance(node, nodes.Neg):
            return [-v for v in self.values(node.node, d) if isinstance(v, int)]
        if isinstance(node, nodes.List | nodes.Tuple):
            parts = [self.values(i, d) for i in node.items]
            if any(not p for p in parts) or _combinations(parts) > _MAX_CANDIDATES:
                return []
            return [tuple(x for x in c if not isinstance(x, tuple)) for c in product(*parts)]
        if isinstance(node, nodes.Name):
            if node.name in self.active:
                return []
            self.active.add(node.name)
            try:
                out: list[Folded] = []
                for is_item, src in self.env.get(node.name, []):
                    for v in self.values(src, d):
                        if not is_item:
                            out.append(v)
                        elif isinstance(v, tuple | str):
                            out.extend(v)
                return out
            finally:
                self.active.discard(node.name)
        if isinstance(node, nodes.CondExpr):
            return self.values(node.expr1, d) + self.values(node.expr2, d)
        if isinstance(node, nodes.Concat):
            parts = [self.values(n, d) for n in node.nodes]
            if any(not p for p in parts) or _combinations(parts) > _MAX_CANDIDATES:
                return []
            return ["".join(str(x) for x in c) for c in product(*parts)]
        if isinstance(node, nodes.Add | nodes.Mul | nodes.Mod):
            lefts, rights = self.values(node.left, d), self.values(node.right, d)
            return [
                r
                for a in lefts
                for b in rights
                if (r := _binary(type(node).__name__, a, b)) is not None
            ]
        if isinstance(node, nodes.Getitem):
            return self._getitem(node, d)
        if isinstance(node, nodes.Filter):
            return self._filter(node, d)
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            meth = node.node.attr
            recv = self.values(node.node.node, d)
            if meth in _STR_METHODS and not node.args:
                return [getattr(v, meth)() for v in recv if isinstance(v, str)]
            if meth == "join" and len(node.args) == 1:
                items = self.values(node.args[0], d)
                return [
                    s.join(str(x) for x in it)
                    for s in recv
                    if isinstance(s, str)
                    for it in items
                    if isinstance(it, tuple)
                ]
            if meth == "replace" and len(node.args) == 2:
                olds, news = self.strings(node.args[0]), self.strings(node.args[1])
                return [
                    v.replace(o, n)
                    for v in recv
                    if isinstance(v, str)
                    for o in olds
                    for n in news
                    if o
                ]
        return []

    def _getitem(self, node: nodes.Getitem, d: int) -> list[Folded]:
        seqs = self.values(node.node, d)
        out: list[Folded] = []
        if isinstance(node.arg, nodes.Slice):
            bounds = [
                self.values(b, d) if b is not None else [None]
                for b in (node.arg.start, node.arg.stop, node.arg.step)
            ]
            for s in seqs:
                if not isinstance(s, str | tuple):
                    continue
                for a, b, c in product(*bounds):
                    if all(x is None or isinstance(x, int) for x in (a, b, c)) and c != 0:
                        out.append(s[slice(a, b, c)])  # type: ignore[arg-type]
            return out
        for s in seqs:
            for i in self.values(node.arg, d):
                if isinstance(s, str | tuple) and isinstance(i, int) and -len(s) <= i < len(s):
                    out.append(s[i])
        return out

    def _filter(self, node: nodes.Filter, d: int) -> list[Folded]:
        src = self.values(node.node, d)
        name = node.name
        args = [self.values(a, d) for a in node.args]
        if name in _STR_FILTERS and not args:
            fn = {"trim": "strip", "string": "__str__"}.get(name, name)
            return [getattr(v, fn)() if isinstance(v, str) else str(v) for v in src]
        if name == "join":
            seps = args[0] if args else [""]
            return [
                s.join(str(x) for x in v)
                for v in src
                if isinstance(v, tuple)
                for s in seps
                if isinstance(s, str)
            ]
        if name == "reverse":
            return [v[::-1] for v in src if isinstance(v, str | tuple)]
        if name in ("first", "last"):
            return [
                v[0 if name == "first" else -1] for v in src if isinstance(v, str | tuple) and v
            ]
        if name == "list":
            return [
                tuple(v) if isinstance(v, str) else v for v in src if isinstance(v, str | tuple)
            ]
        if name == "replace" and len(args) >= 2:
            return [
                v.replace(o, n)
                for v in src
                if isinstance(v, str)
                for o in args[0]
                for n in args[1]
                if isinstance(o, str) and isinstance(n, str) and o
            ]
        if name == "format":
            if any(not a for a in args) or _combinations(args) > _MAX_CANDIDATES:
                return []
            return [
                r
                for f in src
                if isinstance(f, str)
                for c in product(*args)
                if (r := _percent(f, tuple(x for x in c if not isinstance(x, tuple)))) is not None
            ]
        return []


def _combinations(parts: list[list[Folded]]) -> int:
    n = 1
    for p in parts:
        n *= len(p)
    return n


def _binary(op: str, a: Folded, b: Folded) -> Folded | None:
    if op == "Add":
        if isinstance(a, str) and isinstance(b, str):
            return a + b if len(a) + len(b) <= _MAX_STR else None
        if isinstance(a, int) and isinstance(b, int):
            return a + b if abs(a) + abs(b) < 1 << 62 else None
        return None
    if op == "Mul":
        if isinstance(a, int) and isinstance(b, str):
            a, b = b, a
        if isinstance(a, str) and isinstance(b, int):
            return a * b if b >= 0 and len(a) * b <= _MAX_STR else None
        if isinstance(a, int) and isinstance(b, int):
            return a * b if abs(a) < 1 << 31 and abs(b) < 1 << 31 else None
        return None
    if isinstance(a, str):  # Mod: printf-style formatting
        return _percent(a, b if isinstance(b, tuple) else (b,))
    return None


ATTRIBUTE_FILTERS = frozenset(
    {
        "attr",
        "map",
        "select",
        "reject",
        "selectattr",
        "rejectattr",
        "sort",
        "groupby",
        "sum",
        "unique",
        "min",
        "max",
        "join",
        "dictsort",
        "items",
    }
)
"""Filters and tests whose arguments can name attributes (recorded as FILTER_ARG)."""


def analyse(source: str) -> Analysis:
    """Parse ``source`` (never render it) and list what it would access; raises TemplateError."""
    tree = parse(source)
    folder = _Folder(tree)
    out = Analysis()
    add = out.artifacts.append
    for node in tree.find_all(nodes.Node):
        ln = node.lineno or 0
        if isinstance(node, nodes.Getattr):
            add(Artifact(Kind.ATTR, node.attr, ln))
        elif isinstance(node, nodes.Getitem):
            if not isinstance(node.arg, nodes.Slice):
                literal = isinstance(node.arg, nodes.Const)
                for s in folder.strings(node.arg):
                    add(Artifact(Kind.ITEM, s, ln, folded=not literal))
        elif isinstance(node, nodes.Filter | nodes.Test):
            (out.filters if isinstance(node, nodes.Filter) else out.tests).add(node.name)
            args = [*node.args, *(k.value for k in node.kwargs)]
            if node.name in ATTRIBUTE_FILTERS or isinstance(node, nodes.Test):
                for a in args:
                    values = folder.strings(a)
                    if not values and node.name == "attr":
                        add(Artifact(Kind.FILTER_ARG, "", ln, via=node.name))
                    literal = isinstance(a, nodes.Const)
                    for s in values:
                        add(Artifact(Kind.FILTER_ARG, s, ln, via=node.name, folded=not literal))
        elif isinstance(node, nodes.Call):
            if isinstance(node.node, nodes.Name):
                add(Artifact(Kind.CALL, node.node.name, ln, via="function"))
            elif isinstance(node.node, nodes.Getattr):
                add(Artifact(Kind.CALL, node.node.attr, ln, via="method"))
                if node.node.attr in ("format", "format_map"):
                    fmts = folder.strings(node.node.node)
                    for s in fmts or [""]:
                        add(Artifact(Kind.FORMAT, s, ln))
        elif isinstance(node, nodes.Name):
            if node.ctx == "load":
                add(Artifact(Kind.NAME, node.name, ln))
        elif isinstance(node, nodes.Include | nodes.Import | nodes.FromImport | nodes.Extends):
            targets = folder.strings(node.template)
            for s in targets or [""]:
                add(Artifact(Kind.LOAD, s, ln, via=type(node).__name__.lower()))
        elif isinstance(node, nodes.Const):
            if isinstance(node.value, str):
                add(Artifact(Kind.CONST, node.value, ln))
        elif isinstance(node, nodes.Concat | nodes.Add | nodes.Mul | nodes.Mod):
            for s in folder.strings(node):
                add(Artifact(Kind.CONST, s, ln, folded=True))
    return out
