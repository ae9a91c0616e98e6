"""ONNX ``ModelProto`` walking over the protobuf wire format: artifacts, never verdicts.

The walk reads what a loader interprets besides tensor values: the opset imports, every node's
``(domain, op_type)`` (in the main graph, in graphs nested in node attributes such as ``If`` /
``Loop`` / ``Scan`` bodies, in training graphs and in model-local functions), the external-data
references of every tensor (initializers, sparse initializers, tensors held in attributes), and
the model's metadata. Tensor payloads (``raw_data``, packed ``float_data``...) are stepped over by
offset: nothing is copied, so a multi-gigabyte model costs the size of its graph, not its weights.

Field numbers follow ``onnx/onnx.proto3`` (IR version 10/11). Like protobuf's own parser, a field
with an unexpected wire type is ignored (it lands in the unknown-field set), and a singular
message field that appears more than once is merged, so every occurrence is walked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from modelshield.formats.protobuf import (
    LEN,
    VARINT,
    Field,
    ProtobufError,
    iter_fields,
    read_varint,
)
from modelshield.pickle.opcodes import Buffer

# ModelProto
_M_IR_VERSION = 1
_M_PRODUCER_NAME = 2
_M_PRODUCER_VERSION = 3
_M_DOMAIN = 4
_M_MODEL_VERSION = 5
_M_DOC = 6
_M_GRAPH = 7
_M_OPSET = 8
_M_METADATA = 14
_M_TRAINING = 20
_M_FUNCTIONS = 25

MODEL_FIELDS: dict[int, int] = {
    _M_IR_VERSION: VARINT,
    _M_PRODUCER_NAME: LEN,
    _M_PRODUCER_VERSION: LEN,
    _M_DOMAIN: LEN,
    _M_MODEL_VERSION: VARINT,
    _M_DOC: LEN,
    _M_GRAPH: LEN,
    _M_OPSET: LEN,
    _M_METADATA: LEN,
    _M_TRAINING: LEN,
    _M_FUNCTIONS: LEN,
    26: LEN,  # configuration (DeviceConfigurationProto)
}
"""ModelProto's field numbers and wire types (for content sniffing)."""

# GraphProto
_G_NODE = 1
_G_NAME = 2
_G_INITIALIZER = 5
_G_SPARSE_INITIALIZER = 15
# NodeProto
_N_NAME = 3
_N_OP_TYPE = 4
_N_ATTRIBUTE = 5
_N_DOMAIN = 7
# AttributeProto
_A_NAME = 1
_A_T = 5
_A_G = 6
_A_TENSORS = 10
_A_GRAPHS = 11
_A_SPARSE = 22
_A_SPARSES = 23
# TensorProto
_T_NAME = 8
_T_EXTERNAL = 13
_T_LOCATION = 14
_T_PAYLOADS = frozenset({4, 5, 6, 7, 9, 10, 11})
"""float/int32/string/int64/raw/double/uint64 data: values only, stepped over."""
EXTERNAL = 1
"""``TensorProto.DataLocation.EXTERNAL``."""
# SparseTensorProto
_S_VALUES = 1
_S_INDICES = 2
# TrainingInfoProto
_TI_INIT = 1
_TI_ALGO = 2
# FunctionProto
_F_NAME = 1
_F_NODE = 7
_F_OPSET = 9
_F_DOMAIN = 10
# OperatorSetIdProto / StringStringEntryProto
_KV_KEY = 1
_KV_VALUE = 2

_TEXT_LIMIT = 4096
MAX_DEPTH = 64
"""Deepest nesting of graphs in attributes (and of messages) that is walked."""


class OnnxError(Exception):
    """The bytes are not a well-formed ONNX model (protobuf damage, nesting limit)."""

    def __init__(self, message: str, offset: int, where: str) -> None:
        super().__init__(message)
        self.offset = offset
        """Absolute offset (in the buffer) of the message that could not be read."""
        self.where = where
        self.partial: OnnxModel | None = None
        """What was read before the error (set by :func:`parse_model`)."""


