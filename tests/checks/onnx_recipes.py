"""Readable recipes for ONNX test models, built with the ``onnx`` package (a test dependency).

Benign models come from ``onnx.helper`` as exporters write them; hostile ones set the
``external_data`` entries or operator domains that loaders act on. The large-model writer
streams the protobuf by hand so that a gigabyte of weights never exists in memory (the weights
are a hole in a sparse file).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def conv_relu(path: Path) -> Path:
    """Conv -> Relu -> Flatten -> Gemm, with embedded weights (raw_data)."""
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "W")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "B")
    fc = numpy_helper.from_array(np.ones((4 * 6 * 6, 2), np.float32), "FC")
    nodes = [
        helper.make_node("Conv", ["X", "W", "B"], ["C"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["C"], ["R"]),
        helper.make_node("Flatten", ["R"], ["F"]),
        helper.make_node("Gemm", ["F", "FC"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_relu",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])],
        [w, b, fc],
    )
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="modelshield-tests")
    onnx.checker.check_model(model)
    return _save(model, path)


def matmul_if(path: Path) -> Path:
    """MatMul, then If whose branches are subgraphs with their own initializers."""

    def branch(name: str, value: float) -> onnx.GraphProto:
        k = numpy_helper.from_array(np.full((2,), value, np.float32), f"{name}_k")
        return helper.make_graph(
            [helper.make_node("Add", ["M", f"{name}_k"], [f"{name}_out"])],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2])],
            [k],
        )

    w = numpy_helper.from_array(np.eye(2, dtype=np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["M"]),
        helper.make_node(
            "If",
            ["cond"],
            ["Y"],
            then_branch=branch("then", 1.0),
            else_branch=branch("else", -1.0),
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "matmul_if",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    onnx.checker.check_model(model)
    return _save(model, path)


def with_local_function(path: Path) -> Path:
    """A node calling a model-local function in a custom domain (expanded from the model)."""
    fn = helper.make_function(
        "custom.fn",
        "DoubleRelu",
        ["x"],
        ["y"],
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "r"], ["y"])],
        opset_imports=OPSET,
    )
    graph = helper.make_graph(
        [helper.make_node("DoubleRelu", ["X"], ["Y"], domain="custom.fn")],
        "fn_model",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph, opset_imports=[*OPSET, helper.make_opsetid("custom.fn", 1)], functions=[fn]
    )
    onnx.checker.check_model(model)
    return _save(model, path)


def custom_domain(
    path: Path, domain: str, op_type: str = "EvilOp", *, nested: bool = False
) -> Path:
    """A node from ``domain`` (in the main graph, or inside a Loop body when ``nested``)."""
    op = helper.make_node(op_type, ["X"], ["Y"], domain=domain)
    if nested:
        body = helper.make_graph(
            [op, helper.make_node("Identity", ["cond_in"], ["cond_out"])],
            "body",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            ],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])],
        )
        top = helper.make_node("Loop", ["n", "c"], [], body=body)
        inputs = [
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [2]),
        ]
        graph = helper.make_graph([top], "nested", inputs, [])
    else:
        graph = helper.make_graph(
            [op],
            "custom",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
        )
    model = helper.make_model(graph, opset_imports=[*OPSET, helper.make_opsetid(domain, 1)])
    return _save(model, path)


def external_tensor(location: str, n: int, *, name: str = "W", **extra: str) -> TensorProto:
    """A UINT8 tensor of ``n`` values whose data a loader reads from ``location``."""
    t = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[n])
    t.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, **extra}.items():
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def external_ref(path: Path, location: str, n: int = 16, **extra: str) -> Path:
    """Identity(W) where W's values come from the file ``location`` (relative to the model)."""
    t = external_tensor(location, n, **extra)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["W"], ["Y"])],
        "external",
        [],
        [helper.make_tensor_value_info("Y", TensorProto.UINT8, [n])],
        [t],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def external_in_constant(path: Path, location: str, n: int = 16) -> Path:
    """The external tensor sits in a Constant node's ``value`` attribute inside an If branch."""
    const = helper.make_node("Constant", [], ["K"], value=external_tensor(location, n))
    then = helper.make_graph(
        [const], "then", [], [helper.make_tensor_value_info("K", TensorProto.UINT8, [n])]
    )
    zeros = numpy_helper.from_array(np.zeros(n, np.uint8))
    other = helper.make_graph(
        [helper.make_node("Constant", [], ["Z"], value=zeros)],
        "else",
        [],
        [helper.make_tensor_value_info("Z", TensorProto.UINT8, [n])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["Y"], then_branch=then, else_branch=other)],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("Y", TensorProto.UINT8, [n])],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def saved_with_external_data(path: Path) -> Path:
    """A model saved by ``onnx.save_model(save_as_external_data=True)`` (weights beside it)."""
    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "ext",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 64])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=0,
    )
    return path


# ---------------------------------------------------------------------- a large model, streamed
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(number: int, length: int) -> bytes:
    return _varint(number << 3 | 2) + _varint(length)


def large_model(path: Path, payload: int, fill: bytes | None = None) -> Path:
    """Gemm with one FLOAT initializer of ``payload`` bytes in ``raw_data``, written without
    building it in memory: the serialised fields are concatenated by hand and the weights are
    a hole in a sparse file (zeros), unless ``fill`` (repeated) is given for small sizes."""
    assert payload % 4 == 0
    n = payload // 4
    head = onnx.ModelProto(ir_version=onnx.IR_VERSION, producer_name="modelshield-tests")
    tail = onnx.ModelProto(opset_import=OPSET)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "W"], ["Y"])],
        "large",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n])],
    )
    tensor = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[n]).SerializeToString()
    tensor_len = len(tensor) + len(_len_field(9, payload)) + payload
    graph_bytes = graph.SerializeToString()
    graph_len = len(graph_bytes) + len(_len_field(5, tensor_len)) + tensor_len
    with path.open("wb") as fh:
        fh.write(head.SerializeToString())
        fh.write(_len_field(7, graph_len))
        fh.write(graph_bytes)
        fh.write(_len_field(5, tensor_len))
        fh.write(tensor)
        fh.write(_len_field(9, payload))
        if fill is None:
            fh.seek(payload, os.SEEK_CUR)  # a hole: reads as zeros, costs no disk
        else:
            fh.write((fill * (payload // len(fill) + 1))[:payload])
        fh.write(tail.SerializeToString())
    return path


def deeply_nested(depth: int) -> bytes:
    """A ModelProto whose graph nests ``depth`` If-branch graphs, serialised by hand (protobuf
    libraries refuse to build messages nested past about 100 levels)."""
    graph = _len_field(1, 0)  # an empty node
    for _ in range(depth):
        attribute = b"\x0a\x0bthen_branch" + _len_field(6, len(graph)) + graph
        node = b"\x22\x02If" + _len_field(5, len(attribute)) + attribute
        graph = _len_field(1, len(node)) + node
    opset = b"\x0a\x00\x10\x11"
    return b"\x08\x08" + _len_field(7, len(graph)) + graph + _len_field(8, len(opset)) + opset
