"""Python source shipped beside a model, analysed as a syntax tree (never imported or run).

``ast.parse`` builds a tree and runs nothing. From it this module extracts artifacts, without
verdicts: the imports, every call with its callee resolved to a dotted name through import
aliases, simple assignments, ``getattr``/``__import__``/``importlib`` indirection and
constant-folded strings (``'o' + 's'``, ``''.join([...])``, ``chr(..)``, ``'...'[::-1]``,
``base64.b64decode('...')``), references to callables passed as values, assignments to module
attributes and ``os.environ``, and the context each one runs in (on import, inside a function,
or only when the file is run as a script). Strings handed to ``exec``/``eval``/``compile`` that
fold to a constant are parsed in turn, within a nesting limit.

Bounded: a size limit on the source, a depth limit on expressions that are resolved or folded
(the tree itself is walked iteratively), a limit on folded string size, and parser failures
(``SyntaxError``, ``RecursionError``, ``MemoryError``, ``ValueError``) become an ``error`` on the
result, never an exception.
"""

from __future__ import annotations

import ast
import base64
import binascii
import builtins
import codecs
import enum
import io
import tokenize
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_SOURCE = 8 << 20
"""Largest source analysed, in bytes (real modeling files are well under 1 MiB)."""
MAX_EXPR_DEPTH = 60
"""How deep name resolution and constant folding follow one expression."""
MAX_FOLDED = 1 << 20
"""Largest folded constant (decoded payloads included)."""
MAX_NESTED_SOURCE = 3
"""How many levels of ``exec('...')`` payloads are parsed."""
_SEGMENT = 200

Value = str | bytes | int | None
"""A folded constant argument (None: not a constant this analysis could compute)."""

_BUILTIN_NAMES = frozenset(dir(builtins))


class Context(enum.Enum):
    """When a piece of code runs, from the point of view of ``import module``."""

    IMPORT = "import"
    """Module or class body (or a function called from there): runs when the file is imported."""
    FUNCTION = "function"
    """Inside a function or method: runs when that code is called (e.g. by the model class)."""
    SCRIPT = "script"
    """Under ``if __name__ == "__main__":``: never runs on import."""


@dataclass(frozen=True)
class Import:
    module: str
    """Absolute module name, or ``.name`` for relative imports."""
    name: str | None
    """The imported attribute for ``from module import name`` (``*`` for star imports)."""
    alias: str
    line: int


@dataclass(frozen=True)
class Call:
    name: str | None
    """Callee resolved to a dotted name (``os.system``, ``builtins.exec``, ``socket.socket()``
    for a method of a call's result), or None when it cannot be resolved."""
    text: str
    """The call as written (truncated)."""
    args: tuple[Value, ...]
    """Folded positional arguments (None where not constant; ``*args`` ends the tuple)."""
    arg_text: tuple[str, ...]
    keywords: tuple[tuple[str | None, Value, str], ...]
    """``(name, folded value, text)``; name None for ``**kwargs``."""
    line: int
    context: Context
    function: str | None
    """Enclosing function (``Class.method``) or None at module level."""
    star: bool = False
    """The call passes ``*args`` or ``**kwargs`` (arguments not all visible)."""

    def keyword(self, name: str) -> tuple[bool, Value]:
        """``(present, value)`` for keyword ``name``."""
        for k, v, _ in self.keywords:
            if k == name:
                return True, v
        return False, None

    def reconstructed(self) -> str:
        """The call with its callee resolved and constant arguments folded."""
        parts = [
            repr(v) if v is not None else t for v, t in zip(self.args, self.arg_text, strict=False)
        ]
        parts += [t for _, _, t in self.keywords]
        inner = ", ".join(parts)
        if len(inner) > _SEGMENT:
            inner = inner[:_SEGMENT] + "..."
        return f"{self.name or '?'}({inner})"


@dataclass(frozen=True)
class Reference:
    """A resolved name used as a value, not called here (``Thread(target=os.system)``)."""

    name: str
    text: str
    line: int
    context: Context
    function: str | None


@dataclass(frozen=True)
class Store:
    """An assignment to a module attribute or an ``os.environ`` key (``builtins.open = f``)."""

    target: str
    text: str
    line: int
    context: Context
    function: str | None


