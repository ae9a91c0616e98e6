"""Keras models: ``.keras`` archives (v3) and legacy HDF5 files, analysed from their config.

Keras rebuilds a model by resolving every ``class_name``/``module`` pair of its JSON
configuration and calling the result. The configuration is found and walked without Keras:
``config.json`` for ``.keras`` archives, the ``model_config``/``training_config`` attributes for
HDF5 files (read with h5py when it is installed and the file is on disk, otherwise found by a
byte search, since HDF5 string attributes are stored as plain bytes). Lambda bytecode is never
unmarshalled; pickled objects embedded in the config are handed to the pickle engine.

Rules (MS30x): MS300 Lambda bytecode, MS301 objects outside Keras' namespaces, MS302 layers that
unpickle, MS303 Keras functions with side effects, MS304 configuration not readable, MS305 files
and URLs read while building.
"""

from __future__ import annotations

import builtins
import re
from typing import TYPE_CHECKING, Any

from modelshield.checks.context import Context, Probe
from modelshield.findings import Confidence, CoverageStatus, Severity
from modelshield.formats import keras_config as kc
from modelshield.policy import Verdict
from modelshield.rules import checks as rule_tables

if TYPE_CHECKING:
    from modelshield.analysis import ZipView

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

RULES = rule_tables.KERAS

_UNSAFE_KERAS_FUNCTIONS: dict[str, tuple[Severity, str]] = {
    "enable_unsafe_deserialization": (Severity.CRITICAL, "turns safe mode off for the process"),
    "set_global_attribute": (
        Severity.CRITICAL,
        "sets Keras global state (used to turn safe mode off, CVE-2025-9906)",
    ),
    "load_model": (Severity.CRITICAL, "loads another model (with attacker-chosen arguments)"),
    "model_from_json": (Severity.CRITICAL, "builds another model from a JSON string"),
    "deserialize_keras_object": (Severity.CRITICAL, "deserializes an attacker-chosen config"),
    "register_keras_serializable": (Severity.HIGH, "changes the custom-object registry"),
    "get_file": (Severity.HIGH, "downloads a URL to a chosen path (CVE-2025-8747)"),
    "save_model": (Severity.HIGH, "writes a file"),
    "save_weights": (Severity.HIGH, "writes a file"),
    "save_img": (Severity.HIGH, "writes a file"),
    "load_weights": (Severity.MEDIUM, "reads a file"),
    "load_img": (Severity.MEDIUM, "reads a file"),
    "image_dataset_from_directory": (Severity.MEDIUM, "lists and reads a directory"),
    "text_dataset_from_directory": (Severity.MEDIUM, "lists and reads a directory"),
    "audio_dataset_from_directory": (Severity.MEDIUM, "lists and reads a directory"),
    "clear_session": (Severity.MEDIUM, "resets the Keras session"),
}
"""Keras functions that are not modeling operations (mirrors Keras' NON_MODELING_APIS)."""

_PY_BUILTINS = frozenset(dir(builtins))


def matches(probe: Probe) -> bool:
    # HDF5 files may start with a user block of 512, 1024, 2048... bytes (the probe's head is
    # 4 KiB; the analyser offers HDF5 found at any of these offsets).
    return any(probe.head[at : at + 8] == HDF5_MAGIC for at in (0, 512, 1024, 2048))


