"""Readable recipes for Keras and TensorFlow samples: protobuf and archive writers.

TensorFlow is not installed, so SavedModels, GraphDefs and keras_metadata.pb are written field
by field with the wire format (field numbers from TensorFlow's .proto files).
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

# ------------------------------------------------------------------ protobuf wire writer


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def f_bytes(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return varint((number << 3) | 2) + varint(len(data)) + data


def attr_s(key: str, value: str) -> bytes:
    """A NodeDef ``attr`` map entry whose AttrValue is a string (field 2 ``s``)."""
    return f_bytes(5, f_bytes(1, key) + f_bytes(2, f_bytes(2, value)))


def attr_tensor(key: str, raw: bytes) -> bytes:
    """A NodeDef ``attr`` entry holding a TensorProto (AttrValue field 8) with content bytes."""
    tensor = f_varint(1, 1) + f_bytes(4, raw)  # dtype float, tensor_content
    return f_bytes(5, f_bytes(1, key) + f_bytes(2, f_bytes(8, tensor)))


def node(name: str, op: str, *inputs: str, attrs: bytes = b"") -> bytes:
    body = f_bytes(1, name) + f_bytes(2, op) + b"".join(f_bytes(3, i) for i in inputs) + attrs
    return body


def function_def(name: str, nodes: list[bytes]) -> bytes:
    signature = f_bytes(1, name)  # OpDef.name
    return f_bytes(1, signature) + b"".join(f_bytes(3, n) for n in nodes)


def graph_def(nodes: list[bytes], functions: list[bytes] | None = None) -> bytes:
    body = b"".join(f_bytes(1, n) for n in nodes)
    if functions:
        body += f_bytes(2, b"".join(f_bytes(1, fn) for fn in functions))
    body += f_bytes(4, f_varint(1, 1808))  # versions.producer
    return body


def saved_model(graph: bytes) -> bytes:
    meta_info = f_bytes(1, "") + f_bytes(4, "serve") + f_bytes(5, "2.16.1")
    meta_graph = f_bytes(1, meta_info) + f_bytes(2, graph)
    return f_varint(1, 1) + f_bytes(2, meta_graph)


def keras_metadata(entries: list[tuple[str, str, dict[str, Any]]]) -> bytes:
    """SavedMetadata: nodes of (node_path, identifier, metadata JSON)."""
    out = b""
    for i, (path, ident, meta) in enumerate(entries):
        body = (f_varint(1, i) if i else b"") + f_bytes(2, path) + f_bytes(3, ident)
        body += f_bytes(4, json.dumps(meta)) + f_bytes(5, f_varint(1, 1))
        out += f_bytes(1, body)
    return out


def saver_nodes() -> list[bytes]:
    """The TF1 saver graph every SavedModel carries (save/SaveV2, save/RestoreV2...)."""
    return [
        node("save/filename", "Placeholder"),
        node("save/Const", "Const"),
        node("save/StringJoin", "StringJoin", "save/Const"),
        node("save/ShardedFilename", "ShardedFilename", "save/StringJoin"),
        node("save/SaveV2", "SaveV2", "save/ShardedFilename"),
        node("save/MergeV2Checkpoints", "MergeV2Checkpoints", "save/ShardedFilename"),
        node("save/RestoreV2", "RestoreV2", "save/Const"),
    ]


def benign_graph() -> bytes:
    weights = b"\x00\x00\x80?" * 64
    nodes = [
        node("x", "Placeholder"),
        node("w", "Const", attrs=attr_tensor("value", weights)),
        node("y", "MatMul", "x", "w"),
        node("out", "Relu", "y"),
    ]
    traced = function_def(
        "__inference__traced_save_123",
        [node("SaveV2", "SaveV2"), node("MergeV2Checkpoints", "MergeV2Checkpoints")],
    )
    restore = function_def("__inference__traced_restore_124", [node("RestoreV2", "RestoreV2")])
    serving = function_def("__inference_serving_fn_55", [node("Relu", "Relu")])
    return graph_def(nodes + saver_nodes(), [traced, restore, serving])


# ------------------------------------------------------------------ Keras v3 archives


def keras_archive(config: dict[str, Any], *, weights: bytes | None = None) -> bytes:
    """A .keras zip as Keras writes it: metadata.json, config.json, model.weights.h5."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        meta = {"keras_version": "3.15.1", "date_saved": "2026-01-01@00:00:00"}
        z.writestr("metadata.json", json.dumps(meta))
        z.writestr("config.json", json.dumps(config))
        if weights is not None:
            z.writestr("model.weights.h5", weights)
    return buf.getvalue()


def sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "trainable": True,
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "input"},
                    "registered_name": None,
                },
                *layers,
            ],
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
    }


def lambda_layer(
    function: dict[str, Any], arguments: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {"name": "lambda", "function": function, "arguments": arguments or {}},
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
    }


def cve_2025_1550_layer() -> dict[str, Any]:
    """CVE-2025-1550 shape: a config object whose module is any importable Python module.

    Keras < 3.9 imported ``module`` and resolved ``class_name``/``config`` there, then called
    it with the config's arguments (GHSA-48g7-3x6r-xfhp).
    """
    return lambda_layer(
        {
            "module": "os",
            "class_name": "function",
            "config": "system",
            "registered_name": "system",
        }
    )


def cve_2025_9906_layer(path: str) -> dict[str, Any]:
    """CVE-2025-9906 / CVE-2025-8747 shape: a Lambda whose function is a non-modeling Keras API."""
    return lambda_layer(
        {
            "module": "keras.models",
            "class_name": "function",
            "config": "load_model",
            "registered_name": "function",
        },
        {"safe_mode": False, "filepath": path},
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