@dataclass
class SourceAnalysis:
    imports: list[Import] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    stores: list[Store] = field(default_factory=list)
    nested: list[tuple[Call, SourceAnalysis]] = field(default_factory=list)
    """Constant payloads of exec/eval/compile, analysed as source."""
    error: str | None = None
    """Why the source could not be parsed (nothing else is filled in then)."""
    truncated: str | None = None
    """Why part of the source was not fully analysed (expression depth)."""
    lines: int = 0


def analyse_source(
    data: bytes, *, max_size: int = MAX_SOURCE, _nesting: int = 0, _context: Context | None = None
) -> SourceAnalysis:
    """Parse ``data`` (bytes, decoded like the import system does) and extract artifacts."""
    if len(data) > max_size:
        return SourceAnalysis(error=f"source is {len(data)} bytes, over the {max_size} limit")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding, "replace")
        tree = ast.parse(data)
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return SourceAnalysis(error=f"syntax error{where}: {exc.msg}")
    except RecursionError:
        return SourceAnalysis(error="nesting too deep for the parser")
    except MemoryError:
        return SourceAnalysis(error="the parser ran out of memory")
    except (ValueError, LookupError, UnicodeError) as exc:
        return SourceAnalysis(error=f"cannot be parsed: {exc}")
    result = SourceAnalysis(lines=text.count("\n") + 1)
    try:
        _Walker(tree, text, result, _nesting, _context).run()
    except RecursionError:  # defensive: every recursive helper is depth-bounded
        result.truncated = "nesting too deep to analyse"
    return result


# ---------------------------------------------------------------------------- the walker

_IMPORTERS = frozenset({"builtins.__import__", "importlib.import_module", "importlib.__import__"})
_DECODERS = frozenset(
    {
        "base64.b64decode",
        "base64.standard_b64decode",
        "base64.urlsafe_b64decode",
        "base64.b32decode",
        "base64.b16decode",
        "base64.a85decode",
        "base64.b85decode",
        "base64.decodebytes",
        "binascii.a2b_base64",
        "binascii.unhexlify",
        "binascii.a2b_hex",
        "bytes.fromhex",
        "zlib.decompress",
        "codecs.decode",
    }
)
_CODE_RUNNERS = frozenset({"builtins.exec", "builtins.eval", "builtins.compile"})


def _is_main_guard(test: ast.expr) -> bool:
    """Exactly ``__name__ == "__main__"`` (either order)."""
    if not isinstance(test, ast.Compare) or len(test.ops) != 1:
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(consts) == 1


@dataclass
class _Frame:
    context: Context
    function: str | None
    owner: str | None
    """Enclosing class name (for method names)."""


