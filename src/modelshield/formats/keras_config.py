"""Keras model configurations: find them, parse them, walk them (artifacts only, no verdicts).

A Keras model is rebuilt from a JSON configuration: ``config.json`` in a ``.keras`` archive, the
``model_config`` (and ``training_config``) attribute of a legacy HDF5 file, or the ``metadata``
strings of a SavedModel's ``keras_metadata.pb``. Every dict with a ``class_name`` is an object
the loader resolves and builds; this module lists them with their JSON path, together with the
pieces that carry code or data for other loaders (Lambda bytecode, pickled modules, file paths).
Nothing is imported, unmarshalled or evaluated: bytecode is only measured and base64-decoded.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from modelshield.pickle.opcodes import Buffer

MAX_DEPTH = 256
"""Deepest JSON nesting walked (Python's json module itself refuses ~1000 levels)."""
MAX_OBJECTS = 200_000
"""Most config objects listed per configuration."""
MAX_JSON = 256 << 20
"""Largest JSON document parsed."""

KERAS_PACKAGES = frozenset({"keras", "keras_hub", "keras_nlp", "keras_cv", "tf_keras"})
"""Top-level packages whose objects the Keras loaders resolve as their own."""
_TF_KERAS_PREFIXES = ("tensorflow.keras", "tensorflow.python.keras", "tensorflow_addons")


class ConfigError(Exception):
    """The configuration could not be parsed."""


@dataclass(frozen=True)
class KerasObject:
    """A dict with ``class_name``: a class, function or special value the loader resolves."""

    path: str
    """JSON path, e.g. ``config.layers[2].config.function``."""
    class_name: str
    module: str | None
    registered_name: str | None
    config: Any

    @property
    def function_name(self) -> str | None:
        """For ``class_name == 'function'``: the function's name (the ``config`` string)."""
        if self.class_name == "function" and isinstance(self.config, str):
            return self.config
        return None


@dataclass(frozen=True)
class LambdaCode:
    """Marshalled Python bytecode stored in the configuration (never unmarshalled here)."""

    path: str
    layer: str | None
    encoded_size: int
    strings: tuple[str, ...]
    """Printable names seen in the decoded bytes (identifiers the bytecode refers to)."""
    decodable: bool


@dataclass(frozen=True)
class LegacyFunction:
    """A tf.keras 2 Lambda whose function is looked up by name in an (imported) module."""

    path: str
    layer: str | None
    module: str | None
    name: str


@dataclass(frozen=True)
class EmbeddedBlob:
    """A base64 string that decodes to a serialized object another loader reads."""

    path: str
    layer: str | None
    class_name: str | None
    data: bytes
    kind: str
    """``pickle`` or ``zip`` (a torch.save archive)."""


@dataclass(frozen=True)
class ExternalPath:
    """A file path or URL that a layer reads while it is built."""

    path: str
    layer: str | None
    class_name: str
    key: str
    value: str


@dataclass
class ConfigArtifacts:
    objects: list[KerasObject] = field(default_factory=list)
    lambdas: list[LambdaCode] = field(default_factory=list)
    legacy_functions: list[LegacyFunction] = field(default_factory=list)
    blobs: list[EmbeddedBlob] = field(default_factory=list)
    paths: list[ExternalPath] = field(default_factory=list)
    truncated: str | None = None
    """Why the walk stopped early (a limit), if it did."""


def in_keras_namespace(module: str) -> bool:
    """Whether ``module`` belongs to Keras itself (including tf.keras and KerasHub/CV/NLP)."""
    root = module.split(".", 1)[0]
    if root in KERAS_PACKAGES:
        return True
    return any(module == p or module.startswith(p + ".") for p in _TF_KERAS_PREFIXES)


def parse_json(data: bytes | str) -> Any:
    """Parse a JSON document strictly (duplicate keys keep the last value, like Keras)."""
    if len(data) > MAX_JSON:
        raise ConfigError(f"configuration larger than {MAX_JSON} bytes")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"configuration is not valid JSON: {exc}") from exc


_JSON_START = re.compile(rb"\{\s*\"")
_WINDOW = 1 << 20


def find_json_objects(
    buf: Buffer, start: int, end: int, *, max_candidates: int = 20_000
) -> Iterator[tuple[int, dict[str, Any]]]:
    """JSON objects stored as plain text inside binary data (e.g. HDF5 string attributes).

    Yields ``(offset, object)`` for each top-level object found, relative to ``start``. Objects
    nested in one already yielded are skipped. Random binary data fails to parse quickly.
    """
    view = memoryview(buf)[start:end]
    decoder = json.JSONDecoder()
    pos = 0
    tried = 0
    size = len(view)
    while pos < size and tried < max_candidates:
        m = _JSON_START.search(view, pos)
        if m is None:
            return
        at = m.start()
        tried += 1
        window = _WINDOW
        obj: Any = None
        consumed = 0
        while True:
            chunk = bytes(view[at : min(size, at + window)]).decode("utf-8", "replace")
            try:
                obj, consumed = decoder.raw_decode(chunk)
                break
            except (ValueError, RecursionError) as exc:
                more = at + window < size and window < MAX_JSON
                near_end = isinstance(exc, json.JSONDecodeError) and (
                    exc.pos >= len(chunk) - 64 or exc.msg.startswith("Unterminated string")
                )
                if more and near_end:
                    window *= 16
                    continue
                obj = None
                break
        if isinstance(obj, dict):
            yield at, obj
            pos = at + max(len(chunk[:consumed].encode("utf-8", "replace")), 1)
        else:
            pos = at + 1