# --------------------------------------------------------------------------- reporting
def report_config(ctx: Context, root: Any, member: str | None, source: str) -> bool:
    """Walk one configuration and report; False when a limit stopped the walk."""
    arts = kc.walk(root)
    where = f" in {source}" if source else ""

    def layer_of(layer: str | None) -> str:
        return f" {layer!r}" if layer else ""

    for lam in arts.lambdas:
        names = ", ".join(lam.strings[:16])
        ctx.finding(
            "MS300",
            f"Lambda layer{layer_of(lam.layer)} carries marshalled Python bytecode "
            f"({lam.encoded_size} base64 characters){where}; Keras unmarshals and runs it "
            "when the model is loaded without safe mode",
            member=member,
            evidence=f"{lam.path}" + (f"; names in the bytecode: {names}" if names else ""),
        )
    for obj in arts.objects:
        _report_object(ctx, obj, member, where)
    for fn in arts.legacy_functions:
        module = fn.module or ""
        if module and kc.in_keras_namespace(module):
            _report_keras_function(ctx, fn.name, fn.path, member, where)
            continue
        qual = f"{module}.{fn.name}" if module else fn.name
        severity = _policy_severity(ctx, qual) or Severity.HIGH
        ctx.finding(
            "MS301",
            f"tf.keras Lambda layer{layer_of(fn.layer)} calls function {qual!r}, looked up "
            f"in module {module or '(none)'!r} of the loading process{where}",
            member=member,
            severity=severity,
            evidence=fn.path,
        )
    for blob in arts.blobs:
        what = (
            "TorchModuleWrapper layer stores a torch.save archive of its module; "
            "Keras reads it with torch.load(weights_only=False)"
            if blob.class_name == "TorchModuleWrapper"
            else f"a base64 string decodes to a {blob.kind}"
        )
        ctx.finding(
            "MS302",
            f"{what}{where}; the payload was analysed (findings below)",
            member=member,
            evidence=f"{blob.path} ({len(blob.data)} bytes)",
        )
        child = f"{member}#{blob.path}" if member else f"#{blob.path}"
        ctx.scan_child(child, blob.data)
    for p in arts.paths:
        high = p.class_name == "TFSMLayer"
        ctx.finding(
            "MS305",
            f"{p.class_name} layer{layer_of(p.layer)} reads {p.value!r} ({p.key}) while the "
            f"model is built{where}",
            member=member,
            severity=Severity.HIGH if high else None,
            evidence=p.path,
        )
    return arts.truncated is None


def _policy_severity(ctx: Context, qual: str) -> Severity | None:
    cls = ctx.policy.classify(qual)
    if cls.verdict is Verdict.DANGEROUS and cls.entry is not None:
        return max(cls.entry.severity, Severity.HIGH)
    return None


def _report_keras_function(
    ctx: Context, name: str, path: str, member: str | None, where: str
) -> None:
    hit = _UNSAFE_KERAS_FUNCTIONS.get(name)
    if hit is None:
        return
    severity, why = hit
    ctx.finding(
        "MS303",
        f"the config references Keras function {name!r}, which {why}{where}",
        member=member,
        severity=severity,
        evidence=path,
    )


def _report_object(ctx: Context, obj: kc.KerasObject, member: str | None, where: str) -> None:
    name = obj.function_name or obj.class_name
    module = obj.module
    if module is None or module == "":
        if obj.registered_name and ">" in obj.registered_name:
            ctx.finding(
                "MS301",
                f"custom object {obj.registered_name!r} is resolved only from the loading "
                f"program's registered custom objects{where}",
                member=member,
                severity=Severity.LOW,
                confidence=Confidence.HIGH,
                evidence=obj.path,
            )
        return
    if kc.in_keras_namespace(module):
        _report_keras_function(ctx, name, obj.path, member, where)
        return
    # Keras resolves builtins-module functions among its own activations, losses...;
    # Keras < 3.9 fell back to importing Python's builtins module (eval, exec, open...).
    if module == "builtins" and (obj.class_name != "function" or name not in _PY_BUILTINS):
        return
    qual = f"{module}.{name}"
    severity = _policy_severity(ctx, qual) or Severity.HIGH
    ctx.finding(
        "MS301",
        f"config object {obj.class_name!r} resolves {qual!r}, outside Keras' modules{where}; "
        "Keras < 3.9 imports it and calls it with the config's arguments (CVE-2025-1550)",
        member=member,
        severity=severity,
        evidence=obj.path,
    )