@dataclass(frozen=True, slots=True)
class OpsetImport:
    domain: str
    version: int


@dataclass(slots=True)
class OpUse:
    """One ``(domain, op_type)`` pair: how often nodes use it and where first."""

    domain: str
    op_type: str
    count: int
    where: str
    """Where the first node is, e.g. ``graph/If_0.then_branch/node[2]``."""
    offset: int
    """Absolute offset of the first node message."""


@dataclass(frozen=True, slots=True)
class ExternalRef:
    """A tensor whose values live in another file (``external_data`` entries)."""

    tensor: str
    where: str
    offset: int
    """Absolute offset of the tensor message."""
    external: bool
    """``data_location == EXTERNAL``: only then do onnx and onnxruntime read the file."""
    location: str | None
    """The ``location`` a loader uses (the last entry wins, as in onnx's ExternalDataInfo)."""
    all_locations: tuple[str, ...]
    """Every ``location`` value present (a shadowed one is still reported)."""
    file_offset: str | None
    length: str | None


@dataclass
class OnnxModel:
    ir_version: int | None = None
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int | None = None
    opset_imports: list[OpsetImport] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    ops: dict[tuple[str, str], OpUse] = field(default_factory=dict)
    functions: set[tuple[str, str]] = field(default_factory=set)
    """Model-local functions as ``(domain, name)``: nodes calling them are expanded, not run."""
    function_opsets: list[OpsetImport] = field(default_factory=list)
    external: list[ExternalRef] = field(default_factory=list)
    graphs: int = 0
    nodes: int = 0
    tensors: int = 0
    payload_bytes: int = 0
    """Tensor payload bytes stepped over without being read."""
    has_graph: bool = False


def _text(view: memoryview, f: Field) -> str:
    return bytes(view[f.start : min(f.end, f.start + _TEXT_LIMIT)]).decode("utf-8", "replace")


