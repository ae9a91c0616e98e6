"""TensorFlow graphs from their protobuf wire format, without TensorFlow (artifacts only).

Reads ``saved_model.pb`` (SavedModel: schema version + MetaGraphDefs), frozen ``GraphDef`` files
and ``keras_metadata.pb`` (SavedMetadata: the Keras JSON configs of a Keras SavedModel). Lists
every node (name, op, string attributes) of the graph and of each library function; tensor
payloads are stepped over, never copied.

Field numbers (tensorflow/core/protobuf/saved_model.proto, meta_graph.proto, framework/graph.proto,
node_def.proto, function.proto, op_def.proto, attr_value.proto, saved_metadata.proto).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from modelshield.formats.protobuf import LEN, VARINT, Field, ProtobufError, iter_fields, text
from modelshield.pickle.opcodes import Buffer

MAX_NODES = 2_000_000
MAX_FUNCTIONS = 100_000
MAX_NESTING = 16
"""Function libraries nested in graphs nested in ... (GraphDef inside AttrValue is not walked)."""

OP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_>.]{0,127}")
NODE_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9_.\-/>:]{0,1023}")


class GraphError(Exception):
    """The bytes are not the expected TensorFlow protobuf message."""


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    function: str | None
    """The library function holding the node; None for the top-level graph."""
    string_attrs: tuple[tuple[str, str], ...] = ()
    """Short string attributes (``attr.s``), e.g. PrintV2's output_stream."""


@dataclass
class Graph:
    kind: str
    """``saved_model`` or ``graph_def``."""
    nodes: list[Node] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    meta_graphs: int = 0
    truncated: str | None = None


def _mv(buf: Buffer | memoryview) -> memoryview:
    return buf if isinstance(buf, memoryview) else memoryview(buf)


def _attr_strings(data: memoryview, f: Field) -> tuple[str, str] | None:
    """One ``map<string, AttrValue>`` entry whose value is a short string."""
    key: str | None = None
    value: str | None = None
    for e in iter_fields(data, f.start, f.end):
        if e.number == 1 and e.wire_type == LEN:
            key = text(data, e, 256)
        elif e.number == 2 and e.wire_type == LEN:
            for a in iter_fields(data, e.start, e.end):
                if a.number == 2 and a.wire_type == LEN and a.end - a.start <= 4096:
                    value = bytes(data[a.start : a.end]).decode("utf-8", "replace")
    if key is not None and value is not None:
        return key, value
    return None


def parse_node(data: memoryview, start: int, end: int, function: str | None) -> Node:
    name = op = None
    attrs: list[tuple[str, str]] = []
    for f in iter_fields(data, start, end):
        if f.wire_type != LEN:
            continue
        if f.number == 1:
            name = text(data, f, 4096)
        elif f.number == 2:
            op = text(data, f, 256)
        elif f.number == 5:
            kv = _attr_strings(data, f)
            if kv is not None:
                attrs.append(kv)
    if op is None or not OP_NAME.fullmatch(op):
        raise GraphError(f"node without a valid op name: {op!r}")
    return Node(name or "", op, function, tuple(attrs))


def _library(data: memoryview, f: Field, g: Graph) -> None:
    for fn in iter_fields(data, f.start, f.end):
        if fn.number != 1 or fn.wire_type != LEN:
            continue  # gradients (2) and registered gradients (3) name functions only
        if len(g.functions) >= MAX_FUNCTIONS:
            g.truncated = f"more than {MAX_FUNCTIONS} functions"
            return
        fname = "<function>"
        bodies: list[Field] = []
        for part in iter_fields(data, fn.start, fn.end):
            if part.number == 1 and part.wire_type == LEN:  # signature: OpDef
                for s in iter_fields(data, part.start, part.end):
                    if s.number == 1 and s.wire_type == LEN:
                        fname = text(data, s, 1024)
                        break
            elif part.number == 3 and part.wire_type == LEN:  # node_def
                bodies.append(part)
        g.functions.append(fname)
        for b in bodies:
            if len(g.nodes) >= MAX_NODES:
                g.truncated = f"more than {MAX_NODES} nodes"
                return
            g.nodes.append(parse_node(data, b.start, b.end, fname))


def _graph_def(data: memoryview, start: int, end: int, g: Graph) -> None:
    for f in iter_fields(data, start, end):
        if f.number == 1 and f.wire_type == LEN:
            if len(g.nodes) >= MAX_NODES:
                g.truncated = f"more than {MAX_NODES} nodes"
                return
            g.nodes.append(parse_node(data, f.start, f.end, None))
        elif f.number == 2 and f.wire_type == LEN:
            _library(data, f, g)


