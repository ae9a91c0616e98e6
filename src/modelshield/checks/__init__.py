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
from functools import cache
from types import ModuleType

_NAMES = ("gguf", "keras", "safetensors", "tflite", "onnx", "tensorflow", "source")


@cache
def load_checks() -> tuple[ModuleType, ...]:
    """The check modules, imported on first use (start-up stays light for plain pickles)."""
    return tuple(importlib.import_module(f"modelshield.checks.{name}") for name in _NAMES)
