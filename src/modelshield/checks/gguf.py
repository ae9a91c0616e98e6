"""GGUF files: bounded header and metadata parsing; chat templates parsed, never rendered.

A GGUF file is data except for its chat templates (``tokenizer.chat_template`` and the named
``tokenizer.chat_template.<name>``), which are Jinja programs that loaders render. A loader
that renders them with a plain ``jinja2.Environment`` (llama-cpp-python before 0.2.72,
CVE-2024-34359) runs whatever Python the template reaches: ``''.__class__.__mro__[1]
.__subclasses__()``, ``self.__init__.__globals__.__builtins__.__import__('os')``,
``lipsum.__globals__``, ``cycler.__init__.__globals__`` and so on. Each template is parsed with
``jinja2`` (which builds a syntax tree and executes nothing) and what it would touch is judged:

* MS500 CRITICAL: it reaches Python internals (a dunder or name-mangled attribute or item,
  including names built from constant pieces; frame, code and function internals; ``mro``;
  process-spawning methods; ``str.format`` fields that walk attributes; Python builtins and
  modules such as ``os``, ``eval`` or ``__import__`` named as variables).
  HIGH: weaker signals no benign chat template needs: a private (``_name``) attribute, an
  ``attr`` filter whose name is computed at render time, a template that loads other templates,
  a string naming a Python internal.
* MS501 MEDIUM: the header or metadata breaks the format or a parser limit (the analysis is then
  inconclusive).
* MS502 MEDIUM: a chat template that ``jinja2`` cannot parse. A template that does not parse
  cannot be rendered by a Jinja loader, so it cannot run code there; it is still not what a
  benign converter writes, and another template engine might read it differently, so the file
  is reported as partially covered.

Tensor data is never read.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from modelshield.checks.context import Context, Probe
from modelshield.findings import Confidence, CoverageStatus, Severity
from modelshield.formats import gguf_file as gg
from modelshield.rules import checks as rule_tables

if TYPE_CHECKING:
    from modelshield.formats import jinja_template as jt

RULES = rule_tables.GGUF

_TEMPLATE_KEY = "tokenizer.chat_template"
_TEMPLATE_NAMES_KEY = "tokenizer.chat_templates"
_MAX_FINDINGS_PER_TEMPLATE = 20

_DUNDER = re.compile(r"^__\w+__$")
_MANGLED = re.compile(r"^_[A-Za-z]\w*__\w+$")
"""``_Class__private``: a name-mangled private attribute (``self._TemplateReference__context``)."""

_INTERNALS = frozenset(
    {
        "mro",
        "func_globals",
        "func_code",
        "func_closure",
        "func_defaults",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "ag_code",
        "tb_frame",
        "tb_next",
        "co_code",
        "im_func",
        "im_self",
        "im_class",
    }
)
"""Attributes of Python frames, code, functions and types that lead to globals and builtins."""

_PROCESS_METHODS = frozenset(
    {
        "popen",
        "system",
        "spawnl",
        "spawnlp",
        "spawnv",
        "spawnvp",
        "execl",
        "execlp",
        "execv",
        "execve",
        "execvp",
        "check_output",
        "check_call",
        "getoutput",
        "getstatusoutput",
        "import_module",
        "load_module",
        "exec_module",
        "load_source",
        "run_path",
        "run_module",
    }
)
"""Methods that start processes or import code (``os.popen``, ``importlib.import_module``)."""

_PYTHON_NAMES = frozenset(
    {
        "os",
        "sys",
        "subprocess",
        "builtins",
        "importlib",
        "eval",
        "exec",
        "compile",
        "getattr",
        "setattr",
        "delattr",
        "globals",
        "locals",
        "vars",
        "open",
        "breakpoint",
        "__import__",
        "__builtins__",
    }
)
"""Python modules and builtins: no chat rendering context defines them; a template naming them
expects a host that leaks Python into the template."""

# Filters whose arguments are not attribute names, among those the parser records.
_NON_ATTRIBUTE_FILTERS = frozenset({"dictsort", "items"})
_FORMAT_FIELD = re.compile(r"\{[^{}]*?(?:\.|\[)\s*['\"]?(_|mro\b|f_globals|func_globals|gi_frame)")
_SUSPICIOUS_STRING = re.compile(
    r"__(?:globals|subclasses|builtins|import|mro|class|base|bases|getattribute|code|dict|"
    r"reduce|reduce_ex|loader|spec)__|_TemplateReference__context|\bf_globals\b|"
    r"\bfunc_globals\b"
)


def matches(probe: Probe) -> bool:
    return probe.head[:4] == gg.MAGIC


def _attribute_verdict(name: str) -> tuple[Severity, str] | None:
    """How bad an attribute access to ``name`` is (None: harmless)."""
    if _DUNDER.match(name) or _MANGLED.match(name):
        return Severity.CRITICAL, f"the Python internal attribute {name!r}"
    if name in _INTERNALS:
        return Severity.CRITICAL, f"the Python internal attribute {name!r}"
    if name.startswith("_"):
        return Severity.HIGH, f"the private attribute {name!r}"
    return None


def judge(analysis: jt.Analysis) -> list[tuple[Severity, str, int]]:
    """What a parsed template reaches: (severity, explanation, line), most severe first."""
    from modelshield.formats import jinja_template as jt  # jinja2 is imported only when needed

    attribute_filters = jt.ATTRIBUTE_FILTERS - _NON_ATTRIBUTE_FILTERS
    out: dict[str, tuple[Severity, str, int]] = {}

    def add(sev: Severity, what: str, line: int) -> None:
        if what not in out or out[what][0] < sev:
            out[what] = (sev, what, line)

    has_format = False
    for a in analysis.artifacts:
        how = " (built from constant pieces)" if a.folded else ""
        if a.kind is jt.Kind.ATTR:
            v = _attribute_verdict(a.name)
            if v:
                add(v[0], f"attribute access to {v[1]}{how}", a.lineno)
        elif a.kind is jt.Kind.ITEM:
            if _DUNDER.match(a.name) or _MANGLED.match(a.name) or a.name in _INTERNALS:
                add(
                    Severity.CRITICAL,
                    f"item access to {a.name!r}{how} (Jinja falls back to the attribute)",
                    a.lineno,
                )
        elif a.kind is jt.Kind.FILTER_ARG and a.via in attribute_filters:
            if a.via == "attr" and not a.name:
                add(
                    Severity.HIGH,
                    "attr filter with an attribute name computed at render time",
                    a.lineno,
                )
                continue
            for part in a.name.split("."):
                v = _attribute_verdict(part)
                if v:
                    add(v[0], f"|{a.via} filter reaching {v[1]}{how}", a.lineno)
        elif a.kind is jt.Kind.CALL:
            if a.via == "method" and a.name in _PROCESS_METHODS:
                add(Severity.CRITICAL, f"call of the process/import method .{a.name}()", a.lineno)
        elif a.kind is jt.Kind.NAME:
            if a.name in _PYTHON_NAMES:
                add(Severity.CRITICAL, f"Python module or builtin {a.name!r} used", a.lineno)
            elif _DUNDER.match(a.name):
                add(Severity.HIGH, f"variable {a.name!r} named like a Python internal", a.lineno)
        elif a.kind is jt.Kind.FORMAT:
            has_format = True
            if a.name and _FORMAT_FIELD.search(a.name):
                add(
                    Severity.CRITICAL,
                    f"str.format string {a.name[:60]!r} walks Python attributes",
                    a.lineno,
                )
        elif a.kind is jt.Kind.LOAD:
            add(Severity.HIGH, f"template loads another template ({a.via} {a.name!r})", a.lineno)
    for a in analysis.of(jt.Kind.CONST):
        if has_format and _FORMAT_FIELD.search(a.name):
            add(
                Severity.CRITICAL,
                f"str.format string {a.name[:60]!r} walks Python attributes",
                a.lineno,
            )
        elif _SUSPICIOUS_STRING.search(a.name):
            add(Severity.HIGH, f"string {a.name[:60]!r} names a Python internal", a.lineno)
    return sorted(out.values(), key=lambda x: (-x[0], x[2]))


def _line(source: str, lineno: int) -> str:
    lines = source.splitlines()
    text = lines[lineno - 1] if 0 < lineno <= len(lines) else source
    text = text.strip()
    return text if len(text) <= 200 else text[:197] + "..."


def _check_template(ctx: Context, key: str, source: str, offset: int) -> bool:
    """Analyse one template; returns False when it could not be parsed."""
    from modelshield.formats import jinja_template as jt  # jinja2 is imported only when needed

    try:
        analysis = jt.analyse(source)
    except jt.TemplateError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        ctx.finding(
            "MS502",
            f"chat template {key!r} cannot be parsed as Jinja{where}: {exc}; a Jinja loader "
            "cannot render it, so it cannot run code there",
            offset=offset,
            evidence=_line(source, exc.lineno or 1),
        )
        return False
    verdicts = judge(analysis)
    for sev, what, line in verdicts[:_MAX_FINDINGS_PER_TEMPLATE]:
        ctx.finding(
            "MS500",
            f"chat template {key!r} line {line}: {what}; rendering it with an unsandboxed "
            "Jinja environment (CVE-2024-34359) executes code",
            offset=offset,
            severity=sev,
            confidence=Confidence.HIGH if sev is Severity.CRITICAL else Confidence.MEDIUM,
            evidence=_line(source, line),
        )
    return True


def check(ctx: Context) -> None:
    try:
        parsed, reader = gg.parse(
            ctx.buf, ctx.start, ctx.end, keep_string_arrays=frozenset({_TEMPLATE_NAMES_KEY})
        )
    except gg.GGUFError as exc:
        ctx.finding("MS501", f"invalid GGUF header: {exc}", offset=exc.offset)
        ctx.cover(CoverageStatus.INCONCLUSIVE, "gguf", f"header cannot be read: {exc}")
        return
    with reader:
        _check_metadata(ctx, parsed, reader)


def _check_metadata(ctx: Context, parsed: gg.GGUFFile, reader: gg.Reader) -> None:
    ctx.add_bytes_read(parsed.header_end or (parsed.error.offset if parsed.error else 0))
    seen: set[str] = set()
    partial: list[str] = []
    templates = 0
    for kv in parsed.kv:
        if kv.key in seen:
            ctx.finding(
                "MS501",
                f"metadata key {kv.key!r} appears more than once (GGUF loaders reject the file; "
                "tools that keep the other copy see different metadata)",
                offset=kv.offset,
            )
        seen.add(kv.key)
        if not (kv.key == _TEMPLATE_KEY or kv.key.startswith(_TEMPLATE_KEY + ".")):
            continue
        if not isinstance(kv.value, gg.StringRef):
            ctx.finding(
                "MS501",
                f"chat template {kv.key!r} is a {kv.type.name.lower()}, not a string",
                offset=kv.offset,
                severity=Severity.LOW,
            )
            continue
        templates += 1
        source = gg.string(reader, kv.value)
        if not _check_template(ctx, kv.key, source, kv.value.offset):
            partial.append(kv.key)
    if parsed.error is not None:
        ctx.finding(
            "MS501",
            f"GGUF metadata not fully read: {parsed.error}",
            offset=parsed.error.offset,
        )
        ctx.cover(
            CoverageStatus.INCONCLUSIVE,
            "gguf",
            f"metadata after offset {parsed.error.offset} was not analysed: {parsed.error}",
        )
        return
    if partial:
        ctx.cover(
            CoverageStatus.PARTIAL,
            "gguf",
            f"chat template(s) {', '.join(partial)} could not be parsed",
        )
        return
    ctx.cover(
        CoverageStatus.SCANNED,
        "gguf",
        f"GGUF v{parsed.version}: {len(parsed.kv)} metadata entries, {templates} chat "
        f"template(s) parsed (not rendered), {len(parsed.tensors)} tensors (data not read)",
    )