_B64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_PRINTABLE = re.compile(rb"[A-Za-z_][A-Za-z0-9_.]{2,63}")


def _b64decode(value: str) -> bytes | None:
    if not _B64.fullmatch(value):
        return None
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _names_in(raw: bytes, limit: int = 24) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for m in _PRINTABLE.finditer(raw):
        seen.setdefault(m.group().decode("ascii"), None)
        if len(seen) >= limit:
            break
    return tuple(seen)


def _blob_kind(raw: bytes) -> str | None:
    if len(raw) >= 2 and raw[0] == 0x80 and 2 <= raw[1] <= 5:
        return "pickle"
    if raw.startswith(b"PK\x03\x04"):
        return "zip"
    return None


_PATH_LAYERS = {
    "StringLookup": ("vocabulary",),
    "IntegerLookup": ("vocabulary",),
    "TextVectorization": ("vocabulary",),
    "TFSMLayer": ("filepath",),
}


def _lambda(path: str, layer: str | None, code: Any) -> LambdaCode:
    text = code if isinstance(code, str) else ""
    raw = _b64decode(text) if text else None
    return LambdaCode(
        path, layer, len(text), _names_in(raw) if raw else (), decodable=raw is not None
    )


def walk(root: Any, base: str = "") -> ConfigArtifacts:
    """List everything the Keras loaders would resolve or decode in the configuration ``root``."""
    out = ConfigArtifacts()
    claimed: set[str] = set()
    # (value, path, enclosing layer name, depth)
    stack: list[tuple[Any, str, str | None, int]] = [(root, base, None, 0)]
    while stack:
        value, path, layer, depth = stack.pop()
        if depth > MAX_DEPTH:
            out.truncated = f"configuration nested deeper than {MAX_DEPTH} levels"
            continue
        if isinstance(value, list):
            for i in range(len(value) - 1, -1, -1):
                stack.append((value[i], f"{path}[{i}]", layer, depth + 1))
            continue
        if isinstance(value, str):
            if len(value) >= 64 and path not in claimed:
                raw = _b64decode(value)
                kind = _blob_kind(raw) if raw else None
                if raw is not None and kind is not None:
                    out.blobs.append(EmbeddedBlob(path, layer, None, raw, kind))
            continue
        if not isinstance(value, dict):
            continue
        class_name = value.get("class_name")
        inner = value.get("config")
        if isinstance(class_name, str):
            if len(out.objects) >= MAX_OBJECTS:
                out.truncated = f"more than {MAX_OBJECTS} objects in the configuration"
                break
            module = value.get("module")
            registered = value.get("registered_name")
            out.objects.append(
                KerasObject(
                    path or "$",
                    class_name,
                    module if isinstance(module, str) else None,
                    registered if isinstance(registered, str) else None,
                    inner,
                )
            )
            if isinstance(inner, dict):
                name = inner.get("name")
                if isinstance(name, str):
                    layer = name
            _special(out, claimed, class_name, inner, path, layer)
        for key in reversed(list(value)):
            sub = f"{path}.{key}" if path else str(key)
            stack.append((value[key], sub, layer, depth + 1))
    return out


def _special(
    out: ConfigArtifacts,
    claimed: set[str],
    class_name: str,
    inner: Any,
    path: str,
    layer: str | None,
) -> None:
    here = path or "$"
    if class_name == "__lambda__" and isinstance(inner, dict):
        # Keras 3: {"class_name": "__lambda__", "config": {"code": b64, ...}} (Lambda layers)
        # or {"config": {"value": b64}} (serialization_lib's generic lambda).
        code = inner.get("code", inner.get("value"))
        out.lambdas.append(_lambda(f"{here}.config", layer, code))
    if not isinstance(inner, dict):
        return
    if class_name == "Lambda" or inner.get("function_type") is not None:
        # tf.keras 2: {"function": [b64, defaults, closure] | b64 | name,
        #              "function_type": "lambda" | "function", "module": ...}
        for key, type_key in (("function", "function_type"), ("output_shape", "output_shape_type")):
            fn = inner.get(key)
            kind = inner.get(type_key)
            if kind == "lambda":
                code = fn[0] if isinstance(fn, list) and fn else fn
                out.lambdas.append(_lambda(f"{here}.config.{key}", layer, code))
            elif kind == "function" and isinstance(fn, str):
                module = inner.get(f"{key}_module", inner.get("module"))
                out.legacy_functions.append(
                    LegacyFunction(
                        f"{here}.config.{key}",
                        layer,
                        module if isinstance(module, str) else None,
                        fn,
                    )
                )
    if class_name == "TorchModuleWrapper":
        blob = inner.get("module")
        raw = _b64decode(blob) if isinstance(blob, str) else None
        if raw is not None:
            claimed.add(f"{path}.config.module" if path else "config.module")
            out.blobs.append(
                EmbeddedBlob(
                    f"{here}.config.module", layer, class_name, raw, _blob_kind(raw) or "data"
                )
            )
    for key in _PATH_LAYERS.get(class_name, ()):
        v = inner.get(key)
        if isinstance(v, str) and v:
            out.paths.append(ExternalPath(f"{here}.config.{key}", layer, class_name, key, v))