# --------------------------------------------------------------------------- .keras archives
def check_zip(ctx: Context, zipview: ZipView) -> None:
    """Keras v3 archives: ``config.json`` beside ``metadata.json`` / ``model.weights.h5``."""
    names = zipview.names
    if "config.json" not in names:
        return
    if not (
        "metadata.json" in names
        or "model.weights.h5" in names
        or ctx.name.lower().endswith(".keras")
    ):
        return
    data = zipview.read("config.json", max_size=kc.MAX_JSON)
    if data is None:
        _unreadable(ctx, "config.json", "config.json cannot be read from the archive")
        return
    try:
        root = kc.parse_json(data)
    except kc.ConfigError as exc:
        _unreadable(ctx, "config.json", str(exc))
        return
    if not isinstance(root, dict):
        _unreadable(ctx, "config.json", "config.json is not a JSON object")
        return
    complete = report_config(ctx, root, "config.json", "")
    ctx.cover(
        CoverageStatus.SCANNED if complete else CoverageStatus.PARTIAL,
        "keras-config",
        "Keras v3 model configuration" + ("" if complete else " (walk stopped at a limit)"),
        member="config.json",
        size=len(data),
    )


def _unreadable(ctx: Context, member: str | None, why: str) -> None:
    ctx.finding("MS304", f"Keras model configuration not analysed: {why}", member=member)
    ctx.cover(CoverageStatus.INCONCLUSIVE, "keras-config", why, member=member)


# --------------------------------------------------------------------------- HDF5
_CONFIG_ATTRS = ("model_config", "training_config")
_ATTR_NAME = re.compile(rb"model_config|training_config")


def _h5py_configs(ctx: Context) -> tuple[list[tuple[str, Any]], list[str]] | None:
    """Root attributes read with h5py: (parsed configs, errors); None when h5py is unusable."""
    if ctx.fs_path is None or not ctx.is_top_level:
        return None
    try:
        import h5py  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        return None
    configs: list[tuple[str, Any]] = []
    errors: list[str] = []
    try:
        with h5py.File(ctx.fs_path, "r") as f:
            for attr in _CONFIG_ATTRS:
                if attr not in f.attrs:
                    continue
                value = f.attrs[attr]
                if hasattr(value, "tolist") and not isinstance(value, (bytes, str)):
                    value = value.tolist()
                if not isinstance(value, (bytes, str)):
                    errors.append(f"{attr} attribute is not a string")
                    continue
                try:
                    configs.append((attr, kc.parse_json(value)))
                except kc.ConfigError as exc:
                    errors.append(f"{attr}: {exc}")
    except Exception:  # h5py raises many types on damaged files: use the byte search
        return None
    return configs, errors


def check(ctx: Context) -> None:
    """Legacy Keras HDF5 models (and plain HDF5 weight files)."""
    read = _h5py_configs(ctx)
    how = "attributes read with h5py"
    if read is not None:
        configs, errors = read
    else:
        how = "configuration found by byte search (install h5py for attribute-level reading)"
        configs, errors = [], []
        view = memoryview(ctx.buf)[ctx.start : ctx.end]
        if _ATTR_NAME.search(view) is not None:
            for _, obj in kc.find_json_objects(ctx.buf, ctx.start, ctx.end):
                if "class_name" in obj or "loss" in obj or "optimizer_config" in obj:
                    configs.append(("model_config", obj))
            if not configs:
                errors.append("a model_config attribute is named but no JSON config was found")
        ctx.add_bytes_read(ctx.size)
    if errors and not configs:
        _unreadable(ctx, None, "; ".join(errors))
        return
    if not configs:
        ctx.cover(
            CoverageStatus.SCANNED,
            "hdf5-weights",
            "HDF5 without a Keras model configuration: Keras load_weights and h5py read only "
            "arrays and attribute values from it, nothing is deserialized into code",
        )
        return
    complete = not errors
    if errors:
        ctx.finding("MS304", "part of the Keras configuration not analysed: " + "; ".join(errors))
    for attr, root in configs:
        complete &= report_config(ctx, root, None, attr)
    ctx.cover(
        CoverageStatus.SCANNED if complete else CoverageStatus.PARTIAL,
        "keras-hdf5",
        f"legacy Keras HDF5 model; {how}" + ("" if not errors else "; " + "; ".join(errors)),
    )