class _Walker:
    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.model = OnnxModel()

    def fields(self, start: int, end: int, where: str) -> Iterator[Field]:
        try:
            yield from iter_fields(self.view, start, end)
        except ProtobufError as exc:
            raise OnnxError(str(exc), start, where) from None

    # ---------------------------------------------------------------- messages
    def model_proto(self, start: int, end: int) -> None:
        m = self.model
        for f in self.fields(start, end, "model"):
            n, w = f.number, f.wire_type
            if n == _M_IR_VERSION and w == VARINT:
                m.ir_version = f.value
            elif n == _M_MODEL_VERSION and w == VARINT:
                m.model_version = f.value
            elif w != LEN:
                continue
            elif n == _M_PRODUCER_NAME:
                m.producer_name = _text(self.view, f)
            elif n == _M_PRODUCER_VERSION:
                m.producer_version = _text(self.view, f)
            elif n == _M_DOMAIN:
                m.domain = _text(self.view, f)
            elif n == _M_GRAPH:
                m.has_graph = True
                self.graph(f.start, f.end, "graph", 1)
            elif n == _M_OPSET:
                m.opset_imports.append(self.opset(f.start, f.end, "opset_import"))
            elif n == _M_METADATA:
                key, value = self.entry(f.start, f.end, "metadata_props")
                m.metadata[key] = value
            elif n == _M_TRAINING:
                self.training(f.start, f.end)
            elif n == _M_FUNCTIONS:
                self.function(f.start, f.end)

    def opset(self, start: int, end: int, where: str) -> OpsetImport:
        domain, version = "", 0
        for f in self.fields(start, end, where):
            if f.number == 1 and f.wire_type == LEN:
                domain = _text(self.view, f)
            elif f.number == 2 and f.wire_type == VARINT:
                version = f.value
        return OpsetImport(domain, version)

    def entry(self, start: int, end: int, where: str) -> tuple[str, str]:
        key = value = ""
        for f in self.fields(start, end, where):
            if f.wire_type != LEN:
                continue
            if f.number == _KV_KEY:
                key = _text(self.view, f)
            elif f.number == _KV_VALUE:
                value = _text(self.view, f)
        return key, value

    def training(self, start: int, end: int) -> None:
        for f in self.fields(start, end, "training_info"):
            if f.wire_type == LEN and f.number in (_TI_INIT, _TI_ALGO):
                label = "initialization" if f.number == _TI_INIT else "algorithm"
                self.graph(f.start, f.end, f"training_info.{label}", 1)

    def function(self, start: int, end: int) -> None:
        name = domain = ""
        nodes: list[Field] = []
        for f in self.fields(start, end, "functions"):
            if f.wire_type != LEN:
                continue
            if f.number == _F_NAME:
                name = _text(self.view, f)
            elif f.number == _F_DOMAIN:
                domain = _text(self.view, f)
            elif f.number == _F_NODE:
                nodes.append(f)
            elif f.number == _F_OPSET:
                self.model.function_opsets.append(self.opset(f.start, f.end, "functions"))
        self.model.functions.add((domain, name))
        where = f"function {domain}:{name}" if domain else f"function {name}"
        for i, f in enumerate(nodes):
            self.node(f.start, f.end, f"{where}/node[{i}]", 1)

    def graph(self, start: int, end: int, where: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise OnnxError(f"graphs nested deeper than {MAX_DEPTH} levels", start, where)
        self.model.graphs += 1
        node = init = sparse = 0
        for f in self.fields(start, end, where):
            if f.wire_type != LEN:
                continue
            if f.number == _G_NODE:
                self.node(f.start, f.end, f"{where}/node[{node}]", depth)
                node += 1
            elif f.number == _G_INITIALIZER:
                self.tensor(f.start, f.end, f"{where}/initializer[{init}]")
                init += 1
            elif f.number == _G_SPARSE_INITIALIZER:
                self.sparse(f.start, f.end, f"{where}/sparse_initializer[{sparse}]")
                sparse += 1

    def node(self, start: int, end: int, where: str, depth: int) -> None:
        op_type = domain = name = ""
        attributes: list[Field] = []
        for f in self.fields(start, end, where):
            if f.wire_type != LEN:
                continue
            if f.number == _N_OP_TYPE:
                op_type = _text(self.view, f)
            elif f.number == _N_DOMAIN:
                domain = _text(self.view, f)
            elif f.number == _N_NAME:
                name = _text(self.view, f)
            elif f.number == _N_ATTRIBUTE:
                attributes.append(f)
        m = self.model
        m.nodes += 1
        key = (domain, op_type)
        use = m.ops.get(key)
        if use is None:
            m.ops[key] = OpUse(domain, op_type, 1, where, start)
        else:
            use.count += 1
        label = f"{where}({name or op_type})"
        for f in attributes:
            self.attribute(f.start, f.end, label, depth)

    def attribute(self, start: int, end: int, where: str, depth: int) -> None:
        name = ""
        nested: list[Field] = []
        for f in self.fields(start, end, where):
            if f.wire_type != LEN:
                continue
            if f.number == _A_NAME:
                name = _text(self.view, f)
            elif f.number in (_A_T, _A_G, _A_TENSORS, _A_GRAPHS, _A_SPARSE, _A_SPARSES):
                nested.append(f)
        base = f"{where}.{name or '?'}"
        for i, f in enumerate(nested):
            if f.number in (_A_G, _A_GRAPHS):
                self.graph(f.start, f.end, base if f.number == _A_G else f"{base}[{i}]", depth + 1)
            elif f.number in (_A_T, _A_TENSORS):
                self.tensor(f.start, f.end, base)
            else:
                self.sparse(f.start, f.end, base)

    def sparse(self, start: int, end: int, where: str) -> None:
        for f in self.fields(start, end, where):
            if f.wire_type == LEN and f.number in (_S_VALUES, _S_INDICES):
                part = "values" if f.number == _S_VALUES else "indices"
                self.tensor(f.start, f.end, f"{where}.{part}")

    def tensor(self, start: int, end: int, where: str) -> None:
        m = self.model
        m.tensors += 1
        name = ""
        data_location = 0
        entries: list[Field] = []
        for f in self.fields(start, end, where):
            if f.number in _T_PAYLOADS:
                m.payload_bytes += f.end - f.start if f.wire_type == LEN else 0
            elif f.number == _T_NAME and f.wire_type == LEN:
                name = _text(self.view, f)
            elif f.number == _T_EXTERNAL and f.wire_type == LEN:
                entries.append(f)
            elif f.number == _T_LOCATION and f.wire_type == VARINT:
                data_location = f.value
        if not entries and data_location != EXTERNAL:
            return
        info: dict[str, str] = {}
        locations: list[str] = []
        for f in entries:
            key, value = self.entry(f.start, f.end, where)
            info[key] = value
            if key == "location":
                locations.append(value)
        m.external.append(
            ExternalRef(
                tensor=name,
                where=where,
                offset=start,
                external=data_location == EXTERNAL,
                location=info.get("location"),
                all_locations=tuple(locations),
                file_offset=info.get("offset"),
                length=info.get("length"),
            )
        )


def parse_model(buf: Buffer | memoryview, start: int = 0, end: int | None = None) -> OnnxModel:
    """Walk the ModelProto in ``buf[start:end]``. Raises :class:`OnnxError`.

    Offsets in the result are absolute (in ``buf``). Tensor payloads are never copied.
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    stop = len(view) if end is None else end
    walker = _Walker(view)
    try:
        walker.model_proto(start, stop)
    except OnnxError as exc:
        exc.partial = walker.model
        raise
    except RecursionError:
        err = OnnxError("messages nested too deeply", start, "model")
        err.partial = walker.model
        raise err from None
    return walker.model


def looks_like_model(head: bytes, size: int, name_hint: bool) -> bool:
    """Whether ``head`` (the first bytes of a ``size``-byte blob) starts a ModelProto.

    ONNX writers serialise fields in number order, so a model starts with ``ir_version``
    (field 1), then short strings (producer, domain), then the graph (7) and opset imports (8).
    Requires ``ir_version`` first, every following field one of ModelProto's with its wire type,
    the short strings complete, and the graph or opset imports within the head — or, when the
    head ends inside a long ``doc_string``, the ``.onnx`` name as a hint.
    """
    view = memoryview(head)
    pos = 0
    first = True
    try:
        while pos < len(view):
            key, pos = read_varint(view, pos, len(view))
            number, wire = key >> 3, key & 7
            if MODEL_FIELDS.get(number) != wire:
                return False
            if wire == VARINT:
                value, pos = read_varint(view, pos, len(view))
                if first and not 1 <= value <= 32:
                    return False
            else:
                length, pos = read_varint(view, pos, len(view))
                if number in (_M_GRAPH, _M_OPSET):
                    # A graph that runs past the end is a truncated model (reported as such).
                    return not first
                if pos + length > size:
                    return False
                if pos + length > len(view):
                    # Producer, domain and version strings are short; a long doc string may
                    # run past the head.
                    return number == _M_DOC and name_hint and not first
                if number in (_M_PRODUCER_NAME, _M_PRODUCER_VERSION, _M_DOMAIN):
                    try:
                        bytes(view[pos : pos + length]).decode("utf-8")
                    except UnicodeDecodeError:
                        return False
                pos += length
            if first and number != _M_IR_VERSION:
                return False
            first = False
    except ProtobufError:
        return False
    # The whole head parsed without reaching a graph: only a blob this small is accepted.
    return not first and len(view) == size and name_hint
