"""TorchScript sources (``code/**.py`` in archives written by ``torch.jit.save``).

TorchScript is compiled and run by ``torch.jit.load``. The language cannot import Python modules,
but it can call any registered operator (``torch.ops.<namespace>.<op>``), including operators
from custom libraries, and a crafted archive can hold code no compiler produced. The source is
scanned as text (never compiled or run) for operations that reach outside the model.
"""

from __future__ import annotations

import re

from modelshield.findings import Severity

_KNOWN_OP_NAMESPACES = frozenset(
    {
        "aten",
        "prim",
        "quantized",
        "_quantized",
        "quantized_decomposed",
        "_caffe2",
        "profiler",
        "cuda",
        "mkldnn",
        "mkl",
        "fbgemm",
        "onednn",
        "xnnpack",
        "_test",
    }
)
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_OPS = re.compile(r"\bops\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
_DANGEROUS = (
    (re.compile(r"\b(?:torch\.)?(?:ops\.aten\.)?save\s*\("), "writes a file (save)"),
    (re.compile(r"\btorch\.(?:jit\.)?load\s*\("), "loads another model or pickle (load)"),
    (
        re.compile(r"\b(?:os|subprocess|sys|builtins|importlib|socket|shutil)\.\w+"),
        "refers to a Python system module",
    ),
    (
        re.compile(r"\b(?:__import__|exec|eval|compile|open)\s*\("),
        "calls a Python built-in that is not valid TorchScript",
    ),
    (re.compile(r"__(?:globals|builtins|subclasses|class|code)__"), "reaches Python internals"),
)


def torchscript_findings(source: str) -> list[tuple[str, Severity, str, str]]:
    """``(rule_id, severity, message, evidence)`` for notable operations in one source file."""
    found: list[tuple[str, Severity, str, str]] = []
    seen: set[str] = set()
    for lineno, raw_line in enumerate(source.splitlines(), 1):
        stripped = raw_line.strip()
        if stripped.startswith("#"):
            continue
        line = _STRINGS.sub('""', raw_line)  # text in string literals is not code
        for m in _OPS.finditer(line):
            ns = m.group(1)
            key = f"ops.{ns}.{m.group(2)}"
            if ns not in _KNOWN_OP_NAMESPACES and key not in seen:
                seen.add(key)
                found.append(
                    (
                        "MS204",
                        Severity.MEDIUM,
                        f"line {lineno}: calls operator {ns}::{m.group(2)} from a custom operator "
                        "library (native code loaded into the process)",
                        stripped[:200],
                    )
                )
        for pattern, what in _DANGEROUS:
            tag = f"{what}:{lineno}"
            if pattern.search(line) and tag not in seen:
                seen.add(tag)
                found.append(
                    (
                        "MS204",
                        Severity.HIGH,
                        f"line {lineno}: TorchScript code {what}",
                        stripped[:200],
                    )
                )
    return found
