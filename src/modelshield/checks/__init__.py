"""Format checks: one module per model format family beyond pickle containers.

Each module exposes:

* ``RULES: tuple[Rule, ...]`` — its rules (IDs in its own family), merged into the catalogue;
* ``matches(probe: Probe) -> bool`` — whether the blob is this format, from its content (the
  name is only a hint for formats without a signature, such as protobuf);
* ``check(ctx: Context) -> None`` — analyse the blob: report findings and coverage through
  ``ctx``, hand embedded payloads back with ``ctx.scan_child``. Never execute, render, import or
  evaluate anything from the blob.

A module may also expose ``check_zip(ctx: Context, zip: ZipView) -> None``, called for every
zip archive before its members are analysed one by one (e.g. Keras ``.keras`` archives, whose
``config.json`` needs the Keras rules, not just a text scan).

The order of :func:`load_checks` is the order in which ``matches`` is tried, after the formats with
a fixed signature (pickle, zip, NumPy, compression, tar, 7z).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelshield.checks.context import Probe

_HDF5 = b"\x89HDF\r\n\x1a\n"
_PY_NAMES = (".py", ".pyw")


def _maybe_source(p: Probe) -> bool:
    name = p.name.lower()
    return name.endswith(_PY_NAMES) or p.head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


# Check modules in the order their ``matches`` is tried, each behind a cheap necessary condition
# on the probe, so that a module is imported only when its format is possible at all.
_GATES: tuple[tuple[str, Callable[[Probe], bool]], ...] = (
    ("gguf", lambda p: p.head[:4] == b"GGUF"),
    ("keras", lambda p: any(p.head[at : at + 8] == _HDF5 for at in (0, 512, 1024, 2048))),
    ("safetensors", lambda p: len(p.head) >= 10 and p.head[8:9] in b"{ \t\r\n"),
    ("tflite", lambda p: p.head[4:8] == b"TFL3"),
    ("onnx", lambda p: p.head[:1] == b"\x08"),
    ("tensorflow", lambda p: p.head[:1] in (b"\x08", b"\x0a")),
    ("source", _maybe_source),
)
_ZIP_HOOKS = ("keras",)
"""Modules whose ``check_zip`` inspects whole archives."""


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"modelshield.checks.{name}")


def matching_check(probe: Probe) -> ModuleType | None:
    """The first check module whose format the blob is, importing only plausible ones."""
    for name, gate in _GATES:
        if gate(probe):
            module = _module(name)
            if module.matches(probe):
                return module
    return None


def zip_hooks() -> tuple[ModuleType, ...]:
    return tuple(_module(name) for name in _ZIP_HOOKS)


@cache
def load_checks() -> tuple[ModuleType, ...]:
    """Every check module (for the rule catalogue)."""
    return tuple(_module(name) for name, _ in _GATES)