def parse_saved_model(buf: Buffer, start: int, end: int) -> Graph:
    data = _mv(buf)
    g = Graph("saved_model")
    try:
        for f in iter_fields(data, start, end):
            if f.number == 1 and f.wire_type == VARINT:
                continue
            if f.number != 2 or f.wire_type != LEN:
                raise GraphError(f"unexpected SavedModel field {f.number}")
            g.meta_graphs += 1
            for m in iter_fields(data, f.start, f.end):
                if m.number == 2 and m.wire_type == LEN:  # graph_def
                    _graph_def(data, m.start, m.end, g)
    except ProtobufError as exc:
        raise GraphError(str(exc)) from exc
    if g.meta_graphs == 0:
        raise GraphError("SavedModel without a MetaGraphDef")
    return g


def parse_graph_def(buf: Buffer, start: int, end: int) -> Graph:
    data = _mv(buf)
    g = Graph("graph_def")
    try:
        _graph_def(data, start, end, g)
    except ProtobufError as exc:
        raise GraphError(str(exc)) from exc
    return g


@dataclass(frozen=True)
class KerasMetadata:
    node_path: str
    identifier: str
    metadata: str


def parse_keras_metadata(buf: Buffer, start: int, end: int) -> list[KerasMetadata]:
    """The ``SavedObject`` entries of a ``keras_metadata.pb`` (their JSON left unparsed)."""
    data = _mv(buf)
    out: list[KerasMetadata] = []
    try:
        for f in iter_fields(data, start, end):
            if f.number != 1 or f.wire_type != LEN:
                raise GraphError(f"unexpected SavedMetadata field {f.number}")
            path = ident = meta = ""
            for s in iter_fields(data, f.start, f.end):
                if s.wire_type != LEN:
                    continue
                if s.number == 2:
                    path = text(data, s, 4096)
                elif s.number == 3:
                    ident = text(data, s, 256)
                elif s.number == 4:
                    meta = bytes(data[s.start : s.end]).decode("utf-8", "replace")
            out.append(KerasMetadata(path, ident, meta))
    except ProtobufError as exc:
        raise GraphError(str(exc)) from exc
    return out


# --------------------------------------------------------------------------- sniffing
def _varint(head: bytes, pos: int) -> tuple[int, int] | None:
    try:
        return _read(head, pos)
    except ProtobufError:
        return None


def _read(head: bytes, pos: int) -> tuple[int, int]:
    from modelshield.formats.protobuf import read_varint

    return read_varint(memoryview(head), pos, len(head))


def looks_like_saved_model(head: bytes, size: int, name: str) -> bool:
    """``08 <version> 12 <len> <MetaGraphDef>`` whose first meta graph spans the file."""
    if len(head) < 8 or head[0] != 0x08 or head[1] > 3:
        return False
    if head[2] != 0x12:
        return False
    r = _varint(head, 3)
    if r is None:
        return False
    length, pos = r
    if length < 2 or pos + length > size or head[pos] not in (0x0A, 0x12):
        return False
    # ONNX (08 ir_version 12 producer_name) and CoreML (08 version 12 description) continue
    # with more top-level fields; a SavedModel's meta graph runs to the end of the file.
    return pos + length == size or name == "saved_model.pb"


def looks_like_graph_def(head: bytes, size: int) -> bool:
    """``0a <len> <NodeDef: 0a name 12 op ...>`` with identifier-shaped name and op."""
    if len(head) < 8 or head[0] != 0x0A:
        return False
    r = _varint(head, 1)
    if r is None:
        return False
    length, pos = r
    if pos + length > size or head[pos : pos + 1] != b"\x0a":
        return False
    r = _varint(head, pos + 1)
    if r is None:
        return False
    nlen, npos = r
    name = head[npos : npos + nlen]
    if len(name) != nlen or nlen == 0:
        return False
    if head[npos + nlen : npos + nlen + 1] != b"\x12":
        return False
    r = _varint(head, npos + nlen + 1)
    if r is None:
        return False
    olen, opos = r
    op = head[opos : opos + olen]
    if len(op) != olen or olen == 0:
        return False
    try:
        return bool(
            NODE_NAME.fullmatch(name.decode("ascii")) and OP_NAME.fullmatch(op.decode("ascii"))
        )
    except UnicodeDecodeError:
        return False


def looks_like_keras_metadata(head: bytes, size: int, name: str) -> bool:
    """``0a <len> <SavedObject ... 1a "_tf_keras_...">``."""
    if len(head) < 8 or head[0] != 0x0A:
        return False
    r = _varint(head, 1)
    if r is None:
        return False
    length, pos = r
    if pos + length > size:
        return False
    return b"\x1a" in head[pos : pos + 64] and (
        b"_tf_keras_" in head[pos : pos + 512] or name == "keras_metadata.pb"
    )