class _Walker:
    def __init__(
        self,
        tree: ast.Module,
        text: str,
        out: SourceAnalysis,
        nesting: int,
        context: Context | None,
    ) -> None:
        self.tree = tree
        self.lines = text.splitlines()
        self.out = out
        self.nesting = nesting
        self.base_context = context or Context.IMPORT
        self.aliases: dict[str, set[str]] = {}
        self.star_modules: list[str] = []
        self.local_defs: set[str] = set()
        self.functions: set[str] = set()
        self.classes: set[str] = set()
        self.edges: dict[str | None, set[str]] = {}
        """Which local functions each function (None: import-time code) calls by name."""

    # ------------------------------------------------------------------ driver
    def run(self) -> None:
        self._collect_bindings()
        pending: list[tuple[Call | Reference | Store, str | None]] = []
        for node, frame in self._nodes():
            if isinstance(node, ast.Call):
                call = self._call(node, frame)
                if call is not None:
                    pending.append((call, frame.function))
            elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
                ref = self._reference(node, frame)
                if ref is not None:
                    pending.append((ref, frame.function))
            elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                self._stores(node, frame)
        reached = self._import_time_functions()
        for item, function in pending:
            if (
                item.context is Context.FUNCTION
                and function is not None
                and function in reached
                and self.base_context is Context.IMPORT
            ):
                item = _with_context(item, Context.IMPORT)
            if isinstance(item, Call):
                self.out.calls.append(item)
                self._nested(item)
            elif isinstance(item, Reference):
                self.out.references.append(item)

    def _nodes(self) -> Iterator[tuple[ast.AST, _Frame]]:
        """Every node with the context it runs in (iterative: no recursion on deep trees)."""
        stack: list[tuple[ast.AST, _Frame]] = [(self.tree, _Frame(self.base_context, None, None))]
        inner_ids: set[int] = set()
        while stack:
            node, frame = stack.pop()
            if isinstance(node, ast.Call):
                inner_ids.add(id(node.func))
            elif isinstance(node, ast.Attribute):
                inner_ids.add(id(node.value))
            if isinstance(node, ast.Name | ast.Attribute) and id(node) in inner_ids:
                pass  # part of a longer chain, or the callee of a call (reported as the call)
            else:
                yield node, frame
            children: list[tuple[ast.AST, _Frame]] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                name = (
                    "<lambda>"
                    if isinstance(node, ast.Lambda)
                    else (f"{frame.owner}.{node.name}" if frame.owner else node.name)
                )
                qual = frame.function if isinstance(node, ast.Lambda) and frame.function else name
                inner = _Frame(
                    Context.SCRIPT if frame.context is Context.SCRIPT else Context.FUNCTION,
                    qual,
                    None,
                )
                # Decorators, defaults and annotations run where the def is.
                outer: list[ast.AST] = [*node.args.defaults]
                outer += [d for d in node.args.kw_defaults if d is not None]
                if not isinstance(node, ast.Lambda):
                    outer += list(node.decorator_list)
                    for dec in node.decorator_list:
                        self._edge(frame.function, dec)
                    body: list[ast.AST] = list(node.body)
                else:
                    body = [node.body]
                children += [(c, frame) for c in outer] + [(c, inner) for c in body]
            elif isinstance(node, ast.ClassDef):
                inner = _Frame(frame.context, frame.function, node.name)
                outer = [*node.decorator_list, *node.bases, *node.keywords]
                children += [(c, frame) for c in outer] + [(c, inner) for c in node.body]
            elif isinstance(node, ast.If) and _is_main_guard(node.test):
                script = _Frame(Context.SCRIPT, frame.function, frame.owner)
                children += [(c, script) for c in node.body] + [(c, frame) for c in node.orelse]
            else:
                if isinstance(node, ast.Call):
                    self._edge(frame.function, node.func)
                children += [(c, frame) for c in ast.iter_child_nodes(node)]
            stack.extend(reversed(children))

    def _edge(self, caller: str | None, callee: ast.expr) -> None:
        if isinstance(callee, ast.Call):
            callee = callee.func
        if isinstance(callee, ast.Name) and callee.id not in self.aliases:
            if callee.id in self.classes:
                targets = {f"{callee.id}.__init__", f"{callee.id}.__new__"}
            else:
                targets = {callee.id}
            self.edges.setdefault(caller, set()).update(targets)

    def _import_time_functions(self) -> set[str]:
        reached: set[str] = set()
        todo = list(self.edges.get(None, ()))
        while todo:
            f = todo.pop()
            if f in reached or f not in self.functions:
                continue
            reached.add(f)
            todo.extend(self.edges.get(f, ()))
        return reached

    # ------------------------------------------------------------------ bindings
    def _collect_bindings(self) -> None:
        """Imports, aliases (``s = os.system``), local definitions: flow-insensitive."""
        assigns: list[tuple[str, ast.expr]] = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self._bind(a.asname, a.name)
                    else:
                        top = a.name.split(".")[0]
                        self._bind(top, top)
                    self.out.imports.append(Import(a.name, None, a.asname or a.name, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                for a in node.names:
                    if a.name == "*":
                        self.star_modules.append(base)
                    else:
                        sep = "" if base.endswith(".") else "."
                        self._bind(a.asname or a.name, f"{base}{sep}{a.name}")
                    self.out.imports.append(Import(base, a.name, a.asname or a.name, node.lineno))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.local_defs.add(node.name)
            elif isinstance(node, ast.ClassDef):
                self.local_defs.add(node.name)
                self.classes.add(node.name)
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        self.functions.add(f"{node.name}.{item.name}")
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        assigns.append((t.id, node.value))
            elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and node.value is not None:
                if isinstance(node.target, ast.Name):
                    assigns.append((node.target.id, node.value))
            elif isinstance(node, ast.With | ast.AsyncWith):
                for w in node.items:
                    if isinstance(w.optional_vars, ast.Name):
                        assigns.append((w.optional_vars.id, w.context_expr))
            elif isinstance(node, ast.arg):
                self.local_defs.add(node.arg)  # never shadows an import alias or a builtin
        for node in self.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions.add(node.name)
        # Aliases of aliases: iterate to a fixed point (bounded).
        for _ in range(4):
            changed = False
            for name, value in assigns:
                target = self.resolve(value)
                if target is not None and target not in self.aliases.get(name, set()):
                    self._bind(name, target)
                    changed = True
                elif target is None:
                    self.local_defs.add(name)
            if not changed:
                break

    def _bind(self, name: str, target: str) -> None:
        self.aliases.setdefault(name, set()).add(target)

    # ------------------------------------------------------------------ resolution
    def resolve_all(self, node: ast.expr, depth: int = 0) -> set[str]:
        """Every dotted name ``node`` may stand for (empty when unknown)."""
        if depth > MAX_EXPR_DEPTH:
            self._truncate()
            return set()
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return set(self.aliases[node.id])
            if node.id == "__builtins__":
                return {"builtins"}
            if node.id in _BUILTIN_NAMES:
                # Even where the module also defines the name: the analysis is flow-insensitive
                # and a definition after the use (or in another scope) does not shadow it.
                return {f"builtins.{node.id}"}
            if node.id in self.local_defs:
                return set()
            return {f"{m}.{node.id}" for m in self.star_modules if not m.startswith(".")}
        if isinstance(node, ast.Attribute):
            if node.attr == "__dict__":
                return self.resolve_all(node.value, depth + 1)
            return {f"{b}.{node.attr}" for b in self.resolve_all(node.value, depth + 1)}
        if isinstance(node, ast.IfExp):
            return self.resolve_all(node.body, depth + 1) | self.resolve_all(node.orelse, depth + 1)
        if isinstance(node, ast.BoolOp):
            names: set[str] = set()
            for v in node.values[:16]:
                names |= self.resolve_all(v, depth + 1)
            return names
        if isinstance(node, ast.NamedExpr):
            return self.resolve_all(node.value, depth + 1)
        if isinstance(node, ast.Subscript):
            key = self.fold(node.slice, depth + 1)
            if not isinstance(key, str) or not key:
                return set()
            found: set[str] = set()
            for b in self.resolve_all(node.value, depth + 1):
                if b == "sys.modules":
                    found.add(key)
                elif b in ("builtins", "builtins.globals()", "builtins.vars()"):
                    found.add(f"builtins.{key}" if key != "__builtins__" else "builtins")
                elif b.startswith("builtins.vars(") and b.endswith(")"):
                    found.add(f"{b[len('builtins.vars(') : -1]}.{key}")
            return found
        if isinstance(node, ast.Call):
            funcs = self.resolve_all(node.func, depth + 1)
            out: set[str] = set()
            for f in funcs:
                if f in _IMPORTERS and node.args:
                    mod = self.fold(node.args[0], depth + 1)
                    if isinstance(mod, str) and mod and not mod.startswith("."):
                        fromlist = len(node.args) >= 4 or any(
                            k.arg == "fromlist" for k in node.keywords
                        )
                        if f == "importlib.import_module" or fromlist:
                            out.add(mod)
                        else:
                            out.add(mod.split(".")[0])
                elif f == "builtins.getattr" and len(node.args) >= 2:
                    attr = self.fold(node.args[1], depth + 1)
                    if isinstance(attr, str) and attr:
                        out |= {f"{b}.{attr}" for b in self.resolve_all(node.args[0], depth + 1)}
                elif f == "builtins.vars" and node.args:
                    out |= {
                        f"builtins.vars({b})" for b in self.resolve_all(node.args[0], depth + 1)
                    }
                elif f in ("builtins.globals", "builtins.vars", "builtins.locals"):
                    out.add("builtins.globals()")
                elif f == "importlib.reload" and node.args:
                    out |= self.resolve_all(node.args[0], depth + 1)
                else:
                    out.add(f"{f}()")
            return out
        return set()

    def resolve(self, node: ast.expr, depth: int = 0) -> str | None:
        names = self.resolve_all(node, depth)
        return min(names, key=_interest) if names else None

    def fold(self, node: ast.AST, depth: int = 0) -> Value:
        """The constant value of ``node`` when it can be computed without running anything."""
        if depth > MAX_EXPR_DEPTH:
            self._truncate()
            return None
        if isinstance(node, ast.Constant):
            v = node.value
            return v if isinstance(v, str | bytes | int) and not isinstance(v, bool) else None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.fold(node.operand, depth + 1)
            if not isinstance(operand, int):
                return None
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            # Flatten the left spine iteratively: 'a' + 'b' + ... can be thousands of terms.
            terms: list[ast.expr] = []
            cur: ast.expr = node
            while isinstance(cur, ast.BinOp) and isinstance(cur.op, ast.Add):
                terms.append(cur.right)
                cur = cur.left
            terms.append(cur)
            values = [self.fold(t, depth + 1) for t in reversed(terms)]
            return _concat(values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            left = self.fold(node.left, depth + 1)
            right = self._fold_seq(node.right, depth + 1)
            if isinstance(left, str) and right is not None:
                try:
                    return _bounded(left % tuple(right))
                except (TypeError, ValueError, OverflowError):
                    return None
            return None
        if isinstance(node, ast.JoinedStr):
            parts: list[Value] = []
            for piece in node.values:
                if isinstance(piece, ast.FormattedValue):
                    if piece.format_spec is not None or piece.conversion not in (-1, 115):
                        return None
                    parts.append(self.fold(piece.value, depth + 1))
                else:
                    parts.append(self.fold(piece, depth + 1))
            return _concat([p if isinstance(p, str) else None for p in parts])
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            base = self.fold(node.value, depth + 1)
            s = node.slice
            bounds = [
                None if x is None else self.fold(x, depth + 1) for x in (s.lower, s.upper, s.step)
            ]
            given = [x for x in (s.lower, s.upper, s.step) if x is not None]
            if (
                isinstance(base, str | bytes)
                and all(isinstance(b, int) for b in bounds if b is not None)
                and len([b for b in bounds if b is not None]) == len(given)
            ):
                lo, hi, st = (b if isinstance(b, int) else None for b in bounds)
                if st == 0:
                    return None
                return base[lo:hi:st]
            return None
        if isinstance(node, ast.Call):
            return self._fold_call(node, depth + 1)
        return None

    def _fold_seq(self, node: ast.AST, depth: int) -> list[Value] | None:
        if isinstance(node, ast.Tuple | ast.List):
            items = [self.fold(e, depth + 1) for e in node.elts]
            return None if any(i is None for i in items) else items
        v = self.fold(node, depth)
        return None if v is None else [v]

    def _fold_call(self, node: ast.Call, depth: int) -> Value:
        func = node.func
        if isinstance(func, ast.Attribute):
            method = func.attr
            recv = self.fold(func.value, depth + 1)
            if isinstance(recv, str) and method == "join" and len(node.args) == 1:
                items = self._fold_seq(node.args[0], depth + 1)
                if items is not None and all(isinstance(i, str) for i in items):
                    return _bounded(recv.join(str(i) for i in items))
                if isinstance(node.args[0], ast.GeneratorExp | ast.ListComp):
                    return self._fold_chr_comprehension(recv, node.args[0], depth + 1)
                return None
            if isinstance(recv, str) and method in ("lower", "upper", "strip", "swapcase"):
                return str(getattr(recv, method)())
            if isinstance(recv, str) and method == "replace" and len(node.args) == 2:
                a, b = (self.fold(x, depth + 1) for x in node.args)
                if isinstance(a, str) and isinstance(b, str) and a:
                    return _bounded(recv.replace(a, b))
                return None
            if isinstance(recv, str) and method == "format":
                args = [self.fold(a, depth + 1) for a in node.args]
                if node.keywords or any(a is None for a in args):
                    return None
                try:
                    return _bounded(recv.format(*args))
                except (IndexError, KeyError, ValueError, AttributeError):
                    return None
            if isinstance(recv, str) and method == "encode":
                return _bounded(recv.encode("utf-8", "replace"))
            if isinstance(recv, bytes) and method == "decode":
                enc = self.fold(node.args[0], depth + 1) if node.args else "utf-8"
                if not isinstance(enc, str):
                    return None
                try:
                    return recv.decode(enc, "replace")
                except LookupError:
                    return None
        name = self.resolve(func, depth + 1)
        if name == "builtins.chr" and len(node.args) == 1:
            code = self.fold(node.args[0], depth + 1)
            return chr(code) if isinstance(code, int) and 0 <= code < 0x110000 else None
        if name in ("builtins.str", "builtins.bytes") and len(node.args) == 1:
            v = self.fold(node.args[0], depth + 1)
            return v if isinstance(v, str | bytes) and name.endswith(type(v).__name__) else None
        if name in ("builtins.bytes", "builtins.bytearray") and len(node.args) == 2:
            v, enc = (self.fold(a, depth + 1) for a in node.args)
            if isinstance(v, str) and isinstance(enc, str):
                try:
                    return v.encode(enc, "replace")
                except LookupError:
                    return None
        if name in _DECODERS and node.args:
            return _decode(name, [self.fold(a, depth + 1) for a in node.args])
        return None

    def _fold_chr_comprehension(
        self, sep: str, comp: ast.GeneratorExp | ast.ListComp, depth: int
    ) -> Value:
        """``''.join(chr(c) for c in [111, 115])``."""
        if len(comp.generators) != 1:
            return None
        gen = comp.generators[0]
        if gen.ifs or not isinstance(gen.target, ast.Name):
            return None
        items = self._fold_seq(gen.iter, depth + 1)
        elt = comp.elt
        if items is None or not (
            isinstance(elt, ast.Call)
            and self.resolve(elt.func, depth + 1) == "builtins.chr"
            and len(elt.args) == 1
            and isinstance(elt.args[0], ast.Name)
            and elt.args[0].id == gen.target.id
        ):
            return None
        if not all(isinstance(i, int) and 0 <= i < 0x110000 for i in items):
            return None
        return _bounded(sep.join(chr(i) for i in items if isinstance(i, int)))

    def _truncate(self) -> None:
        self.out.truncated = f"expressions nested deeper than {MAX_EXPR_DEPTH} levels"

    # ------------------------------------------------------------------ artifacts
    def _call(self, node: ast.Call, frame: _Frame) -> Call | None:
        name = self.resolve(node.func)
        args: list[Value] = []
        arg_text: list[str] = []
        star = False
        for a in node.args:
            if isinstance(a, ast.Starred):
                star = True
                break
            args.append(self.fold(a))
            arg_text.append(self._segment(a))
        keywords: list[tuple[str | None, Value, str]] = []
        for k in node.keywords:
            if k.arg is None:
                star = True
            keywords.append((k.arg, self.fold(k.value), self._segment(k)))
        return Call(
            name,
            self._segment(node),
            tuple(args),
            tuple(arg_text),
            tuple(keywords),
            node.lineno,
            frame.context,
            frame.function,
            star,
        )

    def _reference(self, node: ast.Name | ast.Attribute, frame: _Frame) -> Reference | None:
        if isinstance(node, ast.Name) and node.id not in self.aliases:
            return None  # bare builtins used as values (``map(str, x)``) are not interesting
        name = self.resolve(node)
        if name is None or name.endswith("()"):
            return None
        return Reference(name, self._segment(node), node.lineno, frame.context, frame.function)

    def _stores(self, node: ast.Assign | ast.AugAssign | ast.AnnAssign, frame: _Frame) -> None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            target: str | None = None
            if isinstance(t, ast.Attribute):
                base = self.resolve(t.value)
                if base is not None and not base.endswith("()"):
                    target = f"{base}.{t.attr}"
            elif isinstance(t, ast.Subscript):
                base = self.resolve(t.value)
                if base == "os.environ":
                    key = self.fold(t.slice)
                    target = f"os.environ[{key!r}]" if isinstance(key, str) else "os.environ[?]"
            if target is not None:
                self.out.stores.append(
                    Store(target, self._segment(node), node.lineno, frame.context, frame.function)
                )

    def _nested(self, call: Call) -> None:
        if call.name not in _CODE_RUNNERS or not call.args:
            return
        payload = call.args[0]
        if not isinstance(payload, str | bytes) or self.nesting >= MAX_NESTED_SOURCE:
            return
        data = payload.encode("utf-8", "replace") if isinstance(payload, str) else payload
        inner = analyse_source(data, _nesting=self.nesting + 1, _context=call.context)
        self.out.nested.append((call, inner))

    def _segment(self, node: ast.AST) -> str:
        """Source text of ``node`` (truncated), without re-serialising the tree."""
        lineno = getattr(node, "lineno", None)
        end_lineno = getattr(node, "end_lineno", None)
        col = getattr(node, "col_offset", None)
        end_col = getattr(node, "end_col_offset", None)
        if lineno is None or end_lineno is None or col is None or end_col is None:
            return "?"
        if not 1 <= lineno <= len(self.lines) or end_lineno > len(self.lines):
            return "?"
        first = self.lines[lineno - 1].encode("utf-8")
        if lineno == end_lineno:
            seg = first[col:end_col].decode("utf-8", "replace")
        else:
            seg = first[col:].decode("utf-8", "replace") + " ..."
        seg = " ".join(seg.split())
        return seg if len(seg) <= _SEGMENT else seg[:_SEGMENT] + "..."


def _with_context(item: Call | Reference | Store, ctx: Context) -> Call | Reference | Store:
    from dataclasses import replace

    return replace(item, context=ctx)


def _interest(name: str) -> tuple[int, str]:
    """Order candidate resolutions: prefer names outside builtins, then shortest."""
    return (0 if not name.startswith("builtins.") else 1, name)


def _bounded(v: str | bytes) -> str | bytes | None:
    return v if len(v) <= MAX_FOLDED else None


def _concat(values: list[Value]) -> Value:
    if values and all(isinstance(v, str) for v in values):
        return _bounded("".join(v for v in values if isinstance(v, str)))
    if values and all(isinstance(v, bytes) for v in values):
        return _bounded(b"".join(v for v in values if isinstance(v, bytes)))
    return None


def _decode(name: str, args: list[Value]) -> Value:
    """Pure data transformations used to hide payloads (base64, hex, zlib, rot13)."""
    data = args[0]
    if isinstance(data, str) and name != "codecs.decode":
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            return None
    try:
        if name == "codecs.decode":
            enc = args[1] if len(args) > 1 else "utf-8"
            if not isinstance(enc, str) or data is None or isinstance(data, int):
                return None
            enc = enc.lower().replace("-", "_")
            if enc in ("rot13", "rot_13") and isinstance(data, str):
                return codecs.decode(data, "rot13")
            if enc in ("base64", "hex", "zlib", "base_64") and isinstance(data, bytes | str):
                raw = data.encode("ascii") if isinstance(data, str) else data
                if enc == "zlib":
                    return _inflate(raw)
                return codecs.decode(raw, "base64" if enc.startswith("base") else "hex")
            return None
        if not isinstance(data, bytes):
            return None
        if name == "zlib.decompress":
            return _inflate(data)
        if name == "bytes.fromhex":
            return bytes.fromhex(data.decode("ascii"))
        if name in ("binascii.unhexlify", "binascii.a2b_hex", "base64.b16decode"):
            return binascii.unhexlify(data)
        if name == "base64.b32decode":
            return base64.b32decode(data)
        if name == "base64.a85decode":
            return base64.a85decode(data)
        if name == "base64.b85decode":
            return base64.b85decode(data)
        if name == "base64.urlsafe_b64decode":
            return base64.urlsafe_b64decode(data)
        return base64.b64decode(data)
    except (ValueError, binascii.Error, zlib.error, UnicodeError, TypeError, LookupError):
        return None


def _inflate(data: bytes) -> bytes | None:
    for wbits in (15, -15, 31):
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(data, MAX_FOLDED)
        except zlib.error:
            continue
        return out if not d.unconsumed_tail else None
    return None
