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

The order of :data:`CHECKS` is the order in which ``matches`` is tried, after the formats with
a fixed signature (pickle, zip, NumPy, compression, tar, 7z).
"""

from __future__ import annotations

from types import ModuleType

from modelshield.checks import (
    gguf,
    keras,
    onnx,
    safetensors,
    source,
    tensorflow,
    tflite,
)

CHECKS: tuple[ModuleType, ...] = (gguf, keras, safetensors, tflite, onnx, tensorflow, source)
